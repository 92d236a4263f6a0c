"""The vectorised single-root decoder equals Stanza's Chu-Liu-Edmonds on many score matrices."""

import numpy as np
import pytest
from stanza.models.common.chuliu_edmonds import chuliu_edmonds, chuliu_edmonds_one_root

from ssrp.parse import mst
from ssrp.parse.mst import _find_cycle, max_arborescence, one_root_tree


def _cases():
    rng = np.random.default_rng(0)
    for n in list(range(2, 12)) * 150 + [25, 40, 60] * 40:
        kind = rng.integers(4)
        if kind == 0:  # unstructured: many cycles, several nested contractions
            yield rng.normal(size=(n, n))
        elif kind == 1:  # a parser's log-softmax scores over heads
            logits = rng.normal(scale=3, size=(n, n))
            yield _log_softmax(logits)
        elif kind == 2:  # a near-tree: a random tree boosted, plus noise (the trained-parser case)
            s = rng.normal(size=(n, n))
            for d in range(1, n):
                s[d, rng.integers(0, d)] += 4
            yield s
        else:  # log-probabilities of a single-rooted near-tree: often its own argmax (the decoder's shortcut)
            yield _log_softmax(_single_rooted_near_tree(rng, n, boost=rng.choice([1.0, 3.0, 6.0])))


def _log_softmax(logits):
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def _single_rooted_near_tree(rng, n, boost):
    s = rng.normal(size=(n, n))
    order = rng.permutation(np.arange(1, n))
    s[order[0], 0] += boost
    for i, d in enumerate(order[1:], 1):
        s[d, order[rng.integers(0, i)]] += boost
    return s


def test_equals_stanza_decoder():
    count = refused = 0
    for scores in _cases():
        try:
            theirs = chuliu_edmonds_one_root(scores.copy())
        except AssertionError:  # the reweighting cannot force one root (e.g. all scores positive): both refuse
            with pytest.raises(AssertionError):
                one_root_tree(scores)
            refused += 1
            continue
        ours = one_root_tree(scores)
        assert np.array_equal(ours, theirs), (scores.shape, ours, theirs)
        count += 1
    assert count > 1500 and refused < count // 20


def test_both_ways_of_decoding_are_taken_and_agree(monkeypatch):
    """The argmax shortcut and the full decoder on the same cases: each equals Stanza's tree."""
    calls = []
    full = mst.max_arborescence
    monkeypatch.setattr(mst, "max_arborescence", lambda w: calls.append(1) or full(w))
    rng = np.random.default_rng(3)
    shortcut = 0
    for _ in range(600):
        n = int(rng.integers(2, 30))
        scores = _log_softmax(_single_rooted_near_tree(rng, n, boost=float(rng.choice([0.5, 2.0, 5.0]))))
        before = len(calls)
        ours = one_root_tree(scores)
        shortcut += len(calls) == before
        assert np.array_equal(ours, chuliu_edmonds_one_root(scores.copy()))
    assert 100 < shortcut < 550  # both paths exercised


def _all_arborescences(n):
    """Every head array over nodes 0..n-1 rooted at 0 (brute force, small n)."""
    import itertools

    for heads in itertools.product(range(n), repeat=n - 1):
        tree = [0, *heads]
        if all(tree[d] != d for d in range(1, n)) and _find_cycle(np.array(tree)) is None:
            yield tree


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_max_arborescence_is_the_brute_force_optimum(n):
    rng = np.random.default_rng(n)
    trees = list(_all_arborescences(n))
    for _ in range(60):
        w = rng.normal(size=(n, n))
        best = max(trees, key=lambda t: sum(w[d, t[d]] for d in range(1, n)))
        assert max_arborescence(w.tolist()) == best
        stanza_tree = chuliu_edmonds(w.copy()).tolist()  # Stanza's unconstrained decoder agrees
        assert stanza_tree[1:] == best[1:]


def test_max_arborescence_equals_stanzas_unconstrained_decoder_on_larger_graphs():
    rng = np.random.default_rng(11)
    for _ in range(150):
        n = int(rng.integers(7, 40))
        w = rng.normal(size=(n, n)) * rng.choice([0.1, 1.0, 10.0])
        assert max_arborescence(w.tolist())[1:] == chuliu_edmonds(w.copy()).tolist()[1:]


def test_output_is_a_single_rooted_tree():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 30))
        logits = rng.normal(size=(n, n))
        tree = one_root_tree(_log_softmax(logits))  # log-probabilities
        assert tree[0] == 0 and int((tree[1:] == 0).sum()) == 1
        assert _find_cycle(tree) is None  # every word reaches the root


def test_does_not_modify_its_input():
    scores = np.random.default_rng(2).normal(size=(6, 6))
    before = scores.copy()
    one_root_tree(scores)
    assert np.array_equal(scores, before)


def test_find_cycle():
    assert _find_cycle(np.array([0, 0, 1, 2])) is None
    assert sorted(_find_cycle(np.array([0, 2, 3, 1, 0]))) == [1, 2, 3]
    assert sorted(_find_cycle([0, 0, 3, 2])) == [2, 3]


def test_positive_scores_are_refused_like_stanza():
    """All scores positive: the reweighting raises root arcs, and both decoders refuse the result. The argmax
    heads here form a single-rooted tree, so this also checks that the shortcut is not taken (it holds only for
    a non-positive reweighting)."""
    scores = np.array([[1, 1, 1], [9, 1, 1], [8, 9, 1]], dtype=float)
    with pytest.raises(AssertionError):
        chuliu_edmonds_one_root(scores.copy())
    with pytest.raises(AssertionError):
        one_root_tree(scores)


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_sentences(n):
    scores = np.zeros((n, n))
    assert np.array_equal(one_root_tree(scores + np.arange(n)), chuliu_edmonds_one_root(scores + np.arange(n)))
