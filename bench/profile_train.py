"""Where a training step's time goes: ``torch.profiler`` over one stage-1 step on each side of bench/train.py's
``step`` row (ours: ``compute_losses`` + backward; LXMERT: ``LxmertForPreTraining`` + backward), same batch.

Prints the top operators by self CPU time per side and, as the last line, one JSON object with each side's total
and the share spent in matrix products (``addmm``/``mm``/``bmm``/``baddbmm``), which bounds what removing
overhead can give.

    PYTHONPATH=. .venv/bin/python bench/profile_train.py --batch 32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import torch

from bench.train import (
    lxmert_inputs,
    lxmert_pretraining,
    stage1_batch,
    step_lxmert,
    step_ours,
    synthetic_corpus,
    train_config,
)
from ssrp.train.distributed import DistInfo
from ssrp.train.steps import build_run

GEMMS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")


def profile(fn, warmup: int = 2) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(warmup):
        fn()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMMS)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    return {
        "total_ms": round(total / 1e3, 1),
        "gemm_ms": round(gemm / 1e3, 1),
        "gemm_share": round(gemm / total, 3),
        "top": [(e.key, round(e.self_cpu_time_total / 1e3, 1), e.count) for e in top],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    corpus = synthetic_corpus(tempfile.mkdtemp(prefix="ssrp-bench-"), images=64)
    cfg = train_config("paper")
    batch = stage1_batch(corpus, cfg, args.batch)
    run = build_run(cfg, DistInfo(device=torch.device("cpu")), total_steps=1000)
    run.model.train()
    hf = lxmert_pretraining("paper")
    inputs = lxmert_inputs(batch)

    def ours():
        run.model.zero_grad(set_to_none=True)
        step_ours(run, batch)

    def theirs():
        hf.zero_grad(set_to_none=True)
        step_lxmert(hf, inputs, False)

    result = {"batch": args.batch, "padded_tokens": int(batch["text_mask"].shape[1])}
    for name, fn in (("ours", ours), ("lxmert", theirs)):
        result[name] = profile(fn)
        print(f"{name}: total {result[name]['total_ms']} ms, matmuls {result[name]['gemm_share']:.0%}", file=sys.stderr)
        for key, ms, count in result[name]["top"]:
            print(f"  {key:40s} {ms:9.1f} ms  x{count}", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
