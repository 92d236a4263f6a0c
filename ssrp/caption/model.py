"""Up-Down (Anderson et al., CVPR 2018, Sec. 3.2): a top-down attention LSTM and a language LSTM.

At each step t, with v_1..v_N the object features and v̄ their mean:

* attention LSTM:  h1_t = LSTM1([h2_{t-1}; v̄; W_e y_{t-1}], h1_{t-1})
* attention:       a_i = w_a^T tanh(W_va v_i + W_ha h1_t),  α = softmax(a),  v̂_t = Σ_i α_i v_i
* language LSTM:   h2_t = LSTM2([v̂_t; h1_t], h2_{t-1})
* output:          p(y_t) = softmax(W_p h2_t + b_p)

Word id 0 (``<eos>``) is both the start token and the end of a caption. Dropout acts on the word
embedding and on h2 before the output layer. With ``model.feature_embed`` each feature first goes
through Linear -> ReLU -> Dropout (self-critical.pytorch's ``att_embed`` and ``fc_embed``).

How it is computed (the same numbers as running the two ``nn.LSTMCell``s step by step):

* what does not depend on the recurrence is computed once for all steps: the word-embedding and v̄
  parts of LSTM1's input projection (one matmul over every step), W_va v_i (once per image);
* captions are sorted by length, so step t runs only the captions still going (a prefix of the rows);
* the output layer and the loss run once, after the loop, over the real positions only;
* decoding drops captions from the batch as they end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssrp.caption.config import ModelConfig
from ssrp.caption.vocab import EOS_ID


class Attention(nn.Module):
    """a_i = w_a^T tanh(W_va v_i + W_ha h), softmax over the image's real objects, v̂ = Σ α_i v_i."""

    def __init__(self, feat_dim: int, hidden: int, att_hidden: int):
        super().__init__()
        self.feat = nn.Linear(feat_dim, att_hidden)  # W_va
        self.query = nn.Linear(hidden, att_hidden)  # W_ha
        self.score = nn.Linear(att_hidden, 1)  # w_a

    def weights(self, h: Tensor, p_att: Tensor, mask: Tensor) -> Tensor:
        """h [n, H]; p_att = W_va v [n, N, A]; mask [n, N] -> α [n, N]."""
        e = torch.tanh(p_att + self.query(h)[:, None])
        return torch.softmax(self.score(e).squeeze(-1).masked_fill(~mask, float("-inf")), -1)

    def forward(self, h: Tensor, att: Tensor, p_att: Tensor, mask: Tensor) -> Tensor:
        """v̂ [n, D] over att [n, N, D]."""
        return torch.bmm(self.weights(h, p_att, mask)[:, None], att).squeeze(1)


@dataclass
class Prepared:
    """Per-image inputs of the recurrence, computed once: features (or their LSTM2 gate inputs), W_va v, v̄, mask."""

    att: Tensor | None  # [B, N, D] (embedded when model.feature_embed); None when ``gates`` replace it
    p_att: Tensor  # [B, N, A] = W_va att
    fc: Tensor  # [B, D] v̄ (embedded when model.feature_embed)
    mask: Tensor  # bool [B, N]
    gates: Tensor | None = None  # [B, N, 4H]: LSTM2's input weights for v̂ applied to each object

    def rows(self, index: Tensor) -> Prepared:
        return Prepared(*(None if t is None else t[index] for t in (self.att, self.p_att, self.fc, self.mask, self.gates)))

    def prefixes(self, sizes: list[int]) -> list[Prepared]:
        """``[:n]`` of every field for each n (one gradient buffer per field, not one per slice)."""
        fields = [None if t is None else prefix_slices(t, sizes) for t in (self.att, self.p_att, self.fc, self.mask, self.gates)]
        return [Prepared(*(None if f is None else f[k] for f in fields)) for k in range(len(sizes))]


@dataclass
class State:
    h1: Tensor
    c1: Tensor
    h2: Tensor
    c2: Tensor

    def rows(self, index: Tensor) -> State:
        return State(self.h1[index], self.c1[index], self.h2[index], self.c2[index])

    def first(self, n: int) -> State:
        return State(self.h1[:n], self.c1[:n], self.h2[:n], self.c2[:n])


class _PrefixSlices(torch.autograd.Function):
    """``x[:n]`` for each n; the backward adds every slice's gradient into one buffer. (Slicing a tensor once per
    step would give each step's gradient the tensor's full size, zero-filled and then summed.)"""

    @staticmethod
    def forward(ctx, x: Tensor, *sizes: int):
        ctx.shape, ctx.sizes = x.shape, sizes
        return tuple(x[:n] for n in sizes)

    @staticmethod
    def backward(ctx, *grads):
        out = grads[0].new_zeros(ctx.shape)
        for n, g in zip(ctx.sizes, grads, strict=True):
            if g is not None:
                out[:n] += g
        return (out, *([None] * len(ctx.sizes)))


def prefix_slices(x: Tensor, sizes: list[int]) -> list[Tensor]:
    if not x.requires_grad or x.dtype == torch.bool:
        return [x[:n] for n in sizes]
    return list(_PrefixSlices.apply(x, *sizes))


def lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """nn.LSTMCell's update from its gate pre-activations (PyTorch's order: input, forget, cell, output)."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class UpDown(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, feat_dim: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.feat_dim = feat_dim
        h = cfg.hidden
        d = h if cfg.feature_embed else feat_dim
        self.att_embed = _feature_embed(feat_dim, h, cfg.dropout) if cfg.feature_embed else None
        self.fc_embed = _feature_embed(feat_dim, h, cfg.dropout) if cfg.feature_embed else None
        self.embed = nn.Embedding(vocab_size, cfg.embed)
        self.att_lstm = nn.LSTMCell(h + d + cfg.embed, h)  # input [h2_{t-1}; v̄; W_e y_{t-1}]
        self.attention = Attention(d, h, cfg.att_hidden)
        self.lang_lstm = nn.LSTMCell(d + h, h)  # input [v̂_t; h1_t]
        self.logit = nn.Linear(h, vocab_size)
        self.drop = nn.Dropout(cfg.dropout)

    # --------------------------------------------------------------------------------------------
    # Pieces shared by training and decoding

    def use_gates(self, steps_per_image: float, objects: int) -> bool:
        """Whether to apply LSTM2's v̂ weights to every object once (W Σ α_i v_i = Σ α_i W v_i): it pays when an
        image's captions take more steps in all than it has objects (``model.object_gates``)."""
        mode = self.cfg.object_gates
        return mode == "on" or (mode == "auto" and steps_per_image > objects)

    def prepare(self, att: Tensor, mask: Tensor, gates: bool = False, w: dict[str, Tensor] | None = None) -> Prepared:
        m = mask[..., None].to(att.dtype)
        fc = (att * m).sum(1) / m.sum(1).clamp(min=1)
        if self.att_embed is not None:
            att, fc = self.att_embed(att), self.fc_embed(fc)
        if not gates:
            return Prepared(att, self.attention.feat(att), fc, mask)
        w_v = (w or self._weights())["w2_v"]
        return Prepared(None, self.attention.feat(att), fc, mask, torch.matmul(att, w_v.t()))

    def init_state(self, n: int, like: Tensor) -> State:
        z = like.new_zeros(n, self.cfg.hidden)
        return State(z, z, z, z)

    def _weights(self) -> dict[str, Tensor]:
        """LSTM1's input weights split by input part; the recurrent inputs' weights joined for one matmul each.
        (``split``, not slicing: its backward joins the parts' gradients instead of zero-filling one per slice.)"""
        h = self.cfg.hidden
        w1_h2, w1_fc, w1_word = self.att_lstm.weight_ih.split([h, self.att_lstm.input_size - h - self.cfg.embed,
                                                               self.cfg.embed], 1)
        w2_v, w2_h1 = self.lang_lstm.weight_ih.split([self.lang_lstm.input_size - h, h], 1)
        return {
            "w_fc": w1_fc,
            "w_word": w1_word,
            "w_rec1": torch.cat([w1_h2, self.att_lstm.weight_hh], 1),  # on [h2_{t-1}; h1_{t-1}]
            "b1": self.att_lstm.bias_ih + self.att_lstm.bias_hh,
            "w2": torch.cat([self.lang_lstm.weight_ih, self.lang_lstm.weight_hh], 1),  # on [v̂; h1; h2_{t-1}]
            "w2_v": w2_v,
            "w2_rest": torch.cat([w2_h1, self.lang_lstm.weight_hh], 1),  # on [h1; h2_{t-1}]
            "b2": self.lang_lstm.bias_ih + self.lang_lstm.bias_hh,
        }

    def _core(self, x1: Tensor, s: State, prep: Prepared, w: dict[str, Tensor]) -> State:
        """One step of both LSTMs; ``x1`` is LSTM1's input pre-activation from the word and v̄ (bias included)."""
        g1 = x1 + torch.cat([s.h2, s.h1], 1) @ w["w_rec1"].t()
        h1, c1 = lstm_pointwise(g1, s.c1)
        alpha = self.attention.weights(h1, prep.p_att, prep.mask)
        if prep.gates is None:
            v_hat = torch.bmm(alpha[:, None], prep.att).squeeze(1)
            g2 = torch.addmm(w["b2"], torch.cat([v_hat, h1, s.h2], 1), w["w2"].t())
        else:
            g2 = torch.addmm(w["b2"], torch.cat([h1, s.h2], 1), w["w2_rest"].t())
            g2 = g2 + torch.bmm(alpha[:, None], prep.gates).squeeze(1)
        h2, c2 = lstm_pointwise(g2, s.c2)
        return State(h1, c1, h2, c2)

    def word_input(self, words: Tensor, fc_part: Tensor, w: dict[str, Tensor]) -> Tensor:
        """LSTM1's pre-activation from the previous words [n] and the v̄ part [n, 4H]."""
        return torch.addmm(fc_part, self.drop(self.embed(words)), w["w_word"].t())

    def logprobs(self, h2: Tensor) -> Tensor:
        return F.log_softmax(self.logit(self.drop(h2)), -1)

    # --------------------------------------------------------------------------------------------
    # Teacher forcing: cross-entropy, and the log-probabilities of given captions

    def _teacher_forced(self, prep: Prepared, per_image: int, captions: Tensor, lengths: Tensor, ended: Tensor,
                        w: dict[str, Tensor], masks: Masks | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """h2 (after dropout) at every predicted token, packed time-major, with its target, row and step.

        A row predicts its words, then <eos> where ``ended``. ``masks``: the dropout masks to use (those a
        sampling pass drew), instead of fresh dropout.
        """
        steps_per_row = lengths + ended.long()
        order = torch.argsort(steps_per_row, descending=True, stable=True)
        steps = steps_per_row[order]
        caps = captions[order]
        prep = prep.rows(order // per_image)
        t_max = int(steps[0])
        inputs = F.pad(caps, (1, 0), value=EOS_ID)[:, :t_max]  # <eos> as the start token
        emb = self.embed(inputs)
        emb = self.drop(emb) if masks is None else emb * masks.emb[order, :t_max]
        x_all = torch.matmul(emb, w["w_word"].t())  # [R, T, 4H], every step at once
        x_all = x_all + (torch.addmm(w["b1"], prep.fc, w["w_fc"].t()))[:, None]
        active = (steps[None, :] > torch.arange(t_max, device=steps.device)[:, None]).sum(1).tolist()
        state = self.init_state(len(order), prep.fc)
        outputs = []
        for n, x, p in zip(active, x_all.unbind(1), prep.prefixes(active), strict=True):
            state = self._core(x[:n], state.first(n), p, w)
            outputs.append(state.h2)
        rows = torch.cat([order[:n] for n in active])
        step = torch.cat([torch.full((n,), t, device=order.device) for t, n in enumerate(active)])
        h2 = torch.cat(outputs)
        h2 = self.drop(h2) if masks is None else h2 * masks.out[rows, step]
        targets = F.pad(caps, (0, 1), value=EOS_ID)[:, :t_max]  # the words, then <eos> (captions are 0-padded)
        return h2, torch.cat([targets[:n, t] for t, n in enumerate(active)]), rows, step

    def xe_loss(self, att: Tensor, mask: Tensor, captions: Tensor, lengths: Tensor) -> Tensor:
        """Mean cross-entropy per predicted token (the words and each caption's <eos>), teacher forcing.

        att [B, N, D], mask [B, N]; captions [B * S, T] (S captions per image, in image order), lengths [B * S].
        """
        per_image = captions.shape[0] // att.shape[0]
        w = self._weights()
        gates = self.use_gates(per_image * (float(lengths.float().mean()) + 1), att.shape[1])
        prep = self.prepare(att, mask, gates, w)
        h2, targets, _, _ = self._teacher_forced(prep, per_image, captions, lengths, torch.ones_like(lengths, dtype=torch.bool), w)
        return F.cross_entropy(self.logit(h2), targets)

    def sequence_logprobs(self, prep: Prepared, per_image: int, seq: Tensor, w: dict[str, Tensor],
                          masks: Masks | None = None) -> Tensor:
        """log p of each token of decoded captions ``seq`` [R, T] (words, then <eos> where it ended), 0 elsewhere."""
        lengths = (seq != EOS_ID).long().cumprod(1).sum(1)
        ended = lengths < seq.shape[1]
        h2, targets, rows, step = self._teacher_forced(prep, per_image, seq, lengths, ended, w, masks)
        logp = F.log_softmax(self.logit(h2), -1).gather(1, targets[:, None]).squeeze(1)
        return logp.new_zeros(seq.shape).index_put((rows, step), logp)

    # --------------------------------------------------------------------------------------------
    # Greedy and sampled decoding

    def draw_masks(self, rows: int, steps: int, like: Tensor, generator: torch.Generator | None = None) -> Masks | None:
        """Dropout masks of a decoding pass in training mode (None in evaluation mode or without dropout)."""
        p = self.cfg.dropout
        if not self.training or p == 0:
            return None
        keep = 1.0 - p

        def draw(width: int) -> Tensor:
            return torch.bernoulli(like.new_full((rows, steps, width), keep), generator=generator) / keep

        return Masks(draw(self.cfg.embed), draw(self.cfg.hidden))

    def decode(self, att: Tensor, mask: Tensor, max_words: int, sample: bool = False, per_image: int = 1,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Captions [R, max_words] (0 from the <eos> on) and the log-probability of each chosen token [R, max_words].

        ``per_image`` captions for each image (rows image-major); argmax words, or drawn from the model's
        distribution with ``sample``. A caption ends with <eos> or after ``max_words`` words.

        With gradients on, the captions are decoded without them, then scored by teacher forcing with the
        dropout masks the decoding drew: the same log-probabilities, with one pass of the output layer over
        every token instead of one per step.
        """
        w = self._weights()
        prep = self.prepare(att, mask, self.use_gates(per_image * max_words, att.shape[1]), w)
        masks = self.draw_masks(att.shape[0] * per_image, max_words, att, generator)
        with torch.no_grad():
            seq, logp = self._decode(_detached(prep), _detached(w), per_image, max_words, sample, generator, masks)
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            logp = self.sequence_logprobs(prep, per_image, seq, w, masks)
        return seq, logp

    def _decode(self, prep: Prepared, w: dict[str, Tensor], per_image: int, steps: int, sample: bool,
                generator: torch.Generator | None, masks: Masks | None) -> tuple[Tensor, Tensor]:
        """The decoding loop; ended rows leave the batch once a quarter of it has ended."""
        rows = prep.fc.shape[0] * per_image
        device = prep.fc.device
        image_of_row = torch.arange(prep.fc.shape[0], device=device).repeat_interleave(per_image)
        fc_part = torch.addmm(w["b1"], prep.fc, w["w_fc"].t())[image_of_row]
        prep = prep.rows(image_of_row)
        seq = torch.zeros(rows, steps, dtype=torch.long, device=device)
        logps = torch.zeros(rows, steps, device=device)
        live = torch.arange(rows, device=device)  # the batch's rows still computed
        going = torch.ones(rows, dtype=torch.bool, device=device)  # ... and which of them have not ended
        state, words = self.init_state(rows, prep.fc), seq.new_zeros(rows)
        for t in range(steps):
            emb = self.embed(words) * masks.emb[live, t] if masks is not None else self.embed(words)
            state = self._core(torch.addmm(fc_part, emb, w["w_word"].t()), state, prep, w)
            h2 = state.h2 * masks.out[live, t] if masks is not None else state.h2
            logp = F.log_softmax(self.logit(h2), -1)
            words = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1) if sample else logp.argmax(-1)
            words = words.masked_fill(~going, EOS_ID)
            seq[live[going], t] = words[going]
            logps[live[going], t] = logp.gather(1, words[:, None]).squeeze(1)[going]
            going = going & (words != EOS_ID)
            n = int(going.sum())
            if n == 0:
                break
            if n <= 0.75 * len(going):
                keep = going.nonzero().squeeze(1)
                live, words, state, going = live[keep], words[keep], state.rows(keep), going[keep]
                prep, fc_part = prep.rows(keep), fc_part[keep]
        return seq, logps


@dataclass
class Masks:
    """Dropout masks (already scaled by 1 / keep) of a decoding pass: word embedding and h2, per row and step."""

    emb: Tensor  # [R, T, E]
    out: Tensor  # [R, T, H]


def _detached(x):
    if isinstance(x, dict):
        return {k: v.detach() for k, v in x.items()}
    return Prepared(*(None if t is None else t.detach() for t in (x.att, x.p_att, x.fc, x.mask, x.gates)))


def _feature_embed(feat_dim: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU(), nn.Dropout(dropout))


def sequence_mask(seq: Tensor) -> Tensor:
    """The positions of each caption's words and its <eos> (what the caption's probability covers)."""
    ended = (seq == EOS_ID).long().cumsum(1)
    return (ended == 0) | ((ended == 1) & (seq == EOS_ID))
