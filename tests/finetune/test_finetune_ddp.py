"""Two gloo ranks compute the gradients of one process on the same global batch."""

import socket

import pytest
import torch
import torch.multiprocessing as mp
from finetune_helpers import ddp_gradients, ddp_worker

from ssrp.train.distributed import DistInfo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_give_the_single_process_gradients(tmp_path, inputs_for):
    inputs = inputs_for("vqa")
    out = str(tmp_path / "grads.pt")
    mp.spawn(ddp_worker, args=(2, _free_port(), inputs, out), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)
    single = ddp_gradients(inputs, DistInfo(), range(8))
    assert set(single) == set(distributed) and any(k.startswith("relations.") for k in single)
    for name, grad in single.items():
        assert torch.allclose(grad, distributed[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
def test_a_whole_run_on_two_ranks_validates_keeps_the_best_and_resumes(tmp_path, inputs_for):
    """finetune() on 2 gloo ranks: the same steps and epochs as one process, every validation example scored
    once (gathered from both ranks), best.pt and checkpoint.pt written by rank 0, and a run stopped after step 11
    resumed on 2 ranks to the step count and validations of the uninterrupted one."""
    import json
    import os

    from finetune_helpers import ddp_finetune_worker

    from ssrp.finetune import checkpoint as ckpts

    overrides = ["data.train=('train',)", "optim.max_steps=12", "data.num_workers=0"]
    inputs = inputs_for("vqa")
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    mp.spawn(ddp_finetune_worker, args=(2, _free_port(), inputs, whole, overrides, None), nprocs=2, join=True)
    records = [json.loads(line) for line in open(os.path.join(whole, "metrics.jsonl"))]
    valid = [r for r in records if "valid" in r]
    assert [r["step"] for r in valid] == [9, 12]  # global batch 8 on 2 ranks: one process's 9 steps an epoch
    assert all(r["valid"]["examples"] == 48 for r in valid)  # minival: every example once, from both ranks
    best = ckpts.load(os.path.join(whole, "best.pt"))
    assert best["kind"] == "best" and best["step"] in (9, 12)
    assert ckpts.load(os.path.join(whole, "checkpoint.pt"))["step"] == 12
    mp.spawn(ddp_finetune_worker, args=(2, _free_port(), inputs, parts, overrides, 11), nprocs=2, join=True)
    mp.spawn(ddp_finetune_worker, args=(2, _free_port(), inputs, parts, overrides, None), nprocs=2, join=True)
    resumed = [json.loads(line) for line in open(os.path.join(parts, "metrics.jsonl"))]
    assert [r["step"] for r in resumed if "loss" in r] == [*range(1, 12), 10, 11, 12]  # resumed at step 9's checkpoint
    assert [r["valid"] for r in resumed if "valid" in r] == [r["valid"] for r in valid]
    a = ckpts.load(os.path.join(whole, "checkpoint.pt"))["model"]
    b = ckpts.load(os.path.join(parts, "checkpoint.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
