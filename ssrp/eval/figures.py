"""Figures in the style of the paper's Fig. 3 and Fig. 4 (matplotlib with the Agg backend, and Pillow).

* ``draw_relations``: an image (or a blank canvas of its size) with its boxes and a line between the
  centres of every pair of the most confident objects, the closer the pair (smaller R_v) the darker
  and more opaque the line.
* ``relation_figure``: the images of an image's views above their R_v heat-maps (darker = closer).
* ``draw_arcs`` / ``tree_figure``: a sentence with the predicted tree (MST of R_w, red) above it and
  the parser's tree (black) below it, beside the R_w heat-map.
* ``retrieval_grid``: query images and their top-K results for each retrieval method, with a green
  (relevant) or red (not relevant) frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

logger = logging.getLogger(__name__)

BLANK = (245, 245, 245)
BOX = (30, 90, 200)
LINE = (200, 20, 20)
PRED = "#d62728"
GOLD = "black"
HEAT_CMAP = "Blues_r"  # dark = small distance = close relationship, as in Fig. 3
RELEVANT, IRRELEVANT, UNKNOWN = (40, 170, 40), (210, 40, 40), (160, 160, 160)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------------------
# Images of views


def find_image(coco: str, file_name: str) -> str | None:
    """The file of an image under a COCO root (train2017/, val2017/ or the root itself)."""
    for sub in ("train2017", "val2017", "test2017", ""):
        path = os.path.join(coco, sub, file_name)
        if file_name and os.path.isfile(path):
            return path
    return None


def apply_view(image: Image.Image, view: str) -> Image.Image:
    """The image as the view's regions lie on it. Only the image-level flip (``hflip``, ``hflip_*``) moves
    pixels; the RoI-level views (``roi_hflip``, ``rot90/180/270``, ``jitter*``) transform the pooled RoI
    features or re-pool scaled boxes, so their boxes lie on the (raw or flipped) image as it is
    (docs/views.md)."""
    return ImageOps.mirror(image) if view == "hflip" or view.startswith("hflip_") else image


def view_canvas(width: int, height: int, view: str, file_name: str = "", coco: str | None = None) -> Image.Image:
    """The view's image from the COCO root when it can be found and redone, else a blank canvas of its size."""
    if coco:
        path = find_image(coco, file_name)
        if path is None:
            logger.warning("%s not found under %s: drawing on a blank canvas", file_name, coco)
        else:
            with Image.open(path) as img:
                image = apply_view(img.convert("RGB"), view)
            if image.size != (width, height):
                aspect = (image.size[0] / image.size[1]) / (width / height)
                image = image.resize((width, height)) if abs(aspect - 1) < 0.02 else None
            if image is not None:
                return image
            logger.warning("%s does not have the size of view %r: blank canvas", file_name, view)
    return Image.new("RGB", (int(width), int(height)), BLANK)


def closeness(dist: np.ndarray) -> np.ndarray:
    """1 for the closest pair, 0 for the farthest (off-diagonal min-max scaling)."""
    d = np.asarray(dist, np.float64)
    off = d[~np.eye(len(d), dtype=bool)]
    if off.size == 0:
        return np.zeros_like(d)
    lo, hi = off.min(), off.max()
    return 1.0 - (d - lo) / (hi - lo) if hi > lo else np.ones_like(d)


def line_width(image: Image.Image) -> int:
    return max(2, round(min(image.size) / 160))


def draw_relations(
    image: Image.Image, boxes: np.ndarray, dist: np.ndarray | None, max_objects: int = 10
) -> Image.Image:
    """Boxes and relation lines between the first ``max_objects`` objects (the most confident);
    boxes only when ``dist`` is None."""
    n = min(len(boxes), max_objects) if dist is None else min(len(boxes), len(dist), max_objects)
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width = line_width(base)
    boxes = np.asarray(boxes[:n], np.float64)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) if n else boxes
    close = closeness(np.asarray(dist)[:n, :n]) if dist is not None else np.zeros((0, 0))
    pairs = sorted((close[i, j], i, j) for i in range(len(close)) for j in range(i + 1, len(close)))  # closest last
    for c, i, j in pairs:
        alpha = int(round(60 + 195 * c))
        shade = tuple(int(v * (0.35 + 0.65 * (1 - c))) for v in LINE)  # closer: darker
        draw.line([tuple(centres[i]), tuple(centres[j])], fill=(*shade, alpha), width=width)
    for k, box in enumerate(boxes):
        draw.rectangle([tuple(box[:2]), tuple(box[2:])], outline=(*BOX, 255), width=max(1, width - 1))
        draw.text((box[0] + 2, box[1] + 1), str(k), fill=(*BOX, 255))
    return Image.alpha_composite(base, overlay).convert("RGB")


def heatmap(ax, dist: np.ndarray, title: str, labels: Sequence[str] | None = None) -> None:
    im = ax.imshow(np.asarray(dist, np.float64), cmap=HEAT_CMAP, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    n = len(dist)
    ticks = np.arange(n)
    if labels is not None:
        ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7)
    else:
        step = max(1, n // 10)
        ax.set_xticks(ticks[::step])
        ax.set_yticks(ticks[::step])
        ax.tick_params(labelsize=7)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


@dataclass
class ViewPanel:
    view: str
    image: Image.Image  # already drawn with boxes and relation lines
    r_v: np.ndarray


def relation_figure(panels: Sequence[ViewPanel], path: str, title: str = "", dpi: int = 100) -> str:
    """Fig. 3, top rows: each view's image with relation lines above its R_v heat-map."""
    plt = _pyplot()
    cols = max(1, len(panels))
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 7.5), dpi=dpi, squeeze=False)
    for k, panel in enumerate(panels):
        axes[0, k].imshow(np.asarray(panel.image))
        axes[0, k].set_title(panel.view, fontsize=10)
        axes[0, k].axis("off")
        heatmap(axes[1, k], panel.r_v, f"R_v ({panel.view})")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi)


# ------------------------------------------------------------------------------------------------
# Trees


def draw_arcs(ax, words: Sequence[str], pred: set[tuple[int, int]], gold: set[tuple[int, int]]) -> None:
    """Words on a baseline at x = 0..W-1; predicted arcs above (red), the parser's below (black)."""
    from matplotlib.patches import Arc

    n = len(words)
    span = max(n - 1, 1)  # an arc's height depends on its own length only
    for arcs, colour, theta in ((pred, PRED, (0, 180)), (gold, GOLD, (180, 360))):
        for i, j in sorted(arcs):
            ax.add_patch(Arc(((i + j) / 2, 0), j - i, 0.3 + 1.5 * (j - i) / span, theta1=theta[0], theta2=theta[1],
                             color=colour, linewidth=1.6))
    for k, word in enumerate(words):
        ax.text(k, 0, word, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none"})
    ax.set_xlim(-0.7, max(n, 2) - 0.3)
    ax.set_ylim(-1.0, 1.0)
    ax.axis("off")


@dataclass
class TreeRow:
    variant: str
    words: tuple[str, ...]
    r_w: np.ndarray
    pred: set[tuple[int, int]]
    gold: set[tuple[int, int]]
    title: str = ""


def tree_figure(rows: Sequence[TreeRow], path: str, title: str = "", dpi: int = 100) -> str:
    """Fig. 3, bottom rows: per caption variant, its R_w heat-map and its predicted/parser trees."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(14, 3.2 * len(rows)), dpi=dpi, squeeze=False,
                             gridspec_kw={"width_ratios": [1, 3]})
    for k, row in enumerate(rows):
        heatmap(axes[k, 0], row.r_w, f"R_w ({row.variant})", labels=row.words)
        draw_arcs(axes[k, 1], row.words, row.pred, row.gold)
        axes[k, 1].set_title(row.title or row.variant, fontsize=10)
    if title:
        fig.suptitle(title + "   (red above: MST of R_w; black below: parser)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _save(fig, path: str, dpi: int) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# Retrieval grid


def thumbnail(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The image fitted into exactly ``size`` (width, height), letterboxed on white."""
    out = Image.new("RGB", size, (255, 255, 255))
    img = ImageOps.contain(image.convert("RGB"), size)
    out.paste(img, ((size[0] - img.size[0]) // 2, (size[1] - img.size[1]) // 2))
    return out


@dataclass
class GridCell:
    image: Image.Image
    label: str
    relevant: bool | None = None  # None: no relevance labels


GRID_PAD, GRID_GAP, GRID_HEADER, GRID_LABEL, GRID_FRAME = 6, 18, 22, 14, 3


def grid_size(results_per_method: int, methods: int, rows: int, thumb: tuple[int, int]) -> tuple[int, int]:
    """(width, height) in pixels of a retrieval grid."""
    cols = 1 + methods * results_per_method
    width = 2 * GRID_PAD + cols * thumb[0] + (cols - 1) * GRID_PAD + methods * GRID_GAP
    height = GRID_HEADER + rows * (thumb[1] + GRID_LABEL + GRID_PAD) + GRID_PAD
    return width, height


def cell_origin(row: int, col: int, method: int, thumb: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of the thumbnail of a row and column (col 0: the query; method: 0 for the query)."""
    x = GRID_PAD + col * (thumb[0] + GRID_PAD) + method * GRID_GAP
    y = GRID_HEADER + row * (thumb[1] + GRID_LABEL + GRID_PAD)
    return x, y


def retrieval_grid(
    queries: Sequence[GridCell], results: dict[str, Sequence[Sequence[GridCell]]], path: str,
    thumb: tuple[int, int] = (160, 120),
) -> str:
    """Fig. 4: one row per query: the query, then the top-K of each method (framed by relevance)."""
    methods = list(results)
    k = max((len(r) for res in results.values() for r in res), default=1)
    grid = Image.new("RGB", grid_size(k, len(methods), len(queries), thumb), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.text((GRID_PAD, 5), "query", fill=(0, 0, 0))
    for m, name in enumerate(methods):
        x, _ = cell_origin(0, 1 + m * k, m + 1, thumb)
        draw.text((x, 5), name, fill=(0, 0, 0))
    for r, query in enumerate(queries):
        _paste_cell(grid, draw, query, cell_origin(r, 0, 0, thumb), thumb)
        for m, name in enumerate(methods):
            for j, cell in enumerate(results[name][r]):
                _paste_cell(grid, draw, cell, cell_origin(r, 1 + m * k + j, m + 1, thumb), thumb)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path, format="PNG")
    return path


def _paste_cell(grid: Image.Image, draw: ImageDraw.ImageDraw, cell: GridCell, xy: tuple[int, int],
                thumb: tuple[int, int]) -> None:
    grid.paste(thumbnail(cell.image, thumb), xy)
    if cell.relevant is not None:
        colour = RELEVANT if cell.relevant else IRRELEVANT
        x, y = xy
        draw.rectangle([x, y, x + thumb[0] - 1, y + thumb[1] - 1], outline=colour, width=GRID_FRAME)
    draw.text((xy[0], xy[1] + thumb[1] + 1), cell.label, fill=(0, 0, 0))
