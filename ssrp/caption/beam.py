"""Beam search over a batch of images at once.

The search is the classic one of self-critical.pytorch's ``beam_search`` (group size 1, no length
penalty): at each step the ``beam_size`` best one-word extensions of an image's live beams are kept; those
that end with ``<eos>`` (or reach ``max_words``) are finished and leave the beam, the others go on. The
caption is the best finished one. Every image of the batch and every beam runs in one tensor per step,
with no loop over images; an image leaves the batch once its best finished caption scores at least as
high as its best live beam (log-probabilities only fall, so no live beam can overtake it), and the search
ends when every image has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssrp.caption.model import UpDown
from ssrp.caption.vocab import EOS_ID


@dataclass
class Beams:
    """The live beams of the images still searching (b of them, k beams each, t words so far)."""

    images: Tensor  # [b] positions in the batch
    sums: Tensor  # [b, k] log-probability of each beam (-inf: finished or empty slot)
    seqs: Tensor  # [b, k, t]


@torch.no_grad()
def beam_search(model: UpDown, att: Tensor, mask: Tensor, beam_size: int, max_words: int) -> tuple[Tensor, Tensor]:
    """The best caption of each image [B, max_words] (0 from its <eos> on) and its log-probability [B]."""
    b, k, device = att.shape[0], beam_size, att.device
    w = model._weights()
    prep = model.prepare(att, mask, model.use_gates(k * max_words, att.shape[1]), w)
    rows = torch.arange(b, device=device).repeat_interleave(k)
    fc_part = torch.addmm(w["b1"], prep.fc, w["w_fc"].t())[rows]
    prep = prep.rows(rows)
    state, words = model.init_state(b * k, att), torch.full((b * k,), EOS_ID, dtype=torch.long, device=device)
    first = torch.full((b, k), float("-inf"), device=device)
    first[:, 0] = 0.0  # one start beam per image
    beams = Beams(torch.arange(b, device=device), first, torch.zeros((b, k, 0), dtype=torch.long, device=device))
    best = torch.full((b,), float("-inf"), device=device)
    best_seq = torch.zeros((b, max_words), dtype=torch.long, device=device)
    for t in range(max_words):
        state = model._core(model.word_input(words, fc_part, w), state, prep, w)
        logp = model.logprobs(state.h2).view(len(beams.images), k, -1)
        beams, beam_ix, word = _extend(beams, logp, k)
        _finish(beams, word, t == max_words - 1, best, best_seq)
        going = best[beams.images] < beams.sums.max(1).values
        parents = (torch.arange(len(beam_ix), device=device)[:, None] * k + beam_ix).view(-1)
        state, words = state.rows(parents), word.view(-1)
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            beams = Beams(beams.images[keep], beams.sums[keep], beams.seqs[keep])
            keep_rows = (keep[:, None] * k + torch.arange(k, device=device)).view(-1)
            state, words = state.rows(keep_rows), words[keep_rows]
            prep, fc_part = prep.rows(keep_rows), fc_part[keep_rows]
        if len(beams.images) == 0:
            break
    return best_seq, best


def _extend(beams: Beams, logp: Tensor, k: int) -> tuple[Beams, Tensor, Tensor]:
    """The k best one-word extensions of each image's live beams; returns them, their parent beam and word."""
    vocab = logp.shape[-1]
    cand = (beams.sums[:, :, None] + logp).view(len(beams.images), -1)
    scores, idx = cand.topk(k, dim=1)
    beam_ix, word = idx // vocab, idx % vocab
    t = beams.seqs.shape[2]
    seqs = torch.cat([beams.seqs.gather(1, beam_ix[..., None].expand(-1, -1, t)), word[..., None]], 2)
    return Beams(beams.images, scores, seqs), beam_ix, word


def _finish(beams: Beams, word: Tensor, last: bool, best: Tensor, best_seq: Tensor) -> None:
    """Record the extensions that end here (in ``best``/``best_seq``) and take them out of the live beams."""
    ended = torch.ones_like(word, dtype=torch.bool) if last else word == EOS_ID
    finished = beams.sums.masked_fill(~ended, float("-inf"))
    top, j = finished.max(1)
    better = top > best[beams.images]
    if bool(better.any()):
        img = beams.images[better]
        seq = beams.seqs[better, j[better]]
        best[img] = top[better]
        best_seq[img] = 0
        best_seq[img, : seq.shape[1]] = seq
    beams.sums.masked_fill_(ended, float("-inf"))
