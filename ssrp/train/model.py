"""The SSRP encoders (Sec. 3.2): embeddings, intra-modality encoders and the three inter-modality encoders.

Every variant maps (tokens, RoIs) to contextual token states W and object states V through the same
interface, ``SSRPEncoder(cfg)(text, objects) -> (W, V)``:

* **Share**: each inter-modality layer is one self-attention sub-layer (and, with ``share_ff``, one FF
  sub-layer) whose weights serve both modalities; by default each modality attends within itself
  (``share_attention="separate"``), the modalities meeting only through the shared projections.
* **Visual**: the text branch is self-attention -> one-way cross-attention into vision -> FF; the
  visual branch is self-attention -> FF.
* **Cross**: LXMERT's layer: one bi-directional cross-attention sub-layer (one set of weights used
  in both directions), then per-modality self-attention, then per-modality FF.

Sub-layers follow Eq. 1: ``LN(x + f(x))``. Attention goes through
``torch.nn.functional.scaled_dot_product_attention`` with a boolean key-padding mask.

Padding costs nothing outside attention: with ``model.unpad`` each modality is carried as the
``[N, H]`` rows of its real positions (``Layout``), so projections, FF, LayerNorm and dropout skip
padded tokens; only attention puts rows back on the padded grid. Real positions get the same values as
the dense computation (without dropout; in training the dropout masks are drawn over the real rows
only); padded positions come out as zeros. ``auto`` unpads on CPU only: on an H100 the eager step is
bound by kernel launches, and the gather/scatter and the host copy of each mask showed no gain
above the noise (docs/training.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssrp.train.config import ModelConfig


class Layout:
    """Where one modality's real positions sit in its padded ``[B, L]`` grid.

    Token-wise layers (projections, FF, LayerNorm, dropout) run on the real positions only, as a
    ``[N, H]`` matrix of rows; attention puts its queries, keys and values back on the grid and masks the
    padded keys. When unpadding, the grid is also cut after the batch's last real position (``length``;
    ``full_length`` is the input's), so attention does not compute scores for columns that are padding in
    every sample. With ``unpad=False`` or an all-real mask the rows are the whole grid (a view, no copy).
    """

    def __init__(self, mask: Tensor, unpad: bool = True):
        self.batch, self.full_length = mask.shape
        self.index = None
        if unpad:  # decided on a host copy of the mask: one device sync, whatever the device
            host = mask.cpu()
            if not bool(host.all()):
                real = host.any(0).nonzero()
                host = host[:, : int(real[-1]) + 1 if len(real) else 1]
                mask = mask[:, : host.shape[1]]
                if not bool(host.all()):
                    self.index = host.reshape(-1).nonzero().squeeze(1).to(mask.device)
        self.mask = mask
        self.length = mask.shape[1]
        self.count = self.batch * self.length if self.index is None else self.index.shape[0]  # N, the rows

    def rows(self, grid: Tensor) -> Tensor:
        """``[B, L, C]`` (``L`` = ``length`` or ``full_length``) -> ``[N, C]``: the real positions, batch-major."""
        flat = grid[:, : self.length].reshape(self.batch * self.length, grid.shape[-1])
        return flat if self.index is None else flat.index_select(0, self.index)

    def positions(self) -> Tensor:
        """``[N]``: each row's position in its sequence."""
        if self.index is None:
            return torch.arange(self.length, device=self.mask.device).repeat(self.batch)
        return self.index % self.length

    def grid(self, rows: Tensor) -> Tensor:
        """``[N, C]`` -> ``[B, length, C]``, zeros at padded positions."""
        if self.index is not None:
            rows = rows.new_zeros(self.batch * self.length, rows.shape[-1]).index_copy(0, self.index, rows)
        return rows.view(self.batch, self.length, -1)

    def full(self, rows: Tensor) -> Tensor:
        """``[N, C]`` -> ``[B, full_length, C]``, zeros at padded positions (the encoder's output)."""
        grid = self.grid(rows)
        return F.pad(grid, (0, 0, 0, self.full_length - self.length)) if self.length < self.full_length else grid


class MultiHeadAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context`` (rows of their layouts); padded keys masked.

    The query, key and value projections are one [3H, H] matrix (rows: query, key, value), applied in
    one matmul for self-attention and as a query slice and a key-value slice for cross-attention.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split_heads(self, grid: Tensor, parts: int) -> Tensor:
        """``[B, L, parts*H]`` -> ``[parts, B, heads, L, d]``."""
        b, n, width = grid.shape
        return grid.view(b, n, parts, self.heads, width // (parts * self.heads)).permute(2, 0, 3, 1, 4)

    def _project(self, x: Tensor, xl: Layout, context: Tensor, cl: Layout) -> tuple[Tensor, Tensor, Tensor]:
        if context is x:
            q, k, v = self._split_heads(xl.grid(self.qkv(x)), 3)
            return q, k, v
        h = x.shape[-1]
        w, bias = self.qkv.weight, self.qkv.bias
        q = self._split_heads(xl.grid(F.linear(x, w[:h], bias[:h])), 1)[0]
        k, v = self._split_heads(cl.grid(F.linear(context, w[h:], bias[h:])), 2)
        return q, k, v

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor) -> Tensor:
        """``[B, heads, Lq, d]`` attention output as ``[B, Lq, H]``."""
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        b, _, n, _ = y.shape
        return y.transpose(1, 2).reshape(b, n, -1)

    def forward(self, x: Tensor, xl: Layout, context: Tensor, cl: Layout) -> Tensor:
        q, k, v = self._project(x, xl, context, cl)
        return self.out(xl.rows(self._attend(q, k, v, cl.mask)))

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
        qkv_t, qkv_v = tl.grid(qkv_t), vl.grid(qkv_v)
        if mode == "joint":
            y = self._attend(*self._split_heads(torch.cat([qkv_t, qkv_v], 1), 3), torch.cat([tl.mask, vl.mask], 1))
            yt, yv = y.split([tl.length, vl.length], 1)
        else:
            q_t, k_t, v_t = self._split_heads(qkv_t, 3)
            q_v, k_v, v_v = self._split_heads(qkv_v, 3)
            if mode == "cross":
                yt, yv = self._attend(q_t, k_v, v_v, vl.mask), self._attend(q_v, k_t, v_t, tl.mask)
            else:
                yt, yv = self._attend(q_t, k_t, v_t, tl.mask), self._attend(q_v, k_v, v_v, vl.mask)
        return self.out(torch.cat([tl.rows(yt), vl.rows(yv)]))


class AttentionSublayer(nn.Module):
    """``LN(x + Dropout(Attention(x, context)))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = MultiHeadAttention(cfg.hidden, cfg.heads, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, xl: Layout, context: Tensor, cl: Layout) -> Tensor:
        return self.residual(x, self.attn(x, xl, context, cl))

    def residual(self, x: Tensor, y: Tensor) -> Tensor:
        return self.norm(x + self.drop(y))

    def paired(self, x: Tensor, tl: Layout, vl: Layout, mode: str) -> Tensor:
        """``x``: text rows then object rows, both through this sub-layer's weights (``MultiHeadAttention.paired``)."""
        return self.residual(x, self.attn.paired(x, tl, vl, mode))


class FeedForward(nn.Module):
    """``LN(x + Dropout(FC(GELU(FC(x)))))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))


class EncoderLayer(nn.Module):
    """A BERT layer (Eq. 1): self-attention sub-layer, then FF sub-layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = AttentionSublayer(cfg)
        self.ff = FeedForward(cfg)

    def forward(self, x: Tensor, layout: Layout) -> Tensor:
        return self.ff(self.self_attn(x, layout, x, layout))


class ShareLayer(nn.Module):
    """f_Inter^{VS}: one self-attention sub-layer (and FF sub-layer) shared by both modalities."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.joint = cfg.share_attention == "joint"
        self.self_attn = AttentionSublayer(cfg)
        self.ff = FeedForward(cfg) if cfg.share_ff else None

    def forward(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout) -> tuple[Tensor, Tensor]:
        x = self.self_attn.paired(torch.cat([t, v]), tl, vl, "joint" if self.joint else "separate")
        if self.ff is not None:
            x = self.ff(x)
        return x.split([tl.count, vl.count])


class VisualLayer(nn.Module):
    """Text: f_Inter^{S->V} (self-attn, cross-attn into vision, FF); vision: f_Inter^{VS} (self-attn, FF)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.text_self = AttentionSublayer(cfg)
        self.text_cross = AttentionSublayer(cfg)
        self.text_ff = FeedForward(cfg)
        self.visual = EncoderLayer(cfg)

    def forward(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout) -> tuple[Tensor, Tensor]:
        t = self.text_self(t, tl, t, tl)
        t = self.text_ff(self.text_cross(t, tl, v, vl))
        return t, self.visual(v, vl)


class CrossLayer(nn.Module):
    """f_Inter^{V<->S} (LXMERT): shared bi-directional cross-attention, two self-attentions, two FFs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cross = AttentionSublayer(cfg)
        self.text_self = AttentionSublayer(cfg)
        self.visual_self = AttentionSublayer(cfg)
        self.text_ff = FeedForward(cfg)
        self.visual_ff = FeedForward(cfg)

    def forward(self, t: Tensor, v: Tensor, tl: Layout, vl: Layout) -> tuple[Tensor, Tensor]:
        t2, v2 = self.cross.paired(torch.cat([t, v]), tl, vl, "cross").split([tl.count, vl.count])
        t = self.text_ff(self.text_self(t2, tl, t2, tl))
        v = self.visual_ff(self.visual_self(v2, vl, v2, vl))
        return t, v


INTER_LAYERS = {"share": ShareLayer, "visual": VisualLayer, "cross": CrossLayer}


class TextEmbeddings(nn.Module):
    """Token + position + segment embedding, then LN (Sec. 3.2); BERT's layout and names."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.segment = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, layout: Layout) -> Tensor:
        """The ``[N, H]`` rows of the layout's real positions."""
        ids, positions = layout.rows(input_ids[..., None]).squeeze(1), layout.positions()
        return self.drop(self.norm(self.word(ids) + self.position(positions) + self.segment.weight[0]))


class ObjectEmbeddings(nn.Module):
    """RoI feature and normalised box, each through FC+LN, averaged (Sec. 3.2, LXMERT's layout)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.feat_fc = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.feat_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.box_fc = nn.Linear(4, cfg.hidden)
        self.box_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        dtype = self.feat_fc.weight.dtype
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

    def forward(
        self, input_ids: Tensor, text_mask: Tensor, features: Tensor, boxes: Tensor, object_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``[B, L, H]`` token states and ``[B, M, H]`` object states; zeros at padded positions when unpadding."""
        unpad = self.cfg.unpad == "on" or (self.cfg.unpad == "auto" and text_mask.device.type == "cpu")
        tl, vl = Layout(text_mask, unpad), Layout(object_mask, unpad)
        t = self.text_embeddings(input_ids, tl)
        v = vl.rows(self.object_embeddings(features, boxes))
        for layer in self.text_layers:
            t = layer(t, tl)
        for layer in self.visual_layers:
            v = layer(v, vl)
        for layer in self.inter_layers:
            t, v = layer(t, v, tl, vl)
        return tl.full(t), vl.full(v)


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
