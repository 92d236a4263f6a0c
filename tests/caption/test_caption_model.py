"""Up-Down's fast paths against the plain step-by-step computation with the two nn.LSTMCells."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ssrp.caption.beam import beam_search
from ssrp.caption.config import ModelConfig
from ssrp.caption.model import UpDown, sequence_mask

V, D = 13, 10


def _model(feature_embed=False, seed=0, gates="auto"):
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=24, att_hidden=16, embed=12, dropout=0.0, feature_embed=feature_embed, object_gates=gates)
    model = UpDown(cfg, V, D).eval()
    with torch.no_grad():  # larger output weights: peaked, varied distributions
        model.logit.weight.mul_(20)
    return model


def _inputs(b=3, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    att = torch.randn(b, n, D, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 3:] = False
    mask[-1, 1:] = False
    att[~mask] = 0
    return att, mask


def _step(model, word, state, att, fc, p_att, mask):
    """One step as published: LSTM1 on [h2; v̄; W_e y], attention, LSTM2 on [v̂; h1]."""
    h1, c1, h2, c2 = state
    h1, c1 = model.att_lstm(torch.cat([h2, fc, model.embed(word)], 1), (h1, c1))
    v_hat = model.attention(h1, att, p_att, mask)
    h2, c2 = model.lang_lstm(torch.cat([v_hat, h1], 1), (h2, c2))
    return F.log_softmax(model.logit(h2), -1), (h1, c1, h2, c2)


def _reference_loss(model, att, mask, captions, lengths):
    per = captions.shape[0] // att.shape[0]
    prep = model.prepare(att, mask).rows(torch.arange(att.shape[0]).repeat_interleave(per))
    r = captions.shape[0]
    state = tuple(torch.zeros(r, model.cfg.hidden) for _ in range(4))
    word, total, count = torch.zeros(r, dtype=torch.long), 0.0, 0
    for t in range(int(lengths.max()) + 1):
        logp, state = _step(model, word, state, prep.att, prep.fc, prep.p_att, prep.mask)
        target = torch.where(t < lengths, captions[:, min(t, captions.shape[1] - 1)], 0)
        live = t <= lengths
        total = total - logp.gather(1, target[:, None]).squeeze(1)[live].sum()
        count += int(live.sum())
        word = target
    return total / count


@pytest.mark.parametrize("gates", ["on", "off"])
@pytest.mark.parametrize("feature_embed", [False, True])
def test_xe_loss_and_gradients_equal_the_step_by_step_lstm_cells(feature_embed, gates):
    model = _model(feature_embed, gates=gates)
    att, mask = _inputs()
    g = torch.Generator().manual_seed(2)
    captions = torch.randint(1, V, (6, 7), generator=g)
    lengths = torch.tensor([7, 3, 1, 5, 7, 2])
    captions[torch.arange(7)[None] >= lengths[:, None]] = 0
    fast = model.xe_loss(att, mask, captions, lengths)
    fast_grads = torch.autograd.grad(fast, list(model.parameters()))
    ref = _reference_loss(model, att, mask, captions, lengths)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    assert torch.allclose(fast, ref, atol=1e-5)
    for a, b in zip(fast_grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def _reference_greedy(model, att, mask, steps):
    prep = model.prepare(att, mask)
    b = att.shape[0]
    state = tuple(torch.zeros(b, model.cfg.hidden) for _ in range(4))
    word, seq, done = torch.zeros(b, dtype=torch.long), torch.zeros(b, steps, dtype=torch.long), torch.zeros(b, dtype=torch.bool)
    total = torch.zeros(b)
    for t in range(steps):
        logp, state = _step(model, word, state, prep.att, prep.fc, prep.p_att, prep.mask)
        word = logp.argmax(-1)
        total += torch.where(done, 0.0, logp.gather(1, word[:, None]).squeeze(1))
        seq[:, t] = torch.where(done, 0, word)
        done |= word == 0
    return seq, total


@pytest.mark.parametrize("gates", ["on", "off"])
def test_greedy_decoding_equals_the_step_by_step_argmax_and_beam_one(gates):
    model = _model(gates=gates)
    att, mask = _inputs(b=4)
    with torch.no_grad():
        seq, logp = model.decode(att, mask, 8)
        ref, ref_total = _reference_greedy(model, att, mask, 8)
        beam, beam_total = beam_search(model, att, mask, 1, 8)
    assert torch.equal(seq, ref)
    assert torch.allclose((logp * sequence_mask(seq)).sum(1), ref_total, atol=1e-5)
    assert torch.equal(beam, ref)
    assert torch.allclose(beam_total, ref_total, atol=1e-5)


def _reference_beam(model, att, mask, k, steps):
    """Per image, a plain list-based beam search (the top-k one-word extensions of the live beams)."""
    out = []
    for i in range(att.shape[0]):
        prep = model.prepare(att[i : i + 1], mask[i : i + 1])
        live = [(0.0, [], tuple(torch.zeros(1, model.cfg.hidden) for _ in range(4)))]
        finished = []
        for t in range(steps):
            cands = []
            for score, words, state in live:
                logp, new = _step(model, torch.tensor([words[-1] if words else 0]), state, prep.att, prep.fc,
                                  prep.p_att, prep.mask)
                cands += [(score + float(logp[0, w]), words + [w], new) for w in range(V)]
            cands.sort(key=lambda c: -c[0])
            live = []
            for score, words, state in cands[:k]:
                (finished if words[-1] == 0 or t == steps - 1 else live).append((score, words, state))
            if not live:
                break
        out.append(max(finished, key=lambda c: c[0]))
    return out


@pytest.mark.parametrize("gates", ["on", "off"])
@pytest.mark.parametrize("k", [2, 3])
def test_batched_beam_search_finds_the_reference_beam_search_captions(k, gates):
    model = _model(seed=3, gates=gates)
    att, mask = _inputs(b=4, seed=4)
    with torch.no_grad():
        seq, score = beam_search(model, att, mask, k, 6)
        ref = _reference_beam(model, att, mask, k, 6)
        greedy, greedy_logp = model.decode(att, mask, 6)
    for i, (ref_score, words, _) in enumerate(ref):
        words = [w for w in words if w != 0]
        assert seq[i, : len(words)].tolist() == words
        assert seq[i, len(words) :].eq(0).all()
        assert score[i].item() == pytest.approx(ref_score, abs=1e-4)
    # the beam's caption is at least as likely as the greedy one
    assert bool((score >= (greedy_logp * sequence_mask(greedy)).sum(1) - 1e-5).all())


def test_sampling_draws_from_the_model_and_returns_the_chosen_tokens_log_probabilities():
    model = _model()
    att, mask = _inputs(b=2)
    g = torch.Generator().manual_seed(0)
    seq, logp = model.decode(att, mask, 5, sample=True, per_image=3, generator=g)
    assert seq.shape == logp.shape == (6, 5)
    assert logp.requires_grad
    m = sequence_mask(seq)
    assert bool((logp[m] < 0).all()) and bool((logp[~m] == 0).all())
    # the samples differ from one another (the distribution is not collapsed) but keep the image order
    assert len({tuple(r) for r in seq.tolist()}) > 1


def test_dropout_is_off_in_eval_mode_and_on_in_training_mode():
    model = _model()
    model = UpDown(dataclasses.replace(model.cfg, dropout=0.5), V, D)
    att, mask = _inputs()
    captions, lengths = torch.randint(1, V, (3, 4)), torch.tensor([4, 4, 4])
    model.eval()
    assert model.xe_loss(att, mask, captions, lengths).item() == model.xe_loss(att, mask, captions, lengths).item()
    model.train()
    assert model.xe_loss(att, mask, captions, lengths).item() != model.xe_loss(att, mask, captions, lengths).item()


@pytest.mark.parametrize("gates", ["on", "off"])
def test_sampled_captions_are_rescored_with_the_dropout_masks_they_were_drawn_with(gates):
    """In training mode the sampling loop runs without gradients; teacher forcing with the same dropout masks
    gives the log-probabilities the loop computed, now with gradients."""
    model = _model(gates=gates)
    model = UpDown(dataclasses.replace(model.cfg, dropout=0.4), V, D).train()
    att, mask = _inputs(b=3)
    w = model._weights()
    prep = model.prepare(att, mask, model.use_gates(2 * 6, att.shape[1]), w)
    masks = model.draw_masks(6, 6, att, torch.Generator().manual_seed(1))
    with torch.no_grad():
        seq, loop_logp = model._decode(prep, w, 2, 6, True, torch.Generator().manual_seed(2), masks)
    rescored = model.sequence_logprobs(prep, 2, seq, w, masks)
    assert rescored.requires_grad
    assert torch.allclose(rescored, loop_logp, atol=1e-5)
    fresh = model.sequence_logprobs(prep, 2, seq, w)  # other dropout masks: other numbers
    assert not torch.allclose(fresh, loop_logp, atol=1e-3)
