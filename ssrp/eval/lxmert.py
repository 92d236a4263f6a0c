"""SSRP-Cross as a Hugging Face ``transformers.LxmertModel``: the config and the key map, both ways.

SSRP-Cross is LXMERT's architecture (Sec. 3.2 of the paper), so its encoder loads into ``LxmertModel`` with no
code of ssrp's: ``LxmertModel.from_pretrained(DIR)`` gives the same language and vision states as
``SSRPEncoder`` (tested on random weights, docs/evaluation.md). The correspondences:

* text embeddings (word, position, segment, LN) -> ``embeddings.*`` (segment 0 is the only one used);
* object embeddings: ``LN(FC(feature))`` and ``LN(FC(box))`` averaged -> ``encoder.visn_fc.*`` (LXMERT's
  ``(x + y) / 2``; boxes are x1/W, y1/H, x2/W, y2/H in both);
* the text (intra-modality) layers -> ``encoder.layer.N``, the visual layers -> ``encoder.r_layers.N``;
* each inter-modality layer -> ``encoder.x_layers.N``: the one bi-directional cross-attention sub-layer (one
  q/k/v projection and one output block, used text->vision and vision->text) -> ``visual_attention`` (which
  LXMERT also calls in both directions), then ``lang_self_att``/``visn_self_att``, then
  ``lang_inter``+``lang_output``/``visn_inter``+``visn_output``;
* the fused ``[3H, H]`` q/k/v projection of every ssrp attention: rows ``[0, H)`` -> ``query``,
  ``[H, 2H)`` -> ``key``, ``[2H, 3H)`` -> ``value``;
* Cross's stage-1 g_align (FC + tanh of w_CLS, Eq. 4) -> ``pooler.dense``: LXMERT's pooler has the same form.

Every sub-layer is post-LN (``LN(x + f(x))``) in both, with LayerNorm epsilon 1e-12 (hard-coded in LXMERT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssrp.train.config import ModelConfig

LXMERT_LAYER_NORM_EPS = 1e-12  # LxmertModel hard-codes it


@dataclass(frozen=True)
class KeyPair:
    """One LXMERT tensor and where it lives in ssrp: a whole tensor, or one third (``part``) of a fused q/k/v."""

    ssrp: str
    lxmert: str
    part: int | None = None  # 0 query, 1 key, 2 value rows of a [3H, H] / [3H] tensor


_EMBEDDINGS = {
    "text_embeddings.word": "embeddings.word_embeddings",
    "text_embeddings.position": "embeddings.position_embeddings",
    "text_embeddings.segment": "embeddings.token_type_embeddings",
    "text_embeddings.norm": "embeddings.LayerNorm",
    "object_embeddings.feat_fc": "encoder.visn_fc.visn_fc",
    "object_embeddings.feat_norm": "encoder.visn_fc.visn_layer_norm",
    "object_embeddings.box_fc": "encoder.visn_fc.box_fc",
    "object_embeddings.box_norm": "encoder.visn_fc.box_layer_norm",
}
_TABLES = ("text_embeddings.word", "text_embeddings.position", "text_embeddings.segment")  # no biases
_QKV = ("query", "key", "value")


def _attention(ssrp: str, qkv: str, output: str) -> list[KeyPair]:
    """An ssrp AttentionSublayer (``attn.qkv``, ``attn.out``, ``norm``) and its LXMERT attention + output."""
    pairs = []
    for leaf in ("weight", "bias"):
        pairs += [KeyPair(f"{ssrp}.attn.qkv.{leaf}", f"{qkv}.{name}.{leaf}", i) for i, name in enumerate(_QKV)]
        pairs.append(KeyPair(f"{ssrp}.attn.out.{leaf}", f"{output}.dense.{leaf}"))
        pairs.append(KeyPair(f"{ssrp}.norm.{leaf}", f"{output}.LayerNorm.{leaf}"))
    return pairs


def _feed_forward(ssrp: str, inter: str, output: str) -> list[KeyPair]:
    """An ssrp FeedForward (``fc1``, ``fc2``, ``norm``) and LXMERT's intermediate + output blocks."""
    return [
        pair
        for leaf in ("weight", "bias")
        for pair in (
            KeyPair(f"{ssrp}.fc1.{leaf}", f"{inter}.dense.{leaf}"),
            KeyPair(f"{ssrp}.fc2.{leaf}", f"{output}.dense.{leaf}"),
            KeyPair(f"{ssrp}.norm.{leaf}", f"{output}.LayerNorm.{leaf}"),
        )
    ]


def _bert_layer(ssrp: str, lxmert: str) -> list[KeyPair]:
    return (_attention(f"{ssrp}.self_attn", f"{lxmert}.attention.self", f"{lxmert}.attention.output")
            + _feed_forward(f"{ssrp}.ff", f"{lxmert}.intermediate", f"{lxmert}.output"))


def _cross_layer(ssrp: str, x: str) -> list[KeyPair]:
    return (
        _attention(f"{ssrp}.cross", f"{x}.visual_attention.att", f"{x}.visual_attention.output")
        + _attention(f"{ssrp}.text_self", f"{x}.lang_self_att.self", f"{x}.lang_self_att.output")
        + _attention(f"{ssrp}.visual_self", f"{x}.visn_self_att.self", f"{x}.visn_self_att.output")
        + _feed_forward(f"{ssrp}.text_ff", f"{x}.lang_inter", f"{x}.lang_output")
        + _feed_forward(f"{ssrp}.visual_ff", f"{x}.visn_inter", f"{x}.visn_output")
    )


def key_map(cfg: ModelConfig) -> list[KeyPair]:
    """Every tensor of an SSRP-Cross encoder (``SSRPEncoder.state_dict()`` names) and its LxmertModel name."""
    check_lxmert_compatible(cfg)
    pairs = [KeyPair(f"{s}.{leaf}", f"{x}.{leaf}") for s, x in _EMBEDDINGS.items()
             for leaf in (("weight",) if s in _TABLES else ("weight", "bias"))]
    for i in range(cfg.text_layers):
        pairs += _bert_layer(f"text_layers.{i}", f"encoder.layer.{i}")
    for i in range(cfg.visual_layers):
        pairs += _bert_layer(f"visual_layers.{i}", f"encoder.r_layers.{i}")
    for i in range(cfg.inter_layers):
        pairs += _cross_layer(f"inter_layers.{i}", f"encoder.x_layers.{i}")
    return pairs


POOLER = {"dense.weight": "pooler.dense.weight", "dense.bias": "pooler.dense.bias"}  # g_align's names -> LXMERT's


def check_lxmert_compatible(cfg: ModelConfig) -> None:
    """ValueError unless the encoder is one LxmertModel can compute exactly."""
    if cfg.variant != "cross":
        raise ValueError(f"SSRP-{cfg.variant} is not LXMERT's architecture (only SSRP-Cross is); "
                         "export it with --layout ssrp and load it with ssrp.load(DIR)")
    if cfg.layer_norm_eps != LXMERT_LAYER_NORM_EPS:
        raise ValueError(f"model.layer_norm_eps={cfg.layer_norm_eps} but LxmertModel hard-codes "
                         f"{LXMERT_LAYER_NORM_EPS}; export with --layout ssrp")


def to_lxmert(encoder: dict[str, torch.Tensor], cfg: ModelConfig,
              align: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """An SSRP-Cross encoder state dict as LxmertModel's (``align``: g_align's state, which becomes the pooler)."""
    pairs = key_map(cfg)
    _check_keys(set(encoder), {p.ssrp for p in pairs}, "the SSRP-Cross encoder")
    out = {}
    for p in pairs:
        tensor = encoder[p.ssrp]
        out[p.lxmert] = (tensor if p.part is None else tensor.chunk(3, 0)[p.part]).detach().clone().contiguous()
    if align is not None:
        out.update({lx: align[name].detach().clone().contiguous() for name, lx in POOLER.items()})
    return out


def from_lxmert(state: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], dict | None]:
    """LxmertModel's state dict -> (SSRPEncoder state dict, g_align ``dense`` state or None without a pooler)."""
    pairs = key_map(cfg)
    lxmert_keys = {p.lxmert for p in pairs}
    _check_keys(set(state) - set(POOLER.values()), lxmert_keys, "the LXMERT state dict")
    parts: dict[str, list[torch.Tensor | None]] = {}
    encoder = {}
    for p in pairs:
        if p.part is None:
            encoder[p.ssrp] = state[p.lxmert]
        else:
            parts.setdefault(p.ssrp, [None, None, None])[p.part] = state[p.lxmert]
    encoder.update({name: torch.cat(thirds, 0) for name, thirds in parts.items()})
    pooler = {name: state[lx] for name, lx in POOLER.items() if lx in state}
    return encoder, (pooler if len(pooler) == len(POOLER) else None)


def _check_keys(found: set[str], expected: set[str], what: str) -> None:
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        raise ValueError(f"{what} does not match the architecture: {len(missing)} missing {missing[:4]}, "
                         f"{len(extra)} unexpected {extra[:4]}")


def lxmert_config(cfg: ModelConfig, pad_id: int = 0) -> dict:
    """The ``LxmertConfig`` fields of an SSRP-Cross encoder (transformers' own defaults for the rest)."""
    check_lxmert_compatible(cfg)
    return {
        "architectures": ["LxmertModel"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.dropout,
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size,
        "l_layers": cfg.text_layers,
        "r_layers": cfg.visual_layers,
        "x_layers": cfg.inter_layers,
        "visual_feat_dim": cfg.feature_dim,
        "visual_pos_dim": 4,
        "num_object_labels": cfg.num_object_labels,
        "pad_token_id": pad_id,
    }

