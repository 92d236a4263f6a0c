import numpy as np
import pytest
from eval_helpers import random_heads, tree_distances
from scipy.stats import spearmanr

from ssrp.eval.metrics import (
    SpearmanByLength,
    UUASCounter,
    gold_arcs,
    mst_edges,
    spearman_rows,
    stability,
    upper_triangle,
)


def test_uuas_is_one_on_gold_distances():
    rng = np.random.default_rng(0)
    counter = UUASCounter()
    for n in range(2, 15):
        gold = tree_distances(random_heads(rng, n)).astype(float)
        counter.add(gold.copy(), gold, ["NOUN"] * n)
    assert counter.value == 1.0
    assert counter.total == sum(n - 1 for n in range(2, 15))


def test_known_mst_and_its_uuas():
    # nodes 0-1 (1.0), 1-2 (2.0), 1-3 (1.5) are the cheapest edges that connect all four nodes
    pred = np.array([
        [0.0, 1.0, 4.0, 3.0],
        [1.0, 0.0, 2.0, 1.5],
        [4.0, 2.0, 0.0, 2.5],
        [3.0, 1.5, 2.5, 0.0],
    ])
    assert mst_edges(pred) == {(0, 1), (1, 2), (1, 3)}
    # gold: the chain 0-1-2-3, so 2 of its 3 edges are predicted
    gold = tree_distances(np.array([0, 1, 2, 3]))
    counter = UUASCounter()
    assert counter.add(pred, gold, ["NOUN"] * 4) == (2, 3)
    assert counter.value == pytest.approx(2 / 3)


def test_punctuation_is_excluded_from_both_trees():
    # chain a-b-c with '.' attached to c; the prediction attaches '.' to a: its only mistake
    gold = tree_distances(np.array([2, 3, 0, 3]))
    pred = gold.astype(float).copy()
    pred[3, :] = pred[:, 3] = [1.0, 2.0, 3.0, 0.0]
    upos = ["DET", "NOUN", "VERB", "PUNCT"]
    with_punct = UUASCounter(exclude_upos=frozenset())
    assert with_punct.add(pred, gold, upos) == (2, 3)
    without = UUASCounter()
    assert without.add(pred, gold, upos) == (2, 2)
    assert without.value == 1.0


def test_punctuation_in_the_middle_leaves_a_tree_over_the_other_words():
    # a , b : ',' (index 1) between two words that both hang off it in the gold tree
    gold = tree_distances(np.array([2, 0, 2]))
    pred = np.array([[0, 5, 1], [5, 0, 5], [1, 5, 0]], float)
    c, t = UUASCounter().add(pred, gold, ["NOUN", "PUNCT", "NOUN"])
    assert (c, t) == (1, 1)


def test_spearman_rows_matches_scipy():
    rng = np.random.default_rng(1)
    pred = rng.random((6, 6))
    gold = rng.integers(0, 4, (6, 6)).astype(float)  # ties, as in tree distances
    ref = [spearmanr(p, g).statistic for p, g in zip(pred, gold, strict=True)]
    np.testing.assert_allclose(spearman_rows(pred, gold), ref, rtol=1e-10)


def test_spearman_of_a_monotone_transform_is_one():
    rng = np.random.default_rng(2)
    s = SpearmanByLength()
    for n in (5, 7, 12):
        gold = tree_distances(random_heads(rng, n)).astype(float)
        s.add(np.exp(gold) * 3 + 1, gold)
    assert s.mean() == pytest.approx(1.0)
    assert set(s.per_length()) == {5, 7, 12}


def test_spearman_is_averaged_per_length_then_over_lengths_5_to_50():
    rng = np.random.default_rng(3)
    g5a, g5b, g6, g4 = (tree_distances(random_heads(rng, n)).astype(float) for n in (5, 5, 6, 4))
    s = SpearmanByLength()
    s.add(g5a, g5a)  # every row: +1
    s.add(-g5b, g5b)  # every row: -1
    s.add(g6, g6)  # +1
    s.add(-g4, g4)  # length 4: outside 5-50
    assert s.per_length()[5] == pytest.approx(0.0)
    assert s.per_length()[4] == pytest.approx(-1.0)
    assert s.mean(5, 50) == pytest.approx(0.5)  # (0 + 1) / 2, not the per-word mean 6/16
    assert s.mean(4, 50) == pytest.approx(0.0)  # (-1 + 0 + 1) / 3
    assert np.isnan(s.mean(20, 50))


def test_gold_arcs_from_heads():
    assert gold_arcs([2, 0, 2, 3]) == {(0, 1), (1, 2), (2, 3)}
    assert gold_arcs([2, 0, 2, 3], n=3) == {(0, 1), (1, 2)}


def test_upper_triangle_pads_like_the_projection_heads():
    d = np.arange(9, dtype=float).reshape(3, 3)
    v = upper_triangle(d, 4)
    assert v.shape == (6,)
    np.testing.assert_array_equal(v, [1, 2, 0, 5, 0, 0])
    with pytest.raises(ValueError, match="does not fit"):
        upper_triangle(np.zeros((5, 5)), 4)


def test_stability_same_against_unrelated():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    groups = [[a, a, a], [b, b, b]]
    s = stability(groups)
    assert s["same"] == pytest.approx(1.0)
    assert s["unrelated"] == pytest.approx(0.0)
    assert s["gap"] == pytest.approx(1.0)
    assert s["same_pairs"] == 6 and s["unrelated_pairs"] == 6
    c = np.array([1.0, 1.0])
    s2 = stability([[a, c], [b, b]])
    assert s2["same"] == pytest.approx((1 / np.sqrt(2) + 1) / 2)
    # unrelated: (a, b) from group 0 to 1, and (b, c) from group 1 to 0
    assert s2["unrelated"] == pytest.approx((0 + 1 / np.sqrt(2)) / 2)
