"""A captioning run: cross-entropy epochs, then SCST epochs; resumable; the best epoch kept.

    RUN/run.json        inputs (split file, feature source, SSRP checkpoint), the config, the feature cache
    RUN/vocab.json      the vocabulary of the training split
    RUN/features-*.h5   the attention features of every image of the split file
    RUN/checkpoint.pt   the latest state (model, optimiser, position, RNG): what --resume continues
    RUN/best.pt         the model of the epoch with the best validation CIDEr (greedy decoding)
    RUN/history.json    per epoch: phase, loss or rewards, validation CIDEr

Checkpoints are written atomically (temporary file, fsync, rename) and read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ssrp.caption.config import CaptionConfig, PhaseConfig, config_from_dict
from ssrp.caption.data import BatchMaker, CaptionSet, epoch_batches, iterate_batches, load_karpathy, select_split
from ssrp.caption.evaluate import decode_images, quick_cider
from ssrp.caption.features import FeatureStore, ensure_cache
from ssrp.caption.model import UpDown
from ssrp.caption.scst import reward_scorer, scst_step
from ssrp.caption.vocab import Vocab
from ssrp.config import config_identity, diff_keys, to_dict
from ssrp.devices import resolve_device
from ssrp.fileutil import atomic_file
from ssrp.train.checkpoint import read_digested_checkpoint, write_digested_checkpoint
from ssrp.train.steps import NonFiniteLossError

logger = logging.getLogger(__name__)

CKPT_FORMAT = "ssrp-caption/2"  # /2: with a digest of the contents
_OLD_FORMATS = ("ssrp-caption/1",)  # readable, with a warning: no digest to check
CHECKPOINT, BEST, RUN_JSON, VOCAB, HISTORY = "checkpoint.pt", "best.pt", "run.json", "vocab.json", "history.json"


@dataclass
class Position:
    epoch: int = 0  # epochs completed (cross-entropy epochs first, then SCST)
    batch: int = 0  # batches of the current epoch completed
    step: int = 0
    best: float = float("-inf")  # best validation CIDEr so far
    history: list = field(default_factory=list)
    sums: dict = field(default_factory=dict)  # the current epoch's running sums of the logged values


def phase_of(cfg: CaptionConfig, epoch: int) -> tuple[str, PhaseConfig, int]:
    """("xe" | "scst", its settings, the epoch's index within the phase)."""
    if epoch < cfg.xe.epochs:
        return "xe", cfg.xe, epoch
    return "scst", cfg.scst, epoch - cfg.xe.epochs


def learning_rate(phase: PhaseConfig, epoch_in_phase: int) -> float:
    if not phase.lr_decay_every:
        return phase.lr
    return phase.lr * phase.lr_decay_rate ** (epoch_in_phase // phase.lr_decay_every)


class Run:
    """Everything a run's epochs need, built from the inputs (or the run directory when resuming)."""

    def __init__(self, cfg: CaptionConfig, karpathy: str, features: str, out: str, ssrp: str | None = None):
        self.cfg, self.out = cfg, out
        self.device = resolve_device(cfg.device)
        images = load_karpathy(karpathy)
        train_images = select_split(images, "train", cfg.data.restval)
        self.val_images = select_split(images, "val")[: cfg.decode.val_images or None]
        if not train_images:
            raise ValueError(f"{karpathy}: no training images (split 'train'{' or restval' if cfg.data.restval else ''})")
        if len(self.val_images) < 2:
            logger.warning("%d validation images: CIDEr needs at least 2 (its idf is 0 with one), so best.pt is "
                           "the last epoch's model", len(self.val_images))
        self.vocab = self._vocab(train_images)
        all_ids = [img.image_id for img in images]
        cache = ensure_cache(cfg.features, features, ssrp, all_ids, out, cfg.device, cfg.progress)
        self.store = FeatureStore(cache)
        self.train_set = CaptionSet(train_images, self.vocab, cfg.data.max_length)
        self.maker = BatchMaker(self.train_set, self.store, cfg.data.seq_per_img, cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = UpDown(cfg.model, len(self.vocab), self.store.dim).to(self.device)
        self.scorer = None
        self.inputs = {"karpathy": os.path.abspath(karpathy), "features": os.path.abspath(features),
                       "ssrp": os.path.abspath(ssrp) if ssrp else None, "cache": os.path.abspath(cache)}
        logger.info("%d training images (%d captions), %d validation images, vocabulary %d, features %d-d (%s)",
                    len(train_images), sum(len(img.tokens) for img in train_images), len(self.val_images),
                    len(self.vocab), self.store.dim, "+".join(cfg.features.parts))

    def _vocab(self, train_images) -> Vocab:
        vocab = Vocab.build((t for img in train_images for t in img.tokens), self.cfg.data.min_count)
        path = os.path.join(self.out, VOCAB)
        if os.path.exists(path) and Vocab.load(path).words != vocab.words:
            raise ValueError(f"{path}: the run's vocabulary differs from this split file's; use a new --out")
        os.makedirs(self.out, exist_ok=True)
        vocab.save(path)
        return vocab

    def optimizer(self, phase: PhaseConfig) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=phase.lr)

    def reward(self):
        if self.scorer is None:
            self.scorer = reward_scorer([self.train_set.references(i) for i in range(len(self.train_set))],
                                        len(self.vocab))
        return self.scorer


def train(cfg: CaptionConfig, karpathy: str, features: str, out: str, *, ssrp: str | None = None,
          resume: bool = False, stop_after: int | None = None) -> dict:
    """Run (or continue) the run in ``out``; returns a summary. ``stop_after``: stop after that many steps."""
    ckpt_path = os.path.join(out, CHECKPOINT)
    if os.path.exists(ckpt_path) and not resume:
        raise ValueError(f"{out} already holds a run ({CHECKPOINT}); pass --resume to continue it or use a new --out")
    run = Run(cfg, karpathy, features, out, ssrp)
    _write_run_json(run)
    pos, opt = Position(), None
    if resume and os.path.exists(ckpt_path):
        pos, opt = _restore(run, ckpt_path)
        logger.info("resuming %s at epoch %d, batch %d (step %d)", out, pos.epoch, pos.batch, pos.step)
    total = cfg.xe.epochs + cfg.scst.epochs
    while pos.epoch < total:
        name, phase, k = phase_of(cfg, pos.epoch)
        if opt is None or pos.batch == 0 and k == 0:
            opt = run.optimizer(phase)
        for group in opt.param_groups:
            group["lr"] = learning_rate(phase, k)
        stats = _epoch(run, opt, name, phase, pos, stop_after)
        if stats is None:  # stopped mid-epoch
            _save(run, opt, pos, ckpt_path)
            return {"stopped_at_step": pos.step, "epoch": pos.epoch}
        _end_epoch(run, opt, pos, name, stats, ckpt_path)
    return {"epochs": pos.epoch, "steps": pos.step, "best_val_cider": pos.best, "history": pos.history,
            "checkpoint": ckpt_path, "best": os.path.join(out, BEST)}


def _epoch(run: Run, opt, name: str, phase: PhaseConfig, pos: Position, stop_after: int | None) -> dict | None:
    from tqdm import tqdm

    cfg = run.cfg
    batches = epoch_batches(len(run.train_set), phase.batch_size, cfg.seed, pos.epoch, skip=pos.batch)
    sums = pos.sums
    bar = tqdm(total=len(batches) + pos.batch, initial=pos.batch, desc=f"epoch {pos.epoch + 1} {name}",
               unit="batch", disable=not cfg.progress)
    t0, done = time.perf_counter(), 0
    try:
        for batch in iterate_batches(run.maker, batches, pos.epoch, cfg.data.num_workers):
            out = _step(run, opt, name, phase, batch.to(run.device), pos.step)
            for key, v in out.items():
                sums[key] = sums.get(key, 0.0) + v
            pos.batch, pos.step, done = pos.batch + 1, pos.step + 1, done + 1
            bar.update(1)
            if pos.step % cfg.log_every == 0:
                logger.info("step %d epoch %d %s %s (%.3f s/step)", pos.step, pos.epoch + 1, name,
                            " ".join(f"{key} {v:.4f}" for key, v in out.items()), (time.perf_counter() - t0) / done)
            if stop_after is not None and pos.step >= stop_after:
                return None
            if cfg.ckpt_every and pos.step % cfg.ckpt_every == 0 and done < len(batches):
                _save(run, opt, pos, os.path.join(run.out, CHECKPOINT))
    finally:
        bar.close()
    n = max(1, pos.batch)
    return {key: v / n for key, v in sums.items()}


def _step(run: Run, opt, name: str, phase: PhaseConfig, batch, step: int) -> dict[str, float]:
    model, cfg = run.model, run.cfg
    model.train()
    if name == "xe":
        loss = model.xe_loss(batch.att, batch.mask, batch.captions, batch.lengths)
        out = {"loss": loss.item()}
    else:
        refs = [run.train_set.references(int(i)) for i in batch.index]
        res = scst_step(model, batch.att, batch.mask, refs, run.reward(), phase.samples, cfg.data.max_length)
        loss = res.loss
        out = {"loss": loss.item(), "sample_reward": res.sample_reward, "greedy_reward": res.greedy_reward}
    if not np.isfinite(out["loss"]):
        images = ", ".join(str(int(i)) for i in batch.index[:8])
        raise NonFiniteLossError(f"step {step + 1} ({name}): the loss is not finite ({out['loss']}); the batch's "
                                 f"training images (first 8, by index): {images}. Nothing was saved from this step: "
                                 "check the features and the learning rate")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if phase.grad_clip:
        torch.nn.utils.clip_grad_value_(model.parameters(), phase.grad_clip)
    opt.step()
    return out


def validate(run: Run) -> float:
    """Greedy CIDEr on the validation images (in-process); nan with fewer than two (CIDEr's idf is then 0)."""
    if len(run.val_images) < 2:
        return float("nan")
    ids = [img.image_id for img in run.val_images]
    seqs = decode_images(run.model, run.store, ids, run.cfg.data.max_length, 1, run.cfg.decode.batch_size, run.device)
    return quick_cider(seqs, run.val_images, run.vocab, run.cfg.data.max_length)


def _end_epoch(run: Run, opt, pos: Position, name: str, stats: dict, ckpt_path: str) -> None:
    score = validate(run)
    pos.history.append({"epoch": pos.epoch + 1, "phase": name, **{k: round(v, 5) for k, v in stats.items()},
                        "val_cider": None if np.isnan(score) else round(score, 5)})
    logger.info("epoch %d (%s) done: %s, validation CIDEr %.4f", pos.epoch + 1, name,
                ", ".join(f"{k} {v:.4f}" for k, v in stats.items()), score)
    pos.epoch, pos.batch, pos.sums = pos.epoch + 1, 0, {}
    if np.isnan(score) or score >= pos.best:  # ties: the later epoch
        pos.best = score if not np.isnan(score) else pos.best
        _save_model(run, os.path.join(run.out, BEST), pos)
    _save(run, opt, pos, ckpt_path)
    with open(os.path.join(run.out, HISTORY), "w", encoding="utf-8") as fh:
        json.dump(pos.history, fh, indent=1)


# ------------------------------------------------------------------------------------------------
# Checkpoints


def _state(run: Run, pos: Position) -> dict:
    return {
        "format": CKPT_FORMAT,
        "config": to_dict(run.cfg),
        "vocab": list(run.vocab.words),
        "feat_dim": run.store.dim,
        "inputs": run.inputs,
        "epoch": pos.epoch,
        "batch": pos.batch,
        "step": pos.step,
        "best": pos.best,
        "history": json.dumps(pos.history),
        "sums": json.dumps(pos.sums),
        "model": run.model.state_dict(),
    }


def _save_model(run: Run, path: str, pos: Position) -> None:
    write_digested_checkpoint(_state(run, pos), path)


def _save(run: Run, opt, pos: Position, path: str) -> None:
    state = _state(run, pos)
    state["optimizer"] = opt.state_dict()
    state["rng"] = torch.get_rng_state()
    write_digested_checkpoint(state, path)


def load_caption_checkpoint(path: str) -> dict:
    return read_digested_checkpoint(path, CKPT_FORMAT, _OLD_FORMATS, "captioning")


def _restore(run: Run, path: str) -> tuple[Position, torch.optim.Optimizer]:
    ckpt = load_caption_checkpoint(path)
    changed = diff_keys(config_identity(config_from_dict(ckpt["config"])), config_identity(run.cfg))
    if changed:
        raise ValueError(f"cannot resume {path}: it was written with other settings ({', '.join(changed)})")
    run.model.load_state_dict(ckpt["model"])
    pos = Position(ckpt["epoch"], ckpt["batch"], ckpt["step"], ckpt["best"], json.loads(ckpt["history"]),
                   json.loads(ckpt["sums"]))
    name, phase, _ = phase_of(run.cfg, pos.epoch)
    opt = run.optimizer(phase)
    if pos.epoch < run.cfg.xe.epochs + run.cfg.scst.epochs:
        opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    return pos, opt


def _write_run_json(run: Run) -> None:
    path = os.path.join(run.out, RUN_JSON)
    data = {"inputs": run.inputs, "config": to_dict(run.cfg), "vocab_size": len(run.vocab), "feat_dim": run.store.dim}
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)


def load_model(path: str, device: torch.device) -> tuple[UpDown, Vocab, CaptionConfig, dict]:
    """A trained model (eval mode), its vocabulary and config, and the checkpoint's inputs."""
    ckpt = load_caption_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    vocab = Vocab(ckpt["vocab"])
    model = UpDown(cfg.model, len(vocab), int(ckpt["feat_dim"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), vocab, cfg, ckpt["inputs"]
