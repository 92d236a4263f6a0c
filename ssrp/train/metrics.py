"""Probe metrics: minimum spanning trees of distance matrices, UUAS and the distance Spearman (Hewitt &
Manning, 2019); training validation and ``ssrp eval probe`` both count with these.

UUAS = |gold tree edges ∩ predicted tree edges| / |gold tree edges|, where the predicted tree is the
minimum spanning tree of the probe's distance matrix and the gold tree the one of the tree distances
(the MST of a tree metric is the tree itself). Words can be left out (e.g. punctuation) with ``keep``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np
from scipy.stats import rankdata

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


def spearman_rows(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``pred`` with the same row of ``gold`` (ties: average ranks).

    Equals ``scipy.stats.spearmanr(pred[i], gold[i]).correlation`` row by row; a constant row gives NaN.
    """
    rp = rankdata(np.asarray(pred, np.float64), axis=1)
    rg = rankdata(np.asarray(gold, np.float64), axis=1)
    rp -= rp.mean(1, keepdims=True)
    rg -= rg.mean(1, keepdims=True)
    denom = np.sqrt((rp * rp).sum(1) * (rg * rg).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rp * rg).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)


class SpearmanByLength:
    """Hewitt's distance Spearman: per-word correlations pooled by sentence length."""

    def __init__(self) -> None:
        self.by_length: dict[int, list[float]] = defaultdict(list)

    def add(self, pred: np.ndarray, gold: np.ndarray) -> None:
        n = gold.shape[0]
        if n < 2:
            return
        self.by_length[n].extend(spearman_rows(pred[:n, :n], gold[:n, :n]).tolist())

    def per_length(self) -> dict[int, float]:
        """Mean correlation per sentence length (NaN rows, from constant predictions, left out)."""
        out = {}
        for n, values in sorted(self.by_length.items()):
            v = np.asarray(values, np.float64)
            v = v[~np.isnan(v)]
            if len(v):
                out[n] = float(v.mean())
        return out

    def mean(self, min_length: int = 5, max_length: int = 50) -> float:
        """The mean over lengths in [min_length, max_length] of the per-length means (NaN if none)."""
        vals = [v for n, v in self.per_length().items() if min_length <= n <= max_length]
        return float(np.mean(vals)) if vals else float("nan")


class UUASCounter:
    """Corpus-level UUAS: gold edges recovered by the predicted MST, punctuation excluded."""

    def __init__(self, exclude_upos: frozenset[str] = PUNCT_UPOS) -> None:
        self.exclude = exclude_upos
        self.correct = 0
        self.total = 0
        self.sentences = 0

    def keep(self, upos: Sequence[str]) -> np.ndarray:
        return np.array([u not in self.exclude for u in upos], dtype=bool)

    def add(self, pred: np.ndarray, gold: np.ndarray, upos: Sequence[str]) -> tuple[int, int]:
        n = gold.shape[0]
        c, t = uuas_counts(pred[:n, :n], gold, self.keep(upos[:n]))
        self.correct += c
        self.total += t
        self.sentences += 1
        return c, t

    @property
    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")
