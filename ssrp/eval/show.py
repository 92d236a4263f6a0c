"""``ssrp show``: the paper's Fig. 3 for one image of the corpus.

Writes ``image_<id>_relations.png`` (each view of the image with its boxes and relation lines, above
the view's R_v heat-map; every view is run with the image's chosen caption, raw variant) and
``caption_<cid>_trees.png`` (for the caption and each paraphrase: the R_w heat-map, the MST of R_w as
red arcs above the sentence and the parser's tree as black arcs below, run with the raw view).
"""

from __future__ import annotations

import logging
import os

from ssrp.eval.figures import TreeRow, ViewPanel, draw_relations, relation_figure, tree_figure, view_canvas
from ssrp.eval.inference import Pair, ProbeModel
from ssrp.eval.metrics import UUASCounter, gold_arcs, mst_edges
from ssrp.eval.select import caption_ids, caption_variants, image_views

logger = logging.getLogger(__name__)


def show_image(model: ProbeModel, image_id: int, out: str, coco: str | None = None,
               caption_id: int | None = None) -> list[str]:
    """Render the two figures of an image; returns their paths."""
    reader = model.reader
    try:
        captions = caption_ids(reader, image_id)
    except KeyError as err:
        raise ValueError(f"image {image_id} is not in the corpus {model.corpus}") from err
    if caption_id is None:
        if not captions:
            raise ValueError(f"image {image_id} has no captions in the corpus")
        caption_id = captions[0]
    elif caption_id not in captions:
        raise ValueError(f"caption {caption_id} is not a caption of image {image_id} (its captions: {captions})")
    os.makedirs(out, exist_ok=True)
    title = f"SSRP-{model.train_cfg.model.variant}: image {image_id}"
    return [
        relations_png(model, image_id, caption_id, os.path.join(out, f"image_{image_id}_relations.png"), coco, title),
        trees_png(model, image_id, caption_id, os.path.join(out, f"caption_{caption_id}_trees.png"), title),
    ]


def relations_png(model: ProbeModel, image_id: int, caption_id: int, path: str, coco: str | None, title: str) -> str:
    reader = model.reader
    views = image_views(reader, image_id)
    outputs = model([Pair(image_id, caption_id, view, "raw") for view in views])
    panels = []
    for view, output in zip(views, outputs, strict=True):
        rec = reader.image(image_id, view)
        n = min(rec.num_boxes, output.r_v.shape[0])
        canvas = view_canvas(rec.width, rec.height, view, rec.file_name, coco)
        drawn = draw_relations(canvas, rec.boxes[:n], output.r_v[:n, :n], model.cfg.show_objects)
        panels.append(ViewPanel(view, drawn, output.r_v[:n, :n]))
    return relation_figure(panels, path, title)


def trees_png(model: ProbeModel, image_id: int, caption_id: int, path: str, title: str) -> str:
    variants = caption_variants(model.reader, caption_id)
    outputs = model([Pair(image_id, caption_id, "raw", v) for v in variants])
    rows = []
    for variant, o in zip(variants, outputs, strict=True):
        counter = UUASCounter()
        counter.add(o.r_w, o.gold, o.upos)
        score = "-" if counter.total == 0 else f"{counter.value:.2f}"
        rows.append(TreeRow(variant, o.words, o.r_w, mst_edges(o.r_w), gold_arcs(o.heads, len(o.words)),
                            f"{variant}: UUAS {score} (punctuation excluded)"))
    return tree_figure(rows, path, f"{title}, caption {caption_id}")
