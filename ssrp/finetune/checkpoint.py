"""The pretrained checkpoints a fine-tuning run starts from, and the run's own checkpoints.

Inputs: the **stage-1** checkpoint (encoder and g_align, hence f_align) and, for feature sets with R_v or R_w,
the **stage-2** checkpoint started from it (``--init``): its frozen encoder must equal the stage-1 encoder
tensor for tensor; its probes (and projection heads) are taken.

A run writes ``checkpoint.pt`` (the latest: model, optimiser, schedule, RNG, data position, best score so far;
what ``--resume`` continues) and ``best.pt`` (the model after the epoch with the best validation score; what
``ssrp predict`` reads). Both hold everything needed to rebuild the model without the pretrained files (the
resolved model and stage-2 settings, the answer vocabulary), are written atomically (temporary file, fsync,
``os.replace``) and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from ssrp.config import to_dict
from ssrp.finetune.config import FinetuneConfig, FinetuneOptimConfig, HeadConfig, TaskDataConfig
from ssrp.train.checkpoint import (
    load_checkpoint,
    model_config_of,
    read_digested_checkpoint,
    write_digested_checkpoint,
)
from ssrp.train.config import ModelConfig, Stage2Config

logger = logging.getLogger(__name__)

FORMAT = "ssrp-finetune/2"  # /2: with a digest of the contents
_OLD_FORMATS = ("ssrp-finetune/1",)  # readable, with a warning: no digest to check
LATEST = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class Pretrained:
    model: ModelConfig  # the pretrained encoder's settings
    stage2: Stage2Config | None  # the probes' settings (feature sets with rv / rw)
    state: dict[str, Tensor]  # encoder.*, align.* (stage 1) and heads.* (stage 2)


def load_pretrained(stage1: str, stage2: str | None, head: HeadConfig) -> Pretrained:
    s1 = load_checkpoint(stage1)
    if s1.get("stage") != "stage1":
        raise ValueError(f"--stage1 {stage1} is a {s1.get('stage')} checkpoint; pass the stage-1 run's checkpoint.pt "
                         "(its g_align head gives f_align)")
    state = {k: v for k, v in s1["model"].items() if k.startswith(("encoder.", "align."))}
    if not any(k.startswith("align.") for k in state):
        raise ValueError(f"--stage1 {stage1} has no g_align head (align.*)")
    if not head.relations:
        if stage2:
            logger.info("head.features=%s uses f_align only: the stage-2 checkpoint is not read", head.features)
        return Pretrained(model_config_of(s1), None, state)
    if not stage2:
        raise ValueError(f"head.features={head.features} uses probed relations: pass --stage2 RUN2/checkpoint.pt "
                         "(the stage-2 run started from --stage1)")
    s2 = load_checkpoint(stage2)
    if s2.get("stage") != "stage2":
        raise ValueError(f"--stage2 {stage2} is a {s2.get('stage')} checkpoint, not a stage-2 one")
    check_same_encoder(s1["model"], s2["model"], stage1, stage2)
    state.update({k: v for k, v in s2["model"].items() if k.startswith("heads.")})
    return Pretrained(model_config_of(s1), Stage2Config(**s2["config"]["stage2"]), state)


def check_same_encoder(stage1_state: dict, stage2_state: dict, stage1: str, stage2: str) -> None:
    """The stage-2 run must have been started from this stage-1 checkpoint (its frozen encoder is the same)."""
    for key, value in stage2_state.items():
        if key.startswith("encoder."):
            other = stage1_state.get(key)
            if other is None or other.shape != value.shape or not torch.equal(other, value):
                raise ValueError(f"--stage2 {stage2}: its encoder differs from --stage1 {stage1} at {key}; pass the "
                                 "stage-1 checkpoint the stage-2 run was started from (its --init)")


# ------------------------------------------------------------------------------------------------
# The run's checkpoints


def save(state: dict, path: str) -> None:
    """Atomic, with a digest of the contents checked on every load."""
    write_digested_checkpoint({"format": FORMAT, **state}, path)


def load(path: str) -> dict:
    return read_digested_checkpoint(path, FORMAT, _OLD_FORMATS, "fine-tuning")


def config_of(ckpt: dict) -> FinetuneConfig:
    c = ckpt["config"]
    head = {**c["head"], "freeze": tuple(c["head"]["freeze"])}
    data = {**c["data"], "train": tuple(c["data"]["train"])}
    optim = {**c["optim"], "betas": tuple(c["optim"]["betas"])}
    rest = {k: v for k, v in c.items() if k not in ("head", "data", "optim")}
    return FinetuneConfig(head=HeadConfig(**head), data=TaskDataConfig(**data), optim=FinetuneOptimConfig(**optim),
                          **rest)


def model_settings_of(ckpt: dict) -> tuple[ModelConfig, Stage2Config | None]:
    stage2 = ckpt.get("stage2_config")
    return ModelConfig(**ckpt["model_config"]), Stage2Config(**stage2) if stage2 else None


def header(cfg: FinetuneConfig, model: ModelConfig, stage2: Stage2Config | None, answers: list[str] | None,
           inputs: dict) -> dict:
    """What every checkpoint of a run carries besides tensors."""
    return {
        "task": cfg.task,
        "config": to_dict(cfg),
        "model_config": to_dict(model),
        "stage2_config": to_dict(stage2) if stage2 is not None else None,
        "answers": answers,
        "inputs": inputs,
    }
