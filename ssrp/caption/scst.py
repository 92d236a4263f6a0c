"""Self-critical sequence training (Rennie et al. 2017) with the CIDEr-D reward and the greedy baseline.

Per image, ``samples`` captions are drawn from the model (in training mode, as self-critical.pytorch
draws them) and one greedy caption is decoded (evaluation mode, no gradient). Each sample's advantage is
its CIDEr-D minus the greedy caption's; the loss is ``-advantage * log p(token)`` averaged over the
sampled tokens (words and <eos>). CIDEr-D is scored on word ids with the <eos> token kept at the end of
ended captions and of the references (as self-critical does), with document frequencies of the training
references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssrp.caption.cider import CiderD, DocumentFrequency
from ssrp.caption.model import UpDown, sequence_mask
from ssrp.caption.vocab import EOS_ID


def with_eos(ids: np.ndarray) -> list[int]:
    """The tokens of a decoded row up to and including its <eos> (all of them when it never ended)."""
    ids = np.asarray(ids)
    end = np.flatnonzero(ids == EOS_ID)
    return ids[: end[0] + 1].tolist() if len(end) else ids.tolist()


def reward_references(refs: Sequence[np.ndarray]) -> list[list[int]]:
    return [list(map(int, r)) + [EOS_ID] for r in refs]


def reward_scorer(train_refs: Sequence[Sequence[np.ndarray]], vocab_size: int) -> CiderD:
    """CIDEr-D with document frequencies of the training references (<eos> appended)."""
    return CiderD(DocumentFrequency([reward_references(r) for r in train_refs], vocab_size))


@dataclass
class ScstOutput:
    loss: Tensor
    sample_reward: float  # mean CIDEr-D of the sampled captions
    greedy_reward: float  # mean CIDEr-D of the greedy captions (the baseline)


def advantages(scorer: CiderD, samples: np.ndarray, greedy: np.ndarray, refs: Sequence[Sequence[np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: CIDEr-D(sample) - CIDEr-D(its image's greedy caption); and both scores."""
    b = len(greedy)
    k = len(samples) // b
    hyps = [with_eos(s) for s in samples] + [with_eos(g) for g in greedy]
    image_of = np.concatenate([np.repeat(np.arange(b), k), np.arange(b)])
    scores = scorer.scores(hyps, [reward_references(r) for r in refs], image_of)
    sample_scores, greedy_scores = scores[: b * k], scores[b * k :]
    return sample_scores - np.repeat(greedy_scores, k), sample_scores, greedy_scores


def policy_loss(logp: Tensor, seq: Tensor, advantage: Tensor) -> Tensor:
    """-advantage * log p over the sampled tokens, averaged over them."""
    mask = sequence_mask(seq).to(logp.dtype)
    return -(logp * mask * advantage[:, None]).sum() / mask.sum()


def scst_step(model: UpDown, att: Tensor, mask: Tensor, refs: Sequence[Sequence[np.ndarray]], scorer: CiderD,
              samples: int, max_words: int) -> ScstOutput:
    model.eval()
    with torch.no_grad():
        greedy, _ = model.decode(att, mask, max_words)
    model.train()
    seq, logp = model.decode(att, mask, max_words, sample=True, per_image=samples)
    adv, sample_scores, greedy_scores = advantages(scorer, seq.cpu().numpy(), greedy.cpu().numpy(), refs)
    loss = policy_loss(logp, seq, torch.as_tensor(adv, dtype=logp.dtype, device=logp.device))
    return ScstOutput(loss, float(sample_scores.mean()), float(greedy_scores.mean()))
