"""Fine-tuning: build, step, validate each epoch, keep the best model, checkpoint, resume.

    ssrp finetune vqa --data DATA/vqa --corpus COCO_CORPUS --bert MODELS/bert \\
        --stage1 RUN1/checkpoint.pt --stage2 RUN2/checkpoint.pt --out FT_VQA
    torchrun --nproc_per_node 4 -m ssrp finetune nlvr2 ...          # DDP, one process per GPU

LXMERT's recipe (src/tasks/{vqa,gqa,nlvr2}.py): every parameter trained (``head.freeze`` keeps parts fixed),
AdamW with BertAdam's linear warm-up over 10% and linear decay, gradient clipping at 5, binary cross-entropy
over the answer scores times the number of answers (VQA, GQA) or cross-entropy (NLVR2), validation after each
epoch, the best epoch's model kept. Losses are sums over this rank's examples divided by the global count
(``ssrp.train.steps.normalise``), so N ranks compute one process's gradients on the same global batch.
Dropout is reseeded every step from (seed, rank, step) and batches depend only on (seed, epoch): a run resumed
from ``checkpoint.pt`` repeats the uninterrupted run's steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssrp.config import to_dict
from ssrp.finetune import checkpoint as ckpts
from ssrp.finetune.config import FinetuneConfig
from ssrp.finetune.data import TaskCollate, TaskDataset, Tokenizer, eval_loader, keep_with_images, load_examples
from ssrp.finetune.heads import FinetuneModel, build_model
from ssrp.finetune.images import open_images
from ssrp.finetune.metrics import score
from ssrp.finetune.tasks import check_labels, load_answers
from ssrp.train.checkpoint import Position, restore_training_state
from ssrp.train.config import ModelConfig, Stage2Config, global_to_local_batch
from ssrp.train.data import BucketBatchSampler, auto_workers, build_loader
from ssrp.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from ssrp.train.steps import (
    lr_lambda,
    normalise,
    optimiser_step,
    param_groups,
    raise_if_not_finite,
    step_seed,
    to_device,
)

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class Inputs:
    """What a run reads; recorded in its checkpoints so ``ssrp predict`` finds the same files."""

    data: str  # the task directory (LXMERT's JSON files)
    bert: str  # a BERT directory: its vocab.txt tokenises the sentences
    stage1: str | None = None  # stage-1 checkpoint (encoder, g_align); not needed to resume
    stage2: str | None = None  # stage-2 checkpoint (probes), for feature sets with rv / rw
    corpus: str | None = None  # image features: an ssrp corpus ...
    tsv: tuple[str, ...] = ()  # ... or LXMERT TSV files


# ------------------------------------------------------------------------------------------------
# Data


@dataclass
class TaskData:
    answers: list[str] | None
    collate: TaskCollate
    train: TaskDataset
    valid: TaskDataset | None


def check_sizes(cfg: FinetuneConfig, model: ModelConfig, stage2: Stage2Config | None) -> None:
    if model.max_positions < cfg.data.max_tokens:
        raise ValueError(f"data.max_tokens={cfg.data.max_tokens} exceeds the model's {model.max_positions} positions")
    if stage2 is not None and stage2.max_nodes < max(cfg.data.max_objects, cfg.data.max_tokens - 2):
        raise ValueError(f"the probes' relation matrices hold {stage2.max_nodes} nodes: data.max_objects="
                         f"{cfg.data.max_objects} and data.max_tokens-2={cfg.data.max_tokens - 2} must fit")


def open_tokenizer(cfg: FinetuneConfig, bert: str, model: ModelConfig) -> Tokenizer:
    tok = Tokenizer(os.path.join(bert, "vocab.txt"), cfg.data.max_tokens, cfg.data.lowercase)
    if tok.vocab_size != model.vocab_size:
        raise ValueError(f"{bert}/vocab.txt has {tok.vocab_size} tokens but the pretrained model has "
                         f"{model.vocab_size}: pass the --bert directory the model was pretrained with")
    return tok


def load_task_data(cfg: FinetuneConfig, inputs: Inputs, model: ModelConfig, tok: Tokenizer) -> TaskData:
    images = open_images(inputs.corpus, list(inputs.tsv), cfg.data.max_objects, model)
    answers = load_answers(inputs.data) if cfg.task != "nlvr2" else None
    datasets = {}
    for name, splits in (("train", cfg.data.train), ("valid", (cfg.data.valid,) if cfg.data.valid else ())):
        if not splits:
            datasets[name] = None
            continue
        what = f"{cfg.task} {'+'.join(splits)}"
        examples = keep_with_images(load_examples(cfg.task, inputs.data, splits), images, what)
        unlabelled = sum(ex.label is None for ex in examples)
        if unlabelled:
            raise ValueError(f"{what}: {unlabelled} examples have no label; {name} splits must be labelled")
        if answers is not None:
            check_labels(examples, answers, what)
        datasets[name] = TaskDataset(cfg.task, examples, tok, images, answers)
        logger.info("%s: %d examples (%s)", what, len(examples), images.describe())
    collate = TaskCollate(cfg.task, tok.pad, len(answers) if answers else 2)
    return TaskData(answers, collate, datasets["train"], datasets["valid"])


# ------------------------------------------------------------------------------------------------
# The run's state and one step


@dataclass
class FinetuneRun:
    cfg: FinetuneConfig
    info: DistInfo
    model: FinetuneModel  # unwrapped: what checkpoints hold
    trainable: nn.Module  # DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int

    def autocast(self) -> AbstractContextManager:
        if self.cfg.precision == "bf16" or (self.cfg.precision == "auto" and self.info.device.type == "cuda"):
            return torch.autocast(self.info.device.type, dtype=torch.bfloat16)
        return nullcontext()


def build_run(cfg: FinetuneConfig, info: DistInfo, model: FinetuneModel, total_steps: int) -> FinetuneRun:
    model = model.to(info.device)
    trainable: nn.Module = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    opt = cfg.optim
    if opt.decay_all:  # BertAdam: every parameter decays
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": opt.weight_decay}]
    else:
        groups = param_groups(model, opt.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas, eps=opt.eps, fused=info.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_lambda, total=total_steps, warmup_fraction=opt.warmup_fraction)
    )
    return FinetuneRun(cfg, info, model, trainable, optimizer, scheduler, total_steps)


def task_loss(task: str, logits: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(sum over this rank's examples, example count). VQA/GQA: LXMERT's BCE mean x #answers = the sum over
    answers per example; NLVR2: cross-entropy."""
    count = torch.tensor(float(logits.shape[0]), device=logits.device)
    if task == "nlvr2":
        return F.cross_entropy(logits, batch["label"], reduction="sum"), count
    return F.binary_cross_entropy_with_logits(logits, batch["target"], reduction="sum"), count


def batch_score(task: str, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """Sum of the examples' scores: the soft score of the arg-max answer, or NLVR2's correctness."""
    pred = logits.argmax(-1)
    if task == "nlvr2":
        return (pred == batch["label"]).float().sum()
    return batch["target"].gather(1, pred[:, None]).sum()


def compute_loss(run: FinetuneRun, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The step's loss (normalised over ranks) and the logits, forward only."""
    with run.autocast():
        logits = run.trainable(batch).float()
    return normalise({"loss": task_loss(run.cfg.task, logits, batch)}, run.info)["loss"], logits


def train_step(run: FinetuneRun, batch: dict[str, Tensor], step: int) -> tuple[float, Tensor, Tensor]:
    """Forward, backward, clip, optimiser and scheduler step; returns lr, the loss and the batch's score sum."""
    torch.manual_seed(step_seed(run.cfg.seed, run.info.rank, step))
    loss, logits = compute_loss(run, batch)
    if run.cfg.check_finite:
        examples = (f"example {int(i)}" for i in batch["index"])  # read only when the loss is not finite
        raise_if_not_finite(run.info, loss, {"loss": loss}, examples, step)
    lr = optimiser_step(run.optimizer, run.scheduler, loss, run.cfg.optim.grad_clip)
    return lr, loss.detach(), batch_score(run.cfg.task, logits.detach(), batch)


# ------------------------------------------------------------------------------------------------
# Predictions and validation


@torch.no_grad()
def predict_indices(model: FinetuneModel, dataset: TaskDataset, collate: TaskCollate, cfg: FinetuneConfig,
                    info: DistInfo, autocast: AbstractContextManager | None = None, workers: int = 0) -> dict[int, int]:
    """Arg-max output of every example (each rank runs its share; every rank gets all): index -> class."""
    was_training = model.training
    model.eval()
    out: dict[int, int] = {}
    for batch in eval_loader(dataset, collate, cfg.data.valid_batch_size, workers, info.rank, info.world_size):
        batch = to_device(batch, info.device)
        with autocast or nullcontext():
            pred = model(batch).float().argmax(-1)
        out.update(zip(batch["index"].tolist(), pred.tolist(), strict=True))
    model.train(was_training)
    if info.distributed:
        import torch.distributed as dist

        parts: list = [None] * info.world_size
        dist.all_gather_object(parts, out)
        out = {k: v for part in parts for k, v in part.items()}
    return out


def as_answers(task: str, dataset: TaskDataset, indices: dict[int, int], answers: list[str] | None) -> dict:
    """uid -> answer string (VQA, GQA) or 0/1 (NLVR2)."""
    if task == "nlvr2":
        return {dataset.examples[i].uid: int(c) for i, c in indices.items()}
    return {dataset.examples[i].uid: answers[c] for i, c in indices.items()}


def validate(run: FinetuneRun, data: TaskData) -> dict | None:
    if data.valid is None:
        return None
    indices = predict_indices(run.model, data.valid, data.collate, run.cfg, run.info, run.autocast(),
                              workers=loader_workers(run.cfg))
    return score(run.cfg.task, data.valid.examples, as_answers(run.cfg.task, data.valid, indices, data.answers))


# ------------------------------------------------------------------------------------------------
# The run


@dataclass
class Progress:
    pos: Position = field(default_factory=Position)
    best: dict | None = None  # {"score", "epoch", "step", "metrics"} of the best validation so far
    train_sum: float = 0.0  # this epoch's training scores and examples (since the process started it)
    train_count: int = 0


def save_latest(run: FinetuneRun, progress: Progress, header: dict, path: str) -> None:
    if run.info.is_main:
        pos = progress.pos
        ckpts.save({**header, "kind": "latest", "step": pos.step, "epoch": pos.epoch, "batch": pos.batch,
                    "best": progress.best, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(),
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if run.info.device.type == "cuda" else []}}, path)
    barrier(run.info)


def restore(run: FinetuneRun, ckpt: dict) -> Progress:
    restore_training_state(run, ckpt, ckpts.config_of(ckpt), run.cfg)
    return Progress(Position(ckpt["step"], ckpt["epoch"], ckpt["batch"]), ckpt["best"])


@dataclass
class Start:
    """Where a run starts: a checkpoint of its own (``saved``) or the pretrained checkpoints."""

    inputs: Inputs
    model: ModelConfig
    stage2: Stage2Config | None
    saved: dict | None = None
    pretrained: dict[str, Tensor] | None = None


def starting_point(cfg: FinetuneConfig, inputs: Inputs, latest: str, resume: bool) -> Start:
    if os.path.exists(latest) and not resume:
        raise ValueError(f"{os.path.dirname(latest)} already holds a checkpoint: pass --resume to continue it, "
                         "or choose another --out")
    if resume and os.path.exists(latest):
        saved = ckpts.load(latest)
        if not inputs.stage1:  # the run's own record of where it started
            inputs = dataclasses.replace(inputs, stage1=saved["inputs"]["stage1"], stage2=saved["inputs"]["stage2"])
        return Start(inputs, *ckpts.model_settings_of(saved), saved=saved)
    if resume:
        logger.info("no checkpoint at %s: starting from scratch", latest)
    if not inputs.stage1:
        raise ValueError("--stage1 RUN1/checkpoint.pt is needed to start a fine-tuning run")
    pre = ckpts.load_pretrained(inputs.stage1, inputs.stage2, cfg.head)
    return Start(inputs, pre.model, pre.stage2, pretrained=pre.state)


def finetune(cfg: FinetuneConfig, inputs: Inputs, out: str, *, resume: bool = False, stop_after: int | None = None,
             info: DistInfo | None = None) -> dict:
    """Run (or resume) one fine-tuning; returns a summary. ``stop_after`` stops after that many steps without
    writing anything, as if the process had been killed there (the resume tests use it)."""
    info = info or init_distributed()
    os.makedirs(out, exist_ok=True)
    latest = os.path.join(out, ckpts.LATEST)
    start = starting_point(cfg, inputs, latest, resume)
    saved, model_cfg, stage2, inputs = start.saved, start.model, start.stage2, start.inputs
    check_sizes(cfg, model_cfg, stage2)
    data = load_task_data(cfg, inputs, model_cfg, open_tokenizer(cfg, inputs.bert, model_cfg))
    sampler, loader = _train_loader(cfg, data, info)
    total = cfg.optim.max_steps or cfg.optim.epochs * sampler.batches_per_epoch
    model = build_model(cfg, model_cfg, stage2, data.answers, start.pretrained)
    run = build_run(cfg, info, model, total)
    progress = restore(run, saved) if saved is not None else Progress()
    if saved is not None:
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", latest, progress.pos.step,
                    progress.pos.epoch, progress.pos.batch)
    header = ckpts.header(cfg, model_cfg, stage2, data.answers, dataclasses.asdict(inputs))
    if info.is_main:
        with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as fh:
            json.dump(to_dict(cfg), fh, indent=1, sort_keys=True)
    logger.info("fine-tuning SSRP-%s on %s, features %s (%s fusion): %d examples/epoch, %d steps, global batch %d "
                "on %d rank(s)", model_cfg.variant, cfg.task, cfg.head.features, cfg.head.fusion,
                sampler.batches_per_epoch * cfg.optim.batch_size, total, cfg.optim.batch_size, info.world_size)
    run_loop(run, data, sampler, loader, progress, header, out, stop_after)
    return {"out": out, "task": cfg.task, "features": cfg.head.features, "steps": total, "best": progress.best,
            "checkpoint": latest, "best_checkpoint": os.path.join(out, ckpts.BEST)}


def _train_loader(cfg: FinetuneConfig, data: TaskData, info: DistInfo):
    global_to_local_batch(cfg.optim.batch_size, info.world_size)
    sampler = BucketBatchSampler(data.train.lengths(), cfg.optim.batch_size, info.rank, info.world_size, cfg.seed,
                                 cfg.data.bucket_batches)
    return sampler, build_loader(data.train, sampler, data.collate, loader_workers(cfg), pin=info.device.type == "cuda")


def loader_workers(cfg: FinetuneConfig) -> int:
    return auto_workers() if cfg.data.num_workers < 0 else cfg.data.num_workers


def run_loop(run: FinetuneRun, data: TaskData, sampler, loader, progress: Progress, header: dict, out: str,
             stop_after: int | None) -> None:
    from tqdm import tqdm

    cfg, info, pos = run.cfg, run.info, progress.pos
    bar = tqdm(total=run.total_steps, initial=pos.step, disable=not (cfg.progress and info.is_main), unit="step")
    latest = os.path.join(out, ckpts.LATEST)
    window = _Window()
    while pos.step < run.total_steps:
        sampler.set_epoch(pos.epoch, pos.batch)
        for batch in loader:
            lr, loss, batch_sum = train_step(run, to_device(batch, info.device), pos.step)
            pos.step, pos.batch = pos.step + 1, pos.batch + 1
            window.add(loss, batch_sum, batch["index"].shape[0], progress)
            bar.update(1)
            if pos.step % cfg.log_every == 0 or pos.step == run.total_steps:
                _log(run, pos.step, window.flush(run.info), lr, out, bar)
            if stop_after is not None and pos.step >= stop_after:
                bar.close()
                return
            if cfg.ckpt_every and pos.step % cfg.ckpt_every == 0:
                save_latest(run, progress, header, latest)
            if pos.step >= run.total_steps:
                break
        if pos.batch >= sampler.batches_per_epoch:
            pos.epoch, pos.batch = pos.epoch + 1, 0
        end_of_epoch(run, data, progress, header, out, bar)
        save_latest(run, progress, header, latest)
    bar.close()


def end_of_epoch(run: FinetuneRun, data: TaskData, progress: Progress, header: dict, out: str, bar) -> None:
    """Validate, keep the model if it is the best so far (or, without a validation split, the last), log."""
    metrics = validate(run, data)
    train = all_reduce_sum(torch.tensor([progress.train_sum, float(progress.train_count)]), run.info).tolist()
    progress.train_sum, progress.train_count = 0.0, 0
    pos = progress.pos
    record = {"epoch": pos.epoch if pos.batch else pos.epoch - 1, "step": pos.step,
              "train_score": 100.0 * train[0] / max(train[1], 1.0), "valid": metrics}
    if metrics is None or progress.best is None or metrics["score"] > progress.best["score"]:
        progress.best = {"score": None if metrics is None else metrics["score"], "epoch": record["epoch"],
                         "step": pos.step, "metrics": metrics}
        if run.info.is_main:
            ckpts.save({**header, "kind": "best", **progress.best, "model": run.model.state_dict()},
                       os.path.join(out, ckpts.BEST))
        barrier(run.info)
    record["best"] = progress.best["score"]
    if run.info.is_main:
        _write_metrics(out, record)
        valid = "no validation split" if metrics is None else f"valid {metrics['score']:.2f}"
        best = "" if metrics is None else f" | best {progress.best['score']:.2f} (epoch {progress.best['epoch']})"
        _say(bar, f"epoch {record['epoch']} (step {pos.step}): train {record['train_score']:.2f} | {valid}{best}")


class _Window:
    """Losses and scores since the last log line."""

    def __init__(self) -> None:
        self.losses: list[Tensor] = []
        self.samples = 0
        self.t0 = time.perf_counter()

    def add(self, loss: Tensor, batch_sum: Tensor, examples: int, progress: Progress) -> None:
        self.losses.append(loss)
        self.samples += examples
        progress.train_sum += float(batch_sum)
        progress.train_count += examples

    def flush(self, info: DistInfo) -> dict:
        loss = all_reduce_sum(torch.stack(self.losses).mean(), info) / info.world_size
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        record = {"loss": float(loss), "samples_per_s": self.samples * info.world_size / elapsed}
        self.losses, self.samples, self.t0 = [], 0, time.perf_counter()
        return record


def _log(run: FinetuneRun, step: int, record: dict, lr: float, out: str, bar) -> None:
    if not run.info.is_main:
        return
    record = {"step": step, "lr": lr, **record}
    _write_metrics(out, record)
    bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
    _say(bar, f"step {step}/{run.total_steps} | loss {record['loss']:.4f} | lr {lr:.3e} | "
              f"{record['samples_per_s']:.1f} samples/s")


def _write_metrics(out: str, record: dict) -> None:
    with open(os.path.join(out, METRICS), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _say(bar, line: str) -> None:
    if bar.disable:
        logger.info(line)
    else:
        bar.write(line)
