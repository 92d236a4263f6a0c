"""Validation on a held-out corpus during training, and the best checkpoint (issue 17, part 2)."""

import json
import math
import os

import pytest
import torch
from train_helpers import NUM_LABELS, build_corpus

from ssrp.train.checkpoint import load_checkpoint
from ssrp.train.config import make_config
from ssrp.train.loop import train
from ssrp.train.validate import better


@pytest.fixture(scope="module")
def val_corpus(tmp_path_factory, vocab):
    return build_corpus(str(tmp_path_factory.mktemp("val") / "c"), vocab, n_images=6, views=("raw",),
                        variants=("raw",), seed=7)


def _val_lines(out):
    return [r for r in map(json.loads, open(os.path.join(out, "metrics.jsonl"))) if "val" in r]


def _cfg(stage, *extra):
    return make_config(stage, "cross", "tiny", [f"model.num_object_labels={NUM_LABELS}", *extra])


def test_stage1_validates_each_epoch_and_keeps_the_best(tmp_path, corpus, val_corpus, bert_dir):
    out = str(tmp_path / "s1")
    summary = train(_cfg("stage1", "optim.epochs=2", "optim.lr=3e-3"), corpus, out, bert=bert_dir,
                    val_corpus=val_corpus)
    lines = _val_lines(out)
    assert [r["step"] for r in lines] == [6, 12]  # 6 batches an epoch, validated at each epoch's end
    for r in lines:
        assert set(r["val"]) == {"loss", "mlm", "obj", "feat", "match", "mlm_acc", "itm_acc"}
        assert 0 <= r["val"]["mlm_acc"] <= 1 and 0 <= r["val"]["itm_acc"] <= 1 and math.isfinite(r["val"]["loss"])
    best = summary["best"]
    assert best["metric"] == "loss" and best["value"] == min(r["val"]["loss"] for r in lines)
    kept = load_checkpoint(os.path.join(out, "best.pt"))
    assert kept["step"] == best["step"] and kept["best"] == best


def test_validation_is_deterministic(tmp_path, corpus, val_corpus, bert_dir):
    """Masks and mismatches are drawn once: two validations of the same weights agree exactly."""
    from ssrp.train.distributed import DistInfo
    from ssrp.train.steps import build_run, resolve_config
    from ssrp.train.validate import Validator

    cfg = resolve_config(_cfg("stage1"), corpus, bert_dir, None)
    run = build_run(cfg, DistInfo(device=torch.device("cpu")), total_steps=1, bert=bert_dir)
    validator = Validator(cfg, val_corpus)
    assert validator(run) == validator(run)


def test_stage2_reports_uuas_and_spearman_and_selects_by_a_chosen_metric(tmp_path, corpus, val_corpus, bert_dir):
    s1 = train(_cfg("stage1", "optim.max_steps=2"), corpus, str(tmp_path / "s1"), bert=bert_dir)
    out = str(tmp_path / "s2")
    summary = train(_cfg("stage2", "optim.max_steps=4", "val_every=2", "best_metric=spearman"), corpus, out,
                    init=s1["checkpoint"], val_corpus=val_corpus)
    lines = _val_lines(out)
    assert [r["step"] for r in lines] == [2, 4]
    assert all(0 <= r["val"]["uuas"] <= 1 and -1 <= r["val"]["spearman"] <= 1 for r in lines)
    assert summary["best"]["metric"] == "spearman"
    assert summary["best"]["value"] == max(r["val"]["spearman"] for r in lines)


def test_an_unknown_best_metric_is_refused():
    with pytest.raises(ValueError, match="best_metric='uuas': use one of"):
        _cfg("stage1", "best_metric='uuas'")


def test_losses_improve_downwards_and_accuracies_upwards():
    assert better("loss", 1.0, 2.0) and not better("loss", 3.0, 2.0)
    assert better("uuas", 0.5, 0.4) and not better("itm_acc", 0.3, 0.4)
    assert better("probe", 0.1, None) and not better("uuas", float("nan"), None)


def test_a_val_corpus_of_training_images_is_flagged(corpus, val_corpus, caplog, tmp_path):
    """The val corpus here reuses the training corpus's image ids 1-6: validation would measure memory."""
    from ssrp.train.checkpoint import corpus_identity
    from ssrp.train.loop import warn_if_not_held_out

    leak = warn_if_not_held_out([corpus_identity(corpus)], val_corpus)
    assert leak.startswith("6 of the 6 images evaluated are in the training corpus")
    assert "NOT HELD OUT (--val-corpus)" in caplog.text
    moved = {"path": str(tmp_path / "gone"), "splits": {"other": 24}}  # trained on another split only
    assert warn_if_not_held_out([moved], val_corpus) is None
