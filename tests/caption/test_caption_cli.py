"""ssrp caption train | eval | predict on the planted set, SSRP-Visual arm; errors as one line."""

import json
import os
import shutil

import pytest
import torch

from ssrp.cli import main


@pytest.fixture(scope="module")
def ssrp_run(planted, ssrp_visual, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    rc = main(["-q", "caption", "train", "--karpathy", planted["karpathy"], "--features", planted["corpus"],
               "--ssrp", ssrp_visual, "--out", out, "--preset", "tiny", "--set", "xe.epochs=12", "--no-progress",
               "--device", "cpu"])
    torch.set_num_threads(old)
    assert rc == 0
    return out


def test_train_records_the_ssrp_arm_and_its_feature_cache(ssrp_run, planted, ssrp_visual):
    with open(os.path.join(ssrp_run, "run.json")) as fh:
        run = json.load(fh)
    assert run["config"]["features"]["parts"] == ["butd", "objects", "objects_rel"]
    assert run["inputs"]["ssrp"] == os.path.abspath(ssrp_visual)
    assert run["feat_dim"] == 16 + 2 * 32  # BUTD + refined objects + relation-propagated objects (hidden 32)
    with open(os.path.join(ssrp_run, "history.json")) as fh:
        history = json.load(fh)
    assert [h["phase"] for h in history] == ["xe"] * 12 + ["scst"]
    assert history[-2]["val_cider"] > history[0]["val_cider"]


def test_predict_writes_the_coco_results_json_of_the_split(ssrp_run, planted, tmp_path, capsys):
    out = str(tmp_path / "captions.json")
    assert main(["-q", "caption", "predict", "--run", ssrp_run, "--split", "test", "--out", out, "--no-progress"]) == 0
    with open(out) as fh:
        results = json.load(fh)
    test_ids = [img["image_id"] for img in planted["images"] if img["split"] == "test"]
    assert [r["image_id"] for r in results] == test_ids
    assert all(set(r) == {"image_id", "caption"} and isinstance(r["caption"], str) and r["caption"] for r in results)


@pytest.mark.skipif(shutil.which("java") is None, reason="the COCO caption metrics need Java")
def test_eval_reports_the_coco_caption_metrics(ssrp_run, tmp_path, capsys):
    path = str(tmp_path / "metrics.json")
    assert main(["-q", "caption", "eval", "--run", ssrp_run, "--split", "test", "--json", path, "--no-progress",
                 "--beam", "2"]) == 0
    with open(path) as fh:
        m = json.load(fh)
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert 0.0 < m[key] < 10.0, key
    assert m["images"] == 16 and m["beam_size"] == 2 and m["split"] == "test"
    assert m["CIDEr"] > 1.0  # the planted pattern is learnt
    if m["SPICE"] is None:
        assert "SPICE skipped" in m["notes"][0]
    assert "CIDEr" in capsys.readouterr().out


def test_errors_are_one_line(planted, ssrp_visual, tmp_path, capsys):
    stage1 = ssrp_visual.replace("run2", "run1")
    args = ["caption", "train", "--karpathy", planted["karpathy"], "--features", planted["corpus"], "--out",
            str(tmp_path / "r"), "--preset", "tiny", "--no-progress"]
    assert main(args + ["--ssrp", stage1]) == 2
    assert main(args) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"cocoid": 5, "split": "train", "sentences": [{"raw": "no tokens"}]}]}))
    assert main(["caption", "train", "--karpathy", str(bad), "--features", planted["corpus"], "--baseline",
                 "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "stage1 checkpoint" in err[0]
    assert "needs SSRP-Visual's stage-2 checkpoint (--ssrp CKPT)" in err[1]
    assert err[2].endswith("image 5: sentences[0] has no 'tokens' list of words")
    assert all(line.startswith("ssrp caption: error:") for line in err)
