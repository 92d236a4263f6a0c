"""A build refuses other inputs, holds its output alone, cleans up after killed runs, records what it decoded,
and reports every bad setting in one line (issue 14, points 5, 6, 9, 10)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from fake_stages import FakeStages
from PIL import Image

from ssrp.cli import main
from ssrp.corpus import ConfigMismatchError, CorpusReader
from ssrp.fileutil import LockedError
from ssrp.pipeline.config import BuildConfig
from ssrp.pipeline.local import run_local
from ssrp.sample import SampleConfig, write_sample

SHARDS = {"image": 3, "text": 2}


def config(coco, out, **kw):
    kw.setdefault("stages", ("features", "translate"))
    kw.setdefault("split", "trainval")  # the sample's 8 train and 2 val images
    return BuildConfig(input=coco, out=str(out), models="unused", num_shards=SHARDS, **kw)


def build(cfg):
    return run_local(cfg, stages=FakeStages(cfg), progress=False)


def test_a_rerun_over_other_inputs_is_refused(coco, tmp_path):
    out = tmp_path / "c"
    first = build(config(coco, out))
    assert first["inputs"]["images"] == 10 and len(first["inputs"]["annotations_sha256"]) == 2
    other = str(tmp_path / "other")
    write_sample(other, SampleConfig(images=8, val_images=2, seed=9))  # same counts, other annotations
    os.remove(out / "manifest.json")  # as if interrupted: nothing but the inputs can tell them apart
    with pytest.raises(ConfigMismatchError, match="other inputs .*annotations_sha256"):
        build(config(other, out))
    moved = str(tmp_path / "moved")
    shutil.copytree(coco, moved)  # the same inputs under another path: resumes
    assert build(config(moved, out))["kinds"] == first["kinds"]


def test_a_second_build_into_the_same_output_is_refused_naming_the_first(coco, tmp_path):
    out = str(tmp_path / "c")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ssrp.pipeline.lock import build_lock\n"
         "with build_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n", out],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"another build \\(pid {holder.pid} on "):
            build(config(coco, out))
        assert not os.path.exists(os.path.join(out, "_plan.json"))  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    assert build(config(coco, out))["summary"]["images"]["balanced"]  # the kernel released the dead holder's lock


def test_scratch_left_by_killed_builds_is_removed(coco, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = scratch / f"ssrp-shard-{int(dead.stdout)}-abc123"
    (stale / "staging").mkdir(parents=True)
    alive = scratch / f"ssrp-commit-{os.getppid()}-def456"  # a live process's scratch is left alone
    alive.mkdir()
    build(config(coco, tmp_path / "c"))
    assert not stale.exists() and alive.exists()
    assert sorted(os.listdir(scratch)) == [alive.name]  # the build's own scratch is gone too


def _rotate_by_exif(root):
    """Mark the first train image as stored sideways (EXIF orientation 6): decoded, its sides swap."""
    ann_path = os.path.join(root, "annotations", "captions_train2017.json")
    doc = json.load(open(ann_path))
    img = doc["images"][0]
    path = os.path.join(root, "train2017", img["file_name"])
    with Image.open(path) as im:
        exif = im.getexif()
        exif[0x0112] = 6
        im.save(path, exif=exif)
        assert (img["width"], img["height"]) == im.size and im.size[0] != im.size[1]
    return img


def test_the_index_records_the_decoded_size(tmp_path):
    coco = str(tmp_path / "coco")
    write_sample(coco, SampleConfig(images=4, val_images=0, seed=3))
    img = _rotate_by_exif(coco)
    cfg = config(coco, tmp_path / "c", split="train")
    build(cfg)
    index = CorpusReader(cfg.out).index(img["id"])
    assert (index.height, index.width) == (img["width"], img["height"])  # EXIF rotation applied
    assert (CorpusReader(cfg.out).image(img["id"]).height, index.width) == (img["width"], img["height"])


# ------------------------------------------------------------------------------------------------
# One line and exit 2 for each bad command (point 9)


def _one_line_error(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ssrp {argv[0]}: error: "), err
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("setting, expected", [
    ("translate.bogus=3", "unknown setting 'bogus'"),
    ("translate.back_beam=4.5", "expected int, got float"),
    ("translate.back_beam=abc", "expected int, got str"),
    ("features.select.max_boxes=abc", "expected int, got str"),
    ("views.jitter_range=(1.5, 0.5)", "jitter_range"),
    ("parse.max_tokens=True", "expected int, got bool"),
    ("nostage.x=1", "STAGE.KEY=VALUE"),
])
def test_a_bad_build_setting_is_one_line_before_anything_is_written(capsys, coco, tmp_path, setting, expected):
    out = str(tmp_path / "c")
    _one_line_error(capsys, ["build", "--coco", coco, "--models", "m", "--out", out, "--set", setting], expected)
    assert not os.path.exists(out)


def test_bad_build_arguments_are_one_line(capsys, coco, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    base = ["build", "--coco", coco, "--models", "m"]
    _one_line_error(capsys, [*base, "--out", str(a_file)], "is a file, not a directory")
    _one_line_error(capsys, [*base, "--out", str(tmp_path / "c"), "--num-shards", "foo"], "expected KIND=N")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("runner", ["local", "direct"])
def test_require_gpu_is_honoured_on_local_runners(capsys, coco, tmp_path, runner):
    out = tmp_path / "c"
    _one_line_error(capsys, ["build", "--coco", coco, "--models", "m", "--out", str(out), "--runner", runner,
                             "--require-gpu"], "no CUDA device", runner)
    assert not out.exists()


def test_the_default_split_is_train_and_records_carry_their_split(coco, tmp_path):
    """The paper's corpus is train2017; val2017 is the held-out corpus. Each index record and the manifest say
    which split an image came from, so evaluation can tell held-out images from trained-on ones."""
    train = BuildConfig(input=coco, out=str(tmp_path / "train"), models="unused", stages=("features",))
    assert train.split == "train"
    manifest = build(train)
    assert manifest["splits"] == {"train": 8} and manifest["config"]["split"] == "train"
    val_cfg = dataclasses.replace(train, out=str(tmp_path / "val"), split="val")
    assert build(val_cfg)["splits"] == {"val": 2}
    both = build(dataclasses.replace(train, out=str(tmp_path / "both"), split="trainval"))
    assert both["splits"] == {"train": 8, "val": 2}
    reader = CorpusReader(str(tmp_path / "both"))
    assert {reader.index(i).split for i in reader.image_ids()} == {"train", "val"}
    assert {CorpusReader(val_cfg.out).index(i).split for i in CorpusReader(val_cfg.out).image_ids()} == {"val"}


def test_beams_worker_log_is_removed_after_a_good_run_and_kept_after_a_failure(tmp_path, monkeypatch):
    from ssrp.pipeline.run import _harness_logs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with _harness_logs(True) as terminal:
        assert terminal is not sys.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith("ssrp-beam-")]
    with pytest.raises(RuntimeError, match="worker died"), _harness_logs(True):
        raise RuntimeError("worker died")
    assert len([f for f in os.listdir(tmp_path) if f.startswith("ssrp-beam-")]) == 1
