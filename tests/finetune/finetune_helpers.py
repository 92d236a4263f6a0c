"""A corpus with a planted visual signal and a tiny SSRP pretrained on it, for the fine-tuning tests.

Each image has one of ``COLOURS`` kinds: every region's label is the kind, and every region's feature
carries it (``SIGNAL`` on the kind's dimension, over unit noise). ``ssrp finetune sample`` asks for the label
of each image's most confident region, so the answers are the kinds, readable from the features only.
"""

from __future__ import annotations

import os

import numpy as np
from train_helpers import FEATURE_DIM, NUM_LABELS, make_text

from ssrp.corpus import CorpusPlan, ImageRecord, IndexRecord, encode, write_corpus

COLOURS = 4
SIGNAL = 3.0
PRETRAIN_OVERRIDES = (f"model.num_object_labels={NUM_LABELS}", "optim.max_steps=3")


def planted_image(image_id: int, kind: int, rng: np.random.Generator) -> ImageRecord:
    n = int(rng.integers(3, 8))
    xy = rng.uniform(0, 200, (n, 2)).astype(np.float32)
    feats = rng.standard_normal((n, FEATURE_DIM))
    feats[:, kind] += SIGNAL
    return ImageRecord(
        image_id=image_id, view="raw", height=240, width=320,
        boxes=np.concatenate([xy, xy + rng.uniform(5, 100, (n, 2)).astype(np.float32)], 1),
        features=feats.astype(np.float16), obj_ids=np.full(n, kind, np.int32),
        obj_conf=rng.uniform(0.2, 1, n).astype(np.float32), attr_ids=np.zeros(n, np.int32),
        attr_conf=np.zeros(n, np.float32), file_name=f"{image_id:012d}.jpg",
    )


def build_planted_corpus(root: str, vocab: list[str], n_images: int = 120, seed: int = 0) -> str:
    """Raw views with planted kinds (image i has kind i % COLOURS), two parsed captions each."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(1, n_images + 1):
        img = planted_image(i, i % COLOURS, rng)
        records.append((img.key, encode(img)))
        caps = [i * 100, i * 100 + 1]
        for c in caps:
            t = make_text(c, i, "raw", vocab, rng)
            records.append((t.key, encode(t)))
        ix = IndexRecord(image_id=i, caption_ids=np.array(caps, np.int64), file_name=f"{i:012d}.jpg",
                         height=240, width=320)
        records.append((ix.key, encode(ix)))
    write_corpus(root, CorpusPlan({"image": 2, "text": 2, "index": 1}, config={"test": "finetune"}), records)
    return root


def pretrain(corpus: str, bert: str, root: str) -> dict[str, str]:
    """Stage 1 (from the tiny BERT) then stage 2 of a tiny SSRP-Cross, a few steps each; checkpoint paths."""
    from ssrp.train.config import make_config
    from ssrp.train.loop import train

    run1, run2 = os.path.join(root, "run1"), os.path.join(root, "run2")
    train(make_config("stage1", "cross", "tiny", PRETRAIN_OVERRIDES), corpus, run1, bert=bert)
    stage1 = os.path.join(run1, "checkpoint.pt")
    train(make_config("stage2", "cross", "tiny", PRETRAIN_OVERRIDES), corpus, run2, init=stage1)
    return {"stage1": stage1, "stage2": os.path.join(run2, "checkpoint.pt")}


# ------------------------------------------------------------------------------------------------
# DDP: run in spawned processes (importable by module name)


def ddp_gradients(inputs, info, rows: range) -> dict:
    """Gradients of one fine-tuning step (VQA, f_align+rv+rw, dropout off) on the training examples ``rows``."""
    from ssrp.finetune.checkpoint import load_pretrained
    from ssrp.finetune.config import make_config
    from ssrp.finetune.heads import build_model
    from ssrp.finetune.loop import build_run, compute_loss, load_task_data, open_tokenizer

    cfg = make_config("vqa", "tiny", ["data.valid=''"])
    pre = load_pretrained(inputs.stage1, inputs.stage2, cfg.head)
    data = load_task_data(cfg, inputs, pre.model, open_tokenizer(cfg, inputs.bert, pre.model))
    run = build_run(cfg, info, build_model(cfg, pre.model, pre.stage2, data.answers, pre.state), total_steps=10)
    run.trainable.eval()  # no dropout: every rank and the single process compute the same function
    loss, _ = compute_loss(run, data.collate([data.train[i] for i in rows]))
    loss.backward()
    return {k: p.grad.clone() for k, p in run.model.named_parameters() if p.grad is not None}


def ddp_worker(rank: int, world: int, port: int, inputs, out: str) -> None:
    import torch
    import torch.distributed as dist

    from ssrp.train.distributed import init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    per = 8 // world
    try:
        grads = ddp_gradients(inputs, info, range(rank * per, (rank + 1) * per))
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


def ddp_finetune_worker(rank: int, world: int, port: int, inputs, out: str, overrides: list, stop_after) -> None:
    """One rank of a whole fine-tuning run (``finetune``: loader, steps, validation, checkpoints) under gloo."""
    import torch
    import torch.distributed as dist

    from ssrp.finetune.config import make_config
    from ssrp.finetune.loop import finetune
    from ssrp.train.distributed import init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        finetune(make_config("vqa", "tiny", overrides), inputs, out, info=info, stop_after=stop_after,
                 resume=stop_after is None and os.path.exists(os.path.join(out, "checkpoint.pt")))
    finally:
        dist.destroy_process_group()
