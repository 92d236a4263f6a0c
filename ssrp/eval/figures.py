"""Figures in the style of the paper's Fig. 3 and Fig. 4 (matplotlib with the Agg backend, and Pillow).

* ``draw_relations``: an image (or a blank canvas of its size) with the boxes of its most confident objects,
  each labelled (``k name``; labels placed so that none overlaps another), and lines between the centres of
  the pairs chosen by ``relation_edges`` (the minimum spanning tree of R_v, the k closest pairs, or all), the
  closer the pair (smaller R_v) the darker and more opaque the line.
* ``relation_figure``: a grid of views (default 2 x 7 for the 14 views), each image above its R_v heat-map,
  one colour scale for all views.
* ``draw_arcs`` / ``tree_figure``: a sentence with the MST of R_w (red) above it and the parser's tree (black)
  below it (or the other way round, as in the paper's Fig. 3), beside the R_w heat-map; long words shortened.
* ``retrieval_grid``: query images and their top-K results for each retrieval method, framed green (the result
  contains the query's most confident object class) or red (it does not), with a legend.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ssrp.eval.labels import ELLIPSIS, shorten
from ssrp.train.metrics import mst_edges

logger = logging.getLogger(__name__)

BLANK = (245, 245, 245)
BOX = (30, 90, 200)
LINE = (200, 20, 20)
PRED = "#d62728"
GOLD = "black"
HEAT_CMAP = "Blues_r"  # dark = small distance = close relationship, as in Fig. 3
RELEVANT, IRRELEVANT, UNKNOWN = (40, 170, 40), (210, 40, 40), (160, 160, 160)
HIGHLIGHT = (255, 215, 0)  # boxes of the query's class in retrieval thumbnails
# box colours (matplotlib's tab10), one per object index, so a box and its heat-map row are easy to match
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
EDGE_MODES = ("mst", "topk", "all")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at ``size`` pixels (the same on every machine)."""
    return ImageFont.load_default(size=max(6, int(size)))


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


def relation_edges(dist: np.ndarray, mode: str = "mst", topk: int = 10) -> list[tuple[int, int]]:
    """The pairs (i < j) to draw: the minimum spanning tree of R_v, the ``topk`` closest pairs, or every pair."""
    if mode not in EDGE_MODES:
        raise ValueError(f"edges {mode!r}: use one of {EDGE_MODES}")
    d = np.asarray(dist, np.float64)
    pairs = [(i, j) for i in range(len(d)) for j in range(i + 1, len(d))]
    if mode == "mst":
        return sorted(mst_edges(d))
    if mode == "topk":
        return sorted(sorted(pairs, key=lambda p: (d[p], p))[:topk])
    return pairs


def line_width(image: Image.Image) -> int:
    return max(2, round(max(image.size) / 200))


def label_size(image: Image.Image) -> int:
    """Label font size in the image's pixels: readable once the image is scaled into a figure panel."""
    return max(11, round(max(image.size) / 24))


def place_labels(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], bounds: tuple[int, int],
                 taken: Sequence[tuple[int, int, int, int]] = ()) -> list[tuple[int, int] | None]:
    """Top-left corners of label rectangles (``sizes``: width, height), one per box, in order: the first position
    around its box (above or inside its top edge, then its bottom edge, left then right aligned, then sliding
    along the edges) that lies inside ``bounds`` and overlaps no rectangle placed before; None where none is free."""
    width, height = bounds
    placed = [tuple(t) for t in taken]
    out: list[tuple[int, int] | None] = []
    for (x1, y1, x2, y2), (w, h) in zip(np.asarray(boxes, np.float64), sizes, strict=True):
        spot = None
        for x, y in _candidates(x1, y1, x2, y2, w, h):
            x, y = int(round(min(max(x, 0), width - w))), int(round(min(max(y, 0), height - h)))
            rect = (x, y, x + w, y + h)
            if x >= 0 and y >= 0 and not any(_overlap(rect, r) for r in placed):
                spot = (x, y)
                placed.append(rect)
                break
        out.append(spot)
    return out


def _candidates(x1, y1, x2, y2, w, h):
    """Label positions by preference: on the box's top and bottom edges, down its sides, then just outside it."""
    for y in (y1 - h, y1, y2, y2 - h):
        for t in (0.0, 1.0, 0.5, 0.25, 0.75):
            yield x1 + t * max(0.0, x2 - x1 - w), y
    for y in np.linspace(y1, max(y1, y2 - h), 5)[1:-1]:
        yield x1, y
        yield x2 - w, y
    for y in (y1, (y1 + y2 - h) / 2, y2 - h):
        yield x1 - w, y
        yield x2, y
    for y in (y1 - 2 * h, y2 + h):
        yield x1, y
        yield x2 - w, y


def _overlap(a, b, margin: int = 1) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def draw_relations(image: Image.Image, boxes: np.ndarray, dist: np.ndarray | None, max_objects: int = 10,
                   labels: Sequence[str] | None = None, edges: str = "all", topk: int = 10) -> Image.Image:
    """Boxes of the first ``max_objects`` objects (the most confident) with their labels, and relation lines
    between the pairs of ``relation_edges``; boxes only when ``dist`` is None."""
    n = min(len(boxes), max_objects) if dist is None else min(len(boxes), len(dist), max_objects)
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width = line_width(base)
    boxes = np.asarray(boxes[:n], np.float64)
    if dist is not None and n > 1:
        _draw_lines(draw, boxes, np.asarray(dist)[:n, :n], relation_edges(np.asarray(dist)[:n, :n], edges, topk),
                    width)
    for k, box in enumerate(boxes):
        draw.rectangle([tuple(box[:2]), tuple(box[2:])], outline=(*PALETTE[k % len(PALETTE)], 255), width=width)
    texts = [f"{k}  {labels[k]}" if labels is not None else str(k) for k in range(n)]
    draw_labels(draw, boxes, texts, base.size, font(label_size(base)))
    return Image.alpha_composite(base, overlay).convert("RGB")


def draw_boxes(image: Image.Image, boxes: np.ndarray, colour: tuple[int, int, int] = HIGHLIGHT) -> Image.Image:
    """Rectangles only (no labels), outlined in black so they show on any colour: for thumbnails, where the
    class name is in the caption."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = 2 * line_width(out)
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        draw.rectangle([tuple(box[:2] - width // 2), tuple(box[2:] + width // 2)], outline=(0, 0, 0), width=width * 2)
        draw.rectangle([tuple(box[:2]), tuple(box[2:])], outline=colour, width=width)
    return out


def _draw_lines(draw: ImageDraw.ImageDraw, boxes: np.ndarray, dist: np.ndarray, pairs, width: int) -> None:
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    close = closeness(dist)
    for c, i, j in sorted((close[i, j], i, j) for i, j in pairs):  # the closest last, on top
        alpha = int(round(60 + 195 * c))
        shade = tuple(int(v * (0.35 + 0.65 * (1 - c))) for v in LINE)  # closer: darker
        ends = [tuple(centres[i]), tuple(centres[j])]
        draw.line(ends, fill=(255, 255, 255, alpha * 2 // 3), width=width + 2)  # a light halo: seen on dark areas
        draw.line(ends, fill=(*shade, alpha), width=width)


def draw_labels(draw: ImageDraw.ImageDraw, boxes: np.ndarray, texts: Sequence[str], size: tuple[int, int],
                face: ImageFont.FreeTypeFont) -> list[tuple[int, int, int, int] | None]:
    """Each box's label on a light tag in its box's colour, never overlapping another; a label with no free spot
    falls back to its number alone, and is left out only when even that does not fit. Returns the tags."""
    pad = max(1, face.size // 6)
    sizes = [_text_size(face, t, pad) for t in texts]
    spots = place_labels(boxes, sizes, size)
    rects: list[tuple[int, int, int, int] | None] = []
    for k, spot in enumerate(spots):
        text = texts[k]
        if spot is None:  # retry with the number only, around every label placed so far
            text = texts[k].split(" ", 1)[0]
            taken = [r for r in rects if r is not None]
            spot = place_labels(boxes[k : k + 1], [_text_size(face, text, pad)], size, taken)[0]
        if spot is None:
            rects.append(None)
            continue
        w, h = _text_size(face, text, pad)
        rect = (spot[0], spot[1], spot[0] + w, spot[1] + h)
        colour = PALETTE[k % len(PALETTE)]
        draw.rectangle(rect, fill=(255, 255, 255, 215), outline=(*colour, 255))
        draw.text((spot[0] + pad, spot[1] + pad), text, font=face, fill=(*[int(c * 0.6) for c in colour], 255),
                  anchor="lt")
        rects.append(rect)
    return rects


def _text_size(face: ImageFont.FreeTypeFont, text: str, pad: int) -> tuple[int, int]:
    left, top, right, bottom = face.getbbox(text, anchor="lt")
    return int(math.ceil(right - left)) + 2 * pad, int(math.ceil(bottom - top)) + 2 * pad


def heatmap(ax, dist: np.ndarray, title: str, labels: Sequence[str] | None = None, vmin=None, vmax=None,
            fontsize: float = 7):
    im = ax.imshow(np.asarray(dist, np.float64), cmap=HEAT_CMAP, interpolation="nearest", vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=9)
    n = len(dist)
    ticks = np.arange(n)
    if labels is not None:
        ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, labels, fontsize=fontsize)
    else:
        step = max(1, math.ceil(n / 12))
        ax.set_xticks(ticks[::step])
        ax.set_yticks(ticks[::step])
        ax.tick_params(labelsize=fontsize)
    return im


@dataclass
class ViewPanel:
    view: str
    image: Image.Image  # already drawn with boxes, labels and relation lines
    r_v: np.ndarray  # among the drawn objects


def relation_figure(panels: Sequence[ViewPanel], path: str, title: str = "", columns: int = 7,
                    dpi: int = 150) -> str:
    """Fig. 3, top rows: a grid of views, each image above its R_v heat-map (one colour scale for all)."""
    plt = _pyplot()
    cols = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    cell = 2.3
    aspect = max((p.image.size[1] / p.image.size[0] for p in panels), default=0.75)
    fig = plt.figure(figsize=(cols * cell + 1.0, rows * cell * (aspect + 1.0) + 0.9), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[aspect, 1.0] * rows)
    values = np.concatenate([p.r_v.ravel() for p in panels]) if panels else np.zeros(1)
    vmin, vmax = float(values.min()), float(max(values.max(), values.min() + 1e-9))
    heat_axes, im = [], None
    for k, panel in enumerate(panels):
        r, c = divmod(k, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(np.asarray(panel.image))
        ax.set_title(panel.view, fontsize=9)
        ax.axis("off")
        hx = fig.add_subplot(grid[2 * r + 1, c])
        im = heatmap(hx, panel.r_v, "", vmin=vmin, vmax=vmax, fontsize=6)
        heat_axes.append(hx)
    if im is not None:
        bar = fig.colorbar(im, ax=heat_axes, shrink=0.7, aspect=30, pad=0.01)
        bar.set_label("R_v (dark = close)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(wrap(title, fig.get_figwidth(), 10), fontsize=10)
    return _save(fig, path, dpi)


def wrap(text: str, width_inches: float, fontsize: float) -> str:
    """``text``'s lines wrapped to a figure ``width_inches`` wide at ``fontsize`` points."""
    import textwrap

    chars = max(20, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(part for line in text.split("\n") for part in textwrap.wrap(line, chars) or [""])


# ------------------------------------------------------------------------------------------------
# Trees


def draw_arcs(ax, words: Sequence[str], pred: set[tuple[int, int]], gold: set[tuple[int, int]],
              fontsize: float = 9, positions: Sequence[float] | None = None, parser_above: bool = False) -> None:
    """Words on a baseline at ``positions`` (default x = 0..W-1); the predicted arcs (red) above and the parser's
    (black) below, or the other way round with ``parser_above`` (the paper's Fig. 3). An arc's height grows with
    the number of words it spans only, so one tree's half never changes with the other tree."""
    from matplotlib.patches import Arc

    n = len(words)
    x = list(positions) if positions is not None else list(range(n))
    span = max(n - 1, 1)
    upper, lower = (0, 180), (180, 360)
    sides = ((gold, GOLD, upper), (pred, PRED, lower)) if parser_above else ((pred, PRED, upper), (gold, GOLD, lower))
    for arcs, colour, theta in sides:
        for i, j in sorted(arcs):
            ax.add_patch(Arc(((x[i] + x[j]) / 2, 0), abs(x[j] - x[i]), 0.3 + 1.5 * (j - i) / span,
                             theta1=theta[0], theta2=theta[1], color=colour, linewidth=1.4))
    for k, word in enumerate(words):
        ax.text(x[k], 0, word, ha="center", va="center", fontsize=fontsize,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"})
    left, right = (x[0], x[-1]) if n else (0, 1)
    margin = (right - left) / max(n - 1, 1) * 0.7 if n > 1 else 0.7
    ax.set_xlim(left - margin, right + margin)
    ax.set_ylim(-1.0, 1.0)
    ax.axis("off")


def word_widths(words: Sequence[str], fontsize: float) -> list[float]:
    """Generous widths (inches) of words at ``fontsize`` points."""
    return [max(1, len(w)) * 0.6 * fontsize / 72 for w in words]


def word_positions(words: Sequence[str], fontsize: float, gap: float = 0.22) -> list[float]:
    """Centres (inches) of words set side by side with a gap: long words take more room, none overlaps."""
    widths = word_widths(words, fontsize)
    out, x = [], 0.0
    for k, w in enumerate(widths):
        x += (w / 2) if k == 0 else (widths[k - 1] / 2 + gap + w / 2)
        out.append(x)
    return out


@dataclass
class TreeRow:
    variant: str
    words: tuple[str, ...]
    r_w: np.ndarray
    pred: set[tuple[int, int]]
    gold: set[tuple[int, int]]
    title: str = ""


def tree_figure(rows: Sequence[TreeRow], path: str, title: str = "", dpi: int = 150, max_chars: int = 10,
                parser_above: bool = False) -> str:
    """Fig. 3, bottom rows: per caption variant, its R_w heat-map and the parser's / predicted trees. Words
    longer than ``max_chars`` are shortened; words are set by their length, so none overlaps another."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    words = [[shorten(w, max_chars) for w in row.words] for row in rows]
    most = max((len(w) for w in words), default=1)
    fontsize = 9 if most <= 24 else 7
    positions = [word_positions(w, fontsize) for w in words]
    arc_width = max(6.0, max((p[-1] - p[0] for p in positions if p), default=0.0) + 2.0)
    heat = min(4.5, max(2.6, 0.13 * most + 1.2))
    fig = plt.figure(figsize=(heat + arc_width, max(2.6, heat) * len(rows) + 0.7), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(len(rows), 2, width_ratios=[heat, arc_width])
    for k, (row, shown) in enumerate(zip(rows, words, strict=True)):
        im = heatmap(fig.add_subplot(grid[k, 0]), row.r_w, f"R_w ({row.variant})", labels=shown,
                     fontsize=7 if len(shown) <= 20 else 5)
        fig.colorbar(im, ax=im.axes, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        ax = fig.add_subplot(grid[k, 1])
        draw_arcs(ax, shown, row.pred, row.gold, fontsize, positions[k], parser_above)
        if shown:  # room for the first and last words, whatever their length
            first, last = word_widths([shown[0], shown[-1]], fontsize)
            ax.set_xlim(min(positions[k][0] - first / 2 - 0.15, ax.get_xlim()[0]),
                        max(positions[k][-1] + last / 2 + 0.15, ax.get_xlim()[1]))
        ax.set_title(row.title or row.variant, fontsize=9)
    where = ("above", "below") if parser_above else ("below", "above")
    handles = [Line2D([], [], color=PRED, lw=1.6, label=f"MST of R_w (the probe), {where[1]} the words"),
               Line2D([], [], color=GOLD, lw=1.6, label=f"parser (Stanza), {where[0]}")]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, ncols=2, frameon=False)
    if title:
        fig.suptitle(wrap(title, fig.get_figwidth(), 10), fontsize=10)
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


GRID_PAD, GRID_GAP, GRID_HEADER, GRID_LABEL, GRID_FRAME, GRID_LEGEND = 6, 18, 30, 20, 3, 30
GRID_FONT = 13


def grid_size(results_per_method: int, methods: int, rows: int, thumb: tuple[int, int]) -> tuple[int, int]:
    """(width, height) in pixels of a retrieval grid."""
    cols = 1 + methods * results_per_method
    width = 2 * GRID_PAD + cols * thumb[0] + (cols - 1) * GRID_PAD + methods * GRID_GAP
    height = GRID_HEADER + rows * (thumb[1] + GRID_LABEL + GRID_PAD) + GRID_PAD + GRID_LEGEND
    return width, height


def cell_origin(row: int, col: int, method: int, thumb: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of the thumbnail of a row and column (col 0: the query; method: 0 for the query)."""
    x = GRID_PAD + col * (thumb[0] + GRID_PAD) + method * GRID_GAP
    y = GRID_HEADER + row * (thumb[1] + GRID_LABEL + GRID_PAD)
    return x, y


def fit_text(face: ImageFont.FreeTypeFont, text: str, width: int) -> str:
    """``text`` cut (with an ellipsis) to at most ``width`` pixels."""
    if face.getlength(text) <= width:
        return text
    while text and face.getlength(text + ELLIPSIS) > width:
        text = text[:-1]
    return text + ELLIPSIS


def retrieval_grid(
    queries: Sequence[GridCell], results: dict[str, Sequence[Sequence[GridCell]]], path: str,
    thumb: tuple[int, int] = (160, 120), legend: str = "",
) -> str:
    """Fig. 4: one row per query: the query, then the top-K of each method (framed by relevance); a legend below."""
    methods = list(results)
    k = max((len(r) for res in results.values() for r in res), default=1)
    grid = Image.new("RGB", grid_size(k, len(methods), len(queries), thumb), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    head, small = font(GRID_FONT + 2), font(GRID_FONT)
    _header(draw, "query", cell_origin(0, 0, 0, thumb)[0], thumb[0], head)
    for m, name in enumerate(methods):
        x0 = cell_origin(0, 1 + m * k, m + 1, thumb)[0]
        x1 = cell_origin(0, k + m * k, m + 1, thumb)[0] + thumb[0]
        _header(draw, name, x0, x1 - x0, head)
        draw.line([(x0, GRID_HEADER - 6), (x1, GRID_HEADER - 6)], fill=(90, 90, 90), width=1)
    for r, query in enumerate(queries):
        _paste_cell(grid, draw, query, cell_origin(r, 0, 0, thumb), thumb, small)
        for m, name in enumerate(methods):
            for j, cell in enumerate(results[name][r]):
                _paste_cell(grid, draw, cell, cell_origin(r, 1 + m * k + j, m + 1, thumb), thumb, small)
    if any(c.relevant is not None for res in results.values() for row in res for c in row):
        _legend(draw, grid.size, legend, small)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path, format="PNG")
    return path


def _header(draw: ImageDraw.ImageDraw, text: str, x: int, width: int, face) -> None:
    text = fit_text(face, text, width)
    draw.text((x + (width - face.getlength(text)) / 2, GRID_HEADER - 10), text, font=face, fill=(0, 0, 0),
              anchor="ls")


def _legend(draw: ImageDraw.ImageDraw, size: tuple[int, int], text: str, face) -> None:
    y = size[1] - GRID_LEGEND // 2
    x = GRID_PAD
    for colour, words in ((RELEVANT, "relevant"), (IRRELEVANT, "not relevant")):
        draw.rectangle([x, y - 7, x + 22, y + 7], outline=colour, width=GRID_FRAME)
        draw.text((x + 28, y), words, font=face, fill=(0, 0, 0), anchor="lm")
        x += 28 + int(face.getlength(words)) + 18
    if text:
        draw.text((x, y), fit_text(face, text, size[0] - x - GRID_PAD), font=face, fill=(60, 60, 60), anchor="lm")


def _paste_cell(grid: Image.Image, draw: ImageDraw.ImageDraw, cell: GridCell, xy: tuple[int, int],
                thumb: tuple[int, int], face) -> None:
    grid.paste(thumbnail(cell.image, thumb), xy)
    if cell.relevant is not None:
        colour = RELEVANT if cell.relevant else IRRELEVANT
        x, y = xy
        draw.rectangle([x, y, x + thumb[0] - 1, y + thumb[1] - 1], outline=colour, width=GRID_FRAME)
    draw.text((xy[0] + 1, xy[1] + thumb[1] + 3), fit_text(face, cell.label, thumb[0] - 2), font=face,
              fill=(0, 0, 0), anchor="lt")
