"""Probe metrics (Hewitt & Manning, 2019) and the stability of relation matrices across views.

* UUAS: the minimum spanning tree of the predicted distances against the gold tree, punctuation
  (upos ``PUNCT``) left out of both. The MST, UUAS and Spearman code is the trainer's (``ssrp.train.metrics``),
  re-exported here so evaluation and training validation count the same way.
* Spearman: for each sentence of length L and each of its words, the Spearman correlation between
  the word's predicted and gold distances to all L words; averaged per length, then over the lengths
  5-50 (``dev.spearmanr-5_50-mean`` of Hewitt's reporter).
* Stability: mean cosine between vectorised relation matrices of two views of the same image (or two
  variants of one caption), against the same number of pairs from unrelated images (captions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ssrp.train.heads import upper_triangle as heads_upper_triangle
from ssrp.train.metrics import (
    PUNCT_UPOS,
    SpearmanByLength,
    UUASCounter,
    mst_edges,
    non_punct,
    spearman_rows,
    uuas,
    uuas_counts,
)

__all__ = [
    "PUNCT_UPOS", "mst_edges", "non_punct", "uuas", "uuas_counts",
    "UUASCounter", "SpearmanByLength", "spearman_rows", "gold_arcs", "upper_triangle", "stability",
]


def gold_arcs(heads: Sequence[int], n: int | None = None) -> set[tuple[int, int]]:
    """Undirected (i < j) arcs of a dependency tree from 1-based heads (0 = root), over the first n words."""
    n = len(heads) if n is None else n
    arcs = set()
    for i, h in enumerate(heads[:n]):
        if 0 < int(h) <= n:
            j = int(h) - 1
            arcs.add((min(i, j), max(i, j)))
    return arcs


def upper_triangle(dist: np.ndarray, size: int) -> np.ndarray:
    """The strict upper triangle of a [n, n] matrix zero-padded to [size, size]: the projection heads' own
    vectorisation (ssrp.train.heads.upper_triangle), on one numpy matrix."""
    r = torch.as_tensor(np.asarray(dist, dtype=np.float32))[None]
    return heads_upper_triangle(r, torch.ones(r.shape[:2], dtype=torch.bool), size)[0].numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)


def stability(groups: Sequence[Sequence[np.ndarray]]) -> dict[str, float]:
    """Cosine between members of one group (views of an image, variants of a caption) and between
    members of neighbouring groups, with the same member pairs: (g, a) with (g+1 mod G, b) for a < b.

    Returns ``same`` (mean within-group cosine), ``unrelated`` (mean cross-group cosine), their
    difference ``gap`` and the number of pairs of each kind.
    """
    groups = [list(g) for g in groups if len(g) >= 2]
    same_a, same_b, other_a, other_b = [], [], [], []
    for g, members in enumerate(groups):
        nxt = groups[(g + 1) % len(groups)]
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                same_a.append(members[a])
                same_b.append(members[b])
                if len(groups) > 1 and b < len(nxt):
                    other_a.append(members[a])
                    other_b.append(nxt[b])
    same = _cosines(np.stack(same_a), np.stack(same_b)) if same_a else np.zeros(0)
    other = _cosines(np.stack(other_a), np.stack(other_b)) if other_a else np.zeros(0)
    s = float(same.mean()) if len(same) else float("nan")
    u = float(other.mean()) if len(other) else float("nan")
    return {"same": s, "unrelated": u, "gap": s - u, "same_pairs": len(same), "unrelated_pairs": len(other)}
