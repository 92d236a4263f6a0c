"""Dependency trees as head arrays, and the pairwise tree distances the textual probe learns (paper Eq. 5).

A sentence of ``n`` words is a head array ``heads[i]`` in 0..n: 1-based index of word i's head, 0 for a root
(CoNLL-U). Node 0 is a virtual root above every word whose head is 0, so a forest (several roots) is a tree
too: two roots are at distance 2, through the virtual root. With one root, node 0 is a leaf above it and
changes no distance between words.

Distances are computed for many sentences at once, without a Python loop over word pairs: the ancestor
matrix ``A[i, k] = k is i or an ancestor of i`` of each tree, then

    d(i, j) = depth(i) + depth(j) - 2 * depth(lca(i, j)),   depth(lca(i, j)) = (A @ A.T)[i, j] - 1

because the common ancestors of i and j are exactly the ancestors of their lowest common ancestor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_UINT8 = 255
CHUNK = 256  # sentences per batched computation (bounded memory: CHUNK * (n+1)^2 floats)


class TreeError(ValueError):
    """A head array that is not a tree (head out of range, or a cycle)."""


def check_heads(heads: np.ndarray) -> np.ndarray:
    """Return ``heads`` as int64, or raise TreeError if it is not a forest over 1..n."""
    heads = np.asarray(heads)
    if heads.ndim != 1:
        raise TreeError(f"heads must be 1-d, got shape {heads.shape}")
    n = len(heads)
    if n and (heads.min() < 0 or heads.max() > n):
        raise TreeError(f"heads must lie in 0..{n}, got {heads.tolist()}")
    if n and np.any(heads == np.arange(1, n + 1)):
        raise TreeError(f"a word cannot be its own head: {heads.tolist()}")
    return heads.astype(np.int64)


def _ancestors(parents: np.ndarray) -> np.ndarray:
    """Ancestor-or-self matrices [B, M, M] for parent arrays [B, M] (node 0 is the virtual root)."""
    b, m = parents.shape
    anc = np.zeros((b, m, m), dtype=bool)
    rows = np.arange(b)[:, None]
    cols = np.broadcast_to(np.arange(m), (b, m))
    cur = cols.copy()
    anc[rows, cols, cur] = True
    for _ in range(m):
        cur = np.take_along_axis(parents, cur, axis=1)
        anc[rows, cols, cur] = True
        if not cur.any():
            return anc
    raise TreeError("heads contain a cycle: some word never reaches the root")


def _distance_chunk(heads_list: Sequence[np.ndarray]) -> list[np.ndarray]:
    m = max(len(h) for h in heads_list) + 1
    parents = np.zeros((len(heads_list), m), dtype=np.int64)  # padding nodes hang off the virtual root
    for row, heads in enumerate(heads_list):
        parents[row, 1 : len(heads) + 1] = heads
    anc = _ancestors(parents)
    depth = anc.sum(axis=2, dtype=np.int64) - 1
    a = anc.astype(np.float32)
    common = np.rint(a @ a.transpose(0, 2, 1)).astype(np.int64)  # = depth(lca) + 1
    dist = depth[:, :, None] + depth[:, None, :] - 2 * (common - 1)
    return [dist[row, 1 : len(h) + 1, 1 : len(h) + 1].astype(np.int32) for row, h in enumerate(heads_list)]


def tree_distances_batch(heads_list: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Pairwise word distances (int32 [n, n]) in each tree, for many sentences at once.

    Sentences are grouped by length so padding stays small; the output keeps the input order.
    """
    checked = [check_heads(h) for h in heads_list]
    out: list[np.ndarray | None] = [None] * len(checked)
    order = sorted(range(len(checked)), key=lambda i: len(checked[i]))
    for start in range(0, len(order), CHUNK):
        idx = order[start : start + CHUNK]
        nonempty = [i for i in idx if len(checked[i])]
        for i in idx:
            if not len(checked[i]):
                out[i] = np.zeros((0, 0), np.int32)
        if nonempty:
            for i, dist in zip(nonempty, _distance_chunk([checked[i] for i in nonempty]), strict=True):
                out[i] = dist
    return out  # type: ignore[return-value]


def tree_distances(heads: np.ndarray) -> np.ndarray:
    """Pairwise word distances (int32 [n, n]) in one tree or forest given by its head array."""
    return tree_distances_batch([heads])[0]


def to_uint8(dist: np.ndarray) -> np.ndarray:
    """Distances as stored in a TextRecord: uint8, clipped at 255."""
    return np.minimum(dist, MAX_UINT8).astype(np.uint8)


def merge_sentences(
    sentences: Sequence[tuple[Sequence[int], Sequence[str]]], policy: str
) -> tuple[np.ndarray, list[str]]:
    """Join the trees of the sentences Stanza found in one caption into one head array.

    ``sentences`` holds (heads, deprels) per sentence, heads 1-based within that sentence. Policies:

    * ``attach``: every later sentence's root becomes a dependent of the first sentence's root with
      deprel ``parataxis`` (UD's relation for juxtaposed clauses); the result has exactly one root.
    * ``virtual_root``: the sentences stay separate trees under the virtual root (several 0 heads);
      words in different sentences are then at distance depth(i) + depth(j), through the virtual root.

    (``reject`` is handled by the caller, which turns a multi-sentence caption into a dead letter.)
    """
    if policy not in ("attach", "virtual_root"):
        raise ValueError(f"unknown multi-sentence policy {policy!r}; use 'attach' or 'virtual_root'")
    heads: list[int] = []
    deprels: list[str] = []
    first_root = 0
    for sent_heads, sent_deprels in sentences:
        offset = len(heads)
        for h, rel in zip(sent_heads, sent_deprels, strict=True):
            if h == 0 and first_root and policy == "attach":
                heads.append(first_root)
                deprels.append("parataxis")
                continue
            if h == 0 and not first_root:
                first_root = len(heads) + 1
            heads.append(h + offset if h else 0)
            deprels.append(rel)
    return np.asarray(heads, dtype=np.int64), deprels
