"""Frozen, validated settings of a captioning run.

Defaults are Up-Down's (Anderson et al. 2018: LSTMs of 1000 units, attention of 512, word embedding
of 1000, vocabulary of the words seen at least 5 times, beam size 5) and, where the Up-Down paper is
silent, those of the common re-implementation (ruotianluo/self-critical.pytorch ``configs/updown``:
Adam at 5e-4 decayed by 0.8 every 3 epochs, 30 epochs of cross-entropy, then SCST at 5e-5 with 5
samples per image and the greedy baseline, gradients clipped at 0.1, dropout 0.5, 5 captions per image,
captions cut to 16 words). Every choice is documented in docs/caption.md and is a setting.

``make_config(preset, overrides)``: the defaults (``paper``) or seconds-on-a-CPU sizes (``tiny``), then
``a.b=value`` overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ssrp.config import require, with_overrides

PRESETS = ("paper", "tiny")
FEATURE_PARTS = ("butd", "objects", "objects_rel")
SSRP_PARTS = ("objects", "objects_rel")


@dataclass(frozen=True)
class DataConfig:
    min_count: int = 5  # vocabulary: words seen at least this often in the training split (Up-Down: 10,010 words)
    max_length: int = 16  # words kept of each training caption; decoding stops after max_length words
    seq_per_img: int = 5  # captions per image in a batch (drawn without replacement where the image has enough)
    restval: bool = True  # Karpathy's "restval" images train too (113,287 training images)
    num_workers: int = 0  # DataLoader worker processes reading the feature cache; 0 = in the training process

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"num_workers"})

    def __post_init__(self) -> None:
        require(self.min_count >= 1, f"data.min_count={self.min_count} must be >= 1")
        require(self.max_length >= 1, f"data.max_length={self.max_length} must be >= 1")
        require(self.seq_per_img >= 1, f"data.seq_per_img={self.seq_per_img} must be >= 1")
        require(self.num_workers >= 0, f"data.num_workers={self.num_workers} must be >= 0")


@dataclass(frozen=True)
class FeatureConfig:
    # What each object's attention feature is: the concatenation, in this order, of
    #   butd        its detector (BUTD) feature,
    #   objects     SSRP-Visual's refined object state (the stage-2 encoder's object output),
    #   objects_rel the refined states propagated over the probed relations: softmax_j(-R_v[i, j] / t) @ V.
    # ("butd",) is the plain Up-Down baseline arm.
    parts: tuple[str, ...] = ("butd", "objects", "objects_rel")
    max_objects: int = 36  # objects per image (the first ones of the source: the detector's order)
    rel_temperature: float = 0.0  # t above; 0 = each image's median off-diagonal R_v distance (as ssrp retrieve)
    batch_size: int = 64  # images per SSRP encoder pass while building the cache
    fp16: bool = True  # the cache holds float16 features (half the disk and I/O); the model computes in float32

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    def __post_init__(self) -> None:
        require(len(self.parts) > 0 and all(p in FEATURE_PARTS for p in self.parts),
                 f"features.parts={self.parts}: use a non-empty tuple of {FEATURE_PARTS}")
        require(len(set(self.parts)) == len(self.parts), f"features.parts={self.parts} repeats a part")
        require(self.max_objects >= 1, f"features.max_objects={self.max_objects} must be >= 1")
        require(self.rel_temperature >= 0, f"features.rel_temperature={self.rel_temperature} must be >= 0")
        require(self.batch_size >= 1, f"features.batch_size={self.batch_size} must be >= 1")

    @property
    def needs_ssrp(self) -> bool:
        return any(p in SSRP_PARTS for p in self.parts)


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = 1000  # units of each LSTM (Up-Down: M = 1000)
    att_hidden: int = 512  # units of the attention layer (Up-Down: H = 512)
    embed: int = 1000  # word embedding size (Up-Down: E = 1000)
    dropout: float = 0.5  # on word embeddings and on the language LSTM's output (self-critical drop_prob_lm)
    # False: attention and the mean-pooled input take the features as they are (Up-Down as published);
    # True: each feature goes through Linear -> ReLU -> Dropout to `hidden` first (self-critical's att_embed/fc_embed)
    feature_embed: bool = False
    # LSTM2's input weights applied to every object once (W Σ α_i v_i = Σ α_i W v_i) instead of to v̂ at every step:
    # auto = when an image's captions take more steps in all than it has objects; on | off (same numbers)
    object_gates: str = "auto"

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"object_gates"})

    def __post_init__(self) -> None:
        for name in ("hidden", "att_hidden", "embed"):
            require(getattr(self, name) >= 1, f"model.{name}={getattr(self, name)} must be >= 1")
        require(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must be in [0, 1)")
        require(self.object_gates in ("auto", "on", "off"), f"model.object_gates={self.object_gates!r}: auto, on or off")


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase: cross-entropy (``xe``) or self-critical sequence training (``scst``)."""

    epochs: int = 30
    lr: float = 5e-4
    batch_size: int = 10  # images per step (each with data.seq_per_img captions, or scst samples)
    lr_decay_every: int = 3  # epochs between learning-rate decays; 0 = constant
    lr_decay_rate: float = 0.8
    grad_clip: float = 0.1  # gradients clipped to [-grad_clip, grad_clip] (self-critical's default); 0 = off
    samples: int = 5  # scst: sampled captions per image, each rewarded against the image's greedy caption

    def __post_init__(self) -> None:
        require(self.epochs >= 0, f"epochs={self.epochs} must be >= 0")
        require(self.lr > 0, f"lr={self.lr} must be > 0")
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.lr_decay_every >= 0, f"lr_decay_every={self.lr_decay_every} must be >= 0")
        require(0 < self.lr_decay_rate <= 1, f"lr_decay_rate={self.lr_decay_rate} must be in (0, 1]")
        require(self.grad_clip >= 0, f"grad_clip={self.grad_clip} must be >= 0")
        require(self.samples >= 1, f"samples={self.samples} must be >= 1")


@dataclass(frozen=True)
class DecodeConfig:
    beam_size: int = 5  # beam search at test time (Up-Down); 1 = greedy
    batch_size: int = 50  # images per decoding pass
    val_images: int = 5000  # validation images decoded (greedily) after each epoch to pick the best checkpoint; 0 = all
    spice: str = "auto"  # auto: SPICE where its Java part and Stanford models are present; on: required; off

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    def __post_init__(self) -> None:
        require(self.beam_size >= 1, f"decode.beam_size={self.beam_size} must be >= 1")
        require(self.batch_size >= 1, f"decode.batch_size={self.batch_size} must be >= 1")
        require(self.val_images >= 0, f"decode.val_images={self.val_images} must be >= 0 (0 = all)")
        require(self.spice in ("auto", "on", "off"), f"decode.spice={self.spice!r}: use auto, on or off")


@dataclass(frozen=True)
class CaptionConfig:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    xe: PhaseConfig = field(default_factory=PhaseConfig)
    scst: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=20, lr=5e-5, lr_decay_every=0))
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    log_every: int = 100  # steps between log lines
    ckpt_every: int = 1000  # steps between checkpoints within an epoch (one is also written at each epoch end); 0 = off
    progress: bool = True  # tqdm bars

    RUNTIME: ClassVar[frozenset[str]] = frozenset({"device", "log_every", "ckpt_every", "progress"})

    def __post_init__(self) -> None:
        require(self.log_every >= 1, f"log_every={self.log_every} must be >= 1")
        require(self.ckpt_every >= 0, f"ckpt_every={self.ckpt_every} must be >= 0")
        require(self.xe.epochs + self.scst.epochs >= 1, "xe.epochs + scst.epochs must be >= 1")


def _tiny(cfg: CaptionConfig) -> CaptionConfig:
    """Seconds on one CPU core: 64-unit LSTMs, a few epochs, every word kept."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, min_count=1),
        features=dataclasses.replace(cfg.features, batch_size=16),
        model=ModelConfig(hidden=64, att_hidden=32, embed=32, dropout=0.1),
        xe=dataclasses.replace(cfg.xe, epochs=3, lr=5e-3, batch_size=8, lr_decay_every=0, grad_clip=1.0),
        scst=dataclasses.replace(cfg.scst, epochs=1, lr=5e-4, batch_size=8, grad_clip=1.0),
        decode=dataclasses.replace(cfg.decode, beam_size=3, batch_size=16, val_images=0),
        log_every=10,
    )


def make_config(preset: str = "paper", overrides: list[str] | tuple[str, ...] = ()) -> CaptionConfig:
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r}: use one of {PRESETS}")
    cfg = CaptionConfig()
    if preset == "tiny":
        cfg = _tiny(cfg)
    return with_overrides(cfg, list(overrides))


def config_from_dict(d: dict) -> CaptionConfig:
    """The config a run recorded (``to_dict``) back as dataclasses."""

    def tup(sub: dict) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}

    return CaptionConfig(
        data=DataConfig(**tup(d["data"])),
        features=FeatureConfig(**tup(d["features"])),
        model=ModelConfig(**tup(d["model"])),
        xe=PhaseConfig(**tup(d["xe"])),
        scst=PhaseConfig(**tup(d["scst"])),
        decode=DecodeConfig(**tup(d["decode"])),
        **{k: d[k] for k in ("seed", "device", "log_every", "ckpt_every", "progress")},
    )
