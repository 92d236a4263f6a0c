"""MST and UUAS."""

import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree
from train_helpers import random_heads, tree_distances

from ssrp.train.metrics import mst_edges, non_punct, uuas, uuas_counts


def test_mst_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 5, 17):
        d = rng.uniform(1, 10, (n, n))
        d = d + d.T
        ref = minimum_spanning_tree(np.triu(d, 1)).tocoo()
        assert mst_edges(d) == {(min(i, j), max(i, j)) for i, j in zip(ref.row, ref.col, strict=True)}


def test_gold_mst_is_the_tree_and_exact_distances_score_one():
    rng = np.random.default_rng(1)
    for _ in range(20):
        heads = random_heads(rng, int(rng.integers(2, 15)))
        gold = tree_distances(heads)
        edges = {(min(i, h - 1), max(i, h - 1)) for i, h in enumerate(heads) if h}
        assert mst_edges(gold) == edges
        noisy = gold + rng.uniform(0, 0.4, gold.shape)
        assert uuas_counts((noisy + noisy.T) / 2, gold) == (len(edges), len(edges))


def test_uuas_counts_wrong_edges_and_skips_punctuation():
    chain = tree_distances(np.array([0, 1, 2, 3]))  # 0-1-2-3
    star = tree_distances(np.array([0, 1, 1, 1]))  # 0-1, 0-2, 0-3
    assert uuas_counts(star.astype(float), chain) == (1, 3)
    assert uuas([(star.astype(float), chain), (chain.astype(float), chain)]) == pytest.approx(4 / 6)
    keep = non_punct(["NOUN", "VERB", "NOUN", "PUNCT"])
    assert uuas_counts(star.astype(float), chain, keep) == (1, 2)
