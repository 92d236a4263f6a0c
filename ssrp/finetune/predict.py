"""``ssrp predict`` and ``ssrp score``: submission files from a fine-tuned model, and the official metrics.

``predict_split`` rebuilds the model from a run's ``best.pt`` (or any of its checkpoints) alone, runs it over
one split of the task and writes the official submission file; on a labelled split it also scores it.
``score_file`` scores any submission file (ours or another model's) against a labelled split.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from contextlib import nullcontext

import torch

from ssrp.devices import resolve_device
from ssrp.finetune import checkpoint as ckpts
from ssrp.finetune.data import TaskCollate, TaskDataset
from ssrp.finetune.heads import FinetuneModel, num_outputs
from ssrp.finetune.images import open_images
from ssrp.finetune.loop import as_answers, check_sizes, open_tokenizer, predict_indices
from ssrp.finetune.metrics import default_name, match_ids, read_submission, score, write_submission
from ssrp.finetune.tasks import load_split
from ssrp.train.distributed import DistInfo

logger = logging.getLogger(__name__)


def resolve_checkpoint(run_or_ckpt: str) -> str:
    """A run directory means its best.pt; a file is taken as it is."""
    if os.path.isdir(run_or_ckpt):
        return os.path.join(run_or_ckpt, ckpts.BEST)
    return run_or_ckpt


def load_model(path: str, device: torch.device) -> tuple[dict, FinetuneModel]:
    ckpt = ckpts.load(path)
    cfg = ckpts.config_of(ckpt)
    model_cfg, stage2 = ckpts.model_settings_of(ckpt)
    model = FinetuneModel(cfg.task, model_cfg, cfg.head, num_outputs(cfg.task, ckpt["answers"]), stage2)
    model.load_state_dict(ckpt["model"])
    logger.info("loaded the %s model of %s (epoch %s, step %s, validation score %s)", cfg.task, path,
                ckpt.get("epoch"), ckpt.get("step"), ckpt.get("score"))
    return ckpt, model.to(device).eval()


def predict_split(run_or_ckpt: str, split: str, *, out: str | None = None, data: str | None = None,
                  corpus: str | None = None, tsv: list[str] | None = None, bert: str | None = None,
                  device: str = "auto", batch_size: int | None = None) -> dict:
    """Predict every example of ``split`` and write the submission file; inputs default to the run's own."""
    path = resolve_checkpoint(run_or_ckpt)
    dev = resolve_device(device)
    ckpt, model = load_model(path, dev)
    cfg = ckpts.config_of(ckpt)
    if batch_size:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, valid_batch_size=batch_size))
    ran = ckpt["inputs"]
    data = data or ran["data"]
    if not (corpus or tsv):
        corpus, tsv = ran["corpus"], list(ran["tsv"])
    model_cfg, stage2 = ckpts.model_settings_of(ckpt)
    check_sizes(cfg, model_cfg, stage2)
    tok = open_tokenizer(cfg, bert or ran["bert"], model_cfg)
    images = open_images(corpus, tsv, cfg.data.max_objects, model_cfg)
    examples = load_split(cfg.task, data, split)
    missing = images.resolve({name for ex in examples for name in ex.images})
    if missing:
        raise ValueError(f"{cfg.task} {split}: {len(missing)} images have no features in {images.describe()} "
                         f"(first {missing[0]!r}); a submission must answer every example")
    dataset = TaskDataset(cfg.task, examples, tok, images, ckpt["answers"])
    collate = TaskCollate(cfg.task, tok.pad, num_outputs(cfg.task, ckpt["answers"]))
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    indices = predict_indices(model, dataset, collate, cfg, DistInfo(device=dev), autocast)
    predictions = as_answers(cfg.task, dataset, indices, ckpt["answers"])
    out = out or os.path.join(os.path.dirname(os.path.abspath(path)), default_name(split, cfg.task))
    rows = write_submission(cfg.task, examples, predictions, out)
    labelled = any(ex.label is not None for ex in examples)
    return {"task": cfg.task, "split": split, "out": out, "examples": rows, "checkpoint": path,
            "metrics": score(cfg.task, examples, predictions) if labelled else None}


def score_file(task: str, data: str, split: str, pred: str) -> dict:
    """The official metrics of a submission file against a labelled split."""
    examples = load_split(task, data, split)
    predictions = match_ids(examples, read_submission(task, pred))
    return {"task": task, "split": split, "pred": pred, **score(task, examples, predictions)}
