"""The vectorised single-root decoder equals Stanza's Chu-Liu-Edmonds on many score matrices."""

import numpy as np
import pytest
from stanza.models.common.chuliu_edmonds import chuliu_edmonds_one_root

from ssrp.parse.mst import _find_cycle, one_root_tree


def _cases():
    rng = np.random.default_rng(0)
    for n in list(range(2, 12)) * 150 + [25, 40, 60] * 40:
        kind = rng.integers(3)
        if kind == 0:  # unstructured: many cycles, several nested contractions
            yield rng.normal(size=(n, n))
        elif kind == 1:  # a parser's log-softmax scores over heads
            logits = rng.normal(scale=3, size=(n, n))
            yield logits - np.log(np.exp(logits).sum(1, keepdims=True))
        else:  # a near-tree: a random tree boosted, plus noise (the trained-parser case)
            s = rng.normal(size=(n, n))
            for d in range(1, n):
                s[d, rng.integers(0, d)] += 4
            yield s


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


def test_output_is_a_single_rooted_tree():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 30))
        logits = rng.normal(size=(n, n))
        tree = one_root_tree(logits - np.log(np.exp(logits).sum(1, keepdims=True)))  # log-probabilities
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


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_sentences(n):
    scores = np.zeros((n, n))
    assert np.array_equal(one_root_tree(scores + np.arange(n)), chuliu_edmonds_one_root(scores + np.arange(n)))


def test_parser_gives_the_same_trees_with_either_decoder(tiny_parser, tiny_cfg):
    import dataclasses

    from stanza.models.depparse import model as depparse_model

    from ssrp.corpus import TextRecord
    from ssrp.parse import Parser
    from ssrp.parse.tiny import sample_captions

    records = [TextRecord(caption_id=i + 1, image_id=1, variant="raw", text=t)
               for i, t in enumerate(sample_captions(images=12))]
    fast = tiny_parser(records)
    stock = Parser(dataclasses.replace(tiny_cfg, fast_decode=False))
    stock._nlp, stock._pretokenized, stock._wordpiece = tiny_parser._nlp, tiny_parser._pretokenized, tiny_parser._wordpiece
    slow = stock(records)
    assert len(fast) == len(records) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.words == b.words and np.array_equal(a.heads, b.heads) and a.deprels == b.deprels
    assert depparse_model.chuliu_edmonds_one_root is chuliu_edmonds_one_root  # Stanza's decoder is put back
