"""Exact single-root maximum spanning arborescence, with vectorised contraction steps.

Stanza's graph parser decodes each sentence with ``chuliu_edmonds_one_root`` (Dozat's Chu-Liu-Edmonds
in pure Python, with the single-root reweighting of Stanojevic & Cohen 2021). On caption-sized
sentences that decoding is about half of bulk parsing time. ``one_root_tree`` computes the same tree:
the same reweighting, then Chu-Liu-Edmonds whose contraction of a cycle is a handful of numpy
operations on the score matrix. Both return the unique optimum, so they agree whenever the optimum is
unique (always, with real-valued scores, up to exact ties); tests/parse/test_parse_mst.py checks
equality against Stanza's function on thousands of score matrices.

``scores[d, h]`` is the score of word ``h`` heading word ``d``; index 0 is the root.
"""

from __future__ import annotations

import numpy as np

_NEG = -np.inf


def _prepare(scores: np.ndarray) -> np.ndarray:
    np.fill_diagonal(scores, _NEG)  # no self-loops
    scores[0] = _NEG  # the root has no head...
    scores[0, 0] = 0.0  # ...except itself, as Stanza's prepare_scores does
    return scores


def _find_cycle(heads: np.ndarray) -> np.ndarray | None:
    """The nodes of one cycle in a head array (node 0 is the root and heads itself), or None."""
    parent = heads.tolist()  # plain ints: this walk is the decoder's only Python loop
    state = [0] * len(parent)  # 0 unvisited, 1 on the current path, 2 done
    state[0] = 2
    for start in range(1, len(parent)):
        path = []
        node = start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = parent[node]
        if state[node] == 1:  # walked back into the current path: a cycle
            return np.array(path[path.index(node) :], dtype=np.int64)
        for p in path:
            state[p] = 2
    return None


def _arborescence(scores: np.ndarray) -> np.ndarray:
    """Maximum spanning arborescence rooted at 0 of a prepared score matrix (Chu-Liu-Edmonds)."""
    heads = scores.argmax(axis=1)
    cycle = _find_cycle(heads)
    if cycle is None:
        return heads
    in_cycle = np.zeros(len(heads), bool)
    in_cycle[cycle] = True
    rest = np.flatnonzero(~in_cycle)  # rest[0] == 0, the root
    m = len(rest) + 1  # the contracted cycle is the last node
    sub = np.full((m, m), _NEG)
    sub[: m - 1, : m - 1] = scores[np.ix_(rest, rest)]
    out_of_cycle = scores[np.ix_(rest, cycle)]  # a cycle node heading a rest node
    best_cycle_head = cycle[out_of_cycle.argmax(axis=1)]
    sub[: m - 1, m - 1] = out_of_cycle.max(axis=1)
    into_cycle = scores[np.ix_(cycle, rest)] - scores[cycle, heads[cycle]][:, None]  # gain of breaking the cycle
    entering = cycle[into_cycle.argmax(axis=0)]
    sub[m - 1, : m - 1] = into_cycle.max(axis=0)
    _prepare(sub)
    sub_heads = _arborescence(sub)
    tree = heads.copy()
    nodes, sub = rest[1:], sub_heads[1 : m - 1]  # rest nodes other than the root, and their contracted heads
    outside = sub < m - 1
    tree[nodes[outside]] = rest[sub[outside]]
    tree[nodes[~outside]] = best_cycle_head[1:][~outside]  # headed by the cycle: its best node for them
    h = sub_heads[m - 1]  # the rest node that heads the contracted cycle
    tree[entering[h]] = rest[h]
    return tree


def one_root_tree(scores: np.ndarray) -> np.ndarray:
    """The best tree with exactly one word attached to the root; a drop-in for Stanza's
    ``chuliu_edmonds_one_root`` (same reweighting of root arcs, same input and output)."""
    scores = np.array(scores, dtype=np.float64)
    min_score = scores[np.isfinite(scores)].min()
    scores[:, 0] = scores[:, 0] + min_score * scores.shape[0]
    tree = _arborescence(_prepare(scores))
    if int(np.sum(tree[1:] == 0)) != 1:
        raise AssertionError("root reweighting should leave exactly one root arc")
    return tree
