"""Exact single-root maximum spanning arborescence: Stanza's trees, several times faster.

Stanza's graph parser decodes each sentence with ``chuliu_edmonds_one_root`` (Dozat's Chu-Liu-Edmonds
in pure Python, with the single-root reweighting of Stanojevic & Cohen 2021). The reweighting pushes every
root arc far down, so its decoder contracts about one cycle per word, each contraction rebuilding the score
matrix with numpy; on caption-sized sentences that was about half of bulk parsing time. ``one_root_tree``
returns the same tree in two steps:

1. **Argmax tree.** When each word's best head (over the scores as given) already forms a tree with
   exactly one word on the root, that tree is the answer: it is the best of all head assignments, so the
   best single-rooted tree; and the reweighting adds the same constant to every single-rooted tree and
   makes any tree with more root arcs worse, so it is Stanza's optimum too. (Only when the reweighting
   constant is not positive, as it is for log-probabilities; otherwise step 2 decides, as Stanza does.)
2. **Otherwise** the same reweighted scores, decoded by Edmonds' algorithm in Tarjan's path-growing form
   for dense graphs: each contraction merges the cycle's incoming-score rows (O(n) each) instead of
   rebuilding the matrix, so a sentence costs O(n^2) list operations however many cycles it contracts.

Both return the unique optimum, so they agree with Stanza whenever the optimum is unique (always, with
real-valued scores, up to exact ties); tests/parse/test_parse_mst.py checks equality against Stanza's
function on thousands of score matrices, and on the sample captions through the real pipeline.

``scores[d, h]`` is the score of word ``h`` heading word ``d``; index 0 is the root.
"""

from __future__ import annotations

import numpy as np

_NEG = float("-inf")


def _find_cycle(heads) -> list[int] | None:
    """The nodes of one cycle in a head array (node 0 is the root and heads itself), or None."""
    parent = list(heads)
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
            return path[path.index(node) :]
        for p in path:
            state[p] = 2
    return None


def max_arborescence(w: list[list[float]]) -> list[int]:
    """Maximum spanning arborescence rooted at node 0 of a dense score table, ``w[d][h]`` the score of
    arc h -> d (row 0 and the diagonal are ignored). Edmonds' algorithm, Tarjan's path-growing form:
    follow best incoming arcs from an unsettled node until they reach a settled node (the root or a
    node already connected to it) or close a cycle; a cycle becomes one node whose incoming score from
    each head is its members' best, less the score of the member's own cycle arc. Ties go to the lowest
    head index, as ``argmax`` does."""
    n = len(w)
    rep = list(range(n))  # the top-level node that contains each original node
    inc: dict[int, list[float]] = {v: list(w[v]) for v in range(1, n)}  # node -> score from each head
    dep: dict[int, list[int]] = {v: [v] * n for v in range(1, n)}  # node -> dependent of that best arc
    for v in range(1, n):
        inc[v][v] = _NEG  # no self-loop
    enter: dict[int, tuple[int, int, float]] = {}  # node -> (dependent, head, score) of its chosen arc
    parent: dict[int, int] = {}  # node -> the cycle node it was contracted into
    members: dict[int, list[int]] = {}  # cycle node -> the nodes it contracts
    settled = {0}
    heads_range = range(n)
    next_id = n
    for start in range(1, n):
        a = rep[start]
        if a in settled:
            continue
        path = [a]
        while True:
            row = inc[a]
            h = row.index(max(row))  # first maximum; internal heads are -inf
            if row[h] == _NEG:  # nothing finite enters: the first head outside, as argmax would take
                h = next(u for u in heads_range if rep[u] != a)
            enter[a] = (dep[a][h], h, row[h])
            b = rep[h]
            if b in settled:
                settled.update(path)
                break
            if b not in path:
                path.append(b)
                a = b
                continue
            i = path.index(b)  # a cycle: the end of the path from b
            cycle = path[i:]
            del path[i:]
            x = next_id
            next_id += 1
            members[x] = cycle
            new_inc = new_dep = None
            for c in cycle:
                score = enter[c][2]
                row_c, dep_c = inc.pop(c), dep.pop(c)
                parent[c] = x
                if new_inc is None:
                    new_inc = [s - score for s in row_c]
                    new_dep = list(dep_c)
                    continue
                shifted = [s - score for s in row_c]
                for u in [u for u, (s, t) in enumerate(zip(shifted, new_inc, strict=True)) if s > t]:
                    new_inc[u] = shifted[u]
                    new_dep[u] = dep_c[u]
            in_cycle = set(cycle)
            for u in heads_range:
                if rep[u] in in_cycle:
                    rep[u] = x
                    new_inc[u] = _NEG  # now an arc inside x
            inc[x], dep[x] = new_inc, new_dep
            path.append(x)
            a = x
    # expand: a node entered at original dependent d passes that entry to its member containing d;
    # every other member keeps its own (cycle) arc
    tree = [0] * n
    stack = []
    for x in settled:
        if x:
            d, h, _ = enter[x]
            tree[d] = h
            stack.append((x, d))
    while stack:
        x, d_in = stack.pop()
        if x < n:
            continue
        entered = d_in
        while parent[entered] != x:
            entered = parent[entered]
        for c in members[x]:
            if c == entered:
                stack.append((c, d_in))
            else:
                d, h, _ = enter[c]
                tree[d] = h
                stack.append((c, d))
    return tree


def _argmax_tree(s: np.ndarray) -> list[int] | None:
    """Each word's best head, if that is a tree with exactly one word on the root (diagonal already -inf)."""
    heads = s.argmax(axis=1).tolist()
    heads[0] = 0
    if heads.count(0) != 2:  # the root itself and one word
        return None
    return None if _find_cycle(heads) is not None else heads


def one_root_tree(scores: np.ndarray) -> np.ndarray:
    """The best tree with exactly one word attached to the root; a drop-in for Stanza's
    ``chuliu_edmonds_one_root`` (same reweighting of root arcs, same input and output)."""
    s = np.array(scores, dtype=np.float64)
    n = s.shape[0]
    min_score = s[np.isfinite(s)].min()
    np.fill_diagonal(s, _NEG)
    if min_score <= 0 and (tree := _argmax_tree(s)) is not None:
        return np.array(tree)
    s[:, 0] += min_score * n
    tree = np.array(max_arborescence(s.tolist()))
    if int(np.sum(tree[1:] == 0)) != 1:
        raise AssertionError("root reweighting should leave exactly one root arc")
    return tree
