import random

import numpy as np
import pytest
from parse_helpers import random_tree, reference_distances

from ssrp.parse.trees import (
    TreeError,
    merge_sentences,
    to_uint8,
    tree_distances,
    tree_distances_batch,
)


def test_distances_match_the_head_chain_walk_on_many_random_trees():
    rng = random.Random(0)
    trees = [random_tree(rng, rng.randint(1, 40)) for _ in range(400)]
    for heads, dist in zip(trees, tree_distances_batch(trees), strict=True):
        np.testing.assert_array_equal(dist, reference_distances(heads))


def test_forests_are_joined_under_a_virtual_root():
    rng = random.Random(1)
    forests = [random_tree(rng, n, roots=rng.randint(2, min(n, 4))) for n in rng.choices(range(2, 25), k=100)]
    for heads, dist in zip(forests, tree_distances_batch(forests), strict=True):
        np.testing.assert_array_equal(dist, reference_distances(heads))
    roots = np.flatnonzero(forests[0] == 0)
    assert tree_distances(forests[0])[roots[0], roots[1]] == 2


def test_symmetric_zero_diagonal_and_one_for_each_head_dependent_pair():
    rng = random.Random(2)
    for _ in range(100):
        heads = random_tree(rng, rng.randint(1, 36))
        dist = tree_distances(heads)
        np.testing.assert_array_equal(dist, dist.T)
        assert not np.diag(dist).any()
        off = dist + np.eye(len(heads), dtype=dist.dtype) * 99
        assert off.min() >= 1
        ones = {(i, j) for i, j in zip(*np.nonzero(dist == 1), strict=True)}
        edges = {(i, int(h) - 1) for i, h in enumerate(heads) if h} | {(int(h) - 1, i) for i, h in enumerate(heads) if h}
        assert ones == edges


def test_batch_keeps_the_input_order_and_equals_one_at_a_time():
    rng = random.Random(3)
    trees = [random_tree(rng, n) for n in [30, 1, 7, 0, 12, 3]]
    batch = tree_distances_batch(trees)
    assert [d.shape for d in batch] == [(len(t), len(t)) for t in trees]
    for heads, dist in zip(trees, batch, strict=True):
        np.testing.assert_array_equal(dist, tree_distances(heads))


@pytest.mark.parametrize("heads", [[0, 3], [2, 0, 4], [0, 2], [2, 3, 1], [-1, 0], [[0]]])
def test_invalid_heads_are_rejected(heads):
    with pytest.raises(TreeError):
        tree_distances(np.asarray(heads))


def test_distances_are_clipped_at_255_as_uint8():
    chain = np.arange(0, 300)  # word 1 is the root, word k+1 hangs off word k
    dist = tree_distances(chain)
    assert dist[0, 299] == 299
    stored = to_uint8(dist)
    assert stored.dtype == np.uint8 and stored[0, 299] == 255 and stored[0, 100] == 100


def test_attach_makes_later_roots_parataxis_dependents_of_the_first_root():
    first = ([2, 0, 2], ["det", "root", "punct"])  # "A dog ."
    second = ([2, 0, 2, 2], ["det", "root", "obj", "punct"])
    heads, deprels = merge_sentences([first, second], "attach")
    assert heads.tolist() == [2, 0, 2, 5, 2, 5, 5]
    assert deprels == ["det", "root", "punct", "det", "parataxis", "obj", "punct"]
    dist = tree_distances(heads)
    assert dist[0, 3] == 1 + 1 + 1  # det -> dog -> (parataxis) root2 -> det


def test_virtual_root_keeps_the_sentences_as_separate_trees():
    first = ([2, 0], ["det", "root"])
    second = ([0, 1], ["root", "obj"])
    heads, deprels = merge_sentences([first, second], "virtual_root")
    assert heads.tolist() == [2, 0, 0, 3]
    assert deprels == ["det", "root", "root", "obj"]
    dist = tree_distances(heads)
    assert dist[0, 3] == 1 + 1 + 1 + 1  # det -> root1 -> virtual root -> root2 -> obj
    with pytest.raises(ValueError):
        merge_sentences([first], "join")
