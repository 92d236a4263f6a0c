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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssrp.train.config import ModelConfig


class MultiHeadAttention(nn.Module):
    """Queries from ``x``, keys and values from ``context``; ``key_mask`` is True on real keys.

    The query, key and value projections are one [3H, H] matrix (rows: query, key, value), applied in
    one matmul for self-attention and as a query slice and a key-value slice for cross-attention.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def _project(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, h = x.shape
        d = h // self.heads
        if context is x:
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
            return q, k, v
        w, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(x, w[:h], bias[:h]).view(b, n, self.heads, d).transpose(1, 2)
        m = context.shape[1]
        k, v = F.linear(context, w[h:], bias[h:]).view(b, m, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x: Tensor, context: Tensor, key_mask: Tensor) -> Tensor:
        q, k, v = self._project(x, context)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        b, _, n, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class AttentionSublayer(nn.Module):
    """``LN(x + Dropout(Attention(x, context)))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = MultiHeadAttention(cfg.hidden, cfg.heads, cfg.dropout)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, context: Tensor, key_mask: Tensor) -> Tensor:
        return self.norm(x + self.drop(self.attn(x, context, key_mask)))


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

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.ff(self.self_attn(x, x, mask))


class ShareLayer(nn.Module):
    """f_Inter^{VS}: one self-attention sub-layer (and FF sub-layer) shared by both modalities."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.joint = cfg.share_attention == "joint"
        self.self_attn = AttentionSublayer(cfg)
        self.ff = FeedForward(cfg) if cfg.share_ff else None

    def forward(self, t: Tensor, v: Tensor, tm: Tensor, vm: Tensor) -> tuple[Tensor, Tensor]:
        if self.joint:
            x, m = torch.cat([t, v], 1), torch.cat([tm, vm], 1)
            t, v = self.self_attn(x, x, m).split([t.shape[1], v.shape[1]], 1)
        else:
            t, v = self.self_attn(t, t, tm), self.self_attn(v, v, vm)
        if self.ff is not None:
            t, v = self.ff(t), self.ff(v)
        return t, v


class VisualLayer(nn.Module):
    """Text: f_Inter^{S->V} (self-attn, cross-attn into vision, FF); vision: f_Inter^{VS} (self-attn, FF)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.text_self = AttentionSublayer(cfg)
        self.text_cross = AttentionSublayer(cfg)
        self.text_ff = FeedForward(cfg)
        self.visual = EncoderLayer(cfg)

    def forward(self, t: Tensor, v: Tensor, tm: Tensor, vm: Tensor) -> tuple[Tensor, Tensor]:
        t = self.text_self(t, t, tm)
        t = self.text_ff(self.text_cross(t, v, vm))
        return t, self.visual(v, vm)


class CrossLayer(nn.Module):
    """f_Inter^{V<->S} (LXMERT): shared bi-directional cross-attention, two self-attentions, two FFs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cross = AttentionSublayer(cfg)
        self.text_self = AttentionSublayer(cfg)
        self.visual_self = AttentionSublayer(cfg)
        self.text_ff = FeedForward(cfg)
        self.visual_ff = FeedForward(cfg)

    def forward(self, t: Tensor, v: Tensor, tm: Tensor, vm: Tensor) -> tuple[Tensor, Tensor]:
        t2, v2 = self.cross(t, v, vm), self.cross(v, t, tm)
        t = self.text_ff(self.text_self(t2, t2, tm))
        v = self.visual_ff(self.visual_self(v2, v2, vm))
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

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.segment.weight[0]
        return self.drop(self.norm(x))


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
        t = self.text_embeddings(input_ids)
        v = self.object_embeddings(features, boxes)
        for layer in self.text_layers:
            t = layer(t, text_mask)
        for layer in self.visual_layers:
            v = layer(v, object_mask)
        for layer in self.inter_layers:
            t, v = layer(t, v, text_mask, object_mask)
        return t, v


def init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
