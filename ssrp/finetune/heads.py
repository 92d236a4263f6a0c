"""The fine-tuning model: the pretrained SSRP encoder, its relationship-aware features and LXMERT's task heads.

Per (sentence, image) row the feature vector is ``[f_align ; rel]`` (Sec. 4.1: "linearly-fused probed
relationships and visual-textual alignment prediction f_align in Eq. 4 as features"):

* ``f_align``: the stage-1 g_align output (Cross: tanh(FC(w_CLS)), LXMERT's pooled output; Share/Visual:
  tanh(FC([mean v; w_CLS]))).
* ``rel`` (feature sets with ``rv`` / ``rw``): the probed relation matrices R_v = d_Bv(objects), R_w =
  d_Bw(words), each vectorised as the stage-2 projection heads see it (strict upper triangle, zero-padded to
  ``stage2.max_nodes``), fused into one vector (``head.fusion``):
  - ``linear``: rel = LayerNorm(sum_k W_k vec(R_k) + b), one learned linear map per matrix (default);
  - ``projection``: rel = w z_v/|z_v| + (1 - w) z_w/|z_w| with the stage-2 projection heads z (``ssrp export``'s
    fused vector), w = ``head.fusion_weight`` (one matrix alone: its z/|z|).

Heads (airsplay/lxmert ``src/tasks/*_model.py``): ``logit_fc`` = FC -> GELU -> LayerNorm(eps 1e-12) -> FC over
the feature vector (VQA, GQA: one logit per answer) or over the two rows of an NLVR2 pair concatenated (two
logits). New layers get BERT's initialisation, as LXMERT's ``init_bert_weights``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssrp.finetune.config import FinetuneConfig, HeadConfig
from ssrp.train.config import ModelConfig, Stage2Config
from ssrp.train.heads import AlignHead, DistanceProbe, ProjectionHead, pool_words, upper_triangle
from ssrp.train.model import SSRPEncoder, init_weights

logger = logging.getLogger(__name__)


class RelationFeatures(nn.Module):
    """The stage-2 probes of the feature set and their fusion into one vector. Submodule names follow
    ``Stage2Heads`` (visual_probe, text_probe, visual_proj, text_proj) so stage-2 weights load as they are."""

    def __init__(self, relations: tuple[str, ...], head: HeadConfig, hidden: int, stage2: Stage2Config):
        super().__init__()
        self.relations = relations
        self.fusion = head.fusion
        self.max_nodes = stage2.max_nodes
        self.weights = {"rv": head.fusion_weight, "rw": 1.0 - head.fusion_weight} if len(relations) == 2 else {
            relations[0]: 1.0}
        size = stage2.max_nodes * (stage2.max_nodes - 1) // 2
        for r, prefix in (("rv", "visual"), ("rw", "text")):
            if r in relations:
                setattr(self, f"{prefix}_probe", DistanceProbe(hidden, stage2.probe_rank))
                if self.fusion == "projection":
                    setattr(self, f"{prefix}_proj", ProjectionHead(stage2.max_nodes, stage2.proj_hidden, stage2.proj_dim))
        if self.fusion == "linear":
            self.out_dim = head.rel_dim or hidden
            self.fuse = nn.ModuleDict({r: nn.Linear(size, self.out_dim, bias=False) for r in relations})
            self.fuse_bias = nn.Parameter(torch.zeros(self.out_dim))
            self.fuse_norm = nn.LayerNorm(self.out_dim, eps=1e-12)
            self.fuse.apply(init_weights)
        else:
            self.out_dim = stage2.proj_dim

    def vectors(self, text: Tensor, objects: Tensor, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """vec(R_v), vec(R_w) of each row: ``[R, S(S-1)/2]``."""
        out = {}
        if "rv" in self.relations:
            out["rv"] = upper_triangle(self.visual_probe(objects), batch["object_mask"], self.max_nodes)
        if "rw" in self.relations:
            words = max(1, batch["piece_word"].shape[1] - 2)  # every word has a piece between [CLS] and [SEP]
            pooled, word_mask = pool_words(text, batch["piece_word"], words)
            out["rw"] = upper_triangle(self.text_probe(pooled), word_mask, self.max_nodes)
        return out

    def forward(self, text: Tensor, objects: Tensor, batch: dict[str, Tensor]) -> Tensor:
        vecs = self.vectors(text, objects, batch)
        if self.fusion == "linear":
            fused = sum(self.fuse[r](v.to(self.fuse[r].weight.dtype)) for r, v in vecs.items())
            return self.fuse_norm(fused + self.fuse_bias)
        projections = {"rv": getattr(self, "visual_proj", None), "rw": getattr(self, "text_proj", None)}
        return sum(self.weights[r] * F.normalize(projections[r](v).float(), dim=-1) for r, v in vecs.items())


class FinetuneModel(nn.Module):
    """Encoder + g_align (+ probes and fusion) + LXMERT's ``logit_fc``; ``forward(batch)`` -> logits [B, C]."""

    def __init__(self, task: str, model: ModelConfig, head: HeadConfig, num_outputs: int,
                 stage2: Stage2Config | None = None):
        super().__init__()
        self.task = task
        self.encoder = SSRPEncoder(model)
        self.align = AlignHead(model)
        self.align.classifier.requires_grad_(False)  # the matching classifier of Eq. 4 is not a feature
        self.relations = None
        feature_dim = model.hidden
        if head.relations:
            if stage2 is None:
                raise ValueError(f"head.features={head.features} needs the stage-2 settings (probes)")
            self.relations = RelationFeatures(head.relations, head, model.hidden, stage2)
            feature_dim += self.relations.out_dim
        self.feature_dim = feature_dim
        rows = 2 if task == "nlvr2" else 1
        inner = head.classifier_hidden or 2 * model.hidden
        self.logit_fc = nn.Sequential(
            nn.Linear(rows * feature_dim, inner), nn.GELU(), nn.LayerNorm(inner, eps=1e-12), nn.Linear(inner, num_outputs)
        )
        self.logit_fc.apply(init_weights)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        """``[R, F]``: [f_align ; rel] of every (sentence, image) row."""
        text, objects = self.encoder(
            batch["input_ids"], batch["text_mask"], batch["features"], batch["boxes"], batch["object_mask"]
        )
        x = self.align.f_align(text, objects, batch["object_mask"])
        if self.relations is None:
            return x
        rel = self.relations(text, objects, batch)
        return torch.cat([x, rel.to(x.dtype)], -1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.features(batch)
        if self.task == "nlvr2":
            x = x.reshape(-1, 2 * self.feature_dim)  # LXMERT: x.view(-1, hid_dim * 2)
        return self.logit_fc(x)

    def freeze(self, parts: tuple[str, ...]) -> None:
        modules = {"encoder": self.encoder, "align": self.align}
        if self.relations is not None:
            modules["probes"] = nn.ModuleList(
                m for n, m in self.relations.named_children() if n.endswith(("_probe", "_proj"))
            )
        for part in parts:
            if part in modules:
                modules[part].requires_grad_(False)


def num_outputs(task: str, answers: list[str] | None) -> int:
    return 2 if task == "nlvr2" else len(answers or [])


def build_model(cfg: FinetuneConfig, model: ModelConfig, stage2: Stage2Config | None, answers: list[str] | None,
                pretrained: dict[str, Tensor] | None = None) -> FinetuneModel:
    """The model of a run, its pretrained part loaded from ``pretrained`` (stage-1 encoder.* and align.*,
    stage-2 heads.*), its new layers initialised from ``cfg.seed`` (the same on every rank)."""
    torch.manual_seed(cfg.seed)
    net = FinetuneModel(cfg.task, model, cfg.head, num_outputs(cfg.task, answers), stage2)
    if pretrained is not None:
        load_pretrained(net, pretrained)
    net.freeze(cfg.head.freeze)
    return net


def load_pretrained(net: FinetuneModel, state: dict[str, Tensor]) -> None:
    """Copy the pretrained tensors; every tensor of the encoder, g_align and the probes must be found."""
    own = net.state_dict()
    mapped = {}
    for key, value in state.items():
        target = "relations." + key.removeprefix("heads.") if key.startswith("heads.") else key
        if target in own:
            mapped[target] = value
    expected = [k for k in own if k.startswith(("encoder.", "align.")) or
                (k.startswith("relations.") and k.split(".")[1].endswith(("_probe", "_proj")))]
    missing = [k for k in expected if k not in mapped]
    if missing:
        raise ValueError(f"the pretrained checkpoints lack {len(missing)} tensors the model needs (e.g. {missing[0]})")
    for key, value in mapped.items():
        if own[key].shape != value.shape:
            raise ValueError(f"pretrained {key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}")
    net.load_state_dict(mapped, strict=False)
    logger.info("loaded %d pretrained tensors; %d new (task head and fusion)", len(mapped), len(own) - len(mapped))
