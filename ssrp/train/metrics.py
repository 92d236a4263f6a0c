"""Probe metrics: minimum spanning trees of distance matrices and UUAS (Hewitt & Manning, 2019).

UUAS = |gold tree edges ∩ predicted tree edges| / |gold tree edges|, where the predicted tree is the
minimum spanning tree of the probe's distance matrix and the gold tree the one of the tree distances
(the MST of a tree metric is the tree itself). Words can be left out (e.g. punctuation) with ``keep``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat

import numpy as np

PUNCT_UPOS = frozenset({"PUNCT"})


def mst_edges(dist: np.ndarray) -> set[tuple[int, int]]:
    """Undirected edges (i < j) of a minimum spanning tree of a symmetric distance matrix (Prim, O(n^2))."""
    d = np.asarray(dist, dtype=np.float64)
    n = d.shape[0]
    if n < 2:
        return set()
    in_tree = np.zeros(n, bool)
    in_tree[0] = True
    best = d[0].copy()
    parent = np.zeros(n, dtype=np.int64)
    edges = set()
    for _ in range(n - 1):
        candidates = np.where(in_tree, np.inf, best)
        j = int(np.argmin(candidates))
        i = int(parent[j])
        edges.add((min(i, j), max(i, j)))
        in_tree[j] = True
        closer = d[j] < best
        best = np.where(closer, d[j], best)
        parent = np.where(closer, j, parent)
    return edges


def uuas_counts(pred: np.ndarray, gold: np.ndarray, keep: np.ndarray | None = None) -> tuple[int, int]:
    """(correct edges, gold edges) of one sentence, over the words in ``keep`` (default: all)."""
    n = gold.shape[0]
    idx = np.arange(n) if keep is None else np.flatnonzero(keep)
    if len(idx) < 2:
        return 0, 0
    sub = np.ix_(idx, idx)
    gold_edges = mst_edges(np.asarray(gold)[sub])
    pred_edges = mst_edges(np.asarray(pred)[sub])
    return len(gold_edges & pred_edges), len(gold_edges)


def uuas(pairs: Iterable[tuple[np.ndarray, np.ndarray]], keeps: Iterable[np.ndarray | None] | None = None) -> float:
    """Corpus-level UUAS over (predicted distances, gold tree distances) per sentence."""
    correct = total = 0
    keeps = keeps if keeps is not None else repeat(None)
    for (pred, gold), keep in zip(pairs, keeps, strict=False):
        c, t = uuas_counts(pred, gold, keep)
        correct, total = correct + c, total + t
    return correct / total if total else float("nan")


def non_punct(upos: Iterable[str]) -> np.ndarray:
    return np.array([u not in PUNCT_UPOS for u in upos], dtype=bool)
