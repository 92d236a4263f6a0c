"""Reference computations and fakes for the parse tests."""

from __future__ import annotations

import random

import numpy as np


def random_tree(rng: random.Random, n: int, roots: int = 1) -> np.ndarray:
    """Heads (1-based, 0 = root) of a random tree, or forest of ``roots`` trees, over n words."""
    order = list(range(1, n + 1))
    rng.shuffle(order)
    heads = np.zeros(n, np.int64)
    for pos, word in enumerate(order):
        if pos >= roots:
            heads[word - 1] = order[rng.randrange(pos)]
    return heads


def chain_distance(heads, i: int, j: int) -> int:
    """Brute force, as in Hewitt & Manning's structural probes: walk both head chains (to the virtual
    root 0) and meet at the lowest common ancestor. i, j are 0-based word indices."""
    def chain(k):
        path = [k + 1]
        while path[-1] != 0:
            path.append(int(heads[path[-1] - 1]))
        return path

    a, b = chain(i), chain(j)
    for steps_a, node in enumerate(a):
        if node in b:
            return steps_a + b.index(node)
    raise AssertionError("chains do not meet")


def reference_distances(heads) -> np.ndarray:
    n = len(heads)
    return np.array([[chain_distance(heads, i, j) for j in range(n)] for i in range(n)], dtype=np.int64).reshape(n, n)
