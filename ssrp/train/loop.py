"""The two-stage trainer: build, step, log, checkpoint, resume.

    ssrp train stage1 --variant cross --corpus CORPUS --out RUN1 --bert MODELS/bert
    ssrp train stage2 --variant cross --corpus CORPUS --out RUN2 --init RUN1/checkpoint.pt
    torchrun --nproc_per_node 8 -m ssrp train stage1 ...       # DDP, one process per GPU

Stage 1 trains the encoder and its heads on L_Stage1 (Eq. 3, 4). Stage 2 loads the stage-1 encoder,
freezes it (requires_grad False before any DDP wrap, eval mode, run under no_grad) and trains the
probes and projection heads on L_Stage2 = L_Probe + L_CL-all (Eq. 5-7).

AdamW with linear warm-up and decay, gradient clipping, bf16 autocast on GPU. Losses are normalised
by counts summed over ranks, so N ranks compute the gradients of one process on the same global
batch. Dropout is reseeded every step from (seed, rank, step) and every sample's randomness comes
from (seed, epoch, index): a run resumed from ``checkpoint.pt`` (model, optimiser, scheduler, RNG,
data position; written atomically) repeats the uninterrupted run's steps exactly.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ssrp.config import to_dict
from ssrp.corpus import CorpusReader
from ssrp.corpus.overlap import training_overlap
from ssrp.fileutil import atomic_write_text, require_dir_path
from ssrp.train.checkpoint import CHECKPOINT, Position, load_checkpoint, restore, save_checkpoint, trained_corpora
from ssrp.train.config import TrainConfig, global_to_local_batch
from ssrp.train.data import (
    BucketBatchSampler,
    Collate,
    Stage1Dataset,
    Stage2Dataset,
    auto_workers,
    build_loader,
    caption_lengths,
    load_pairs,
    resolve_choices,
)
from ssrp.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from ssrp.train.run import Run, use_bf16
from ssrp.train.steps import build_run, loss_weights, resolve_config, to_device, train_step
from ssrp.train.validate import Validator, better, default_metric

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
BEST = "best.pt"


# ------------------------------------------------------------------------------------------------
# Logging


class MetricsSink:
    """Rank 0: a log line, a JSON line per logged step in metrics.jsonl, TensorBoard scalars."""

    def __init__(self, out: str, cfg: TrainConfig, info: DistInfo):
        self.active = info.is_main
        self.path = os.path.join(out, METRICS)
        self.tb = None
        if self.active and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(
                    "TensorBoard logging needs `pip install tensorboard` (or tensorboard=False)"
                ) from err
            self.tb = SummaryWriter(os.path.join(out, "tb"))

    def write(self, record: dict) -> None:
        if not self.active:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            for key in ("loss", "lr", "samples_per_s", *record["losses"]):
                value = record[key] if key in record else record["losses"][key]
                self.tb.add_scalar(f"train/{key}", value, record["step"])

    def write_val(self, record: dict) -> None:
        """A validation: one JSON line (``val``: metric -> value, ``best``) and ``val/<metric>`` scalars."""
        if not self.active:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            for key, value in record["val"].items():
                self.tb.add_scalar(f"val/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: str, step: int) -> None:
    """Drop the lines logged after ``step`` (by a run killed after its last checkpoint): the resumed run logs
    those steps again, so each step appears once."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(kept))
        logger.info("%s: dropped %d lines logged after step %d", path, len(lines) - len(kept), step)


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a line cut short by the kill


def log_line(record: dict, total: int, world: int) -> str:
    parts = " ".join(f"{k} {v:.4f}" for k, v in record["losses"].items())
    return (
        f"step {record['step']}/{total} epoch {record['epoch']} | loss {record['loss']:.4f} ({parts}) | "
        f"lr {record['lr']:.3e} | {record['samples_per_s']:.1f} samples/s ({record['samples_per_s'] / world:.1f}/rank)"
        f" | data {record['data_s']:.3f}s step {record['step_s']:.3f}s"
    )


# ------------------------------------------------------------------------------------------------
# The run


def build_data(cfg: TrainConfig, corpus: str, info: DistInfo):
    """Dataset, bucketing sampler and loader of this rank."""

    with CorpusReader(corpus) as reader:
        pairs = load_pairs(reader)
        views = resolve_choices("image views", cfg.data.views, reader.views(), cfg.stage)
        variants = resolve_choices("caption variants", cfg.data.variants, reader.variants(), cfg.stage)
        lengths = (
            caption_lengths(reader, pairs[:, 1], cfg.data.max_tokens)
            if cfg.data.bucket_batches
            else np.zeros(len(pairs))
        )
    args = (corpus, pairs, views, variants, cfg.data, cfg.model, cfg.seed)
    dataset = Stage1Dataset(*args, stage1=cfg.stage1) if cfg.stage == "stage1" else Stage2Dataset(*args)
    global_to_local_batch(cfg.optim.batch_size, info.world_size)
    sampler = BucketBatchSampler(
        lengths, cfg.optim.batch_size, info.rank, info.world_size, cfg.seed, cfg.data.bucket_batches
    )
    workers = cfg.data.num_workers
    if workers < 0:
        workers = auto_workers()
        logger.info("data.num_workers=auto: %d loader workers per rank", workers)
    loader = build_loader(dataset, sampler, Collate(cfg.stage, cfg.data.pad_id), workers, pin=info.device.type == "cuda")
    return sampler, loader


def train(
    cfg: TrainConfig,
    corpus: str,
    out: str,
    *,
    bert: str | None = None,
    init: str | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    info: DistInfo | None = None,
    val_corpus: str | None = None,
) -> dict:
    """Run (or resume) one stage; returns a summary. ``val_corpus``: held-out corpus validated during training
    (metrics in the log, metrics.jsonl and TensorBoard; the best model also saved as best.pt).

    ``stop_after`` stops after that many steps without writing a checkpoint, as if the process had been
    killed there (the resume tests use it).
    """
    require_dir_path(out, "--out")
    info = info or init_distributed()
    cfg = resolve_config(cfg, corpus, bert, init)
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, CHECKPOINT)
    if os.path.exists(ckpt_path) and not resume:
        raise ValueError(f"{out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    sampler, loader = build_data(cfg, corpus, info)
    per_epoch = sampler.batches_per_epoch
    total = cfg.optim.max_steps or cfg.optim.epochs * per_epoch
    resuming = resume and os.path.exists(ckpt_path)
    run = build_run(cfg, info, total, bert=None if resuming else bert, init=init)
    run.corpora = trained_corpora(load_checkpoint(init) if init else None, corpus)
    if cfg.stage == "stage1" and not bert and not resuming:
        logger.warning("stage 1 without --bert: the text encoder starts from random weights (the paper initialises "
                       "it from BERT-base: --bert MODELS/bert)")
    pos = Position()
    if resuming:
        pos = restore(run, load_checkpoint(ckpt_path))
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt_path, pos.step, pos.epoch, pos.batch)
        if info.is_main:
            truncate_metrics(os.path.join(out, METRICS), pos.step)
    elif resume:
        logger.info("no checkpoint in %s: starting from scratch", out)
    if info.is_main:
        with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(to_dict(cfg), fh, indent=1, sort_keys=True)
    logger.info(
        "%s SSRP-%s: %d pairs/epoch, %d steps (%d per epoch), global batch %d on %d rank(s), %s",
        cfg.stage,
        cfg.model.variant,
        per_epoch * cfg.optim.batch_size,
        total,
        per_epoch,
        cfg.optim.batch_size,
        info.world_size,
        "bf16 autocast" if use_bf16(cfg, info) else "fp32",
    )
    sink = MetricsSink(out, cfg, info)
    if val_corpus and info.is_main:
        warn_if_not_held_out(run.corpora, val_corpus)
    validate = _validation(run, val_corpus, sink, os.path.join(out, BEST)) if val_corpus else None
    try:
        last = run_loop(run, sampler, loader, pos, sink, ckpt_path, stop_after, validate)
    finally:
        sink.close()
    return {"out": out, "checkpoint": ckpt_path, "steps": total, "last": last, "best": run.best}


def run_loop(run, sampler, loader, pos: Position, sink: MetricsSink, ckpt_path: str, stop_after: int | None,
             validate: Callable[[Position], None] | None = None) -> dict:
    cfg, info = run.cfg, run.info
    bar = tqdm(total=run.total_steps, initial=pos.step, disable=not (cfg.progress and info.is_main), unit="step")
    save = _saver(run, ckpt_path, info)
    last: dict = {}
    timer = _Timer()
    while pos.step < run.total_steps:
        sampler.set_epoch(pos.epoch, pos.batch)
        timer.start()
        for batch in loader:
            timer.data_done()
            lr, losses = train_step(run, to_device(batch, info.device), pos.step)
            pos.step, pos.batch = pos.step + 1, pos.batch + 1
            timer.step_done(cfg.optim.batch_size)
            bar.update(1)
            if pos.step % cfg.log_every == 0 or pos.step == run.total_steps:
                last = _log(run, pos, lr, losses, timer, sink, bar)
            if stop_after is not None and pos.step >= stop_after:
                bar.close()
                return last
            if validate and cfg.val_every and pos.step % cfg.val_every == 0:
                validate(pos)
            if cfg.ckpt_every and pos.step % cfg.ckpt_every == 0:
                save(pos)
            if pos.step >= run.total_steps:
                break
            timer.start()
        else:
            pos.epoch, pos.batch = pos.epoch + 1, 0
        if validate and (not cfg.val_every or pos.step >= run.total_steps and pos.step % cfg.val_every):
            validate(pos)
        save(pos)
    bar.close()
    return last


def warn_if_not_held_out(corpora: list[dict], val_corpus: str) -> str | None:
    """A --val-corpus holding images the model is trained on measures memory, not generalisation: say so."""
    with CorpusReader(val_corpus) as reader:
        leak = training_overlap(corpora, reader, reader.image_ids())
    if leak:
        logger.warning("NOT HELD OUT (--val-corpus): %s; validation will measure training images. Build the held-out "
                       "corpus with `ssrp build --split val`.", leak)
    return leak


def _validation(run: Run, val_corpus: str, sink: MetricsSink, best_path: str) -> Callable[[Position], None]:
    """validate(pos): rank 0 validates on the held-out corpus, logs, and saves best.pt when the metric improves;
    the other ranks wait."""
    validator = Validator(run.cfg, val_corpus) if run.info.is_main else None
    metric = run.cfg.best_metric or default_metric(run.cfg.stage)

    def validate(pos: Position) -> None:
        if validator is not None:
            values = validator(run)
            value = values.get(metric, float("nan"))
            improved = better(metric, value, run.best.get("value"))
            if improved:
                run.best = {"metric": metric, "value": value, "step": pos.step}
                save_checkpoint(run, best_path, pos)
            sink.write_val({"step": pos.step, "epoch": pos.epoch, "val": values, "best": run.best})
            logger.info("validation at step %d: %s%s", pos.step,
                        " ".join(f"{k} {v:.4f}" for k, v in sorted(values.items())),
                        f" (best {metric}: saved {BEST})" if improved else "")
        barrier(run.info)

    return validate


def _saver(run: Run, path: str, info: DistInfo) -> Callable[[Position], None]:
    def save(pos: Position) -> None:
        if info.is_main:
            save_checkpoint(run, path, pos)
            logger.debug("checkpoint at step %d", pos.step)
        barrier(info)

    return save


class _Timer:
    def __init__(self) -> None:
        self.t0 = self.t_data = time.perf_counter()
        self.data_s = self.step_s = 0.0
        self.samples = 0
        self.window_start = time.perf_counter()

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def data_done(self) -> None:
        self.t_data = time.perf_counter()
        self.data_s += self.t_data - self.t0

    def step_done(self, samples: int) -> None:
        self.step_s += time.perf_counter() - self.t_data
        self.samples += samples

    def window(self) -> tuple[float, float, float]:
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        rate, data_s, step_s = self.samples / elapsed, self.data_s, self.step_s
        self.samples, self.data_s, self.step_s = 0, 0.0, 0.0
        self.window_start = time.perf_counter()
        return rate, data_s, step_s


def _log(run: Run, pos: Position, lr: float, losses: dict[str, Tensor], timer: _Timer, sink: MetricsSink, bar) -> dict:
    names = list(losses)
    values = all_reduce_sum(torch.stack([losses[k].float() for k in names]), run.info) / run.info.world_size
    weights = loss_weights(run.cfg)
    vals = {k: float(v) for k, v in zip(names, values.tolist(), strict=True)}
    rate, data_s, step_s = timer.window()
    record = {
        "step": pos.step,
        "epoch": pos.epoch,
        "loss": sum(weights[k] * vals[k] for k in names),
        "losses": vals,
        "lr": lr,
        "samples_per_s": rate,
        "data_s": data_s,
        "step_s": step_s,
    }
    if run.info.is_main:
        sink.write(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        if bar.disable:
            logger.info(log_line(record, run.total_steps, run.info.world_size))
        else:
            bar.write(log_line(record, run.total_steps, run.info.world_size))
    return record
