"""Both stages of every variant on CPU; frozen encoder; checkpoints; exact resume; the CLI."""

import argparse
import json
import math
import os

import pytest
import torch

from ssrp.train import cli
from ssrp.train.checkpoint import load_checkpoint
from ssrp.train.config import make_config
from ssrp.train.loop import train

VARIANTS = ("share", "visual", "cross")


def _metrics(out):
    rows = {}
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            rows[rec["step"]] = rec  # a resumed run rewrites the steps after its checkpoint
    return rows


@pytest.fixture(scope="module")
def stage1_runs(tmp_path_factory, corpus, bert_dir, tiny_overrides):
    root = tmp_path_factory.mktemp("stage1")
    runs = {}
    for variant in VARIANTS:
        cfg = make_config("stage1", variant, "tiny", [*tiny_overrides, "optim.max_steps=4"])
        runs[variant] = train(cfg, corpus, str(root / variant), bert=bert_dir)
    return runs


@pytest.mark.parametrize("variant", VARIANTS)
def test_stage1_runs_and_checkpoints(stage1_runs, variant):
    summary = stage1_runs[variant]
    rows = _metrics(summary["out"])
    assert sorted(rows) == [1, 2, 3, 4]
    for rec in rows.values():
        assert set(rec["losses"]) == {"mlm", "obj", "feat", "match"}
        assert all(math.isfinite(v) for v in rec["losses"].values())
    ckpt = load_checkpoint(summary["checkpoint"])  # weights_only=True
    assert ckpt["stage"] == "stage1" and ckpt["variant"] == variant and ckpt["step"] == 4
    assert ckpt["config"]["model"]["hidden"] == 32


@pytest.mark.parametrize("variant", VARIANTS)
def test_stage2_trains_probes_and_changes_no_encoder_weight(tmp_path, stage1_runs, corpus, tiny_overrides, variant):
    cfg = make_config("stage2", variant, "tiny", [*tiny_overrides, "optim.max_steps=3"])
    summary = train(cfg, corpus, str(tmp_path / "s2"), init=stage1_runs[variant]["checkpoint"])
    before = load_checkpoint(stage1_runs[variant]["checkpoint"])["model"]
    after = load_checkpoint(summary["checkpoint"])["model"]
    encoder = [k for k in after if k.startswith("encoder.")]
    assert encoder and all(torch.equal(after[k], before[k]) for k in encoder)
    init_heads = load_checkpoint(summary["checkpoint"])["optimizer"]["state"]
    assert init_heads  # the optimiser holds only the heads' state
    rows = _metrics(summary["out"])
    assert sorted(rows) == [1, 2, 3]
    assert set(rows[1]["losses"]) == {"probe", "scl", "xcl"}
    assert all(math.isfinite(v) for r in rows.values() for v in r["losses"].values())


def test_stage2_rejects_a_checkpoint_of_another_variant(tmp_path, stage1_runs, corpus, tiny_overrides):
    cfg = make_config("stage2", "share", "tiny", tiny_overrides)
    with pytest.raises(ValueError, match="SSRP-cross checkpoint"):
        train(cfg, corpus, str(tmp_path / "x"), init=stage1_runs["cross"]["checkpoint"])


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_killed_and_resumed_run_reproduces_the_losses(tmp_path, corpus, bert_dir, stage1_runs, tiny_overrides, stage):
    # 6 batches per epoch: 8 steps cross an epoch boundary; checkpoints every 3 steps; killed after step 5
    overrides = [*tiny_overrides, "optim.max_steps=8", "ckpt_every=3", "model.dropout=0.1"]
    cfg = make_config(stage, "visual", "tiny", overrides)
    kw = {"bert": bert_dir} if stage == "stage1" else {"init": stage1_runs["visual"]["checkpoint"]}
    full = train(cfg, corpus, str(tmp_path / "full"), **kw)
    train(cfg, corpus, str(tmp_path / "cut"), stop_after=5, **kw)
    assert load_checkpoint(str(tmp_path / "cut" / "checkpoint.pt"))["step"] == 3
    train(cfg, corpus, str(tmp_path / "cut"), resume=True, **kw)
    a, b = _metrics(full["out"]), _metrics(str(tmp_path / "cut"))
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert a[step]["losses"] == b[step]["losses"], step
        assert a[step]["lr"] == b[step]["lr"]
    ca, cb = load_checkpoint(full["checkpoint"]), load_checkpoint(str(tmp_path / "cut" / "checkpoint.pt"))
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])


def test_existing_checkpoint_needs_resume_and_same_settings(tmp_path, corpus, bert_dir, tiny_overrides):
    cfg = make_config("stage1", "share", "tiny", [*tiny_overrides, "optim.max_steps=2"])
    train(cfg, corpus, str(tmp_path / "r"), bert=bert_dir)
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, corpus, str(tmp_path / "r"), bert=bert_dir)
    other = make_config("stage1", "share", "tiny", [*tiny_overrides, "optim.max_steps=2", "optim.lr=0.5"])
    with pytest.raises(ValueError, match="optim.lr"):
        train(other, corpus, str(tmp_path / "r"), bert=bert_dir, resume=True)


def test_cli_runs_a_stage(tmp_path, corpus, bert_dir, tiny_overrides, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out = str(tmp_path / "cli")
    settings = [*tiny_overrides, "optim.max_steps=2", "tensorboard=True", "progress=True"]
    sets = [x for o in settings for x in ("--set", o)]
    args = parser.parse_args(
        [
            "train",
            "stage1",
            "--variant",
            "share",
            "--corpus",
            corpus,
            "--out",
            out,
            "--bert",
            bert_dir,
            "--preset",
            "tiny",
            *sets,
        ]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and os.path.exists(os.path.join(out, "checkpoint.pt"))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(out, "tb")))
    assert json.load(open(os.path.join(out, "config.json")))["model"]["vocab_size"] > 0
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "stage2", "--variant", "nope", "--corpus", corpus, "--out", out])


@pytest.mark.slow
def test_compiled_encoder_gives_the_eager_losses_and_keeps_parameter_names(corpus, bert_dir):
    from train_helpers import DDP_OVERRIDES, ddp_batch

    from ssrp.train.distributed import DistInfo
    from ssrp.train.steps import build_run, compute_losses, resolve_config

    results = []
    for compiled in (False, True):
        overrides = [*DDP_OVERRIDES, f"compile={compiled}"]
        cfg = resolve_config(make_config("stage1", "cross", "tiny", overrides), corpus, bert_dir, None)
        torch.manual_seed(0)
        run = build_run(cfg, DistInfo(device=torch.device("cpu")), total_steps=10, bert=bert_dir)
        assert (getattr(run.model.encoder, "_compiled_call_impl", None) is not None) == compiled
        total, terms = compute_losses(run, ddp_batch("stage1", corpus, cfg, range(8)))
        total.backward()
        results.append((total.item(), {k: p.grad for k, p in run.model.named_parameters() if p.grad is not None}))
    (eager, g_eager), (compiled_loss, g_compiled) = results
    assert compiled_loss == pytest.approx(eager, rel=1e-4)
    assert g_compiled.keys() == g_eager.keys()  # in-place compile: checkpoints keep their names
    assert all(torch.allclose(g_eager[k], g_compiled[k], rtol=1e-3, atol=1e-5) for k in g_eager)
