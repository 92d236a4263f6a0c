"""Stage-1 pretraining heads and the stage-2 relationship probes with their projection heads.

``Stage1Model(cfg)(batch)`` and ``Stage2Heads(cfg)(text_states, object_states, batch)`` return loss
terms as (sum, count) pairs; ``ssrp.train.loop`` normalises them by the counts over all ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssrp.train.config import ModelConfig, Stage2Config
from ssrp.train.losses import (
    Gather,
    LossTerm,
    contrastive_terms,
    feature_regression_terms,
    masked_lm_terms,
    matching_terms,
    no_gather,
    probe_terms,
)
from ssrp.train.model import Layout, SSRPEncoder, gather_rows, init_weights


class PredictionTransform(nn.Module):
    """BERT's ``cls.predictions.transform``: FC, GELU, LN."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.gelu(self.dense(x)))


class AlignHead(nn.Module):
    """g_align (FC + tanh, BERT's pooler form) and the binary matching classifier of Eq. 4.

    Share/Visual: f_align = g_align([mean v; w_CLS]); Cross: f_align = g_align(w_CLS).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.with_visual = cfg.variant in ("share", "visual")
        self.dense = nn.Linear(cfg.hidden * (2 if self.with_visual else 1), cfg.hidden)
        self.classifier = nn.Linear(cfg.hidden, 1)

    def f_align(self, text: Tensor, objects: Tensor, object_mask: Tensor) -> Tensor:
        return self.f_align_of(text[:, 0], objects, object_mask)

    def f_align_of(self, cls: Tensor, objects: Tensor | None, object_mask: Tensor) -> Tensor:
        """f_align from the ``[B, H]`` [CLS] states (and, for Share/Visual, the ``[B, M, H]`` object states)."""
        x = cls
        if self.with_visual:
            m = object_mask[..., None].to(objects.dtype)
            mean_v = (objects * m).sum(1) / m.sum(1).clamp(min=1)
            x = torch.cat([mean_v, x], -1)
        return torch.tanh(self.dense(x))

    def forward(self, text: Tensor, objects: Tensor, object_mask: Tensor) -> Tensor:
        return self.classifier(self.f_align(text, objects, object_mask)).squeeze(-1)


def _head_rows(layout: Layout, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Row numbers (among ``layout``'s rows) of the ``targets`` positions and their weights; when there are
    none, row 0 with weight 0, so every head takes part in every step (DDP with find_unused_parameters=False)."""
    idx = layout.row_index(targets)
    weight = torch.ones(idx.shape[0], device=idx.device)
    if idx.numel() == 0:
        idx, weight = torch.zeros(1, dtype=torch.long, device=idx.device), torch.zeros(1, device=idx.device)
    return idx, weight


class Stage1Model(nn.Module):
    """Encoder + MLM head (tied to the word embeddings) + RoI label / feature heads + g_align."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder = SSRPEncoder(cfg)
        self.mlm_transform = PredictionTransform(cfg)
        self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.obj_transform = PredictionTransform(cfg)
        self.obj_label = nn.Linear(cfg.hidden, cfg.num_object_labels)
        self.obj_feature = nn.Linear(cfg.hidden, cfg.feature_dim)
        self.align = AlignHead(cfg)
        for module in (self.mlm_transform, self.obj_transform, self.obj_label, self.obj_feature, self.align):
            module.apply(init_weights)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, LossTerm]:
        return self.terms(self.outputs(batch), batch)

    @staticmethod
    def terms(out: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, LossTerm]:
        """The four loss terms of the heads' predictions (``outputs``)."""
        return {
            "mlm": masked_lm_terms(out["mlm_logits"], out["mlm_labels"], out["mlm_weight"]),
            "obj": masked_lm_terms(out["obj_logits"], out["obj_labels"], out["obj_weight"]),
            "feat": feature_regression_terms(out["feat_pred"], out["feat_target"], out["obj_weight"]),
            "match": matching_terms(out["match_logit"], batch["matched"]),
        }

    def outputs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The heads' predictions at the positions the losses read, and their targets (losses and validation
        read these). The heads read the masked tokens of matched pairs, every [CLS] token and the masked RoIs of
        matched pairs (Share/Visual: every RoI, for the mean in f_align); the encoder is told so (``keep``) and
        computes its last layer for those positions only."""
        matched = batch["matched"][:, None] > 0
        mlm_at = (batch["mlm_labels"] >= 0) & matched
        obj_at = (batch["obj_labels"] >= 0) & matched
        cls_at = torch.zeros_like(mlm_at)
        cls_at[:, 0] = True
        obj_keep = None if self.align.with_visual else obj_at.clone()
        if obj_keep is not None:
            obj_keep[0, 0] = True  # row 0, the fallback when no RoI is masked (the first RoI is always real)
        decoder, lookup = self.encoder.text_embeddings.tied_weights()  # the MLM decoder is the word embedding
        text, objects, tl, vl = self.encoder.encode(
            batch["input_ids"],
            batch["text_mask"],
            batch["features"],
            batch["boxes"],
            batch["object_mask"],
            keep=(mlm_at | cls_at, obj_keep),
            word_lookup=lookup,
        )
        cls_rows = tl.row_index(cls_at)
        idx, w = _head_rows(tl, mlm_at)
        hidden = self.mlm_transform(gather_rows(text, idx))
        oidx, ow = _head_rows(vl, obj_at)
        o = self.obj_transform(gather_rows(objects, oidx))
        grid = vl.full(objects) if self.align.with_visual else None
        f_align = self.align.f_align_of(gather_rows(text, cls_rows), grid, batch["object_mask"])
        return {
            "mlm_logits": F.linear(hidden, decoder, self.mlm_bias),
            "mlm_labels": _labels(batch["mlm_labels"], mlm_at, w),
            "mlm_weight": w,
            "obj_logits": self.obj_label(o),
            "obj_labels": _labels(batch["obj_labels"], obj_at, ow),
            "obj_weight": ow,
            "feat_pred": self.obj_feature(o),
            "feat_target": _feat_targets(batch["feat_targets"], obj_at),
            "match_logit": self.align.classifier(f_align).squeeze(-1),
        }


def _labels(labels: Tensor, at: Tensor, weight: Tensor) -> Tensor:
    """The labels at ``at`` (batch-major, as the rows come); label 0 for a zero-weight fallback row."""
    picked = labels[at]
    return picked if picked.numel() else labels.new_zeros(weight.shape[0])


def _feat_targets(targets: Tensor, at: Tensor) -> Tensor:
    picked = targets[at]
    return picked if picked.shape[0] else targets.new_zeros(1, targets.shape[-1])


class DistanceProbe(nn.Module):
    """Eq. 2: d_B(u_i, u_j)^2 = (B(u_i - u_j))^T (B(u_i - u_j)) for every pair; returns R [B, L, L]."""

    def __init__(self, hidden: int, rank: int):
        super().__init__()
        self.proj = nn.Parameter(torch.empty(hidden, rank).uniform_(-0.05, 0.05))

    def forward(self, x: Tensor) -> Tensor:
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        with torch.autocast(x.device.type, enabled=False):
            y = x.to(dtype) @ self.proj.to(dtype)
            sq = y.pow(2).sum(-1)
            d = sq[:, :, None] + sq[:, None, :] - 2 * y @ y.transpose(1, 2)
        return d.clamp(min=0)


def pool_words(states: Tensor, piece_word: Tensor, num_words: int) -> tuple[Tensor, Tensor]:
    """Mean of each word's WordPiece vectors (Hewitt & Manning); returns ([B, W, H], word mask [B, W])."""
    words = torch.arange(num_words, device=states.device)
    assign = (piece_word[:, None, :] == words[None, :, None]).to(states.dtype)  # [B, W, T]
    counts = assign.sum(-1)
    pooled = assign @ states / counts.clamp(min=1)[..., None]
    return pooled, counts > 0


def upper_triangle(r: Tensor, mask: Tensor, size: int) -> Tensor:
    """Vectorise R: zero padded rows/columns, pad to size x size, keep the strict upper triangle."""
    n = r.shape[1]
    if n > size:
        raise ValueError(f"a relation matrix of {n} nodes does not fit stage2.max_nodes={size}")
    r = r * (mask[:, :, None] & mask[:, None, :])
    r = F.pad(r, (0, size - n, 0, size - n))
    i, j = torch.triu_indices(size, size, offset=1, device=r.device)
    return r[:, i, j]


class ProjectionHead(nn.Module):
    """MLP from a vectorised relation matrix into the shared contrastive space (z_v or z_w)."""

    def __init__(self, size: int, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(size * (size - 1) // 2, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Stage2Heads(nn.Module):
    """Probes B_v, B_w and per-modality projection heads; computes L_Probe and L_CL-all's terms."""

    def __init__(self, hidden: int, cfg: Stage2Config):
        super().__init__()
        self.cfg = cfg
        self.text_probe = DistanceProbe(hidden, cfg.probe_rank)
        self.visual_probe = DistanceProbe(hidden, cfg.probe_rank)
        self.text_proj = ProjectionHead(cfg.max_nodes, cfg.proj_hidden, cfg.proj_dim)
        self.visual_proj = ProjectionHead(cfg.max_nodes, cfg.proj_hidden, cfg.proj_dim)

    def relations(self, text: Tensor, objects: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """R_w over words and R_v over objects, with their node masks."""
        words, word_mask = pool_words(text, batch["piece_word"], batch["tree_dist"].shape[1])
        return {
            "r_w": self.text_probe(words),
            "word_mask": word_mask,
            "r_v": self.visual_probe(objects),
            "object_mask": batch["object_mask"],
        }

    def forward(
        self, text: Tensor, objects: Tensor, batch: dict[str, Tensor], gather: Gather = no_gather
    ) -> dict[str, LossTerm]:
        rel = self.relations(text, objects, batch)
        size = self.cfg.max_nodes
        z_w = self.text_proj(upper_triangle(rel["r_w"], rel["word_mask"], size))
        z_v = self.visual_proj(upper_triangle(rel["r_v"], rel["object_mask"], size))
        terms = contrastive_terms(z_v, z_w, self.cfg.temperature, gather, self.cfg.xcl_denominator)
        terms["probe"] = probe_terms(rel["r_w"], batch["tree_dist"], rel["word_mask"])
        return terms
