"""``ssrp retrieve``: image-to-image retrieval as in the paper's Fig. 4.

Image features: the encoder's object states V [N, H] of the image's raw view and its relation matrix
R_v [N, N], each averaged over the image's captions (``image_captions``; the Cross and joint-Share
encoders let the caption change them, the Visual encoder does not).

* **Obj.**: the mean of the object states, ``mean_i V_i``.
* **Obj.+Rel.**: each object's state propagated over the predicted relationship graph, then averaged:
  ``A = softmax_j(-R_v[i, j] / t)`` row by row, ``mean_i (A V)_i``. The diagonal (R_ii = 0) keeps each
  object's own state in the mix; ``t`` is ``rel_temperature``, or by default each image's median
  off-diagonal distance, so the enhancement does not depend on the scale of R_v.

Images are ranked by the cosine similarity of these vectors. Relevance (for the recall table): a
retrieved image is relevant if the detector found the query's most confident object label in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ssrp.corpus import CorpusReader
from ssrp.eval.figures import GridCell, draw_boxes, retrieval_grid, view_canvas
from ssrp.eval.inference import Output, Pair, ProbeModel
from ssrp.eval.labels import shorten
from ssrp.eval.select import caption_ids

logger = logging.getLogger(__name__)

OBJ, OBJ_REL = "Obj.", "Obj.+Rel."
METHOD_TITLES = {OBJ: "Obj.: mean object feature", OBJ_REL: "Obj.+Rel.: object features propagated over R_v"}


@dataclass
class ImageFeatures:
    image_id: int
    objects: np.ndarray  # [N, H] mean over captions of the refined object states
    r_v: np.ndarray  # [N, N] mean over captions of R_v
    outputs: list[Output]  # the per-caption outputs (raw view, raw variant)


def image_pairs(reader: CorpusReader, image_ids: list[int], captions: int = 0) -> list[Pair]:
    return [Pair(i, c, "raw", "raw") for i in image_ids for c in caption_ids(reader, i, captions)]


def image_features(model: ProbeModel, image_ids: list[int], captions: int = 0, desc: str = "images"):
    """Yields ``ImageFeatures`` per image, in order (images without captions are skipped)."""
    pairs = image_pairs(model.reader, image_ids, captions)
    current: list[Output] = []
    for out in model.run(pairs, desc=desc):
        if current and current[0].pair.image_id != out.pair.image_id:
            yield _average(current)
            current = []
        current.append(out)
    if current:
        yield _average(current)


def _average(outputs: list[Output]) -> ImageFeatures:
    objects = np.mean([o.objects for o in outputs], axis=0)
    r_v = np.mean([o.r_v for o in outputs], axis=0)
    return ImageFeatures(outputs[0].pair.image_id, objects, r_v, outputs)


def relation_weights(r_v: np.ndarray, temperature: float = 0.0) -> np.ndarray:
    """Row-stochastic A = softmax(-R_v / t); t = 0 means the median off-diagonal distance."""
    r = np.asarray(r_v, np.float64)
    n = len(r)
    if n < 2:
        return np.ones((n, n))
    t = temperature or float(np.median(r[~np.eye(n, dtype=bool)]))
    logits = -r / max(t, 1e-6)
    logits -= logits.max(1, keepdims=True)
    w = np.exp(logits)
    return w / w.sum(1, keepdims=True)


def enhance(objects: np.ndarray, r_v: np.ndarray, temperature: float = 0.0) -> np.ndarray:
    """Relationship-enhanced object features A V."""
    return relation_weights(r_v, temperature) @ np.asarray(objects, np.float64)


def obj_vector(objects: np.ndarray) -> np.ndarray:
    return np.asarray(objects, np.float64).mean(0)


def obj_rel_vector(objects: np.ndarray, r_v: np.ndarray, temperature: float = 0.0) -> np.ndarray:
    return enhance(objects, r_v, temperature).mean(0)


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def rank(x: np.ndarray) -> np.ndarray:
    """[M, M]: row q lists the gallery indices by decreasing cosine similarity to item q."""
    return np.argsort(-cosine_matrix(x), axis=1, kind="stable")


def top_labels(reader: CorpusReader, image_ids: list[int]) -> tuple[list[int | None], list[set[int]]]:
    """Each image's most confident detector label (None without detections) and its set of labels."""
    tops, sets = [], []
    for i in image_ids:
        rec = reader.image(i, "raw")
        if rec.num_boxes == 0:
            tops.append(None)
            sets.append(set())
            continue
        tops.append(int(rec.obj_ids[int(np.argmax(rec.obj_conf))]))
        sets.append({int(x) for x in rec.obj_ids})
    return tops, sets


def relevance(order: np.ndarray, tops: list[int | None], sets: list[set[int]]) -> list[np.ndarray | None]:
    """Per query, the relevance of its ranked results with the query itself removed (None: no label)."""
    out: list[np.ndarray | None] = []
    for q, row in enumerate(order):
        if tops[q] is None:
            out.append(None)
            continue
        out.append(np.array([tops[q] in sets[j] for j in row if j != q], dtype=bool))
    return out


def recall_table(order: np.ndarray, tops: list[int | None], sets: list[set[int]], ks: tuple[int, ...]) -> dict:
    """R@K (a relevant image among the top K, the query itself excluded) and P@K (the relevant fraction),
    over the queries that have a label and at least one relevant image in the gallery."""
    rel = [r for r in relevance(order, tops, sets) if r is not None and r.any()]
    table: dict = {"queries": len(rel)}
    for k in ks:
        table[f"R@{k}"] = float(np.mean([r[:k].any() for r in rel])) if rel else None
        table[f"P@{k}"] = float(np.mean([r[:k].mean() for r in rel])) if rel else None
    return table


def format_recall(tables: dict[str, dict], ks: tuple[int, ...]) -> str:
    head = f"{'method':<12}{'queries':>8}" + "".join(f"{f'R@{k}':>8}{f'P@{k}':>8}" for k in ks)
    lines = [head]
    for name, t in tables.items():
        cells = "".join(
            f"{'-' if t[f'R@{k}'] is None else format(t[f'R@{k}'], '.3f'):>8}"
            f"{'-' if t[f'P@{k}'] is None else format(t[f'P@{k}'], '.3f'):>8}" for k in ks
        )
        lines.append(f"{name:<12}{t['queries']:>8}{cells}")
    return "\n".join(lines)


def retrieve(model: ProbeModel, image_ids: list[int], out: str, coco: str | None = None) -> dict:
    """Rank every selected image against all others with both methods; write the grid and the table."""
    import json
    import os

    cfg = model.cfg
    ids, obj, rel = [], [], []
    for f in image_features(model, image_ids, cfg.image_captions, desc="retrieve: images"):
        ids.append(f.image_id)
        obj.append(obj_vector(f.objects))
        rel.append(obj_rel_vector(f.objects, f.r_v, cfg.rel_temperature))
    if len(ids) < 2:
        raise ValueError(f"retrieval needs at least 2 images with captions, got {len(ids)}")
    orders = {OBJ: rank(np.stack(obj)), OBJ_REL: rank(np.stack(rel))}
    tops, sets = top_labels(model.reader, ids)
    os.makedirs(out, exist_ok=True)
    result = {
        "checkpoint": model.ckpt_path,
        "corpus": model.corpus,
        "images": len(ids),
        "relevance": "the retrieved image's detections include the query's most confident object label",
        "recall": {m: recall_table(o, tops, sets, cfg.recall_ks) for m, o in orders.items()},
        "queries": [
            {"image_id": ids[q], "top_label": tops[q],
             **{m: [ids[j] for j in o[q] if j != q][: cfg.topk] for m, o in orders.items()}}
            for q in range(min(cfg.grid_queries, len(ids)))
        ],
        "grid": write_grid(model, ids, orders, tops, sets, os.path.join(out, "retrieval.png"), coco),
    }
    with open(os.path.join(out, "retrieval.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    return result


def write_grid(model: ProbeModel, ids: list[int], orders: dict[str, np.ndarray], tops: list[int | None],
               sets: list[set[int]], path: str, coco: str | None) -> str:
    """The Fig. 4 grid: each query with the box of its most confident object, and each result with the boxes of
    that class (when it has it), all labelled by class name."""
    cfg, names = model.cfg, model.names

    def name(label: int | None) -> str:
        return "no objects" if label is None else names.object(label)

    def picture(j: int, label: int | None, boxes: int):
        rec = model.reader.image(ids[j], "raw")
        canvas = view_canvas(rec.width, rec.height, "raw", rec.file_name, coco)
        keep = [i for i, o in enumerate(rec.obj_ids) if label is not None and int(o) == label][:boxes]
        return draw_boxes(canvas, rec.boxes[keep]) if keep else canvas

    queries = list(range(min(cfg.grid_queries, len(ids))))
    cells = [GridCell(picture(q, tops[q], 1), f"query {ids[q]}: {shorten(name(tops[q]), cfg.label_chars)}")
             for q in queries]
    results = {}
    for method, order in orders.items():
        results[METHOD_TITLES.get(method, method)] = [
            [GridCell(picture(j, tops[q], 3), f"{ids[j]}: {shorten(name(tops[j]), cfg.label_chars)}",
                      None if tops[q] is None else tops[q] in sets[j])
             for j in [j for j in order[q] if j != q][: cfg.topk]]
            for q in queries
        ]
    legend = ("relevant: the detector found the query's most confident object class (named under the query; "
              "its boxes drawn) in the result")
    return retrieval_grid(cells, results, path, cfg.thumb_size, legend)
