"""The SSRP encoders (Sec. 3.2): embeddings, intra-modality encoders and the three inter-modality encoders.

Every variant maps (tokens, RoIs) to contextual token states W and object states V through the same
interface, ``SSRPEncoder(cfg)(text, objects) -> (W, V)``:

* **Share**: each inter-modality layer is one self-attention sub-layer (and, with ``share_ff``, one FF
  sub-layer) whose weights serve both modalities; by default each modality attends within itself
  (``share_attention="separate"``), the modalities meeting only through the shared projections.
* **Visual**: the text branch is self-attention -> one-way cross-attention into vision -> FF; the
  visual branch is self-attention -> FF.
* **Cross**: LXMERT's layer: one bi-directional cross-attention sub-layer (one set of weights used
  in both directions), then per-modality self-attention, then per-modality FF. With LXMERT's weights
  SSRP-Cross computes ``transformers.LxmertModel``'s function (bench/train.py checks it).

Sub-layers follow Eq. 1: ``LN(x + f(x))``. Attention runs per head on ``[B * heads, L, d]`` blocks: on CPU
as two batched matrix products around a softmax (padded keys get the dtype's lowest value added, no mask
at all where every key is real), elsewhere through ``torch.nn.functional.scaled_dot_product_attention``.

Padding costs nothing outside attention: with ``model.unpad`` each modality is carried as the
``[N, H]`` rows of its real positions (``Layout``), so projections, FF, LayerNorm and dropout skip
padded tokens; only attention puts rows on the padded per-head grid (one copy each way). Real positions
get the same values as the dense computation (without dropout; in training the dropout masks are drawn
over the real rows only); padded positions come out as zeros. ``encode(..., keep=...)`` also skips what
no loss reads: the last inter-modality layer computes its queries, output projections and FF only for the
kept positions (stage 1: masked tokens, [CLS] and masked RoIs); keys and values still come from every
position, so kept positions get exactly the full computation's states. ``auto`` unpads on CPU only: on an
H100 the eager step is bound by kernel launches, and the gather/scatter and the host copy of each mask
showed no gain above the noise (docs/training.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssrp.train.config import ModelConfig


class _Gather(torch.autograd.Function):
    """``rows[index]`` for unique indices; the backward copies into zeros (``index_add``'s CPU path,
    a scatter-add, was several times slower)."""

    @staticmethod
    def forward(ctx, rows: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.count = rows.shape[0]
        return rows.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.count, *grad.shape[1:]).index_copy_(0, index, grad), None


class _Scatter(torch.autograd.Function):
    """``rows`` written at unique ``index`` into ``count`` zero rows; the backward gathers."""

    @staticmethod
    def forward(ctx, rows: Tensor, index: Tensor, count: int) -> Tensor:
        ctx.save_for_backward(index)
        return rows.new_zeros(count, *rows.shape[1:]).index_copy_(0, index, rows)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def keep_mask(shape: tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
    """A CPU dropout mask: 1 / (1 - p) with probability 1 - p, else 0. Drawn by numpy's PCG64 (about 3x
    faster than torch's CPU ``bernoulli_``, which draws element by element from one MT19937) from a seed
    taken from torch's default generator, so ``torch.manual_seed`` decides every mask. The threshold and the
    scale are applied in place by numpy (float32, as torch's ``ge_(p).mul_(1 / (1 - p))`` would: the same mask),
    single-threaded: torch's two-thread elementwise kernels were up to 10x slower on a loaded machine."""
    seed = int(torch.randint(0, 2**62, (1,)))
    mask = np.random.default_rng(seed).random(shape, dtype=np.float32)
    np.greater_equal(mask, np.float32(p), out=mask, casting="unsafe")
    np.multiply(mask, np.float32(1.0 / (1.0 - p)), out=mask)
    return torch.from_numpy(mask).to(dtype)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout``, with masks from ``keep_mask`` on CPU (the same Bernoulli(1 - p) keep distribution)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * keep_mask(tuple(x.shape), p, x.dtype)


def add_dropped(x: Tensor, y: Tensor, p: float, training: bool) -> Tensor:
    """``x + dropout(y)``; on CPU in one pass (``addcmul`` with the mask)."""
    if not training or p == 0.0 or y.device.type != "cpu":
        return x + dropout(y, p, training)
    return torch.addcmul(x, y, keep_mask(tuple(y.shape), p, y.dtype))


class Dropout(nn.Module):
    """``nn.Dropout`` through ``dropout`` (fast masks on CPU)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _SparseGradLookup(torch.autograd.Function):
    """``weight[ids]`` whose weight gradient is a sparse ``[V, H]`` tensor of the looked-up rows. For a weight
    that also gets a dense gradient (BERT's MLM decoder is tied to the word embeddings) autograd adds the sparse
    rows into the dense gradient, where ``nn.Embedding``'s backward would zero-fill a second dense ``[V, H]``
    tensor and add the two (about 1% of a CPU step)."""

    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.shape = weight.shape
        return weight.index_select(0, ids)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        return torch.sparse_coo_tensor(ids[None], grad, ctx.shape, check_invariants=False), None


class _TiedWeight(torch.autograd.Function):
    """Two aliases of one weight: the MLM decoder reads the first, the word lookup (``_SparseGradLookup``) the
    second. Their gradients meet here, in one backward: the lookup's sparse rows are added in place into the
    decoder's dense ``[V, H]`` gradient. Left to autograd, the two would meet in the weight's input buffer, where
    a dense gradient that arrives first (the decoder's: the heads run last) and a sparse one are summed out of
    place: a copy of the whole ``[V, H]`` gradient each step."""

    @staticmethod
    def forward(ctx, weight: Tensor) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        return weight.view_as(weight), weight.view_as(weight)

    @staticmethod
    def backward(ctx, decoder: Tensor | None, lookup: Tensor | None) -> Tensor | None:
        if decoder is None or lookup is None:
            return lookup if decoder is None else decoder
        if torch.is_grad_enabled() or decoder.is_sparse or not decoder.is_contiguous():
            return decoder + lookup
        return decoder.add_(lookup)


def gather_rows(rows: Tensor, index: Tensor) -> Tensor:
    """``rows[index]`` (unique indices)."""
    return _Gather.apply(rows, index)


class _RowsToHeads(torch.autograd.Function):
    """``[N, parts * H]`` rows of a layout -> ``parts`` contiguous ``[B * heads, L, d]`` blocks (zeros at
    padded positions; the first block multiplied by ``scale``) in one copy; the backward gathers back.
    ``slots`` (``Layout.head_slots``): each (row, head)'s ``d``-vector's row in a ``[B * heads * L, d]`` block,
    or None when the rows are the whole grid; with it both ways are row copies (``index_copy_`` /
    ``index_select`` of contiguous ``d``-vectors)."""

    @staticmethod
    def forward(ctx, rows, slots, batch: int, length: int, parts: int, heads: int, scale: float):
        n, width = rows.shape
        d = width // (parts * heads)
        src = rows.view(n, parts, heads, d)
        if slots is None:
            buf = rows.new_empty(parts, batch, heads, length, d)
            buf.copy_(src.view(batch, length, parts, heads, d).permute(2, 0, 3, 1, 4))
        else:
            block = batch * heads * length
            buf = rows.new_zeros(parts, batch, heads, length, d)
            at = (slots[:, None, :] + block * torch.arange(parts, device=slots.device)[:, None]).reshape(-1)
            buf.view(parts * block, d).index_copy_(0, at, src.reshape(-1, d))
        if scale != 1.0:
            buf[0].mul_(scale)
        ctx.save_for_backward(slots)
        ctx.shape = (n, batch, length, parts, heads, d, scale)
        return tuple(buf[p].view(batch * heads, length, d) for p in range(parts))

    @staticmethod
    def backward(ctx, *grads):
        (slots,) = ctx.saved_tensors
        n, batch, length, parts, heads, d, scale = ctx.shape
        out = grads[0].new_empty(n, parts, heads, d)
        for p, g in enumerate(grads):
            if g is None:
                out[:, p] = 0
            elif slots is None:
                blocks = g.unflatten(0, (batch, heads)).permute(0, 2, 1, 3)
                out.view(batch, length, parts, heads, d)[:, :, p].copy_(blocks)
            else:
                out[:, p] = g.reshape(-1, d).index_select(0, slots.reshape(-1)).view(n, heads, d)
        if scale != 1.0:
            out[:, 0].mul_(scale)
        return out.view(n, parts * heads * d), None, None, None, None, None, None


class _HeadsToRows(torch.autograd.Function):
    """``[B * heads, L, d]`` -> the ``[N, heads * d]`` rows of a layout, in one copy; the backward scatters
    into zeros (padded query positions must get no gradient). ``slots``: as in ``_RowsToHeads``."""

    @staticmethod
    def forward(ctx, y, slots, batch: int, heads: int):
        _, length, d = y.shape
        ctx.save_for_backward(slots)
        ctx.shape = (batch, heads, length, d)
        if slots is None:
            return y.unflatten(0, (batch, heads)).permute(0, 2, 1, 3).reshape(batch * length, heads * d)
        return y.reshape(-1, d).index_select(0, slots.reshape(-1)).view(-1, heads * d)

    @staticmethod
    def backward(ctx, grad):
        (slots,) = ctx.saved_tensors
        batch, heads, length, d = ctx.shape
        if slots is None:
            out = grad.new_empty(batch, heads, length, d)
            out.copy_(grad.unflatten(1, (heads, d)).unflatten(0, (batch, length)).permute(0, 2, 1, 3))
        else:
            out = grad.new_zeros(batch * heads * length, d)
            out.index_copy_(0, slots.reshape(-1), grad.reshape(-1, d))
        return out.view(batch * heads, length, d), None, None, None


class Layout:
    """Where one modality's real positions sit in its padded ``[B, L]`` grid.

    Token-wise layers (projections, FF, LayerNorm, dropout) run on the real positions only, as a
    ``[N, H]`` matrix of rows; attention puts its queries, keys and values on the grid and masks the
    padded keys. When unpadding, the grid is also cut after the batch's last real position (``length``;
    ``full_length`` is the input's), so attention does not compute scores for columns that are padding in
    every sample. With ``unpad=False`` or an all-real mask the rows are the whole grid (a view, no copy).
    """

    def __init__(self, mask: Tensor, unpad: bool = True):
        self.batch, self.full_length = mask.shape
        self.index = None
        self.padded: bool | None = None  # whether the (cut) grid has padded positions; None: not looked at
        if unpad:  # decided on a host copy of the mask: one device sync, whatever the device
            host = mask.cpu()
            self.padded = not bool(host.all())
            if self.padded:
                real = host.any(0).nonzero()
                host = host[:, : int(real[-1]) + 1 if len(real) else 1]
                mask = mask[:, : host.shape[1]]
                self.padded = not bool(host.all())
                if self.padded:
                    self.index = host.reshape(-1).nonzero().squeeze(1).to(mask.device)
        elif mask.device.type == "cpu":
            self.padded = not bool(mask.all())
        self.mask = mask
        self.length = mask.shape[1]
        self.count = self.batch * self.length if self.index is None else self.index.shape[0]  # N, the rows
        self.b_idx = None if self.index is None else self.index // self.length
        self.l_idx = None if self.index is None else self.index % self.length
        self._bias: dict = {}
        self._slots: dict = {}

    def rows(self, grid: Tensor) -> Tensor:
        """``[B, L, C]`` (``L`` = ``length`` or ``full_length``) -> ``[N, C]``: the real positions, batch-major."""
        flat = grid[:, : self.length].reshape(self.batch * self.length, grid.shape[-1])
        return flat if self.index is None else gather_rows(flat, self.index)

    def positions(self) -> Tensor:
        """``[N]``: each row's position in its sequence."""
        if self.index is None:
            return torch.arange(self.length, device=self.mask.device).repeat(self.batch)
        return self.l_idx

    def grid(self, rows: Tensor) -> Tensor:
        """``[N, C]`` -> ``[B, length, C]``, zeros at padded positions."""
        if self.index is not None:
            rows = _Scatter.apply(rows, self.index, self.batch * self.length)
        return rows.view(self.batch, self.length, -1)

    def full(self, rows: Tensor) -> Tensor:
        """``[N, C]`` -> ``[B, full_length, C]``, zeros at padded positions (the encoder's output)."""
        grid = self.grid(rows)
        return F.pad(grid, (0, 0, 0, self.full_length - self.length)) if self.length < self.full_length else grid

    def heads(self, rows: Tensor, parts: int, heads: int, scale: float = 1.0) -> tuple[Tensor, ...]:
        """``[N, parts * H]`` -> ``parts`` blocks ``[B * heads, length, d]`` (the first times ``scale``)."""
        return _RowsToHeads.apply(rows, self.head_slots(heads), self.batch, self.length, parts, heads, scale)

    def from_heads(self, y: Tensor, heads: int) -> Tensor:
        """``[B * heads, length, d]`` -> ``[N, heads * d]``."""
        return _HeadsToRows.apply(y, self.head_slots(heads), self.batch, heads)

    def head_slots(self, heads: int) -> Tensor | None:
        """``[N, heads]``: where row n's head h sits among the ``d``-vectors of a ``[B * heads, length, d]`` block,
        ``(b * heads + h) * length + l``; None when the rows are the whole grid."""
        if self.index is None:
            return None
        if heads not in self._slots:
            h = torch.arange(heads, device=self.index.device)
            self._slots[heads] = (self.b_idx[:, None] * heads + h) * self.length + self.l_idx[:, None]
        return self._slots[heads]

    def key_bias(self, heads: int, dtype: torch.dtype) -> Tensor | None:
        """``[B * heads, 1, length]``: 0 at real keys, the dtype's lowest value at padded ones; None if none is
        padded."""
        if self.padded is False:
            return None
        if (heads, dtype) not in self._bias:
            bias = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
            bias.masked_fill_(~self.mask, torch.finfo(dtype).min)
            self._bias[heads, dtype] = bias[:, None, :].repeat_interleave(heads, 0)
        return self._bias[heads, dtype]

    def row_index(self, positions: Tensor) -> Tensor:
        """Row numbers (into this layout's rows) of the ``True`` entries of ``positions`` (``[B, L']``, real
        positions only), batch-major."""
        positions = positions[:, : self.length]
        if positions.shape[1] < self.length:
            positions = F.pad(positions, (0, self.length - positions.shape[1]))
        flat = positions.reshape(-1).nonzero().squeeze(1)
        if self.index is None:
            return flat
        row_of = torch.full((self.batch * self.length,), -1, dtype=torch.long, device=flat.device)
        row_of[self.index] = torch.arange(self.count, device=flat.device)
        return row_of[flat]

    def select(self, keep: Tensor) -> Selection:
        """The kept positions (``keep``: ``[B, full_length]``, a subset of the real ones) as rows of their own
        layout, and where those rows sit among this layout's rows."""
        keep = keep & F.pad(self.mask, (0, self.full_length - self.length))
        return Selection(Layout(keep, unpad=True), self.row_index(keep))


class Selection:
    """Positions kept from a layout: their own ``layout`` and their ``rows`` among the parent's rows."""

    def __init__(self, layout: Layout, rows: Tensor):
        self.layout = layout
        self.rows = rows

    def take(self, x: Tensor) -> Tensor:
        return gather_rows(x, self.rows)


class MultiHeadAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context`` (rows of their layouts); padded keys masked.

    The query, key and value projections are one [3H, H] matrix (rows: query, key, value), applied in
    one matmul for self-attention and as a query slice and a key-value slice for cross-attention.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.scale = 1.0 / math.sqrt(hidden // heads)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def _project(self, x: Tensor, xl: Layout, context: Tensor, cl: Layout) -> tuple[Tensor, Tensor, Tensor]:
        if context is x and cl is xl:
            q, k, v = xl.heads(self.qkv(x), 3, self.heads, self.scale)
            return q, k, v
        h = x.shape[-1]
        # split, not slices: the backward concatenates the two gradients (slicing's backward zero-fills a
        # [3H, H] gradient per slice and adds the two)
        w_q, w_kv = self.qkv.weight.split([h, 2 * h])
        b_q, b_kv = self.qkv.bias.split([h, 2 * h])
        (q,) = xl.heads(F.linear(x, w_q, b_q), 1, self.heads, self.scale)
        k, v = cl.heads(F.linear(context, w_kv, b_kv), 2, self.heads)
        return q, k, v

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, keys: Layout) -> Tensor:
        """``[B * heads, Lq, d]`` attention output of (already scaled) queries over the keys of ``keys``."""
        p = self.dropout if self.training else 0.0
        if q.device.type != "cpu":  # fused kernels; [B * heads, L, d] blocks are contiguous [B, heads, L, d]
            b = keys.batch
            four = [t.view(b, self.heads, t.shape[1], t.shape[2]) for t in (q, k, v)]
            y = F.scaled_dot_product_attention(*four, attn_mask=keys.mask[:, None, None, :], dropout_p=p, scale=1.0)
            return y.view(q.shape)
        bias = keys.key_bias(self.heads, q.dtype)
        kt = k.transpose(1, 2)
        scores = torch.bmm(q, kt) if bias is None else torch.baddbmm(bias, q, kt)
        probs = dropout(torch.softmax(scores, -1), p, True)
        return torch.bmm(probs.to(v.dtype), v)

    def forward(self, x: Tensor, xl: Layout, context: Tensor, cl: Layout) -> Tensor:
        q, k, v = self._project(x, xl, context, cl)
        return self.out(xl.from_heads(self._attend(q, k, v, cl), self.heads))

    def paired(self, x: Tensor, tl: Layout, vl: Layout, mode: str) -> Tensor:
        """Both modalities through the same weights: ``x`` is the text rows followed by the object rows, and so
        is the result. Projections run once over all rows (one pass over the weights for both modalities);
        ``mode`` says who attends to whom:

        * ``"cross"``: text attends to vision and vision to text (Cross; each modality's q/k/v projection
          serves as queries in one direction and keys/values in the other);
        * ``"separate"``: each modality attends within itself (Share);
        * ``"joint"``: one self-attention over the concatenation of both (Share's ``joint`` mode).
        """
        qkv_t, qkv_v = self.qkv(x).split([tl.count, vl.count])
        if mode == "joint":
            jl = joint_layout(tl, vl)
            q, k, v = jl.heads(joint_rows(qkv_t, qkv_v, tl, vl, jl), 3, self.heads, self.scale)
            y = jl.from_heads(self._attend(q, k, v, jl), self.heads)
            return self.out(split_joint_rows(y, tl, vl, jl))
        q_t, k_t, v_t = tl.heads(qkv_t, 3, self.heads, self.scale)
        q_v, k_v, v_v = vl.heads(qkv_v, 3, self.heads, self.scale)
        if mode == "cross":
            yt, yv = self._attend(q_t, k_v, v_v, vl), self._attend(q_v, k_t, v_t, tl)
        else:
            yt, yv = self._attend(q_t, k_t, v_t, tl), self._attend(q_v, k_v, v_v, vl)
        return self.out(torch.cat([tl.from_heads(yt, self.heads), vl.from_heads(yv, self.heads)]))


    def cross(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout) -> tuple[Tensor, Tensor]:
        """``paired(..., "cross")`` on the two modalities' rows as they are: text attends to vision and vision to
        text through the same weights, each projection run per modality (no concatenation of the rows in, nor
        of the outputs, nor of their gradients on the way back)."""
        q_t, k_t, v_t = tl.heads(self.qkv(t), 3, self.heads, self.scale)
        q_v, k_v, v_v = vl.heads(self.qkv(v), 3, self.heads, self.scale)
        yt, yv = self._attend(q_t, k_v, v_v, vl), self._attend(q_v, k_t, v_t, tl)
        return self.out(tl.from_heads(yt, self.heads)), self.out(vl.from_heads(yv, self.heads))


def joint_layout(tl: Layout, vl: Layout) -> Layout:
    """The layout of text and objects side by side, ``[B, Lt + Lv]`` (Share's joint attention)."""
    return Layout(torch.cat([tl.mask, vl.mask], 1), unpad=tl.index is not None or vl.index is not None)


def joint_rows(t: Tensor, v: Tensor, tl: Layout, vl: Layout, jl: Layout) -> Tensor:
    """Text rows and object rows -> the rows of ``joint_layout`` (sample by sample: text, then objects)."""
    return jl.rows(torch.cat([tl.grid(t), vl.grid(v)], 1))


def split_joint_rows(y: Tensor, tl: Layout, vl: Layout, jl: Layout) -> Tensor:
    """The rows of ``joint_layout`` -> text rows followed by object rows."""
    grid = jl.grid(y)
    return torch.cat([tl.rows(grid[:, : tl.length]), vl.rows(grid[:, tl.length :])])


class AttentionSublayer(nn.Module):
    """``LN(x + Dropout(Attention(x, context)))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = MultiHeadAttention(cfg.hidden, cfg.heads, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor, xl: Layout, context: Tensor, cl: Layout) -> Tensor:
        return self.residual(x, self.attn(x, xl, context, cl))

    def kept(self, x: Tensor, xl: Layout, keep: Selection) -> Tensor:
        """Self-attention for the kept positions only: their queries over every key (their rows out)."""
        return self(keep.take(x), keep.layout, x, xl)

    def residual(self, x: Tensor, y: Tensor) -> Tensor:
        return self.norm(add_dropped(x, y, self.drop.p, self.training))

    def paired(self, x: Tensor, tl: Layout, vl: Layout, mode: str) -> Tensor:
        """``x``: text rows then object rows, both through this sub-layer's weights (``MultiHeadAttention.paired``)."""
        return self.residual(x, self.attn.paired(x, tl, vl, mode))

    def cross(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout) -> tuple[Tensor, Tensor]:
        """Bi-directional cross-attention through this sub-layer's weights (``MultiHeadAttention.cross``)."""
        yt, yv = self.attn.cross(t, v, tl, vl)
        return self.residual(t, yt), self.residual(v, yv)


class FeedForward(nn.Module):
    """``LN(x + Dropout(FC(GELU(FC(x)))))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(add_dropped(x, self.fc2(F.gelu(self.fc1(x))), self.drop.p, self.training))


class EncoderLayer(nn.Module):
    """A BERT layer (Eq. 1): self-attention sub-layer, then FF sub-layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = AttentionSublayer(cfg)
        self.ff = FeedForward(cfg)

    def forward(self, x: Tensor, layout: Layout, keep: Selection | None = None) -> Tensor:
        if keep is not None:
            return self.ff(self.self_attn.kept(x, layout, keep))
        return self.ff(self.self_attn(x, layout, x, layout))


# An inter-modality layer's ``keep``: the text and object positions whose outputs are read (None: all)
Keep = tuple[Selection | None, Selection | None]


class ShareLayer(nn.Module):
    """f_Inter^{VS}: one self-attention sub-layer (and FF sub-layer) shared by both modalities."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.joint = cfg.share_attention == "joint"
        self.self_attn = AttentionSublayer(cfg)
        self.ff = FeedForward(cfg) if cfg.share_ff else None

    def forward(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout, keep: Keep = (None, None)) -> tuple[Tensor, Tensor]:
        tk, vk = keep
        if self.joint or (tk is None and vk is None):
            t, v = self.self_attn.paired(torch.cat([t, v]), tl, vl, "joint" if self.joint else "separate").split(
                [tl.count, vl.count]
            )
            t, v = (t if tk is None else tk.take(t)), (v if vk is None else vk.take(v))
        else:
            t = self.self_attn(t, tl, t, tl) if tk is None else self.self_attn.kept(t, tl, tk)
            v = self.self_attn(v, vl, v, vl) if vk is None else self.self_attn.kept(v, vl, vk)
        if self.ff is not None:
            t, v = self.ff(torch.cat([t, v])).split([t.shape[0], v.shape[0]])
        return t, v


class VisualLayer(nn.Module):
    """Text: f_Inter^{S->V} (self-attn, cross-attn into vision, FF); vision: f_Inter^{VS} (self-attn, FF)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.text_self = AttentionSublayer(cfg)
        self.text_cross = AttentionSublayer(cfg)
        self.text_ff = FeedForward(cfg)
        self.visual = EncoderLayer(cfg)

    def forward(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout, keep: Keep = (None, None)) -> tuple[Tensor, Tensor]:
        tk, vk = keep
        if tk is None:
            t = self.text_self(t, tl, t, tl)
        else:
            t, tl = self.text_self.kept(t, tl, tk), tk.layout
        t = self.text_ff(self.text_cross(t, tl, v, vl))
        return t, self.visual(v, vl, vk)


class CrossLayer(nn.Module):
    """f_Inter^{V<->S} (LXMERT): shared bi-directional cross-attention, two self-attentions, two FFs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cross = AttentionSublayer(cfg)
        self.text_self = AttentionSublayer(cfg)
        self.visual_self = AttentionSublayer(cfg)
        self.text_ff = FeedForward(cfg)
        self.visual_ff = FeedForward(cfg)

    def forward(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout, keep: Keep = (None, None)) -> tuple[Tensor, Tensor]:
        tk, vk = keep
        t2, v2 = self.cross.cross(t, v, tl, vl)
        t = self.text_self(t2, tl, t2, tl) if tk is None else self.text_self.kept(t2, tl, tk)
        v = self.visual_self(v2, vl, v2, vl) if vk is None else self.visual_self.kept(v2, vl, vk)
        return self.text_ff(t), self.visual_ff(v)


INTER_LAYERS = {"share": ShareLayer, "visual": VisualLayer, "cross": CrossLayer}


class TextEmbeddings(nn.Module):
    """Token + position + segment embedding, then LN (Sec. 3.2); BERT's layout and names."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.segment = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def tied_weights(self) -> tuple[Tensor, Tensor | None]:
        """For a model whose MLM decoder is tied to ``word`` (its gradient is then always dense): (the weight the
        decoder reads, the weight to pass to ``forward`` as ``lookup``). On CPU in training the lookup's gradient
        is sent as sparse rows and added in place into the decoder's (``_TiedWeight``); otherwise (the weight,
        None: the plain lookup)."""
        w = self.word.weight
        if w.device.type == "cpu" and w.requires_grad and torch.is_grad_enabled():
            return _TiedWeight.apply(w)
        return w, None

    def forward(self, input_ids: Tensor, layout: Layout, lookup: Tensor | None = None) -> Tensor:
        """The ``[N, H]`` rows of the layout's real positions; ``lookup``: the word weight from ``tied_weights``."""
        ids, positions = layout.rows(input_ids[..., None]).squeeze(1), layout.positions()
        words = self.word(ids) if lookup is None else _SparseGradLookup.apply(lookup, ids)
        return self.drop(self.norm(words + self.position(positions) + self.segment.weight[0]))


class ObjectEmbeddings(nn.Module):
    """RoI feature and normalised box, each through FC+LN, averaged (Sec. 3.2, LXMERT's layout)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.feat_fc = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.feat_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.box_fc = nn.Linear(4, cfg.hidden)
        self.box_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(self, features: Tensor, boxes: Tensor, layout: Layout) -> Tensor:
        """The ``[N, H]`` rows of the layout's real positions."""
        dtype = self.feat_fc.weight.dtype
        features, boxes = layout.rows(features), layout.rows(boxes)
        x = self.feat_norm(self.feat_fc(features.to(dtype))) + self.box_norm(self.box_fc(boxes.to(dtype)))
        return self.drop(x / 2)


class SSRPEncoder(nn.Module):
    """Embeddings, intra-modality encoders (text, visual) and the variant's inter-modality encoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.feature_dim <= 0:
            raise ValueError("model.feature_dim is 0 (from the corpus) but was not resolved before building the model")
        self.cfg = cfg
        self.text_embeddings = TextEmbeddings(cfg)
        self.object_embeddings = ObjectEmbeddings(cfg)
        self.text_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.text_layers))
        self.visual_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.visual_layers))
        self.inter_layers = nn.ModuleList(INTER_LAYERS[cfg.variant](cfg) for _ in range(cfg.inter_layers))
        self.apply(init_weights)

    def unpads(self, mask: Tensor) -> bool:
        return self.cfg.unpad == "on" or (self.cfg.unpad == "auto" and mask.device.type == "cpu")

    def forward(
        self, input_ids: Tensor, text_mask: Tensor, features: Tensor, boxes: Tensor, object_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``[B, L, H]`` token states and ``[B, M, H]`` object states; zeros at padded positions when unpadding."""
        t, v, tl, vl = self.encode(input_ids, text_mask, features, boxes, object_mask)
        return tl.full(t), vl.full(v)

    def encode(
        self,
        input_ids: Tensor,
        text_mask: Tensor,
        features: Tensor,
        boxes: Tensor,
        object_mask: Tensor,
        keep: tuple[Tensor | None, Tensor | None] = (None, None),
        word_lookup: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Layout, Layout]:
        """Token rows, object rows and their layouts. ``keep`` (``[B, L]`` and ``[B, M]`` masks, or None for
        all) names the positions whose states are read: when unpadding, the last inter-modality layer
        computes only those (same values), and the returned rows and layouts are theirs; otherwise every
        real position comes back. ``word_lookup``: the word weight from ``TextEmbeddings.tied_weights``."""
        unpad = self.unpads(text_mask)
        tl, vl = Layout(text_mask, unpad), Layout(object_mask, unpad)
        t = self.text_embeddings(input_ids, tl, word_lookup)
        v = self.object_embeddings(features, boxes, vl)
        for layer in self.text_layers:
            t = layer(t, tl)
        for layer in self.visual_layers:
            v = layer(v, vl)
        kept = (None, None)
        if unpad and self.inter_layers:
            kept = (tl.select(keep[0]) if keep[0] is not None else None, vl.select(keep[1]) if keep[1] is not None else None)
        for i, layer in enumerate(self.inter_layers):
            t, v = layer(t, v, tl, vl, kept if i == len(self.inter_layers) - 1 else (None, None))
        tk, vk = kept
        return t, v, (tl if tk is None else tk.layout), (vl if vk is None else vk.layout)


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
