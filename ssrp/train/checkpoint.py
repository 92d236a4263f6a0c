"""Checkpoints: written atomically (temporary file, fsync, os.replace), read with weights_only=True.

A checkpoint holds the model (unwrapped), optimiser, scheduler, RNG states, the data position
(epoch and batches consumed) and the resolved config; resuming refuses a changed config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ssrp.config import diff_keys, to_dict
from ssrp.train.config import ModelConfig

if TYPE_CHECKING:
    from ssrp.train.steps import Run

CHECKPOINT = "checkpoint.pt"
CKPT_FORMAT = "ssrp-train/1"
# settings that may change between a run and its resumption
RESUMABLE_CHANGES = {"log_every", "ckpt_every", "tensorboard", "progress", "compile", "data.num_workers", "model.unpad"}


def load_checkpoint(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not an ssrp training checkpoint (format {CKPT_FORMAT})")
    return ckpt


def model_config_of(ckpt: dict) -> ModelConfig:
    return ModelConfig(**ckpt["config"]["model"])


@dataclass
class Position:
    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` already consumed


def save_checkpoint(run: Run, path: str, pos: Position) -> None:
    """Atomic: written to a temporary file, flushed, then renamed over the old checkpoint."""
    state = {
        "format": CKPT_FORMAT,
        "stage": run.cfg.stage,
        "variant": run.cfg.model.variant,
        "config": to_dict(run.cfg),
        "step": pos.step,
        "epoch": pos.epoch,
        "batch": pos.batch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if run.info.device.type == "cuda" else [],
        },
    }
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def restore(run: Run, ckpt: dict) -> Position:
    changed = [k for k in diff_keys(ckpt["config"], to_dict(run.cfg)) if k not in RESUMABLE_CHANGES]
    if changed:
        raise ValueError(f"cannot resume: the checkpoint was written with other settings ({', '.join(changed)})")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if ckpt["rng"]["cuda"] and run.info.device.type == "cuda":
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    if run.cfg.stage == "stage2":
        run.model.freeze_encoder()
    return Position(ckpt["step"], ckpt["epoch"], ckpt["batch"])
