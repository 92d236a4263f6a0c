"""The evaluation settings. The paper gives none of these; each choice is documented in docs/evaluation.md."""

from __future__ import annotations

from dataclasses import dataclass

from ssrp.config import require


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 32  # image-caption pairs per forward pass
    device: str = "auto"  # auto: cuda when available, else cpu; or any torch device string
    progress: bool = True  # tqdm bars on the long loops
    max_images: int = 0  # evaluate on the first N selected images (sorted ids); 0 = all
    min_length: int = 5  # Spearman is averaged over sentence lengths min_length..max_length (Hewitt & Manning)
    max_length: int = 50
    stability_groups: int = 500  # images / captions used for the view-stability measure; 0 = all
    image_captions: int = 0  # captions whose runs are averaged into image-level features; 0 = all
    rel_temperature: float = 0.0  # Obj.+Rel.: softmax(-R_v / t); 0 = t is each image's median off-diagonal distance
    fusion_weight: float = 0.5  # export: rel = w * z_v/|z_v| + (1 - w) * z_w/|z_w|
    topk: int = 5  # retrieve: results per query in the grid
    grid_queries: int = 4  # retrieve: query rows in the grid
    recall_ks: tuple[int, ...] = (1, 5, 10)  # retrieve: R@K and P@K
    thumb_size: tuple[int, int] = (160, 120)  # retrieve: grid thumbnail width, height in pixels
    show_objects: int = 10  # show: the most confident objects drawn (boxes, labels, R_v heat-map rows)
    show_edges: str = "mst"  # show: the relation lines drawn: mst (of R_v), topk (closest pairs) or all pairs
    show_topk: int = 10  # show: pairs drawn with show_edges=topk
    show_columns: int = 7  # show: views per row of the grid (14 views: 2 x 7)
    label_chars: int = 12  # figures: class names and words longer than this are shortened with an ellipsis
    trees_parser_above: bool = False  # show: the parser's tree above the words (the paper's Fig. 3), the probe's below

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.max_images >= 0, f"max_images={self.max_images} must be >= 0 (0 = all)")
        require(2 <= self.min_length <= self.max_length,
                 f"min_length={self.min_length}, max_length={self.max_length}: need 2 <= min_length <= max_length")
        require(self.stability_groups >= 0, f"stability_groups={self.stability_groups} must be >= 0 (0 = all)")
        require(self.image_captions >= 0, f"image_captions={self.image_captions} must be >= 0 (0 = all)")
        require(self.rel_temperature >= 0, f"rel_temperature={self.rel_temperature} must be >= 0 (0 = per-image median)")
        require(0.0 <= self.fusion_weight <= 1.0, f"fusion_weight={self.fusion_weight} must be in [0, 1]")
        require(self.topk >= 1 and self.grid_queries >= 1,
                 f"topk={self.topk}, grid_queries={self.grid_queries} must be >= 1")
        require(len(self.recall_ks) > 0 and all(k >= 1 for k in self.recall_ks),
                 f"recall_ks={self.recall_ks} must be a non-empty tuple of positive ints")
        require(len(self.thumb_size) == 2 and min(self.thumb_size) >= 16,
                 f"thumb_size={self.thumb_size} must be (width, height), each >= 16")
        require(self.show_objects >= 2, f"show_objects={self.show_objects} must be >= 2")
        require(self.show_edges in ("mst", "topk", "all"), f"show_edges={self.show_edges!r}: use mst, topk or all")
        require(self.show_topk >= 1 and self.show_columns >= 1,
                 f"show_topk={self.show_topk}, show_columns={self.show_columns} must be >= 1")
        require(self.label_chars >= 3, f"label_chars={self.label_chars} must be >= 3")
