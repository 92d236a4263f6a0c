"""Frozen, validated configs of fine-tuning, with LXMERT's standard settings as defaults.

``make_config(task, preset, overrides)`` builds the config of a run: the task's LXMERT defaults
(airsplay/lxmert ``run/{vqa,gqa,nlvr2}_finetune.bash`` and ``src/tasks/*.py`` at 0db1182), then a preset
(``paper`` or ``tiny``), then ``a.b=value`` overrides. Where the paper and LXMERT are silent the choice is
documented in docs/finetune.md and is a setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ssrp.config import require, with_overrides

TASKS = ("vqa", "gqa", "nlvr2")
FEATURE_SETS = ("f_align", "f_align+rv", "f_align+rw", "f_align+rv+rw")  # Table 3's columns
FUSIONS = ("linear", "projection")
FREEZABLE = ("encoder", "align", "probes")
PRESETS = ("paper", "tiny")


@dataclass(frozen=True)
class HeadConfig:
    features: str = "f_align+rv+rw"  # f_align | f_align+rv | f_align+rw | f_align+rv+rw (Table 3)
    fusion: str = "linear"  # how relation matrices become one vector (paper silent; docs/finetune.md)
    rel_dim: int = 0  # linear fusion: size of the fused relation vector; 0 = the model's hidden size
    fusion_weight: float = 0.5  # projection fusion: rel = w*z_v/|z_v| + (1-w)*z_w/|z_w| (ssrp export's)
    classifier_hidden: int = 0  # LXMERT's logit_fc hidden size; 0 = 2 x the model's hidden size
    freeze: tuple[str, ...] = ()  # parts kept fixed: encoder, align, probes (LXMERT fine-tunes everything)

    def __post_init__(self) -> None:
        require(self.features in FEATURE_SETS, f"head.features={self.features!r}: use one of {FEATURE_SETS}")
        require(self.fusion in FUSIONS, f"head.fusion={self.fusion!r}: use one of {FUSIONS}")
        require(self.rel_dim >= 0, f"head.rel_dim={self.rel_dim} must be >= 0 (0: the model's hidden size)")
        require(0.0 <= self.fusion_weight <= 1.0, f"head.fusion_weight={self.fusion_weight} must be in [0, 1]")
        require(self.classifier_hidden >= 0, f"head.classifier_hidden={self.classifier_hidden} must be >= 0")
        bad = [p for p in self.freeze if p not in FREEZABLE]
        require(not bad, f"head.freeze={self.freeze}: {bad} unknown; use any of {FREEZABLE}")

    @property
    def relations(self) -> tuple[str, ...]:
        """The relation matrices the feature set uses: () or some of ("rv", "rw")."""
        return tuple(self.features.split("+")[1:])


@dataclass(frozen=True)
class TaskDataConfig:
    train: tuple[str, ...] = ("train",)  # splits trained on: DATA/<split>.json
    valid: str = "valid"  # split validated on after each epoch ("" = none)
    max_tokens: int = 20  # WordPieces incl. [CLS]/[SEP] (LXMERT's MAX_VQA_LENGTH / MAX_GQA_LENGTH / NLVR2's 20)
    max_objects: int = 36  # RoIs per image (LXMERT's obj36 features)
    lowercase: bool = True  # bert-base-uncased (LXMERT: BertTokenizer(do_lower_case=True))
    bucket_batches: int = 0  # 0 = random batches as LXMERT; >0 = batches of similar question lengths
    num_workers: int = -1  # loader workers per rank; -1 = auto (the rank's share of the cores less one)
    valid_batch_size: int = 256  # examples per validation / prediction forward pass
    RUNTIME = frozenset({"num_workers", "valid_batch_size"})

    def __post_init__(self) -> None:
        require(len(self.train) >= 1, "data.train must name at least one split")
        require(self.max_tokens >= 3, f"data.max_tokens={self.max_tokens} must be >= 3 ([CLS] word [SEP])")
        require(self.max_objects >= 1, f"data.max_objects={self.max_objects} must be >= 1")
        require(self.bucket_batches >= 0, f"data.bucket_batches={self.bucket_batches} must be >= 0")
        require(self.num_workers >= -1, f"data.num_workers={self.num_workers} must be >= 0, or -1 for auto")
        require(self.valid_batch_size >= 1, f"data.valid_batch_size={self.valid_batch_size} must be >= 1")


@dataclass(frozen=True)
class FinetuneOptimConfig:
    lr: float = 5e-5  # peak learning rate (LXMERT: 5e-5 VQA and NLVR2, 1e-5 GQA)
    batch_size: int = 32  # global batch over all ranks (LXMERT: 32)
    epochs: int = 4  # (LXMERT: 4)
    max_steps: int = 0  # stop after this many steps; 0 = run the epochs
    warmup_fraction: float = 0.1  # linear warm-up, then linear decay to 0 (BertAdam warmup=0.1, warmup_linear)
    weight_decay: float = 0.01  # (BertAdam's default)
    decay_all: bool = True  # BertAdam decays every parameter; False: not biases and LayerNorms
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    grad_clip: float = 5.0  # max global gradient norm (LXMERT: clip_grad_norm_(..., 5.)); 0 = off

    def __post_init__(self) -> None:
        require(self.lr > 0, f"optim.lr={self.lr} must be > 0")
        require(self.batch_size >= 1, f"optim.batch_size={self.batch_size} must be >= 1")
        require(self.epochs >= 1, f"optim.epochs={self.epochs} must be >= 1")
        require(self.max_steps >= 0, f"optim.max_steps={self.max_steps} must be >= 0")
        require(0.0 <= self.warmup_fraction < 1.0, f"optim.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        require(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        require(self.grad_clip >= 0, f"optim.grad_clip={self.grad_clip} must be >= 0")


@dataclass(frozen=True)
class FinetuneConfig:
    task: str = "vqa"
    head: HeadConfig = field(default_factory=HeadConfig)
    data: TaskDataConfig = field(default_factory=TaskDataConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    seed: int = 9595  # LXMERT's default seed (src/param.py)
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU; or "bf16" / "fp32"
    log_every: int = 100  # steps between log lines
    ckpt_every: int = 1000  # steps between checkpoints (also after each epoch's validation); 0 = not between
    progress: bool = True  # tqdm bar on rank 0
    check_finite: bool = True  # stop at the first step whose loss is not finite (one device sync per step)
    RUNTIME = frozenset({"log_every", "ckpt_every", "progress", "check_finite"})

    def __post_init__(self) -> None:
        require(self.task in TASKS, f"task={self.task!r}: use one of {TASKS}")
        require(self.precision in ("auto", "bf16", "fp32"), f"precision={self.precision!r}: use auto, bf16 or fp32")
        require(self.log_every >= 1, f"log_every={self.log_every} must be >= 1")
        require(self.ckpt_every >= 0, f"ckpt_every={self.ckpt_every} must be >= 0")


# LXMERT's fine-tuning scripts (run/*_finetune.bash @ 0db1182): splits, learning rate; batch 32 and 4 epochs for all.
TASK_DEFAULTS = {
    "vqa": {"train": ("train", "nominival"), "valid": "minival", "lr": 5e-5},
    "gqa": {"train": ("train", "valid"), "valid": "testdev", "lr": 1e-5},
    "nlvr2": {"train": ("train",), "valid": "valid", "lr": 5e-5},
}


def _task_defaults(task: str) -> FinetuneConfig:
    d = TASK_DEFAULTS[task]
    return FinetuneConfig(
        task=task,
        data=TaskDataConfig(train=d["train"], valid=d["valid"]),
        optim=FinetuneOptimConfig(lr=d["lr"]),
    )


def _tiny(cfg: FinetuneConfig) -> FinetuneConfig:
    """Seconds on one CPU (with a tiny pretrained model): batch 8, two epochs, logging every step."""
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, num_workers=0, valid_batch_size=32),
        optim=dataclasses.replace(cfg.optim, lr=1e-3, batch_size=8, epochs=2),
        log_every=1,
        ckpt_every=0,
        progress=False,
    )


def make_config(task: str, preset: str = "paper", overrides: tuple[str, ...] | list[str] = ()) -> FinetuneConfig:
    """The config of a run: LXMERT's defaults for the task, then the preset, then ``a.b=value`` overrides."""
    require(task in TASKS, f"task={task!r}: use one of {TASKS}")
    require(preset in PRESETS, f"preset={preset!r}: use one of {PRESETS}")
    cfg = _task_defaults(task)
    if preset == "tiny":
        cfg = _tiny(cfg)
    return with_overrides(cfg, list(overrides))
