"""Batched decoding with fairseq's SequenceGenerator: length-sorted token budgets, per-caption seeds,
and failure isolation by bisection.

Sampling is fairseq's own top-k / top-p ``Sampling`` search with one change: the random draw of a
row comes from a counter-based hash of (the caption's seed, the decoding step, the candidate), turned
into Gumbel noise (Gumbel-max = a draw from the softmax over the candidates), instead of
``torch.multinomial`` on the global generator. So a caption's sample depends on its seed and its own
scores only, not on which captions share its batch, their order, or the device's RNG state. fairseq
passes ``sample["id"]`` to the search as ``original_batch_idxs`` (and keeps it aligned as finished
rows leave the batch); we put each row's seed there, packed with the row's own length limit.

Length limit: fairseq's SequenceGenerator stops at ``max_len_a * L + max_len_b`` where L is the
*batch's* padded source length, so a runaway output's length would depend on its batch. Both searches
here force ``</s>`` once a row reaches the limit computed from its *own* source length (what fairseq
gives that sentence alone), so batching never changes a result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from fairseq.data import data_utils
from fairseq.data.dictionary import tokenize_line
from fairseq.search import BeamSearch, Sampling
from fairseq.sequence_generator import EnsembleModel, SequenceGenerator

logger = logging.getLogger(__name__)

_M32 = 0xFFFFFFFF
_LIMIT_SHIFT = 50  # sample["id"] = row length limit << 50 | 50-bit seed
_SEED_MASK = (1 << _LIMIT_SHIFT) - 1
_MAX_LIMIT = (1 << (63 - _LIMIT_SHIFT)) - 1
_MUL = 0x45D9F3B  # 27 bits: (x < 2**32) * _MUL stays below 2**63, so int64 arithmetic is exact on CPU and CUDA


@dataclass(frozen=True)
class LegSettings:
    """How one leg decodes (forward: English -> pivot; back: pivot -> English)."""

    sampling: bool
    topk: int
    topp: float
    beam: int
    temperature: float
    lenpen: float
    max_len_a: float
    max_len_b: int

    def as_meta(self) -> dict:
        if self.sampling:
            return {
                "search": "sampling",
                "topk": self.topk,
                "topp": self.topp,
                "n": self.beam,
                "temperature": self.temperature,
            }
        return {"search": "beam", "beam": self.beam, "lenpen": self.lenpen, "temperature": self.temperature}


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two xorshift-multiply rounds) on int64 tensors holding values < 2**32."""
    x = (((x >> 16) ^ x) * _MUL) & _M32
    x = (((x >> 16) ^ x) * _MUL) & _M32
    return (x >> 16) ^ x


def gumbel_noise(seeds: torch.Tensor, step: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Gumbel(0, 1) noise of ``shape`` = (rows, beams, candidates): row r uses ``seeds[r]`` only."""
    rows, beams, cands = shape
    s = seeds.to(torch.int64).view(rows, 1, 1)
    lane = torch.arange(beams * cands, device=seeds.device, dtype=torch.int64).view(1, beams, cands)
    h = _mix32(s & _M32)
    h = _mix32(h ^ ((s >> 32) & _M32))
    h = _mix32(h ^ (step & _M32))
    h = _mix32(h ^ lane)
    u = ((h >> 8).to(torch.float32) + 0.5) * (2.0**-24)  # 24 bits: exact in float32, strictly inside (0, 1)
    return -torch.log(-torch.log(u))


def pack_row_ids(seeds: Sequence[int], limits: Sequence[int]) -> list[int]:
    """sample["id"] values carrying each row's seed and its output length limit."""
    return [
        (min(limit, _MAX_LIMIT) << _LIMIT_SHIFT) | (seed & _SEED_MASK)
        for seed, limit in zip(seeds, limits, strict=True)
    ]


def row_limit(source_tokens: int, max_len_a: float, max_len_b: int, max_len: int) -> int:
    """fairseq's limit for one sentence alone (source tokens include </s>), at least min_len = 1."""
    return max(1, min(int(max_len_a * source_tokens + max_len_b), max_len - 1))


def _force_eos_at_limit(search, step: int, lprobs: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
    """Only </s> stays possible for rows whose own length limit is reached (see module doc)."""
    if ids is None:
        return lprobs
    over = (ids >> _LIMIT_SHIFT) <= step
    if not bool(over.any()):
        return lprobs
    eos_scores = lprobs[:, :, search.eos].clone()
    lprobs = lprobs.clone()
    lprobs[over] = -math.inf
    lprobs[:, :, search.eos] = eos_scores
    return lprobs


class SeededBeamSearch(BeamSearch):
    """fairseq's beam search with per-row length limits."""

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
        lprobs = _force_eos_at_limit(self, step, lprobs, original_batch_idxs)
        return super().step(step, lprobs, scores, prev_output_tokens, original_batch_idxs)


class SeededSampling(Sampling):
    """fairseq's ``Sampling`` search (top-k or top-p, n samples = beam) drawing per-row seeded noise,
    with per-row length limits."""

    def step(self, step, lprobs, scores, prev_output_tokens=None, original_batch_idxs=None):
        bsz, beam_size, _ = lprobs.size()
        lprobs = _force_eos_at_limit(self, step, lprobs, original_batch_idxs)
        if step == 0:  # all beams are the same at the first step: draw beam_size samples from the first
            lprobs = lprobs[:, ::beam_size, :].contiguous()
        if self.sampling_topp > 0:
            probs, top_indices = self._sample_topp(lprobs)
            logp = probs.log()
        elif self.sampling_topk > 0:
            logp, top_indices = lprobs.topk(self.sampling_topk)
        else:
            logp, top_indices = lprobs, None
        logp = logp.expand(bsz, beam_size, -1)
        ids = original_batch_idxs if original_batch_idxs is not None else torch.arange(bsz, device=lprobs.device)
        seeds = ids & _SEED_MASK
        choice = (logp.float() + gumbel_noise(seeds, step, tuple(logp.shape))).argmax(dim=-1)
        scores_buf = logp.gather(2, choice.unsqueeze(-1)).squeeze(-1).to(lprobs.dtype)
        if top_indices is not None:
            indices_buf = top_indices.expand(bsz, beam_size, -1).gather(2, choice.unsqueeze(-1)).squeeze(-1)
        else:
            indices_buf = choice
        if step == 0:
            beams_buf = indices_buf.new_zeros(bsz, beam_size)
        else:
            beams_buf = torch.arange(0, beam_size).to(indices_buf).repeat(bsz, 1)
            scores_buf = scores_buf + torch.gather(scores[:, :, step - 1], dim=1, index=beams_buf)
        return scores_buf, indices_buf, beams_buf


class TokensOnlyEnsemble(EnsembleModel):
    """fairseq's ``EnsembleModel`` for a caller that reads only the hypotheses' tokens and scores, with two
    copies fairseq makes at every decoding step left out (the same tokens and scores, tested):

    * **No attention record.** ``SequenceGenerator`` stores each step's encoder attention in a
      (rows, source, max_len + 2) tensor and re-gathers its prefix by beam at every step (a strided
      ``index_select``): the hypotheses' ``"attention"`` (and ``"alignment"``), never read here. Returning no
      attention from ``forward_decoder`` skips both; the log-probabilities are untouched.
    * **No reorder of the encoder output while no sentence has left the batch.** The generator expands the
      encoder output to ``beam`` identical copies per sentence once, then re-gathers it by the beam
      back-pointers at every step (``index_select`` of every tensor in it). Beam search only picks among a
      sentence's own beams, so while the batch keeps all its rows (the order has as many entries as the
      encoder output has rows) that gather returns exactly the tensors it was given. Once finished sentences
      leave the batch (fewer entries) the real reorder runs.
    """

    def forward_decoder(self, tokens, encoder_outs, incremental_states, temperature: float = 1.0):
        probs, _ = super().forward_decoder(tokens, encoder_outs, incremental_states, temperature)
        return probs, None

    def reorder_encoder_out(self, encoder_outs, new_order):
        if encoder_outs and _encoder_rows(encoder_outs[0]) == new_order.numel():
            return encoder_outs
        return super().reorder_encoder_out(encoder_outs, new_order)


def _encoder_rows(encoder_out: dict) -> int | None:
    """Rows (batch x beam) of a fairseq transformer encoder output (its "encoder_out" is T x rows x C)."""
    tensors = encoder_out.get("encoder_out") if isinstance(encoder_out, dict) else None
    return tensors[0].size(1) if tensors else None


def build_generator(hub, leg: LegSettings, *, tokens_only: bool = True) -> SequenceGenerator:
    """A SequenceGenerator over the hub's models; sampling uses SeededSampling, beam fairseq's BeamSearch.
    ``tokens_only`` (default) decodes through ``TokensOnlyEnsemble``: hypotheses without attention, the same
    tokens and scores; ``False`` keeps fairseq's stock ``EnsembleModel``."""
    if leg.sampling:
        search = SeededSampling(hub.tgt_dict, leg.topk if leg.topk > 0 else -1, leg.topp if leg.topp > 0 else -1.0)
    else:
        search = SeededBeamSearch(hub.tgt_dict)
    return SequenceGenerator(
        TokensOnlyEnsemble(hub.models) if tokens_only else hub.models,
        hub.tgt_dict,
        beam_size=leg.beam,
        max_len_a=leg.max_len_a,
        max_len_b=leg.max_len_b,
        len_penalty=leg.lenpen,
        temperature=leg.temperature,
        search_strategy=search,
    )


def token_string(dictionary, tokens: torch.Tensor) -> str:
    """fairseq's ``Dictionary.string(tokens)`` with its defaults (no BPE symbol, unescaped ``<unk>``, eos and
    bos left out) for a 1-d tensor: the same string from one ``tolist()`` instead of a Python loop over the
    tensor's elements (about 13% of the stage's time with small models)."""
    ignore = {dictionary.eos(), dictionary.bos()}
    unk, unk_word, symbols = dictionary.unk(), dictionary.unk_word, dictionary.symbols
    n = len(symbols)
    return " ".join(unk_word if i == unk or i >= n else symbols[i] for i in tokens.tolist() if i not in ignore)


def binarize(dictionary, line: str) -> torch.Tensor:
    """fairseq's ``hub.binarize(line)`` (``Dictionary.encode_line(line, add_if_not_exist=False).long()``: ids of
    the whitespace-separated symbols, ``<unk>`` for unknown ones, then ``</s>``) from one list instead of a
    tensor element assignment per symbol."""
    index, unk = dictionary.indices.get, dictionary.unk_index
    ids = [index(word, unk) for word in tokenize_line(line)]
    ids.append(dictionary.eos_index)
    return torch.tensor(ids, dtype=torch.long)


def encode_text(hub, text: str) -> torch.Tensor:
    """``hub.encode(text)`` (Moses, BPE, ids) with ``binarize`` for the last step."""
    return binarize(hub.src_dict, hub.apply_bpe(hub.tokenize(text)))


def decode_text(hub, tokens: torch.Tensor) -> str:
    """``hub.decode(tokens)`` (string, BPE removal, detokenisation) with ``token_string`` for the first step;
    other tensor shapes go to the hub."""
    if tokens.dim() != 1:
        return hub.decode(tokens)
    return hub.detokenize(hub.remove_bpe(token_string(hub.tgt_dict, tokens)))


# --------------------------------------------------------------------------------------------
# Batching.


def plan_batches(lengths: Sequence[int], max_tokens: int, max_sentences: int, sort: bool = True) -> list[list[int]]:
    """Index lists: rows sorted by length (stable), a batch closes before its padded size
    (rows x longest) would exceed ``max_tokens`` or it would hold more than ``max_sentences`` rows.
    A row longer than max_tokens gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if sort else list(range(len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        new_longest = max(longest, lengths[i])
        if current and (new_longest * (len(current) + 1) > max_tokens or len(current) >= max_sentences):
            batches.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def _run_batch(hub, generator: SequenceGenerator, tokens: list[torch.Tensor], seeds: list[int]) -> list[torch.Tensor]:
    limits = [row_limit(t.numel(), generator.max_len_a, generator.max_len_b, generator.max_len) for t in tokens]
    src_dict = hub.src_dict
    left_pad = bool(getattr(hub.task.cfg, "left_pad_source", True))
    src = data_utils.collate_tokens(tokens, src_dict.pad(), src_dict.eos(), left_pad=left_pad)
    device = hub.device
    sample = {
        "id": torch.tensor(pack_row_ids(seeds, limits), dtype=torch.int64, device=device),  # for the searches
        "net_input": {
            "src_tokens": src.to(device),
            "src_lengths": torch.tensor([t.numel() for t in tokens], dtype=torch.int64, device=device),
        },
    }
    hypos = hub.task.inference_step(generator, hub.models, sample)
    return [h[0]["tokens"].cpu() for h in hypos]


# Errors a model may raise for particular inputs (CUDA OOM is a RuntimeError): isolated by bisection.
MODEL_ERRORS = (RuntimeError, IndexError, ValueError)


def generate(
    hub,
    generator: SequenceGenerator,
    tokens: list[torch.Tensor],
    seeds: list[int],
    *,
    max_tokens: int,
    max_sentences: int,
    sort: bool = True,
    run: Callable | None = None,
) -> list[torch.Tensor | Exception]:
    """The top hypothesis for every input, in input order; an input the model fails on gets its
    exception instead (the batch is bisected until the failing inputs are alone)."""
    run = run or _run_batch
    out: list[torch.Tensor | Exception | None] = [None] * len(tokens)
    for batch in plan_batches([t.numel() for t in tokens], max_tokens, max_sentences, sort):
        _generate_isolating(hub, generator, tokens, seeds, batch, out, run)
    return out  # type: ignore[return-value]


def _generate_isolating(hub, generator, tokens, seeds, batch, out, run) -> None:
    try:
        results = run(hub, generator, [tokens[i] for i in batch], [seeds[i] for i in batch])
    except MODEL_ERRORS as err:
        if hub.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            logger.warning("translation failed for one sentence: %s", err)
            out[batch[0]] = err
            return
        half = len(batch) // 2
        _generate_isolating(hub, generator, tokens, seeds, batch[:half], out, run)
        _generate_isolating(hub, generator, tokens, seeds, batch[half:], out, run)
        return
    for i, result in zip(batch, results, strict=True):
        out[i] = result
