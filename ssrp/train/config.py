"""Frozen, validated configs of the trainer, with the paper's settings as defaults.

``make_config(stage, variant, preset, overrides)`` builds the config of a run: the stage's paper
defaults (Sec. 4.1: lr 1e-4 / 5e-5, batch 128 / 512, 10 / 30 epochs), then a preset (``paper`` or
``tiny``), then ``a.b=value`` overrides. Choices where the paper is silent are documented in
docs/training.md and are all settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ssrp.config import require, with_overrides

VARIANTS = ("share", "visual", "cross")
STAGES = ("stage1", "stage2")
PRESETS = ("paper", "tiny")


@dataclass(frozen=True)
class ModelConfig:
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"unpad"})  # how the model runs, not what it computes
    variant: str = "cross"  # share | visual | cross (Fig. 1)
    hidden: int = 768  # hidden size of every transformer block (Sec. 4.1)
    heads: int = 12  # attention heads (Sec. 4.1)
    intermediate: int = 3072  # FF inner size (BERT-base)
    text_layers: int = 9  # intra-modality text encoder f_Intra^{S<->S} (Sec. 4.1)
    visual_layers: int = 5  # intra-modality visual encoder f_Intra^{V<->V} (Sec. 4.1)
    inter_layers: int = 5  # inter-modality encoder of the variant (Sec. 4.1)
    dropout: float = 0.1  # hidden and attention-probability dropout (BERT-base)
    layer_norm_eps: float = 1e-12  # BERT's LayerNorm epsilon
    vocab_size: int = 30522  # replaced by the BERT config's when --bert is given
    max_positions: int = 512  # position-embedding rows; replaced by the BERT config's
    type_vocab_size: int = 2  # segment embedding rows; replaced by the BERT config's
    feature_dim: int = 2048  # RoI feature size; 0 = take it from the corpus
    num_object_labels: int = 1600  # detector classes (Visual Genome 1600 for BUTD)
    share_attention: str = "separate"  # Share: shared weights applied to each modality, or "joint" over both
    share_ff: bool = True  # Share: the shared inter-modality layer also has a (shared) FF sub-layer
    unpad: str = "auto"  # token-wise layers skip padded positions: on | off | auto (= on for CPU tensors only)

    def __post_init__(self) -> None:
        require(self.variant in VARIANTS, f"model.variant={self.variant!r}: use one of {VARIANTS}")
        require(self.hidden > 0 and self.heads > 0, f"model.hidden={self.hidden}, heads={self.heads} must be > 0")
        require(self.hidden % self.heads == 0, f"model.hidden={self.hidden} must be divisible by heads={self.heads}")
        for name in ("text_layers", "visual_layers", "inter_layers"):
            require(getattr(self, name) >= 0, f"model.{name}={getattr(self, name)} must be >= 0")
        require(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must be in [0, 1)")
        require(self.feature_dim >= 0, f"model.feature_dim={self.feature_dim} must be >= 0 (0: from the corpus)")
        require(self.num_object_labels > 0, f"model.num_object_labels={self.num_object_labels} must be > 0")
        require(
            self.share_attention in ("separate", "joint"),
            f"model.share_attention={self.share_attention!r}: use 'separate' or 'joint'",
        )
        require(self.unpad in ("auto", "on", "off"), f"model.unpad={self.unpad!r}: use auto, on or off")


@dataclass(frozen=True)
class DataConfig:
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"num_workers", "check_crc"})
    max_tokens: int = 36  # WordPiece tokens incl. [CLS]/[SEP] (Sec. 4.1)
    max_objects: int = 36  # RoIs per image (Sec. 4.1)
    views: tuple[str, ...] = ()  # image views to draw from; () = every view in the corpus
    variants: tuple[str, ...] = ()  # caption variants to draw from; () = every variant in the corpus
    num_workers: int = -1  # DataLoader worker processes per rank; -1 = auto: this rank's share of the cores less one (at most 16)
    bucket_batches: int = 50  # length bucketing: sort within buckets of this many global batches; 0 = off
    pad_id: int = 0  # these ids are read from the BERT vocab.txt when --bert is given
    mask_id: int = 103
    random_token_min: int = 999  # MLM random replacements are drawn from [random_token_min, vocab_size)
    check_crc: bool = True  # check every record's crc32 as it is read (bench/corpus_read.py measures the cost)

    def __post_init__(self) -> None:
        require(self.max_tokens >= 3, f"data.max_tokens={self.max_tokens} must be >= 3 ([CLS] word [SEP])")
        require(self.max_objects >= 1, f"data.max_objects={self.max_objects} must be >= 1")
        require(self.num_workers >= -1, f"data.num_workers={self.num_workers} must be >= 0, or -1 for auto")
        require(self.bucket_batches >= 0, f"data.bucket_batches={self.bucket_batches} must be >= 0")


@dataclass(frozen=True)
class Stage1Config:
    mask_prob: float = 0.15  # words and RoIs masked (Sec. 4.1)
    mismatch_prob: float = 0.5  # captions replaced by a mismatched one (Sec. 4.1)
    mlm_weight: float = 1.0  # L_Stage1 = L_MLM + L_Match (Sec. 3.3.1): all weights 1
    obj_weight: float = 1.0
    feat_weight: float = 1.0
    match_weight: float = 1.0

    def __post_init__(self) -> None:
        require(0.0 < self.mask_prob < 1.0, f"stage1.mask_prob={self.mask_prob} must be in (0, 1)")
        require(0.0 <= self.mismatch_prob < 1.0, f"stage1.mismatch_prob={self.mismatch_prob} must be in [0, 1)")


@dataclass(frozen=True)
class Stage2Config:
    probe_rank: int = 128  # rank of B_v and B_w (paper silent; Hewitt & Manning: rank ~64 suffices)
    temperature: float = 0.1  # tau of Eq. 6/7 (paper silent; SimCLR's 0.1)
    max_nodes: int = 36  # R_v and R_w are padded to max_nodes x max_nodes before vectorising (Sec. 4.1)
    proj_hidden: int = 512  # projection-head MLP: upper triangle -> proj_hidden -> proj_dim
    proj_dim: int = 128
    probe_weight: float = 1.0  # L_Stage2 = L_Probe + L_CL-all (Sec. 3.3.2)
    cl_weight: float = 1.0
    xcl_denominator: str = "all"  # "all": softmax over every candidate; "literal": Eq. 7's 1[k != m]

    def __post_init__(self) -> None:
        require(self.probe_rank > 0, f"stage2.probe_rank={self.probe_rank} must be > 0")
        require(self.temperature > 0, f"stage2.temperature={self.temperature} must be > 0")
        require(self.max_nodes >= 2, f"stage2.max_nodes={self.max_nodes} must be >= 2")
        require(
            self.xcl_denominator in ("all", "literal"),
            f"stage2.xcl_denominator={self.xcl_denominator!r}: use 'all' or 'literal'",
        )


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4  # peak learning rate (1e-4 stage 1, 5e-5 stage 2)
    batch_size: int = 128  # global batch over all ranks (128 stage 1; 512 image-caption pairs stage 2)
    epochs: int = 10  # 10 stage 1, 30 stage 2
    max_steps: int = 0  # stop after this many steps; 0 = run the epochs
    warmup_fraction: float = 0.05  # linear warm-up over this fraction of the steps, then linear decay
    weight_decay: float = 0.01  # AdamW decay on matrices only (not biases, LayerNorms, embeddings' norms)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    grad_clip: float = 1.0  # max global gradient norm; 0 = off

    def __post_init__(self) -> None:
        require(self.lr > 0, f"optim.lr={self.lr} must be > 0")
        require(self.batch_size >= 1, f"optim.batch_size={self.batch_size} must be >= 1")
        require(self.epochs >= 1, f"optim.epochs={self.epochs} must be >= 1")
        require(self.max_steps >= 0, f"optim.max_steps={self.max_steps} must be >= 0")
        require(0.0 <= self.warmup_fraction < 1.0, f"optim.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        require(self.grad_clip >= 0, f"optim.grad_clip={self.grad_clip} must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    # may change when a run resumes: settings of logging, checks and speed (config_identity leaves them out)
    RUNTIME: ClassVar[frozenset[str]] = frozenset(
        {"log_every", "ckpt_every", "tensorboard", "progress", "compile", "check_finite", "val_every", "val_pairs",
         "best_metric"}
    )
    stage: str = "stage1"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU; or "bf16" / "fp32"
    log_every: int = 50  # steps between log lines (and TensorBoard scalars)
    ckpt_every: int = 1000  # steps between checkpoints (also at each epoch end and at the end); 0 = not between
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on rank 0
    compile: bool = False  # torch.compile the encoder (GPU; compile time in the first steps; docs/training.md)
    check_finite: bool = True  # stop at the first step whose loss is not finite (one device sync per step)
    # validation on --val-corpus (held-out images): every val_every steps, or 0 = at each epoch's end and the end
    val_every: int = 0
    val_pairs: int = 2000  # held-out pairs validated (the first ones, fixed masks)
    best_metric: str = ""  # the validation metric that picks best.pt; "" = loss (stage 1), uuas (stage 2)

    def __post_init__(self) -> None:
        require(self.stage in STAGES, f"stage={self.stage!r}: use one of {STAGES}")
        require(self.precision in ("auto", "bf16", "fp32"), f"precision={self.precision!r}: use auto, bf16 or fp32")
        require(self.log_every >= 1, f"log_every={self.log_every} must be >= 1")
        require(self.ckpt_every >= 0, f"ckpt_every={self.ckpt_every} must be >= 0")
        require(self.val_every >= 0 and self.val_pairs >= 1, "val_every must be >= 0 and val_pairs >= 1")
        metrics = STAGE1_METRICS if self.stage == "stage1" else STAGE2_METRICS
        require(not self.best_metric or self.best_metric in metrics,
                 f"best_metric={self.best_metric!r}: use one of {metrics} for {self.stage}")


STAGE1_METRICS = ("loss", "mlm", "obj", "feat", "match", "mlm_acc", "itm_acc")
STAGE2_METRICS = ("uuas", "spearman", "probe")


def _stage_defaults(stage: str) -> OptimConfig:
    if stage == "stage1":
        return OptimConfig(lr=1e-4, batch_size=128, epochs=10)
    return OptimConfig(lr=5e-5, batch_size=512, epochs=30)


def _tiny(cfg: TrainConfig) -> TrainConfig:
    """Seconds on one CPU: a 2-layer 32-d model, batch 8, one epoch, logging every step."""
    model = dataclasses.replace(
        cfg.model,
        hidden=32,
        heads=2,
        intermediate=64,
        text_layers=2,
        visual_layers=1,
        inter_layers=1,
        feature_dim=0,
        max_positions=64,
    )
    data = dataclasses.replace(cfg.data, num_workers=0, bucket_batches=4)
    stage2 = dataclasses.replace(cfg.stage2, probe_rank=16, proj_hidden=64, proj_dim=16)
    optim = dataclasses.replace(cfg.optim, lr=1e-3, batch_size=8, epochs=1)
    return dataclasses.replace(
        cfg,
        model=model,
        data=data,
        stage2=stage2,
        optim=optim,
        log_every=1,
        ckpt_every=0,
        tensorboard=False,
        progress=False,
    )


def make_config(
    stage: str, variant: str, preset: str = "paper", overrides: tuple[str, ...] | list[str] = ()
) -> TrainConfig:
    """The config of a run: paper defaults of the stage, then the preset, then ``a.b=value`` overrides."""
    require(stage in STAGES, f"stage={stage!r}: use one of {STAGES}")
    require(preset in PRESETS, f"preset={preset!r}: use one of {PRESETS}")
    cfg = TrainConfig(stage=stage, model=ModelConfig(variant=variant), optim=_stage_defaults(stage))
    if preset == "tiny":
        cfg = _tiny(cfg)
    return with_overrides(cfg, list(overrides))


def global_to_local_batch(batch_size: int, world_size: int) -> int:
    require(
        batch_size % world_size == 0,
        f"optim.batch_size={batch_size} is not divisible by the {world_size} ranks; pick a multiple of {world_size}",
    )
    return batch_size // world_size
