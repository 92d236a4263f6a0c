"""The build on a real Dask cluster (a LocalCluster of worker processes): shards byte-identical to the local
runner's, one model load per worker process and side, a worker killed mid-run, dead letters and counts; and
the translation of the Beam features the build uses (tagged outputs, Reshuffle, side inputs)."""

import json
import os
import signal
import threading
import time

import pytest
from dask_stages import TRACE_ENV, CountingStages, SlowStages, traces
from fake_stages import FakeStages

from ssrp.corpus import verify
from ssrp.corpus.writer import marker_name
from ssrp.pipeline.config import PRESETS, BuildConfig
from ssrp.pipeline.local import run_local
from ssrp.pipeline.run import run_build, run_dask

pytestmark = pytest.mark.slow
SHARDS = {"image": 3, "text": 2}


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dask-trace"))


@pytest.fixture(scope="module")
def cluster(trace_dir):
    """Two worker processes, one thread each (the workers inherit the trace folder's variable)."""
    from distributed import Client, LocalCluster

    old = os.environ.get(TRACE_ENV)
    os.environ[TRACE_ENV] = trace_dir
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
            with Client(c) as client:
                yield c, client
    finally:
        if old is None:
            os.environ.pop(TRACE_ENV, None)
        else:
            os.environ[TRACE_ENV] = old


@pytest.fixture
def trace(trace_dir):
    for name in os.listdir(trace_dir):
        os.remove(os.path.join(trace_dir, name))
    return trace_dir


def digests(manifest):
    return {s["name"]: s["sha256"] for k in manifest["kinds"].values() for s in k["shards"]}


def fake_config(coco, out, **kw):
    kw.setdefault("stages", ("features", "views", "translate"))
    return BuildConfig(input=coco, out=str(out), models="unused", num_shards=SHARDS, **kw)


def test_real_stages_byte_identical_to_local_one_load_per_worker(cluster, trace, coco, tiny_models, tmp_path):
    kw = dict(input=coco, models=tiny_models, stages=PRESETS["corpus"], max_images=3, device="cpu",
              num_shards={"image": 2, "text": 2})
    local = run_local(BuildConfig(out=str(tmp_path / "local"), **kw), progress=False)
    dask = run_dask(BuildConfig(out=str(tmp_path / "dask"), **kw), scheduler=cluster[0].scheduler_address,
                    stages_cls=CountingStages)
    assert digests(dask) == digests(local) and len(digests(local)) == 5
    assert dask == local  # the whole manifest: counts, summary, config, model identities
    assert verify(str(tmp_path / "dask")).ok
    loads = [(pid, side) for pid, *sides in traces(trace, "load") for side in sides if side]
    assert loads and len(loads) == len(set(loads))  # each side's models once per worker process
    assert {side for _, side in loads} == {"images", "captions"}


def test_dead_letters_and_counts_as_with_the_local_runner(cluster, bad_coco, tmp_path):
    local_cfg, dask_cfg = fake_config(bad_coco, tmp_path / "local"), fake_config(bad_coco, tmp_path / "dask")
    local = run_local(local_cfg, stages=FakeStages(local_cfg), progress=False)
    dask = run_dask(dask_cfg, scheduler=cluster[0].scheduler_address, stages_cls=FakeStages)
    assert dask["summary"] == local["summary"] and digests(dask) == digests(local)
    summary = dask["summary"]
    assert summary["images"]["dead_letters"] == 3 and summary["images"]["balanced"]
    assert summary["captions"]["balanced"]
    assert {r for r in summary["captions"]["by_reason"] if not r.startswith("index:")} == {
        "read:duplicate_annotation_id", "translate:empty_caption", "translate:too_long"}
    assert dead_letters(dask_cfg.out) == dead_letters(local_cfg.out)


def dead_letters(out):
    """Each dead letter without its detail (the fake decoder's message holds an object address)."""
    return [{k: v for k, v in json.loads(line).items() if k != "detail"}
            for line in open(os.path.join(out, "deadletters.jsonl"))]


def test_resume_keeps_committed_shards(cluster, coco, tmp_path):
    cfg = fake_config(coco, tmp_path / "c")
    first = run_dask(cfg, scheduler=cluster[0].scheduler_address, stages_cls=FakeStages)
    victim = first["kinds"]["image"]["shards"][1]["name"]
    os.remove(os.path.join(cfg.out, marker_name(victim)))  # as if the run had died before this shard's commit
    kept = {n: os.stat(os.path.join(cfg.out, n)).st_mtime_ns for n in digests(first) if n != victim}
    again = run_dask(cfg, scheduler=cluster[0].scheduler_address, stages_cls=FakeStages)
    assert again == first
    assert all(os.stat(os.path.join(cfg.out, n)).st_mtime_ns == t for n, t in kept.items())


def _write_json(value, path):
    with open(path, "w") as fh:
        json.dump(value, fh)


def _split(x):
    yield beam_tagged("dead", ("dead", x)) if x % 3 == 0 else (f"k{x % 2}", x)


def beam_tagged(tag, value):
    import apache_beam as beam

    return beam.pvalue.TaggedOutput(tag, value)


def test_tagged_outputs_reshuffle_and_side_inputs(cluster, tmp_path):
    """What Beam 2.77's own Dask translation gets wrong: each tagged output reaches its own consumers only;
    Reshuffle spreads one partition over ``partitions``; ToList (a side input) sees every element."""
    import apache_beam as beam

    from ssrp.pipeline.beam_dask import DaskBuildRunner

    p = beam.Pipeline(runner=DaskBuildRunner(cluster[1], partitions=4))
    spread = p | beam.Create([None]) | beam.FlatMap(lambda _: range(12)) | beam.Reshuffle()
    parts = spread | "Split" >> beam.FlatMap(_split).with_outputs("dead", main="ok")
    scaled = parts.ok | "Scale" >> beam.Map(lambda kv: (kv[0], kv[1] * 10))
    (
        (scaled, parts.dead) | beam.Flatten() | beam.GroupByKey()
        | "Sort" >> beam.Map(lambda kv: [kv[0], sorted(kv[1])]) | "Groups" >> beam.combiners.ToList()
        | "WriteGroups" >> beam.Map(_write_json, str(tmp_path / "groups.json"))
    )
    (
        spread | beam.BatchElements(min_batch_size=100) | "Sizes" >> beam.Map(len)
        | "Bundles" >> beam.combiners.ToList() | "WriteBundles" >> beam.Map(_write_json, str(tmp_path / "bundles.json"))
    )
    assert p.run().wait_until_finish() == "DONE"
    groups = sorted(json.load(open(tmp_path / "groups.json")))
    assert groups == [["dead", [0, 3, 6, 9]], ["k0", [20, 40, 80, 100]], ["k1", [10, 50, 70, 110]]]
    assert sorted(json.load(open(tmp_path / "bundles.json"))) == [3, 3, 3, 3]  # one batch per partition


def test_killed_worker_mid_run_same_manifest(cluster, trace, coco, tmp_path):
    """A worker process running a caption batch is killed (SIGKILL, by pid); Dask runs its tasks again on the
    other worker and on the one its nanny restarts; the build ends with the uninterrupted run's manifest."""
    c, client = cluster
    whole = fake_config(coco, tmp_path / "whole", caption_batch=4)
    expected = run_local(whole, stages=FakeStages(whole), progress=False)
    workers_before = set(client.run(os.getpid).values())
    killed = []

    def kill_first_caption_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            running = traces(trace, "captions")
            if running:
                pid = int(running[0][0])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_caption_worker)
    killer.start()
    cfg = fake_config(coco, tmp_path / "killed", caption_batch=4)
    manifest = run_dask(cfg, scheduler=c.scheduler_address, stages_cls=SlowStages)
    killer.join()
    assert killed and killed[0] in workers_before
    assert manifest == expected and verify(cfg.out).ok
    assert json.load(open(os.path.join(cfg.out, "manifest.json"))) == expected
    caption_pids = {int(t[0]) for t in traces(trace, "captions")}
    assert caption_pids - {killed[0]}  # the killed worker's batches ran again in another process
    assert not [n for n in os.listdir(cfg.out) if ".tmp-" in n]  # attempts cut short left nothing behind


def test_dask_flags(coco, tmp_path):
    cfg = fake_config(coco, tmp_path / "c")
    with pytest.raises(ValueError, match="go with --runner dask"):
        run_build(cfg, "local", dask_workers=2)
    with pytest.raises(ValueError, match="not both"):
        run_dask(cfg, scheduler="tcp://127.0.0.1:1", workers=2)
    with pytest.raises(ValueError, match="positive"):
        run_dask(cfg, workers=0)
