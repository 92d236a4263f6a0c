"""``ssrp eval probe``: how well R_w recovers the parser's trees, and how stable R_v and R_w are.

Per caption variant (raw, de, ru, ...): UUAS (punctuation excluded) and Hewitt's Spearman averaged over
sentence lengths 5-50, each caption run with the raw view of its image. Stability: the mean cosine of
vectorised relation matrices (and of their projections z) between views of one image (R_v) and between
variants of one caption (R_w), against the same number of pairs from unrelated images / captions.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ssrp.eval.inference import Output, Pair, ProbeModel
from ssrp.eval.metrics import SpearmanByLength, UUASCounter, stability, upper_triangle
from ssrp.eval.select import caption_ids, caption_pairs, image_views

logger = logging.getLogger(__name__)

ALL = "all"


def evaluate_probe(model: ProbeModel, image_ids: list[int]) -> dict:
    """The metrics of a loaded model on the captions of ``image_ids``; a JSON-ready dict."""
    cfg = model.cfg
    pairs = caption_pairs(model.reader, image_ids)
    if not pairs:
        raise ValueError("no parsed captions among the selected images: nothing to evaluate")
    uuas: dict[str, UUASCounter] = {}
    spearman: dict[str, SpearmanByLength] = {}
    limit = cfg.stability_groups or len(image_ids)
    stable_captions = {cid for i in image_ids[:limit] for cid in caption_ids(model.reader, i, 1)}
    r_w_groups: dict[int, list[Output]] = {}
    for out in model.run(pairs, desc="probe: captions"):
        for key in (out.pair.variant, ALL):
            uuas.setdefault(key, UUASCounter()).add(out.r_w, out.gold, out.upos)
            spearman.setdefault(key, SpearmanByLength()).add(out.r_w, out.gold)
        if out.pair.caption_id in stable_captions:
            r_w_groups.setdefault(out.pair.caption_id, []).append(_light(out))
    variants = {
        key: {
            "sentences": uuas[key].sentences,
            "edges": uuas[key].total,
            "uuas": _num(uuas[key].value),
            "spearman": _num(spearman[key].mean(cfg.min_length, cfg.max_length)),
            "spearman_by_length": {str(n): v for n, v in spearman[key].per_length().items()},
        }
        for key in sorted(uuas, key=lambda k: (k == ALL, k != "raw", k))
    }
    size = model.train_cfg.stage2.max_nodes
    return {
        "checkpoint": model.ckpt_path,
        "corpus": model.corpus,
        "model_variant": model.train_cfg.model.variant,
        "images": len(image_ids),
        "spearman_lengths": [cfg.min_length, cfg.max_length],
        "variants": variants,
        "stability": {
            "R_v": _stability(_view_groups(model, image_ids[:limit]), "r_v", "z_v", size),
            "R_w": _stability(list(r_w_groups.values()), "r_w", "z_w", size),
        },
    }


def _light(out: Output) -> Output:
    """Keep only what the stability measure needs."""
    out.objects = np.zeros((0, 0), np.float32)
    return out


def _view_groups(model: ProbeModel, image_ids: list[int]) -> list[list[Output]]:
    """Each image's views, all with its first caption (raw), for the R_v stability."""
    pairs = []
    for image_id in image_ids:
        views = image_views(model.reader, image_id)
        cids = caption_ids(model.reader, image_id, 1)
        if len(views) >= 2 and cids:
            pairs += [Pair(image_id, cids[0], view, "raw") for view in views]
    groups: dict[int, list[Output]] = {}
    for out in model.run(pairs, desc="probe: views"):
        groups.setdefault(out.pair.image_id, []).append(_light(out))
    return list(groups.values())


def _stability(groups: list[list[Output]], matrix: str, proj: str, size: int) -> dict:
    if not any(len(g) >= 2 for g in groups):
        logger.warning("no %s stability: the corpus has one view/variant per item", matrix)
        return {"groups": 0}
    return {
        "groups": sum(len(g) >= 2 for g in groups),
        "matrix": _clean(stability([[upper_triangle(getattr(o, matrix), size) for o in g] for g in groups])),
        "projection": _clean(stability([[getattr(o, proj) for o in g] for g in groups])),
    }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _clean(d: dict) -> dict:
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in d.items()}


def _fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def format_table(result: dict) -> str:
    """The metrics as a plain-text table."""
    lo, hi = result["spearman_lengths"]
    lines = [
        f"SSRP-{result['model_variant']} probes on {result['images']} images ({result['checkpoint']})",
        f"{'variant':<10}{'sentences':>10}{'edges':>8}{'UUAS':>8}  Spearman({lo}-{hi})",
    ]
    for name, v in result["variants"].items():
        lines.append(f"{name:<10}{v['sentences']:>10}{v['edges']:>8}  {_fmt(v['uuas'])}  {_fmt(v['spearman'])}")
    lines.append("")
    lines.append(f"{'stability':<22}{'groups':>7}{'same':>8}{'unrel.':>8}{'gap':>8}")
    for rel, s in result["stability"].items():
        for rep in ("matrix", "projection"):
            if rep in s:
                m = s[rep]
                lines.append(f"{rel + ' ' + rep:<22}{s['groups']:>7}  {_fmt(m['same'])}  {_fmt(m['unrelated'])}"
                             f"  {_fmt(m['gap'])}")
        if "matrix" not in s:
            lines.append(f"{rel:<22}{0:>7}  (one view/variant per item)")
    return "\n".join(lines)
