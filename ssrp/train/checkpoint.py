"""Checkpoints: written atomically (temporary file, fsync, os.replace), read with weights_only=True.

A checkpoint holds the model (unwrapped), optimiser, scheduler, RNG states, the data position
(epoch and batches consumed) and the resolved config; resuming refuses a changed config.

Nothing broken is written or read silently: a checkpoint carries the sha256 of its own contents
(``digest``: every tensor's bytes, dtype and shape and every other value, in key order), checked on
every load; a model with a non-finite weight is never saved; a file that is empty, truncated, not a
checkpoint or corrupted gives one CheckpointError naming the path.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from ssrp.config import config_identity, diff_keys, from_dict, to_dict
from ssrp.corpus import load_manifest
from ssrp.fileutil import atomic_file
from ssrp.train.config import ModelConfig, TrainConfig
from ssrp.train.run import Run

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CKPT_FORMAT = "ssrp-train/2"  # /2: with a digest of the contents
_OLD_FORMATS = ("ssrp-train/1",)  # readable, with a warning: no digest to check


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not an ssrp checkpoint, corrupted, not finite."""


def read_checkpoint(path: str, formats: tuple[str, ...], what: str) -> dict:
    """Read an ssrp checkpoint file (weights_only) whose format is one of ``formats`` (training, fine-tuning,
    captioning); a missing, unreadable or foreign file is one error naming the path."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the parser trips on, the file is not a checkpoint
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint (empty, truncated or another format: {first})") from None
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt not in formats:
        raise CheckpointError(f"{path} is not an ssrp {what} checkpoint (format {formats[0]}, found {fmt!r})")
    return ckpt


def load_checkpoint(path: str) -> dict:
    """Read a training checkpoint, check its format and its digest; CheckpointError names the path."""
    return read_digested_checkpoint(path, CKPT_FORMAT, _OLD_FORMATS, "training")


def read_digested_checkpoint(path: str, fmt: str, old_formats: tuple[str, ...], what: str) -> dict:
    """``read_checkpoint`` for a format that carries a digest of its contents (checked; the digest is removed
    from the returned dict); ``old_formats`` are read with a warning, having no digest to check."""
    ckpt = read_checkpoint(path, (fmt, *old_formats), what)
    if ckpt["format"] in old_formats:
        logger.warning("%s: an older checkpoint (%s) without a digest: its contents cannot be checked", path,
                       ckpt["format"])
        return ckpt
    stored = ckpt.pop("digest", None)
    if stored != state_digest(ckpt):
        raise CheckpointError(f"{path}: its contents do not match its digest (corrupted); use an earlier checkpoint")
    return ckpt


def write_digested_checkpoint(state: dict, path: str) -> None:
    """Write ``state`` (with its ``format``) and the digest of its contents atomically (``atomic_file``):
    readers see the old checkpoint or the new one, never half of one."""
    with atomic_file(path) as tmp:
        torch.save({**state, "digest": state_digest(state)}, tmp)


def state_digest(state: Any) -> str:
    """sha256 over a checkpoint's contents: every tensor's dtype, shape and bytes, every other value's repr,
    dict entries in key order."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for item in value:
            _feed(h, item)
    else:
        h.update(f"V{value!r}".encode())


def corpus_identity(root: str) -> dict:
    """What a checkpoint records of a corpus it was trained on: where it was, its config hash, the fingerprint
    of its inputs and its images per split (evaluation warns on images a model was trained on)."""
    manifest = load_manifest(root)
    splits = manifest.get("splits") or {manifest.get("config", {}).get("split", ""): manifest["kinds"].get(
        "index", {}).get("records", 0)}
    return {"path": os.path.abspath(root), "config_hash": manifest.get("config_hash"),
            "inputs": manifest.get("inputs", {}), "splits": splits}


def trained_corpora(init: dict | None, corpus: str) -> list[dict]:
    """The corpora a run's model has seen: those of its --init checkpoint, then this run's."""
    seen = list(init.get("corpora", [])) if init else []
    mine = corpus_identity(corpus)
    return seen if mine in seen else [*seen, mine]


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors with a NaN or an infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def model_config_of(ckpt: dict) -> ModelConfig:
    return from_dict(ModelConfig, ckpt["config"]["model"])


def train_config_of(ckpt: dict) -> TrainConfig:
    """The whole config a checkpoint was trained with."""
    return from_dict(TrainConfig, ckpt["config"])


@dataclass
class Position:
    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` already consumed


def save_checkpoint(run: Run, path: str, pos: Position) -> None:
    """Atomic: written to a temporary file, flushed, then renamed over the old checkpoint. A model with a
    non-finite weight is refused (CheckpointError), leaving the last good checkpoint in place."""
    model_state = run.model.state_dict()
    bad = non_finite_tensors(model_state)
    if bad:
        raise CheckpointError(
            f"not saving {path} at step {pos.step}: {len(bad)} tensors are not finite (e.g. {bad[0]}); "
            "the last good checkpoint is kept"
        )
    state = {
        "format": CKPT_FORMAT,
        "stage": run.cfg.stage,
        "variant": run.cfg.model.variant,
        "config": to_dict(run.cfg),
        "step": pos.step,
        "epoch": pos.epoch,
        "batch": pos.batch,
        "model": model_state,
        "corpora": run.corpora,
        "best": run.best,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if run.info.device.type == "cuda" else [],
        },
    }
    state["digest"] = state_digest(state)
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def restore_training_state(run, ckpt: dict, saved_config, config) -> None:
    """Resume a run (a pretraining or a fine-tuning one: anything with model, optimizer, scheduler and info) from
    its checkpoint: refused when the settings that define the run differ; otherwise weights, optimiser,
    schedule and random state as they were saved."""
    changed = diff_keys(config_identity(saved_config), config_identity(config))
    if changed:
        raise ValueError(f"cannot resume: the checkpoint was written with other settings ({', '.join(changed)})")
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if ckpt["rng"]["cuda"] and run.info.device.type == "cuda":
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])


def restore(run: Run, ckpt: dict) -> Position:
    restore_training_state(run, ckpt, train_config_of(ckpt), run.cfg)
    if run.cfg.stage == "stage2":
        run.model.freeze_encoder()
    run.best = dict(ckpt.get("best", {}))
    return Position(ckpt["step"], ckpt["epoch"], ckpt["batch"])
