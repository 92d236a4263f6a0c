"""The build with the real stages (tiny models through the real loading code): local runner and
Beam give byte-identical shards; bad input lands in the dead letters; the corpus verifies."""

import json
import os

import pytest

from ssrp.corpus import CorpusReader, verify
from ssrp.pipeline.config import PRESETS, BuildConfig
from ssrp.pipeline.local import run_local
from ssrp.pipeline.run import run_beam
from ssrp.views.config import TABLE2, view_counts


def digests(manifest):
    return {s["name"]: s["sha256"] for k in manifest["kinds"].values() for s in k["shards"]}


@pytest.mark.slow
def test_full_corpus_local_and_beam_are_byte_identical(coco, tiny_models, tmp_path):
    kw = dict(input=coco, models=tiny_models, stages=PRESETS["corpus"], max_images=3, device="cpu",
              num_shards={"image": 2, "text": 2})
    local = run_local(BuildConfig(out=str(tmp_path / "local"), **kw), progress=False)
    beam = run_beam(BuildConfig(out=str(tmp_path / "beam"), **kw), "direct", ["--direct_running_mode=in_memory"])
    assert digests(local) == digests(beam)
    assert verify(str(tmp_path / "beam")).ok
    reader = CorpusReader(str(tmp_path / "local"))
    counts = reader.manifest["kinds"]["image"]["counts"]
    assert len(counts) == 14 and set(counts.values()) == {3}  # 14 views for each of the 3 images
    per_column = {col: sum(counts.get(v, 0) for v in names) for col, names in TABLE2.items()}
    assert per_column == view_counts(3)  # Table 2's columns, for N = 3
    raw = [reader.text(int(c)) for i in reader.image_ids() for c in reader.index(i).caption_ids]
    assert raw and all(t.parsed and len(t.input_ids) <= 36 for t in raw)
    assert local["summary"]["captions"]["balanced"] and local["summary"]["images"]["balanced"]


@pytest.mark.slow
def test_bad_input_with_real_stages(bad_coco, tiny_models, tmp_path):
    cfg = BuildConfig(input=bad_coco, out=str(tmp_path / "c"), models=tiny_models, stages=("features", "translate"),
                      split="trainval",
                      device="cpu")
    manifest = run_local(cfg, progress=False)
    summary = manifest["summary"]
    assert summary["images"]["balanced"] and summary["captions"]["balanced"]
    assert summary["images"]["dead_letters"] == 3 and summary["images"]["written"] == 7
    dead = {d["key"]: d for d in map(json.loads, open(os.path.join(cfg.out, "deadletters.jsonl")))}
    reasons = {d["stage"] + ":" + d["reason"] for d in dead.values()}
    assert "read:missing_file" in reasons and "read:duplicate_annotation_id" in reasons
    assert sum(1 for d in dead.values() if d["stage"] == "decode") == 2  # truncated JPEG, text named .jpg
    text_dead = [d for d in dead.values() if d["key"].startswith("text/")]
    assert sum(1 for d in text_dead if d["stage"] != "index") == 3  # empty, 5,000 words, duplicate
    assert {d["reason"] for d in text_dead if d["stage"] == "index"} == {"image_not_written"}  # the dead images'
    reader = CorpusReader(cfg.out)
    assert summary["captions"]["written"] == sum(len(reader.index(i).caption_ids) for i in reader.image_ids())
    assert verify(cfg.out).ok


@pytest.mark.slow
def test_beam_multiprocess_runner(coco, tiny_models, tmp_path):
    """Beam's local runner with worker processes (pickling of handlers, models loaded per worker)."""
    kw = dict(input=coco, models=tiny_models, stages=PRESETS["features"], max_images=4, device="cpu")
    local = run_local(BuildConfig(out=str(tmp_path / "local"), **kw), progress=False)
    beam = run_beam(BuildConfig(out=str(tmp_path / "beam"), **kw), "direct", ["--direct_num_workers=2"])
    assert digests(local) == digests(beam)


def test_build_command(coco, tiny_models, tmp_path, capsys):
    from ssrp.cli import main

    out = str(tmp_path / "c")
    argv = ["build", "--coco", coco, "--models", tiny_models, "--out", out, "--preset", "parse", "--max-images", "2",
            "--num-shards", "image=2", "--set", "parse.max_words=60", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["records"]["image"] == 2 and printed["summary"]["captions"]["balanced"]
    manifest = CorpusReader(out).manifest
    assert manifest["num_shards"]["image"] == 2 and manifest["config"]["parse"]["max_words"] == 60
    other = [a if a != "parse.max_words=60" else "parse.max_words=61" for a in argv]
    assert main(other) == 2  # another config into the same output: refused (one line, exit 2)
    with pytest.raises(SystemExit):
        main(["build", "--coco", coco])  # --out and --models are required
