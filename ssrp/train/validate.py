"""Held-out validation during training (``--val-corpus``).

Stage 1: on the raw view and raw caption of the first ``val_pairs`` pairs, with the training masks and
mismatches drawn once and for all (seeded by the pair's index, epoch 0), the encoder in eval mode reports the
four losses, MLM accuracy (masked words predicted exactly) and ITM accuracy (matched vs mismatched). Stage 2:
UUAS and Hewitt's Spearman (lengths 5-50) of R_w against the parser's trees (punctuation left out of UUAS, as in
``ssrp eval probe``), and the probe loss. Validation runs on rank 0; the other ranks wait.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from ssrp.corpus import CorpusReader
from ssrp.train.config import TrainConfig
from ssrp.train.data import Collate, Stage1Dataset, Stage2Dataset, load_pairs
from ssrp.train.losses import probe_terms
from ssrp.train.metrics import SpearmanByLength, UUASCounter
from ssrp.train.run import Run
from ssrp.train.steps import to_device

logger = logging.getLogger(__name__)

RAW = ("raw",)


def default_metric(stage: str) -> str:
    """What selects the best checkpoint unless ``best_metric`` says otherwise."""
    return "loss" if stage == "stage1" else "uuas"


def better(metric: str, new: float, old: float | None) -> bool:
    """Losses improve downwards, accuracies and correlations upwards; NaN never improves."""
    if new != new:
        return False
    if old is None:
        return True
    return new < old if metric.endswith("loss") or metric in ("mlm", "obj", "feat", "match", "probe") else new > old


class Validator:
    """Builds the held-out samples once; ``__call__(run)`` returns the metrics of the model as it is now."""

    def __init__(self, cfg: TrainConfig, corpus: str):
        with CorpusReader(corpus) as reader:
            pairs = load_pairs(reader)[: cfg.val_pairs]
        args = (corpus, pairs, RAW, RAW, cfg.data, cfg.model, cfg.seed)
        self.dataset = Stage1Dataset(*args, stage1=cfg.stage1) if cfg.stage == "stage1" else Stage2Dataset(*args)
        self.collate = Collate(cfg.stage, cfg.data.pad_id)
        self.batch = max(1, cfg.optim.batch_size)
        self.stage = cfg.stage
        self.pairs = pairs
        logger.info("validation: %d held-out pairs of %s", len(pairs), corpus)

    def batches(self):
        for start in range(0, len(self.pairs), self.batch):
            yield self.collate([self.dataset[(i, 0)] for i in range(start, min(start + self.batch, len(self.pairs)))])

    @torch.no_grad()
    def __call__(self, run: Run) -> dict[str, float]:
        model = run.model
        was_training = model.training
        model.eval()
        try:
            return self._stage1(run) if self.stage == "stage1" else self._stage2(run)
        finally:
            model.train(was_training)
            if self.stage == "stage2":
                model.freeze_encoder()

    def _stage1(self, run: Run) -> dict[str, float]:
        sums: dict[str, list[float]] = {}
        for batch in self.batches():
            batch = to_device(batch, run.info.device)
            with run.autocast():
                out = run.model.outputs(batch)
                terms = run.model.terms(out, batch)
            for name, (total, count) in terms.items():
                _add(sums, name, float(total), float(count))
            _add(sums, "mlm_acc", *_accuracy(out["mlm_logits"].argmax(-1), out["mlm_labels"], out["mlm_weight"]))
            matched = (out["match_logit"] > 0).float()
            _add(sums, "itm_acc", float((matched == batch["matched"]).sum()), float(batch["matched"].numel()))
        metrics = {name: total / max(count, 1.0) for name, (total, count) in sums.items()}
        metrics["loss"] = sum(metrics[k] for k in ("mlm", "obj", "feat", "match"))
        return metrics

    def _stage2(self, run: Run) -> dict[str, float]:
        uuas, spearman = UUASCounter(), SpearmanByLength()
        probe = [0.0, 0.0]
        for start, batch in zip(range(0, len(self.pairs), self.batch), self.batches(), strict=True):
            n = len(batch["keys"]) if "keys" in batch else batch["input_ids"].shape[0] // 2
            batch = to_device(batch, run.info.device)
            with run.autocast():
                text, objects = run.model.encoder(batch["input_ids"], batch["text_mask"], batch["features"],
                                                  batch["boxes"], batch["object_mask"])
                rel = run.model.heads.relations(text.float(), objects.float(), batch)
            total, count = probe_terms(rel["r_w"], batch["tree_dist"], rel["word_mask"])
            probe[0] += float(total)
            probe[1] += float(count)
            for i in range(n):  # view "a" of each pair (both views are the raw ones)
                self._score(uuas, spearman, start + i, rel["r_w"][i], batch["tree_dist"][i])
        return {"uuas": uuas.value, "spearman": spearman.mean(), "probe": probe[0] / max(probe[1], 1.0)}

    def _score(self, uuas: UUASCounter, spearman: SpearmanByLength, index: int, r_w: Tensor, gold: Tensor) -> None:
        _, caption_id = (int(x) for x in self.pairs[index])
        upos = self.dataset.reader.text(caption_id, "raw").upos
        words = min(len(upos), int((gold[0] >= 0).sum()))
        pred = r_w[:words, :words].float().cpu().numpy()
        truth = gold[:words, :words].cpu().numpy().astype(np.float64)
        uuas.add(pred, truth, upos[:words])
        spearman.add(pred, truth)


def _add(sums: dict[str, list[float]], name: str, total: float, count: float) -> None:
    entry = sums.setdefault(name, [0.0, 0.0])
    entry[0] += total
    entry[1] += count


def _accuracy(pred: Tensor, labels: Tensor, weight: Tensor) -> tuple[float, float]:
    return float(((pred == labels).float() * weight).sum()), float(weight.sum())
