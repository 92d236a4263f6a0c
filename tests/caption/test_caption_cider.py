"""The in-process CIDEr-D against coco-caption's (pycocoevalcap), and the SCST reward around it."""

import numpy as np
import pytest
import torch

from ssrp.caption.cider import CiderD, DocumentFrequency, ngrams
from ssrp.caption.scst import advantages, policy_loss, reward_scorer, with_eos


def _random_set(seed, images=60, vocab=25):
    rng = np.random.default_rng(seed)
    refs = [[rng.integers(0, vocab, rng.integers(1, 14)).tolist() for _ in range(rng.integers(3, 7))]
            for _ in range(images)]
    hyps = [rng.integers(0, vocab, rng.integers(0, 14)).tolist() for _ in range(images)]
    hyps[0] = list(refs[0][1])  # one exact match
    hyps[1] = [3, 3, 3, 3, 3, 3]  # repeated n-grams (clipping)
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1])
def test_corpus_mode_equals_pycocoevalcap_cider_per_image(seed):
    from pycocoevalcap.cider.cider import Cider

    hyps, refs = _random_set(seed)
    gts = {i: [" ".join(f"w{t}" for t in r) for r in refs[i]] for i in range(len(refs))}
    res = {i: [" ".join(f"w{t}" for t in hyps[i])] for i in range(len(hyps))}
    mean, per_image = Cider().compute_score(gts, res)
    ours = CiderD.corpus(refs, 25).scores(hyps, refs)
    np.testing.assert_allclose(ours, per_image, rtol=1e-10, atol=1e-12)
    assert ours.mean() == pytest.approx(mean)
    assert ours[0] > 1.0 > ours[1]


def test_document_frequency_counts_images_not_occurrences():
    df = DocumentFrequency([[[1, 2], [1, 2, 1]], [[1]], [[4]]], base=5)
    g = ngrams([[1], [1, 2], [2, 1], [4], [3]], 5)
    keys = g.key[np.argsort(g.row, kind="stable")]  # one n-gram per row for the first entries
    unigram_1, unigram_4, unigram_3 = keys[0], g.key[(g.row == 3)][0], g.key[(g.row == 4)][0]
    idf = df.idf(np.array([unigram_1, unigram_4, unigram_3]))
    np.testing.assert_allclose(idf, [np.log(3) - np.log(2), np.log(3) - np.log(1), np.log(3) - np.log(1)])


def test_candidates_share_their_image_references_by_index():
    hyps, refs = _random_set(2, images=8)
    scorer = CiderD(DocumentFrequency(refs, 25))
    repeated = scorer.scores(hyps + hyps, refs, np.concatenate([np.arange(8), np.arange(8)]))
    np.testing.assert_allclose(repeated, np.tile(scorer.scores(hyps, refs), 2))


def test_reward_is_sample_minus_greedy_with_eos_kept_on_ended_captions():
    assert with_eos(np.array([4, 5, 0, 0])) == [4, 5, 0]
    assert with_eos(np.array([4, 5, 6])) == [4, 5, 6]
    refs = [[np.array([2, 3, 4])], [np.array([5, 6])]]
    scorer = reward_scorer(refs + [[np.array([7, 8, 9])]], 10)
    samples = np.array([[2, 3, 4, 0], [9, 9, 0, 0], [5, 6, 0, 0], [5, 0, 0, 0]])
    greedy = np.array([[2, 3, 0, 0], [5, 6, 0, 0]])
    adv, s, g = advantages(scorer, samples, greedy, refs)
    np.testing.assert_allclose(adv, s - np.repeat(g, 2))
    assert s[0] > g[0] > s[1] and s[2] == pytest.approx(g[1]) and adv[2] == pytest.approx(0.0)


def test_policy_loss_weights_the_sampled_tokens_and_their_eos_by_the_advantage():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]], requires_grad=True)
    seq = torch.tensor([[4, 5, 6], [4, 0, 0]])  # the first never ended (all 3 count), the second ended at 2
    loss = policy_loss(logp, seq, torch.tensor([2.0, -1.0]))
    assert loss.item() == pytest.approx(-(2.0 * -6.0 + -1.0 * -1.0) / 5)
