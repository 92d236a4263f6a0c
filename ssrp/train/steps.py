"""One training step of either stage, and what it needs: configs resolved against the inputs,
the model, the optimiser and the learning-rate schedule.

Losses are normalised by counts summed over ranks (``normalise``), so N DDP ranks compute the
gradients one process computes on the same global batch. Dropout is reseeded every step from
(seed, rank, step), so a resumed run repeats the uninterrupted run's steps exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn

from ssrp.corpus import CorpusReader, load_manifest
from ssrp.fileutil import sha256_file
from ssrp.train.bert import bert_data_config, bert_model_config, load_bert
from ssrp.train.checkpoint import load_checkpoint, model_config_of
from ssrp.train.config import ModelConfig, TrainConfig
from ssrp.train.data import corpus_feature_dim
from ssrp.train.distributed import DistInfo, all_reduce_sum, gather_with_grad
from ssrp.train.heads import Stage1Model, Stage2Heads
from ssrp.train.model import SSRPEncoder
from ssrp.train.run import Run

logger = logging.getLogger(__name__)


class Stage2Model(nn.Module):
    """The frozen stage-1 encoder and the trainable probe/projection heads."""

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.encoder = SSRPEncoder(cfg.model)
        self.heads = Stage2Heads(cfg.model.hidden, cfg.stage2)

    def freeze_encoder(self) -> None:
        self.encoder.requires_grad_(False)
        self.encoder.eval()


# ------------------------------------------------------------------------------------------------
# Config resolution (what the corpus, BERT and the stage-1 checkpoint decide)


def resolve_config(cfg: TrainConfig, corpus: str | None, bert: str | None, init: str | None) -> TrainConfig:
    """Fill in what the inputs decide: BERT's sizes and token ids, the stage-1 model, the feature size."""
    model, data = cfg.model, cfg.data
    if init:
        ckpt = load_checkpoint(init)
        # the stage-1 model, run the way this config says (settings of how, not of what: ModelConfig.RUNTIME)
        how = {k: getattr(cfg.model, k) for k in ModelConfig.RUNTIME}
        model = dataclasses.replace(model_config_of(ckpt), **how)
        if model.variant != cfg.model.variant:
            raise ValueError(
                f"--init {init} is an SSRP-{model.variant} checkpoint but --variant is {cfg.model.variant}"
            )
        old_data = ckpt["config"]["data"]
        data = dataclasses.replace(data, **{k: old_data[k] for k in ("pad_id", "mask_id", "random_token_min")})
    elif bert:
        if corpus:
            check_vocabulary(bert, corpus)
        model, data = bert_model_config(model, bert), bert_data_config(data, bert)
    if model.feature_dim == 0:
        if corpus is None:
            raise ValueError("model.feature_dim=0 (from the corpus) needs a corpus")

        with CorpusReader(corpus) as reader:
            model = dataclasses.replace(model, feature_dim=corpus_feature_dim(reader))
    cfg = dataclasses.replace(cfg, model=model, data=data)
    check_sizes(cfg)
    return cfg


def check_vocabulary(bert: str, corpus: str) -> None:
    """Refuse a BERT whose vocabulary is not the one the corpus's captions were tokenised with: every token id
    would mean another word."""
    expected = corpus_vocab_sha256(load_manifest(corpus))
    path = os.path.join(bert, "vocab.txt")
    if expected and os.path.exists(path) and sha256_file(path) != expected:
        raise ValueError(
            f"--bert {bert}: its vocab.txt (sha256 {sha256_file(path)}) is not the vocabulary {corpus} was tokenised "
            f"with (sha256 {expected}, the manifest's models.parse.vocab_sha256); use that BERT, or parse the corpus "
            "again with this one (ssrp parse --corpus)"
        )


def corpus_vocab_sha256(manifest: dict) -> str | None:
    models = manifest.get("models", {})
    return (models.get("parse") or models.get("parser") or {}).get("vocab_sha256")


def check_sizes(cfg: TrainConfig) -> None:
    if cfg.model.max_positions < cfg.data.max_tokens:
        raise ValueError(f"data.max_tokens={cfg.data.max_tokens} exceeds model.max_positions={cfg.model.max_positions}")
    if cfg.stage == "stage2" and cfg.stage2.max_nodes < max(cfg.data.max_objects, cfg.data.max_tokens - 2):
        raise ValueError(
            f"stage2.max_nodes={cfg.stage2.max_nodes} is smaller than data.max_objects={cfg.data.max_objects} "
            f"or the word limit data.max_tokens-2={cfg.data.max_tokens - 2}"
        )


# ------------------------------------------------------------------------------------------------
# Building the model, optimiser and schedule


def build_model(cfg: TrainConfig, bert: str | None = None, init: str | None = None) -> nn.Module:
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if cfg.stage == "stage1":
        model: nn.Module = Stage1Model(cfg.model)
        if bert:

            load_bert(model, bert, cfg.model)
        return model
    model = Stage2Model(cfg)
    if init:
        state = load_checkpoint(init)["model"]
        enc = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        model.encoder.load_state_dict(enc)
        logger.info("stage-2 encoder loaded from %s (%d tensors), frozen", init, len(enc))
    else:
        logger.warning("stage 2 without --init: the frozen encoder keeps its random initialisation")
    model.freeze_encoder()
    return model


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings; not biases or LayerNorm weights (nanoGPT's rule: ndim >= 2)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def lr_lambda(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up to the peak over warmup_fraction of the steps, then linear decay to 0."""
    warmup = int(total * warmup_fraction)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def build_run(
    cfg: TrainConfig, info: DistInfo, total_steps: int, bert: str | None = None, init: str | None = None
) -> Run:
    model = build_model(cfg, bert, init).to(info.device)
    if cfg.compile:  # in place: parameter names (checkpoints, BERT loading) stay as they are
        model.encoder.compile()
    trainable: nn.Module = model if cfg.stage == "stage1" else model.heads
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.local_rank] if info.device.type == "cuda" else None
        trainable = DistributedDataParallel(trainable, device_ids=ids)
    opt = cfg.optim
    optimizer = torch.optim.AdamW(
        param_groups(model if cfg.stage == "stage1" else model.heads, opt.weight_decay),
        lr=opt.lr,
        betas=opt.betas,
        eps=opt.eps,
        fused=info.device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_lambda, total=total_steps, warmup_fraction=opt.warmup_fraction)
    )
    return Run(cfg, info, model, trainable, optimizer, scheduler, total_steps)


# ------------------------------------------------------------------------------------------------
# One step


def normalise(terms: dict[str, tuple[Tensor, Tensor]], info: DistInfo) -> dict[str, Tensor]:
    """sum_r * world / global count: after DDP's gradient averaging, the global mean's gradient."""
    out = {}
    for name, (total, count) in terms.items():
        global_count = all_reduce_sum(count.detach().float(), info).clamp(min=1.0)
        out[name] = total * info.world_size / global_count
    return out


def compute_losses(run: Run, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted total and each normalised loss term of one step (forward only)."""
    cfg = run.cfg
    if cfg.stage == "stage1":
        with run.autocast():
            terms = run.trainable(batch)
    else:
        encoder = run.model.encoder
        with torch.no_grad(), run.autocast():
            text, objects = encoder(
                batch["input_ids"], batch["text_mask"], batch["features"], batch["boxes"], batch["object_mask"]
            )
        with run.autocast():
            terms = run.trainable(text.float(), objects.float(), batch, partial(gather_with_grad, info=run.info))
    losses = normalise(terms, run.info)
    weights = loss_weights(cfg)
    total = sum(weights[k] * losses[k] for k in weights)
    return total, losses


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class NonFiniteLossError(RuntimeError):
    """A step whose loss is NaN or infinite: training stops before the weights or a checkpoint take it in."""


def check_finite(run: Run, total: Tensor, losses: dict[str, Tensor], batch: dict, step: int) -> None:
    """Raise NonFiniteLossError on every rank if the loss of any rank is not finite (one device sync)."""
    raise_if_not_finite(run.info, total, losses, batch.get("keys", []), step)


def raise_if_not_finite(info: DistInfo, total: Tensor, losses: dict[str, Tensor], keys, step: int) -> None:
    """The check every trainer makes before a step touches the weights: if the loss of any rank is NaN or
    infinite, raise NonFiniteLossError on every rank, naming the step, the losses and the batch's records."""
    bad = all_reduce_sum((~torch.isfinite(total.detach())).float(), info)
    if float(bad) == 0:
        return
    values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
    keys = list(keys)
    raise NonFiniteLossError(
        f"step {step + 1}: the loss is not finite on {int(bad)} rank(s) (this rank: {values}); the batch's records: "
        f"{', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}. Nothing was saved from this step: check the "
        "inputs (`ssrp corpus verify` for a corpus) and the learning rate"
    )


def optimiser_step(optimizer: torch.optim.Optimizer, scheduler, loss: Tensor, grad_clip: float) -> float:
    """Backward, clip the global gradient norm at ``grad_clip`` (0: no clipping), optimiser and scheduler step;
    returns the learning rate the step used."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return lr


def train_step(run: Run, batch: dict[str, Tensor], step: int) -> tuple[float, dict[str, Tensor]]:
    """Forward, backward, clip, optimiser and scheduler step; returns the step's lr and detached losses."""
    torch.manual_seed(step_seed(run.cfg.seed, run.info.rank, step))
    total, losses = compute_losses(run, batch)
    if run.cfg.check_finite:
        check_finite(run, total, losses, batch, step)
    lr = optimiser_step(run.optimizer, run.scheduler, total, run.cfg.optim.grad_clip)
    return lr, {k: v.detach() for k, v in losses.items()}


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors to the device; other entries (the records' keys) stay as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def loss_weights(cfg: TrainConfig) -> dict[str, float]:
    if cfg.stage == "stage1":
        s = cfg.stage1
        return {"mlm": s.mlm_weight, "obj": s.obj_weight, "feat": s.feat_weight, "match": s.match_weight}
    s2 = cfg.stage2
    return {"probe": s2.probe_weight, "scl": s2.cl_weight, "xcl": s2.cl_weight}
