"""The build's orchestration (planning, dead letters, counts, resume, two-phase commit, parity of
the local runner and Beam), around deterministic fake stages. The real stages are exercised in
test_pipeline_real.py."""

import json
import os
import shutil

import pytest
from fake_stages import FakeStages

from ssrp.corpus import ConfigMismatchError, CorpusPlan, CorpusReader, CorpusWriter, ShardSpec, verify
from ssrp.pipeline.config import BuildConfig
from ssrp.pipeline.local import run_local
from ssrp.pipeline.run import run_beam, validate_options

SHARDS = {"image": 3, "text": 2}


def config(coco, out, **kw):
    kw.setdefault("stages", ("features", "views", "translate"))
    kw.setdefault("split", "trainval")  # the sample's 8 train and 2 val images
    return BuildConfig(input=coco, out=str(out), models="unused", num_shards=SHARDS, **kw)


def digests(manifest):
    return {s["name"]: s["sha256"] for k in manifest["kinds"].values() for s in k["shards"]}


def test_local_build_with_bad_input_completes_and_counts_add_up(bad_coco, tmp_path):
    cfg = config(bad_coco, tmp_path / "c")
    manifest = run_local(cfg, stages=FakeStages(cfg), progress=False)
    summary = manifest["summary"]
    assert summary["images"] == {**summary["images"], "inputs": 10, "written": 7, "dead_letters": 3, "balanced": True}
    assert summary["images"]["by_reason"] == {"decode:corrupt_image": 2, "read:missing_file": 1}
    caps = summary["captions"]
    # the 3 dead images had 15 captions; 2 of those died on their own, the other 13 are unreachable from the
    # index: written by their text shard, counted dead (stage index), so "written" is what a reader can reach
    assert caps["inputs"] == 51 and caps["balanced"] and caps["dead_letters"] == 3 + 13 and caps["written"] == 35
    assert caps["by_reason"] == {"index:image_not_written": 13, "read:duplicate_annotation_id": 1,
                                 "translate:empty_caption": 1, "translate:too_long": 1}
    assert caps["counters"]["dropped:ratio_filter:ru"] == caps["written"] + 13  # every translated caption
    dead = [json.loads(line) for line in open(os.path.join(cfg.out, "deadletters.jsonl"))]
    assert len(dead) == 6 + 13 and all(d["key"] and d["reason"] and d["stage"] for d in dead)
    assert json.load(open(os.path.join(cfg.out, "summary.json"))) == summary
    assert verify(cfg.out).ok
    reader = CorpusReader(cfg.out)
    index_ids = reader.image_ids()
    assert len(index_ids) == 7  # only images that were written, each with its written captions
    for image_id in index_ids:
        for cid in reader.index(image_id).caption_ids:
            assert reader.text(int(cid)).image_id == image_id


def test_beam_and_local_runs_give_byte_identical_shards(coco, tmp_path):
    local_cfg = config(coco, tmp_path / "local")
    beam_cfg = config(coco, tmp_path / "beam")
    local = run_local(local_cfg, stages=FakeStages(local_cfg), progress=False)
    beam = run_beam(beam_cfg, "direct", ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
                    stages_cls=FakeStages)
    assert digests(local) == digests(beam) and len(digests(local)) == 6
    assert local["summary"] == beam["summary"]
    assert verify(beam_cfg.out).ok


class Crash(RuntimeError):
    pass


class CrashingStages(FakeStages):
    """Dies on the second caption batch: an interrupted run."""

    calls = 0

    def captions(self, batch):
        CrashingStages.calls += 1
        if CrashingStages.calls == 2:
            raise Crash("killed")
        return super().captions(batch)


def test_killed_run_resumes_to_the_same_manifest(coco, tmp_path):
    whole = config(coco, tmp_path / "whole", caption_batch=4)
    expected = run_local(whole, stages=FakeStages(whole), progress=False)
    cfg = config(coco, tmp_path / "resumed", caption_batch=4)
    with pytest.raises(Crash):
        run_local(cfg, stages=CrashingStages(cfg), progress=False)
    assert not os.path.exists(os.path.join(cfg.out, "manifest.json"))
    committed = [n for n in os.listdir(os.path.join(cfg.out, "image")) if n.endswith(".lmdb.json")]
    assert len(committed) == 3  # the image shards were done before the crash and are kept
    resumed = run_local(cfg, stages=FakeStages(cfg), progress=False)
    assert digests(resumed) == digests(expected) and resumed["summary"] == expected["summary"]


def test_beam_resume_skips_committed_shards(coco, tmp_path):
    cfg = config(coco, tmp_path / "c")
    first = run_local(cfg, stages=FakeStages(cfg), progress=False)
    os.remove(os.path.join(cfg.out, "manifest.json"))
    victim = first["kinds"]["image"]["shards"][1]["name"]
    os.remove(os.path.join(cfg.out, victim + ".json"))  # this shard's marker is gone: it must be redone
    keep = os.path.getmtime(os.path.join(cfg.out, first["kinds"]["image"]["shards"][0]["name"]))
    again = run_beam(cfg, "direct", ["--direct_running_mode=in_memory"], stages_cls=FakeStages)
    assert digests(again) == digests(first)
    assert os.path.getmtime(os.path.join(cfg.out, first["kinds"]["image"]["shards"][0]["name"])) == keep


def test_changed_config_is_refused(coco, tmp_path):
    cfg = config(coco, tmp_path / "c")
    run_local(cfg, stages=FakeStages(cfg), progress=False)
    other = config(coco, tmp_path / "c", stages=("features",))
    with pytest.raises(ConfigMismatchError, match="stages"):
        run_local(other, stages=FakeStages(other), progress=False)


def test_retried_staging_is_harmless(tmp_path):
    """A retried bundle stages the same shard twice: same bytes, distinct temporary names;
    promotion after the barrier is idempotent and leaves no temporary file behind."""
    from corpus_helpers import make_image

    from ssrp.corpus import encode

    rec = make_image(3)
    plan = CorpusPlan({"image": 1})
    writer = CorpusWriter(str(tmp_path / "c"), plan)
    writer.open()
    spec = ShardSpec("image", 0, 1)
    tmp1, info1 = writer.stage_shard(spec, [(rec.key, encode(rec))])
    tmp2, info2 = writer.stage_shard(spec, [(rec.key, encode(rec))])
    assert tmp1 != tmp2 and info1 == info2
    writer.promote_shard(spec, tmp2, info2)
    writer.promote_shard(spec, tmp2, info2)  # retried promotion
    manifest = writer.finalize()
    assert manifest["kinds"]["image"]["records"] == 1
    assert not [n for n in os.listdir(tmp_path / "c" / "image") if ".tmp-" in n]  # the orphan attempt is removed
    with pytest.raises(RuntimeError, match="lost shard"):
        CorpusWriter(str(tmp_path / "d"), plan).promote_shard(spec, "nope", info1)


def test_dataflow_flags_are_validated_before_launch():
    assert validate_options("dataflow", {}, require_gpu=True)
    ok = {"project": "p", "region": "r", "temp_location": "gs://b/t", "sdk_container_image": "img",
          "dataflow_service_options": ["worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"]}
    assert validate_options("dataflow", ok, require_gpu=True) == []
    no_gpu = {**ok, "dataflow_service_options": []}
    assert any("require_gpu" in p for p in validate_options("dataflow", no_gpu, require_gpu=True))
    assert any("gs://" in p for p in validate_options("dataflow", {**ok, "temp_location": "/tmp"}, False))
    assert validate_options("flink", {"environment_type": "DOCKER"}, require_gpu=True)


def _image_folder(coco, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in sorted(os.listdir(os.path.join(coco, "train2017")))[:5]:
        shutil.copy(os.path.join(coco, "train2017", name), folder / name)
    (folder / "999999.jpg").write_bytes(b"not an image")
    return str(folder)


@pytest.mark.parametrize("source", ["coco", "images", "corpus"])
def test_every_input_builds_the_same_shards_locally_and_on_beam(coco, tmp_path, source):
    """The one builder, whatever it reads: a COCO root, a folder of images, or a corpus to process again."""
    stages = {"coco": ("features", "views", "translate"), "images": ("features",), "corpus": ("parse",)}[source]
    path = {"coco": coco, "images": _image_folder(coco, tmp_path), "corpus": None}[source]
    if source == "corpus":
        first = config(coco, tmp_path / "first", stages=("features", "views", "translate"))
        run_local(first, stages=FakeStages(first), progress=False)
        path = first.out
    kw = dict(source=source, input=path, models="unused", stages=stages)
    local_cfg = BuildConfig(out=str(tmp_path / "local"), **kw)
    beam_cfg = BuildConfig(out=str(tmp_path / "beam"), **kw)
    local = run_local(local_cfg, stages=FakeStages(local_cfg), progress=False)
    beam = run_beam(beam_cfg, "direct", ["--direct_running_mode=in_memory"], stages_cls=FakeStages)
    assert digests(local) == digests(beam) and local["summary"] == beam["summary"]
    assert verify(local_cfg.out).ok and verify(beam_cfg.out).ok
    kinds = set(local["kinds"])
    if source == "images":  # no captions: image records only, the bad file dead-lettered
        assert kinds == {"image"} and local["summary"]["images"]["by_reason"] == {"decode:corrupt_image": 1}
        assert local["kinds"]["image"]["records"] == 5
    else:
        assert kinds == {"image", "text", "index"}
    if source == "corpus":  # the source's image shards are copied byte for byte
        before = json.load(open(os.path.join(path, "manifest.json")))
        assert [s["sha256"] for s in local["kinds"]["image"]["shards"]] == \
            [s["sha256"] for s in before["kinds"]["image"]["shards"]]
        assert local["kinds"]["text"]["counts"] == before["kinds"]["text"]["counts"]


def test_decode_workers_and_overlapped_commits_change_no_byte(coco, tmp_path):
    results = []
    for workers, overlap in ((0, False), (2, True)):
        cfg = config(coco, tmp_path / f"w{workers}", decode_workers=workers, image_batch=3)
        results.append(digests(run_local(cfg, stages=FakeStages(cfg), progress=False, overlap_commits=overlap)))
    assert results[0] == results[1]


def test_a_failing_commit_stops_the_build_with_its_error(coco, tmp_path, monkeypatch):
    cfg = config(coco, tmp_path / "c")

    def broken(self, spec, items, report=None):
        raise OSError(f"disk full while committing {spec.name}")

    monkeypatch.setattr(CorpusWriter, "commit_shard", broken)
    with pytest.raises(OSError, match="disk full while committing image/shard-"):
        run_local(cfg, stages=FakeStages(cfg), progress=False)


def test_progress_counts_shards_as_they_are_committed(coco, tmp_path):
    from ssrp.pipeline.progress import ShardProgress

    cfg = config(coco, tmp_path / "c")
    manifest = run_local(cfg, stages=FakeStages(cfg), progress=False)
    plan = CorpusPlan(manifest["num_shards"], manifest["config"], manifest["models"], manifest["inputs"])
    writer = CorpusWriter(cfg.out, plan)
    specs = [s for s in plan.specs() if s.kind != "index"]
    watch = ShardProgress(writer, specs, enabled=False)
    assert watch.poll() == 5 and watch.pending == []  # every image and text shard of the finished build
    assert watch.done == {"images": 10, "captions": 50}


def test_commit_threads_change_no_byte_and_timings_add_up(coco, tmp_path):
    from ssrp.pipeline.local import BuildTimings

    results, timings = [], []
    for threads in (1, 3):
        cfg = config(coco, tmp_path / f"t{threads}", commit_threads=threads, image_batch=2)
        timings.append(BuildTimings())
        results.append(digests(run_local(cfg, stages=FakeStages(cfg), progress=False, timings=timings[-1])))
    assert results[0] == results[1]
    for t in timings:
        assert t.shards_committed == SHARDS["image"] + SHARDS["text"]
        assert 0 < t.extract_s <= t.wall_s and 0 <= t.commit_wait_s <= t.wall_s and 0 < t.busy_fraction <= 1


def test_commits_overlap_extraction_and_each_other(coco, tmp_path, monkeypatch):
    """A commit of the first image shard waits until extraction has gone on and a second commit has started:
    inline commits (or a single commit thread) would never get there, and the wait would time out."""
    import threading

    cfg = config(coco, tmp_path / "c", commit_threads=2, image_batch=1, decode_workers=0)
    started, extracted_after_submit = threading.Semaphore(0), threading.Event()
    in_flight, seen = [], []
    original, detect = CorpusWriter.commit_shard, FakeStages.detect

    def slow_commit(self, spec, items, report=None):
        in_flight.append(spec.name)
        seen.append(len(in_flight))
        started.release()
        if spec.name == "image/shard-00000-of-00003.lmdb":
            assert extracted_after_submit.wait(30), "extraction did not go on while a shard was committing"
            assert started.acquire(timeout=30) and started.acquire(timeout=30), "no second commit ran alongside"
        info = original(self, spec, items, report)
        in_flight.remove(spec.name)
        return info

    def watching_detect(self, decoded):
        if in_flight:
            extracted_after_submit.set()
        return detect(self, decoded)

    monkeypatch.setattr(CorpusWriter, "commit_shard", slow_commit)
    monkeypatch.setattr(FakeStages, "detect", watching_detect)
    manifest = run_local(cfg, stages=FakeStages(cfg), progress=False)
    assert max(seen) >= 2 and manifest["summary"]["images"]["balanced"]
