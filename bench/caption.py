"""Captioning benchmark: Up-Down training steps (cross-entropy, SCST) and beam-search decoding against the
design of the commonly used reference implementation (ruotianluo/self-critical.pytorch, ``AttModel`` /
``CaptionModel`` / ``rewards.py`` with the ``ciderD`` scorer), re-implemented here at equal work on the
very same model (the same ``nn.LSTMCell``, attention, embedding and output modules, the same weights).
The last line printed is one JSON object.

What the baseline does, as the reference does it:

* cross-entropy: features repeated per caption; per step the whole batch (every caption, ended or not)
  through ``[h2; v̄; x_t] -> LSTMCell``, attention (softmax, then mask and renormalise), ``LSTMCell``,
  output layer and log-softmax into a [R, T, V] tensor; the loss gathered from it after the loop;
* SCST: a greedy pass (evaluation mode) and a sampled pass (training mode) of ``_sample``: the whole
  batch every step, log-probabilities kept as [R, T, V] with their graph; the reward from the ``ciderD`` scorer's design
  (per caption n-gram dictionaries, each reference re-vectorised for every candidate, with the training
  document frequencies of ``coco-train-idxs``); ``RewardCriterion``;
* beam search: ``_sample_beam`` + ``beam_search`` (group size 1): all images' beams in one model step,
  candidates fully sorted, ``beam_seq_logprobs`` [N, b, t, V] carried along, and per step a Python loop
  over the images and beams that moves ended beams out; always ``max_words`` steps.

Ours: ``UpDown.xe_loss``, ``scst_step`` (sampling without gradients, then the samples scored by teacher
forcing with the dropout masks the sampling drew) with the vectorised CIDEr-D, ``beam_search`` (ssrp.caption).
Outputs are compared before timing: the XE loss and every gradient, the greedy captions, the rewards of
the same sampled captions, our teacher-forced log-probabilities of the reference's samples against the ones
its loop computed, the policy loss of the same samples, the beam captions and their scores.
Timings alternate ours and the baseline (A, B, A, B, ...) in one process; medians and bests are
reported, and ratios are baseline time / our time.

The model is randomly initialised, made confident like a trained one (output weights scaled) and given an
<eos> bias so that its greedy captions average 10.5 words (COCO's mean; training a model to that point
takes hours on two cores); the JSON reports the mean length of the greedy and sampled captions. Beam
search runs on the same model with <eos> made impossible, so every caption runs to the 16-word limit: the
worst case for our early exit (with a constant <eos> bias, a random model's beam prefers the empty caption).

    PYTHONPATH=. .venv/bin/python bench/caption.py --threads 2
    PYTHONPATH=. .venv/bin/python bench/caption.py --size paper --reps 3
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from ssrp.caption.beam import beam_search
from ssrp.caption.cider import CiderD, DocumentFrequency
from ssrp.caption.config import ModelConfig
from ssrp.caption.model import UpDown, sequence_mask
from ssrp.caption.scst import advantages, policy_loss, reward_references, scst_step, with_eos

SIZES = {  # Up-Down's sizes (paper) and a reduced size for 2-core machines; BUTD features, COCO vocabulary
    "paper": dict(hidden=1000, att_hidden=512, embed=1000),
    "reduced": dict(hidden=512, att_hidden=256, embed=512),
}
VOCAB, FEAT, OBJECTS, MAX_WORDS = 10010, 2048, 36, 16
SCST_SEED = 2


# ------------------------------------------------------------------------------------------------
# The reference design, on our model's modules


def sc_attention(model: UpDown, h, att, p_att, mask):
    """self-critical's Attention: softmax over all objects, then mask and renormalise."""
    dot = model.attention.score(torch.tanh(p_att + model.attention.query(h)[:, None])).squeeze(-1)
    weight = F.softmax(dot, dim=1) * mask.to(dot.dtype)
    weight = weight / weight.sum(1, keepdim=True)
    return torch.bmm(weight[:, None], att).squeeze(1)


def sc_logprobs_state(model: UpDown, it, fc, att, p_att, mask, state):
    """``get_logprobs_state`` with ``UpDownCore``: one step of the whole batch."""
    h, c = state
    xt = model.drop(model.embed(it))
    h_att, c_att = model.att_lstm(torch.cat([h[1], fc, xt], 1), (h[0], c[0]))
    v_hat = sc_attention(model, h_att, att, p_att, mask)
    h_lang, c_lang = model.lang_lstm(torch.cat([v_hat, h_att], 1), (h[1], c[1]))
    logprobs = F.log_softmax(model.logit(model.drop(h_lang)), dim=1)
    return logprobs, (torch.stack([h_att, h_lang]), torch.stack([c_att, c_lang]))


def sc_prepare(model: UpDown, att, mask, repeat: int):
    prep = model.prepare(att, mask)
    return [t.repeat_interleave(repeat, 0) for t in (prep.fc, prep.att, prep.p_att, prep.mask)]


def sc_init(model: UpDown, n: int, like):
    z = like.new_zeros(2, n, model.cfg.hidden)
    return z, z.clone()


def sc_xe_loss(model: UpDown, att, mask, captions, lengths):
    """``_forward`` + ``LanguageModelCriterion``: labels [0, words..., 0], every row every step."""
    r = captions.shape[0]
    fc, a, pa, m = sc_prepare(model, att, mask, r // att.shape[0])
    seq = F.pad(captions, (1, 1))  # <bos> = 0 in front, <eos> = 0 after the longest caption
    state = sc_init(model, r, att)
    outputs = att.new_zeros(r, seq.shape[1] - 1, model.vocab_size)
    for i in range(seq.shape[1] - 1):
        if i >= 1 and seq[:, i].sum() == 0:
            break
        output, state = sc_logprobs_state(model, seq[:, i].clone(), fc, a, pa, m, state)
        outputs[:, i] = output
    target = seq[:, 1:]
    tmask = (torch.arange(target.shape[1], device=att.device)[None] <= lengths[:, None]).to(outputs.dtype)
    logp = outputs.gather(2, target[..., None]).squeeze(2)
    return -(logp * tmask).sum() / tmask.sum()


def sc_sample(model: UpDown, att, mask, max_words: int, sample: bool, per_image: int = 1):
    """``_sample``: the whole batch every step until every row has ended; log-probabilities [R, T, V]."""
    fc, a, pa, m = sc_prepare(model, att, mask, per_image)
    r = fc.shape[0]
    state = sc_init(model, r, att)
    seq = att.new_zeros((r, max_words), dtype=torch.long)
    seq_logprobs = att.new_zeros(r, max_words, model.vocab_size)
    it = att.new_zeros(r, dtype=torch.long)
    unfinished = None
    for t in range(max_words + 1):
        logprobs, state = sc_logprobs_state(model, it, fc, a, pa, m, state)
        if t == max_words:
            break
        it = torch.multinomial(torch.exp(logprobs.detach()), 1).view(-1) if sample else logprobs.argmax(1)
        if t == 0:
            unfinished = it != 0
        else:
            it[~unfinished] = 0
            logprobs = logprobs * unfinished[:, None].to(logprobs)
            unfinished = unfinished & (it != 0)
        seq[:, t] = it
        seq_logprobs[:, t] = logprobs
        if unfinished.sum() == 0:
            break
    return seq, seq_logprobs


def sc_reward_criterion(seq_logprobs, seq, reward):
    logp = seq_logprobs.gather(2, seq[..., None]).squeeze(2)
    mask = torch.cat([seq.new_ones(seq.shape[0], 1), (seq[:, :-1] > 0).long()], 1).to(logp)
    return -(logp * reward[:, None] * mask).sum() / mask.sum()


class ScCiderD:
    """The ``ciderD`` scorer's design: n-gram dictionaries per sentence, clipped tf-idf cosine per reference."""

    def __init__(self, df: dict, ref_len: float, n: int = 4, sigma: float = 6.0):
        self.df, self.ref_len, self.n, self.sigma = df, ref_len, n, sigma

    @staticmethod
    def precook(words: list[str], n: int = 4) -> dict:
        counts = defaultdict(int)
        for k in range(1, n + 1):
            for i in range(len(words) - k + 1):
                counts[tuple(words[i : i + k])] += 1
        return counts

    def counts2vec(self, cnts):
        vec = [defaultdict(float) for _ in range(self.n)]
        norm, length = [0.0] * self.n, 0
        for ngram, tf in cnts.items():
            df = np.log(max(1.0, self.df.get(ngram, 0.0)))
            k = len(ngram) - 1
            vec[k][ngram] = float(tf) * (self.ref_len - df)
            norm[k] += vec[k][ngram] ** 2
            if k == 1:
                length += tf
        return vec, [np.sqrt(x) for x in norm], length

    def sim(self, vh, vr, nh, nr, lh, lr):
        delta = float(lh - lr)
        val = np.zeros(self.n)
        for k in range(self.n):
            for ngram in vh[k]:
                val[k] += min(vh[k][ngram], vr[k][ngram]) * vr[k][ngram]
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= np.e ** (-(delta**2) / (2 * self.sigma**2))
        return val

    def compute_score(self, gts: dict, res: list[dict]) -> np.ndarray:
        scores = []
        for item in res:
            vec, norm, length = self.counts2vec(self.precook(item["caption"][0].split()))
            refs = gts[item["image_id"]]
            score = np.zeros(self.n)
            for ref in refs:
                vr, nr, lr = self.counts2vec(self.precook(ref.split()))
                score += self.sim(vec, vr, norm, nr, length, lr)
            scores.append(np.mean(score) / len(refs) * 10.0)
        return np.array(scores)


def array_to_str(arr) -> str:
    out = []
    for x in arr:
        out.append(str(int(x)))
        if x == 0:
            break
    return " ".join(out)


def sc_rewards(scorer: ScCiderD, greedy: np.ndarray, samples: np.ndarray, gts: list[list[np.ndarray]]) -> np.ndarray:
    """``get_self_critical_reward``: CIDEr-D of samples and greedy captions, sample minus its image's greedy."""
    b, r = len(greedy), len(samples)
    k = r // b
    res = [{"image_id": i, "caption": [array_to_str(samples[i])]} for i in range(r)]
    res += [{"image_id": r + i, "caption": [array_to_str(greedy[i])]} for i in range(b)]
    refs = [[array_to_str(np.append(g, 0)) for g in img] for img in gts]
    table = {i: refs[i // k] for i in range(r)} | {r + i: refs[i] for i in range(b)}
    scores = scorer.compute_score(table, res)
    return (scores[:r].reshape(b, k) - scores[r:][:, None]).reshape(r)


def sc_scst_step(model, att, mask, gts, scorer, samples, max_words):
    model.eval()
    with torch.no_grad():
        greedy, _ = sc_sample(model, att, mask, max_words, sample=False)
    model.train()
    seq, seq_logprobs = sc_sample(model, att, mask, max_words, sample=True, per_image=samples)
    reward = sc_rewards(scorer, greedy.cpu().numpy(), seq.cpu().numpy(), gts)
    return sc_reward_criterion(seq_logprobs, seq, torch.as_tensor(reward, dtype=seq_logprobs.dtype))


@torch.no_grad()
def sc_beam_search(model: UpDown, att, mask, beam_size: int, max_words: int):
    """``_sample_beam`` + ``CaptionModel.beam_search`` with group size 1, no length penalty."""
    b, k = att.shape[0], beam_size
    fc, a, pa, m = sc_prepare(model, att, mask, 1)
    state = sc_init(model, b, att)
    it = att.new_zeros(b, dtype=torch.long)
    logprobs, state = sc_logprobs_state(model, it, fc, a, pa, m, state)
    fc, a, pa, m = (t.repeat_interleave(k, 0) for t in (fc, a, pa, m))
    vocab = logprobs.shape[-1]
    beam_seq = att.new_zeros((b, k, 0), dtype=torch.long)
    beam_seq_logprobs = att.new_zeros(b, k, 0, vocab)
    beam_logprobs_sum = att.new_zeros(b, k)
    done_beams = [[] for _ in range(b)]
    for t in range(max_words):
        lp = logprobs.reshape(b, -1, vocab)
        sums = beam_logprobs_sum[:, :1] if t == 0 else beam_logprobs_sum
        cand = sums[..., None] + lp
        ys, ix = torch.sort(cand.reshape(b, -1), -1, True)
        ys, ix = ys[:, :k], ix[:, :k]
        beam_ix, selected = ix // vocab, ix % vocab
        state_ix = (beam_ix + torch.arange(b, device=att.device)[:, None] * lp.shape[1]).reshape(-1)
        if t > 0:
            beam_seq = beam_seq.gather(1, beam_ix[..., None].expand_as(beam_seq))
            beam_seq_logprobs = beam_seq_logprobs.gather(1, beam_ix[..., None, None].expand_as(beam_seq_logprobs))
        beam_seq = torch.cat([beam_seq, selected[..., None]], -1)
        beam_logprobs_sum = sums.gather(1, beam_ix) + lp.reshape(b, -1).gather(1, ix)
        beam_logprobs = lp.gather(1, beam_ix[..., None].expand(-1, -1, vocab))
        beam_seq_logprobs = torch.cat([beam_seq_logprobs, beam_logprobs[:, :, None]], 2)
        state = tuple(s[:, state_ix] for s in state)
        for bi in range(b):
            is_end = beam_seq[bi, :, t] == 0
            if t == max_words - 1:
                is_end.fill_(1)
            for vix in range(k):
                if is_end[vix]:
                    done_beams[bi].append({"seq": beam_seq[bi, vix].clone(),
                                           "logps": beam_seq_logprobs[bi, vix].clone(),
                                           "p": beam_logprobs_sum[bi, vix].item()})
            beam_logprobs_sum[bi, is_end] -= 1000
        it = beam_seq[:, :, t].reshape(-1)
        logprobs, state = sc_logprobs_state(model, it, fc, a, pa, m, state)
    best = [sorted(d, key=lambda x: -x["p"])[0] for d in done_beams]
    seq = att.new_zeros((b, max_words), dtype=torch.long)
    for bi, d in enumerate(best):
        seq[bi, : len(d["seq"])] = d["seq"]
    return seq, torch.tensor([d["p"] for d in best])


# ------------------------------------------------------------------------------------------------
# Inputs, the model, timing


def synthetic(images: int, per_image: int, seed: int):
    """BUTD-like features [B, 36, 2048] (every third image with 20 objects) and captions of 7-14 random
    words (mean 10.5, Karpathy's COCO mean) from the 400 most frequent ids."""
    g = torch.Generator().manual_seed(seed)
    att = torch.relu(torch.randn(images, OBJECTS, FEAT, generator=g))
    mask = torch.ones(images, OBJECTS, dtype=torch.bool)
    mask[::3, 20:] = False
    att[~mask] = 0
    lengths = torch.randint(7, 15, (images * per_image,), generator=g)
    words = torch.randint(2, 400, (images * per_image, MAX_WORDS), generator=g)
    words[torch.arange(MAX_WORDS)[None] >= lengths[:, None]] = 0
    return att, mask, words, lengths


def calibrated_model(size: str, target_words: float = 10.5, sharpness: float = 50.0, seed: int = 0) -> UpDown:
    """A randomly initialised Up-Down made confident like a trained one (output weights x ``sharpness``:
    the chosen word takes most of the probability) and with its <eos> bias set so that its greedy captions of
    the SCST comparison's images average COCO's 10.5 words. Training one to that point takes hours on two cores."""
    torch.manual_seed(seed)
    model = UpDown(ModelConfig(**SIZES[size], dropout=0.5), VOCAB, FEAT).eval()
    att, mask, _, _ = synthetic(10, 5, SCST_SEED)  # the images of the SCST comparison
    lo, hi = -20.0, 60.0
    with torch.no_grad():
        model.logit.weight.mul_(sharpness)
        for _ in range(12):
            model.logit.bias[0] = (lo + hi) / 2
            seq, _ = model.decode(att, mask, MAX_WORDS)
            words = float((seq != 0).sum(1).float().mean())
            lo, hi = (lo, model.logit.bias[0].item()) if words < target_words else (model.logit.bias[0].item(), hi)
    return model.train()


def never_ending(model: UpDown) -> UpDown:
    """The model with <eos> made impossible: every caption runs to the word limit (beam search's worst case
    for our early exit; with a constant <eos> bias a random model's beam prefers the empty caption)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.logit.bias[0] = -1e4
    return model


def alternate(runners: dict, reps: int) -> dict[str, list[float]]:
    times = {name: [] for name in runners}
    for fn in runners.values():  # warm-up
        fn()
    for _ in range(reps):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def summary(times: dict[str, list[float]], work: int, unit: str) -> dict:
    o, b = statistics.median(times["ours"]), statistics.median(times["baseline"])
    return {
        "ours_s": round(o, 4), "baseline_s": round(b, 4), "speedup": round(b / o, 3),
        "best_ours_s": round(min(times["ours"]), 4), "best_baseline_s": round(min(times["baseline"]), 4),
        "best_speedup": round(min(times["baseline"]) / min(times["ours"]), 3),
        f"ours_{unit}_per_s": round(work / o, 2), f"baseline_{unit}_per_s": round(work / b, 2), "reps": len(times["ours"]),
    }


def train_step(model, opt, loss_fn):
    loss = loss_fn()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 0.1)
    opt.step()


# ------------------------------------------------------------------------------------------------
# The three comparisons


def bench_xe(model: UpDown, reps: int, images: int = 10, per_image: int = 5) -> dict:
    att, mask, caps, lengths = synthetic(images, per_image, 1)
    model.eval()  # outputs compared without dropout
    ours = model.xe_loss(att, mask, caps, lengths)
    g_ours = torch.autograd.grad(ours, list(model.parameters()))
    base = sc_xe_loss(model, att, mask, caps, lengths)
    g_base = torch.autograd.grad(base, list(model.parameters()))
    scale = max(float(b.abs().max()) for b in g_base)  # relative to the largest gradient (some are ~0 analytically)
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(g_ours, g_base, strict=True)) / scale
    assert abs(float(ours - base)) < 1e-4 * abs(float(base)) and grad_diff < 1e-3, (float(ours), float(base), grad_diff)
    ours, base = float(ours), float(base)
    model.train()
    m_ours, m_base = copy.deepcopy(model), copy.deepcopy(model)
    o_ours, o_base = torch.optim.Adam(m_ours.parameters(), 5e-4), torch.optim.Adam(m_base.parameters(), 5e-4)
    times = alternate({
        "ours": lambda: train_step(m_ours, o_ours, lambda: m_ours.xe_loss(att, mask, caps, lengths)),
        "baseline": lambda: train_step(m_base, o_base, lambda: sc_xe_loss(m_base, att, mask, caps, lengths)),
    }, reps)
    return {**summary(times, images, "images"), "captions_per_step": images * per_image,
            "mean_words": round(float(lengths.float().mean()), 2), "loss_ours": round(float(ours), 5),
            "loss_baseline": round(float(base), 5), "max_grad_diff_over_largest_grad": grad_diff}


def reward_corpus(images: int = 500, seed: int = 7):
    """Training references for the document frequencies (what coco-train-idxs holds), ids with <eos>."""
    _, _, caps, lengths = synthetic(images, 5, seed)
    return [[caps[i * 5 + j, : lengths[i * 5 + j]].numpy() for j in range(5)] for i in range(images)]


def bench_scst(model: UpDown, reps: int, images: int = 10, samples: int = 5) -> dict:
    train_refs = reward_corpus()
    ours_scorer = CiderD(DocumentFrequency([reward_references(r) for r in train_refs], VOCAB))
    df = defaultdict(float)
    for refs in train_refs:
        for ngram in {g for r in refs for g in ScCiderD.precook(array_to_str(np.append(r, 0)).split())}:
            df[ngram] += 1
    base_scorer = ScCiderD(dict(df), math.log(len(train_refs)))
    att, mask, caps, lengths = synthetic(images, 5, SCST_SEED)
    gts = [[caps[i * 5 + j, : lengths[i * 5 + j]].numpy() for j in range(5)] for i in range(images)]
    check = _check_scst(model, att, mask, gts, ours_scorer, base_scorer, samples)
    m_ours, m_base = copy.deepcopy(model), copy.deepcopy(model)
    o_ours, o_base = torch.optim.Adam(m_ours.parameters(), 5e-5), torch.optim.Adam(m_base.parameters(), 5e-5)
    times = alternate({
        "ours": lambda: train_step(m_ours, o_ours, lambda: scst_step(m_ours, att, mask, gts, ours_scorer, samples,
                                                                     MAX_WORDS).loss),
        "baseline": lambda: train_step(m_base, o_base, lambda: sc_scst_step(m_base, att, mask, gts, base_scorer,
                                                                            samples, MAX_WORDS)),
    }, reps)
    reward_times = alternate({
        "ours": lambda: advantages(ours_scorer, check["samples"], check["greedy"], gts),
        "baseline": lambda: sc_rewards(base_scorer, check["greedy"], check["samples"], gts),
    }, reps)
    return {**summary(times, images, "images"), "samples_per_image": samples, "reward_only": summary(reward_times, images, "images"),
            **{k: v for k, v in check.items() if k not in ("samples", "greedy")}}


def _check_scst(model, att, mask, gts, ours_scorer, base_scorer, samples) -> dict:
    model.eval()
    with torch.no_grad():
        greedy, _ = model.decode(att, mask, MAX_WORDS)
        sc_greedy, _ = sc_sample(model, att, mask, MAX_WORDS, sample=False)
    assert torch.equal(greedy, sc_greedy), "greedy captions differ"
    torch.manual_seed(3)
    seq, seq_logprobs = sc_sample(model, att, mask, MAX_WORDS, sample=True, per_image=samples)
    s, g = seq.numpy(), greedy.numpy()
    adv, sample_scores, _ = advantages(ours_scorer, s, g, gts)
    base_adv = sc_rewards(base_scorer, g, s, gts)
    assert np.allclose(adv, base_adv, atol=1e-9), np.abs(adv - base_adv).max()
    chosen = seq_logprobs.gather(2, seq[..., None]).squeeze(2) * sequence_mask(seq)
    w = model._weights()
    rescored = model.sequence_logprobs(model.prepare(att, mask, False, w), samples, seq, w).detach()
    assert torch.allclose(rescored, chosen, atol=1e-4), float((rescored - chosen).abs().max())
    ours_loss = policy_loss(chosen, seq, torch.as_tensor(adv, dtype=torch.float32))
    base_loss = sc_reward_criterion(seq_logprobs, seq, torch.as_tensor(base_adv, dtype=torch.float32))
    assert torch.allclose(ours_loss, base_loss, rtol=1e-5, atol=1e-6), (float(ours_loss), float(base_loss))
    model.train()
    return {"samples": s, "greedy": g, "max_reward_diff": float(np.abs(adv - base_adv).max()),
            "max_token_logprob_diff": float((rescored - chosen).abs().max()),
            "mean_sample_cider_d": round(float(sample_scores.mean()), 4),
            "mean_greedy_words": round(float(np.mean([len(with_eos(x)) - (x == 0).any() for x in g])), 2),
            "mean_sample_words": round(float(np.mean([len(with_eos(x)) - (x == 0).any() for x in s])), 2)}


def bench_beam(model: UpDown, reps: int, images: int, beam: int) -> dict:
    model.eval()
    att, mask, _, _ = synthetic(images, 1, 3)
    seq, score = beam_search(model, att, mask, beam, MAX_WORDS)
    sc_seq, sc_score = sc_beam_search(model, att, mask, beam, MAX_WORDS)
    same = (seq == sc_seq).all(1)
    assert float(same.float().mean()) == 1.0, f"beam captions differ on {int((~same).sum())} images"
    assert torch.allclose(score, sc_score, atol=1e-3)
    times = alternate({
        "ours": lambda: beam_search(model, att, mask, beam, MAX_WORDS),
        "baseline": lambda: sc_beam_search(model, att, mask, beam, MAX_WORDS),
    }, reps)
    words = [(s != 0).sum().item() for s in seq]
    return {**summary(times, images, "images"), "beam_size": beam, "images": images,
            "mean_words": round(float(np.mean(words)), 2), "identical_captions": int(same.sum())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--size", default="reduced", choices=tuple(SIZES))
    p.add_argument("--beam", type=int, default=5, help="beam size (Up-Down: 5)")
    p.add_argument("--beam-images", type=int, default=50, help="images per beam-search batch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = calibrated_model(args.size)
    result = {"size": args.size, **SIZES[args.size], "vocab": VOCAB, "feature_dim": FEAT, "objects": OBJECTS,
              "max_words": MAX_WORDS, "threads": args.threads, "device": "cpu", "torch": torch.__version__,
              "calibration_s": round(time.perf_counter() - t0, 1), "eos_bias": round(float(model.logit.bias[0]), 4)}
    for name, fn in (("xe", lambda: bench_xe(model, args.reps)), ("scst", lambda: bench_scst(model, args.reps)),
                     ("beam", lambda: bench_beam(never_ending(model), args.reps, args.beam_images, args.beam))):
        result[name] = fn()
        print(f"{name}: {json.dumps(result[name], sort_keys=True)}", flush=True)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
