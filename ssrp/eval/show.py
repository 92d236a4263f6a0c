"""``ssrp show``: the paper's Fig. 3 for one image of the corpus.

Writes ``image_<id>_relations.png``: a grid of the image's views (all of them, 2 x 7 for the 14 views of
Table 2: the unflipped views above, their flipped counterparts below; or the ``--views`` chosen), each with the
boxes of its ``show_objects`` most confident objects labelled by class name and the relation lines of
``show_edges`` (the minimum spanning tree of R_v by default), above the view's R_v heat-map among those
objects (one colour scale for all views); every view is run with the image's chosen caption, raw variant.
And ``caption_<cid>_trees.png``: for the caption and each paraphrase, the R_w heat-map, the MST of R_w as red
arcs above the sentence and the parser's tree as black arcs below it (``trees_parser_above``: the other way
round, as in the paper), run with the raw view.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from ssrp.eval.figures import TreeRow, ViewPanel, draw_relations, relation_figure, tree_figure, view_canvas
from ssrp.eval.inference import Pair, ProbeModel
from ssrp.eval.metrics import UUASCounter, gold_arcs, mst_edges
from ssrp.eval.select import caption_ids, caption_variants, image_views
from ssrp.views.config import ALL_VIEWS

logger = logging.getLogger(__name__)

EDGES = {"mst": "minimum spanning tree of R_v", "topk": "the {k} closest pairs", "all": "every pair"}


def show_image(model: ProbeModel, image_id: int, out: str, coco: str | None = None,
               caption_id: int | None = None, views: Sequence[str] | None = None) -> list[str]:
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
    chosen = choose_views(image_views(reader, image_id), views, image_id)
    os.makedirs(out, exist_ok=True)
    title = f"SSRP-{model.train_cfg.model.variant.capitalize()}: image {image_id}, caption {caption_id}"
    return [
        relations_png(model, image_id, caption_id, os.path.join(out, f"image_{image_id}_relations.png"), coco, title,
                      chosen),
        trees_png(model, image_id, caption_id, os.path.join(out, f"caption_{caption_id}_trees.png"), title),
    ]


def choose_views(available: Sequence[str], wanted: Sequence[str] | None, image_id: int) -> list[str]:
    """The views to draw, in the order asked for, or all of them in Table 2's order (unflipped, then flipped)."""
    if wanted:
        missing = [v for v in wanted if v not in available]
        if missing:
            raise ValueError(f"image {image_id} has no view {', '.join(missing)} (it has {', '.join(available)})")
        return list(dict.fromkeys(wanted))
    order = {v: i for i, v in enumerate(ALL_VIEWS)}
    return sorted(available, key=lambda v: (order.get(v, len(order)), v))


def relations_png(model: ProbeModel, image_id: int, caption_id: int, path: str, coco: str | None, title: str,
                  views: Sequence[str]) -> str:
    reader, cfg = model.reader, model.cfg
    outputs = model([Pair(image_id, caption_id, view, "raw") for view in views])
    panels, shown = [], 0
    for view, output in zip(views, outputs, strict=True):
        rec = reader.image(image_id, view)
        n = min(rec.num_boxes, output.r_v.shape[0], cfg.show_objects)
        labels = model.names.labels(rec.obj_ids[:n], cfg.label_chars)
        canvas = view_canvas(rec.width, rec.height, view, rec.file_name, coco)
        drawn = draw_relations(canvas, rec.boxes[:n], output.r_v[:n, :n], n, labels, cfg.show_edges, cfg.show_topk)
        panels.append(ViewPanel(view, drawn, output.r_v[:n, :n]))
        shown = max(shown, n)
    lines = EDGES[cfg.show_edges].format(k=cfg.show_topk)
    heading = (f"{title}\nthe {shown} most confident objects; lines: {lines} (darker = closer); "
               "below each view: R_v between them")
    return relation_figure(panels, path, heading, columns=cfg.show_columns)


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
    return tree_figure(rows, path, title, max_chars=model.cfg.label_chars, parser_above=model.cfg.trees_parser_above)
