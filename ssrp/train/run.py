"""The state of one training run: config, device and ranks, model, optimiser, schedule (what a step and a
checkpoint work on)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from ssrp.train.config import TrainConfig
from ssrp.train.distributed import DistInfo


@dataclass
class Run:
    cfg: TrainConfig
    info: DistInfo
    model: nn.Module  # unwrapped: Stage1Model or Stage2Model; what checkpoints hold
    trainable: nn.Module  # what computes the losses with gradients (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    corpora: list[dict] = field(default_factory=list)  # what the model was trained on (checkpoint.corpus_identity)
    best: dict = field(default_factory=dict)  # the best validation so far: metric, value, step

    def autocast(self) -> AbstractContextManager:
        if use_bf16(self.cfg, self.info):
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return nullcontext()


def use_bf16(cfg: TrainConfig, info: DistInfo) -> bool:
    return cfg.precision == "bf16" or (cfg.precision == "auto" and info.device.type == "cuda")
