"""The fine-tuning run end to end: validation each epoch, the best model, resume, predictions and the CLI."""

import json
import os

import pytest
import torch

from ssrp.cli import main as ssrp_main
from ssrp.features.export import export_lxmert_tsv
from ssrp.finetune import checkpoint as ckpts
from ssrp.finetune.config import make_config
from ssrp.finetune.loop import finetune
from ssrp.finetune.predict import predict_split, score_file

# VQA on the "train" split alone (36 images, 72 questions: 9 steps per epoch at batch 8), 12 steps: an epoch
# boundary (validation) at step 9, then the last validation at step 12.
SHORT = ["data.train=('train',)", "optim.max_steps=12"]


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def test_run_validates_each_epoch_and_keeps_the_best(tmp_path, inputs_for):
    out = str(tmp_path / "ft")
    summary = finetune(make_config("vqa", "tiny", SHORT), inputs_for("vqa"), out)
    records = _records(out)
    valid = [r for r in records if "valid" in r]
    assert [r["step"] for r in valid] == [9, 12] and [r["epoch"] for r in valid] == [0, 1]
    assert all(r["valid"]["examples"] == 48 for r in valid)  # minival: 24 held-out images x 2 questions
    best = max(valid, key=lambda r: r["valid"]["score"])
    assert summary["best"]["score"] == best["valid"]["score"] and summary["best"]["step"] == best["step"]
    saved = ckpts.load(os.path.join(out, "best.pt"))
    assert saved["kind"] == "best" and saved["step"] == best["step"] and saved["answers"]
    assert ckpts.load(os.path.join(out, "checkpoint.pt"))["step"] == 12
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        finetune(make_config("vqa", "tiny", SHORT), inputs_for("vqa"), out)


def test_resumed_run_repeats_the_uninterrupted_run(tmp_path, inputs_for):
    cfg = make_config("vqa", "tiny", SHORT)
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    finetune(cfg, inputs_for("vqa"), whole)
    finetune(cfg, inputs_for("vqa"), parts, stop_after=11)  # killed after step 11: the last checkpoint is step 9's
    finetune(cfg, inputs_for("vqa", stage1=None, stage2=None), parts, resume=True)  # needs no pretrained files
    expected = {r["step"]: r["loss"] for r in _records(whole) if "loss" in r}
    logged = [(r["step"], r["loss"]) for r in _records(parts) if "loss" in r]
    assert [s for s, _ in logged] == [*range(1, 12), 10, 11, 12]  # steps 10 and 11 run twice
    assert all(loss == expected[step] for step, loss in logged)
    assert [r["valid"] for r in _records(parts) if "valid" in r] == [r["valid"] for r in _records(whole) if "valid" in r]
    a = ckpts.load(os.path.join(whole, "checkpoint.pt"))["model"]
    b = ckpts.load(os.path.join(parts, "checkpoint.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    changed = make_config("vqa", "tiny", [*SHORT, "optim.lr=0.01"])
    with pytest.raises(ValueError, match=r"cannot resume: .*optim.lr"):
        finetune(changed, inputs_for("vqa"), parts, resume=True)


def test_predict_writes_the_submission_and_reproduces_the_validation(tmp_path, inputs_for, tasks):
    out = str(tmp_path / "ft")
    summary = finetune(make_config("vqa", "tiny", SHORT), inputs_for("vqa"), out)
    minival = predict_split(out, "minival")
    assert minival["out"] == os.path.join(out, "minival_predict.json")
    assert minival["metrics"]["score"] == pytest.approx(summary["best"]["score"])
    assert score_file("vqa", tasks["vqa"], "minival", minival["out"])["score"] == pytest.approx(minival["metrics"]["score"])
    test = predict_split(out, "test", out=str(tmp_path / "sub.json"))
    rows = json.load(open(test["out"]))
    questions = json.load(open(os.path.join(tasks["vqa"], "test.json")))
    assert test["metrics"] is None and [r["question_id"] for r in rows] == [q["question_id"] for q in questions]
    assert {r["answer"] for r in rows} <= set(json.load(open(os.path.join(tasks["vqa"], "trainval_label2ans.json"))))


def test_tsv_features_gqa_bf16(tmp_path, inputs_for, corpus):
    """LXMERT TSV features, GQA files, bf16 autocast (on the CPU here), the projection fusion."""
    tsv = str(tmp_path / "obj36.tsv")
    export_lxmert_tsv(corpus, tsv)
    out = str(tmp_path / "gqa")
    cfg = make_config("gqa", "tiny", ["head.features=f_align+rw", "optim.max_steps=3", "precision=bf16",
                                     "head.fusion=projection"])
    summary = finetune(cfg, inputs_for("gqa", corpus=None, tsv=(tsv,)), out)
    assert summary["best"]["metrics"]["examples"] == 48
    submit = predict_split(out, "submit")
    assert submit["out"].endswith("submit_predict.json") and submit["examples"] == 48
    assert set(json.load(open(submit["out"]))[0]) == {"questionId", "prediction"}


def test_cli_nlvr2_finetune_predict_score(tmp_path, bert_dir, corpus, pretrained, capsys):
    data, out = str(tmp_path / "nlvr2"), str(tmp_path / "ft")
    assert ssrp_main(["finetune", "sample", "nlvr2", "--corpus", corpus, "--out", data, "--per-image", "2"]) == 0
    capsys.readouterr()
    args = ["finetune", "nlvr2", "--data", data, "--corpus", corpus, "--bert", bert_dir, "--stage1",
            pretrained["stage1"], "--stage2", pretrained["stage2"], "--out", out, "--preset", "tiny",
            "--set", "optim.max_steps=2"]
    assert ssrp_main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "nlvr2" and summary["features"] == "f_align+rv+rw" and summary["steps"] == 2
    assert ssrp_main(["predict", "--run", out, "--split", "valid"]) == 0
    predicted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = open(predicted["out"]).read().splitlines()
    assert predicted["out"].endswith("valid_predict.csv") and all(line.rsplit(",", 1)[1] in ("True", "False")
                                                                   for line in lines)
    assert ssrp_main(["score", "nlvr2", "--data", data, "--split", "valid", "--pred", predicted["out"]]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["accuracy"] == pytest.approx(predicted["metrics"]["accuracy"]) and "consistency" in scored


def test_cli_errors_are_one_line(tmp_path, bert_dir, corpus, pretrained, tasks, capsys):
    args = ["finetune", "vqa", "--data", tasks["vqa"], "--corpus", corpus, "--bert", bert_dir,
            "--stage1", pretrained["stage1"], "--out", str(tmp_path / "ft"), "--preset", "tiny"]
    assert ssrp_main(args) == 2  # the default feature set needs the probes
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pass --stage2" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.json").write_text('[{"question_id": 1, "sent": "q?"}]')
    assert ssrp_main(["score", "vqa", "--data", str(bad), "--split", "train", "--pred", "x.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.json record 0: missing field 'img_id'" in err


def test_a_non_finite_loss_stops_fine_tuning_before_the_weights_take_it(tmp_path, inputs_for):
    """An absurd learning rate blows the weights up after the first step: the next loss is not finite, and the
    run stops there, naming the step and the examples, with no checkpoint of the blown-up weights."""
    from ssrp.train.steps import NonFiniteLossError

    out = tmp_path / "ft"
    cfg = make_config("vqa", "tiny", [*SHORT, "optim.lr=1e30", "optim.grad_clip=0"])
    with pytest.raises(NonFiniteLossError, match=r"step \d+: the loss is not finite .*example \d+"):
        finetune(cfg, inputs_for("vqa"), str(out))
    assert not (out / "checkpoint.pt").exists() and not (out / "best.pt").exists()
