"""Pipeline benchmark: Beam against a plain loop, and shard commits overlapped with extraction.

Row ``beam``: in one run, on a mini-COCO sample with the tiny models, the same corpus (all stages) is built
twice: by the local runner (a plain loop, no Beam) and by the Beam pipeline on FnApiRunner (in-process). Both
load the same models and write the same shards (checked). Target: Beam at most 1.3x the loop.

Row ``commit`` (issue 16): the local runner commits finished shards (encode, LMDB build, copy, sha256, fsync)
on background threads while the next shards are extracted. Two measurements:

* end to end: the same build (tiny models, features + 14 views) with commits inline and overlapped, alternating;
  the extraction busy fraction is the share of the image and caption phases' wall time the main thread spent
  inside the stages (``BuildTimings``); shards compared byte for byte.
* a full-size shard: ``--shard-mb`` (default 256) of image records at their real size (36 x 2048 fp16 features,
  boxes, labels: 152 KB each; random values) committed through the real ``CorpusWriter``, one at a time and
  ``--commit-threads`` at once; from it, the extraction rate (images/s, 14 records each) below which the commit
  threads keep up, so the extractor never waits on a commit. Tiny models make tiny records, so on this CPU the
  end-to-end fractions are near 1 either way; the full-size shard is what a GPU build commits.

Last line: one JSON object (``met`` per target).

    python bench/pipeline.py [--rows beam,commit] [--images 16] [--reps 2] [--shard-mb 256]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssrp.corpus import CorpusPlan, CorpusWriter  # noqa: E402
from ssrp.corpus.records import ImageRecord  # noqa: E402
from ssrp.models.hub import build_tiny  # noqa: E402
from ssrp.pipeline.config import PRESETS, BuildConfig  # noqa: E402
from ssrp.pipeline.local import BuildTimings, run_local  # noqa: E402
from ssrp.pipeline.run import run_beam  # noqa: E402
from ssrp.pipeline.stages import encode_all  # noqa: E402
from ssrp.sample import SampleConfig, write_sample  # noqa: E402

VIEWS_PER_IMAGE = 14
BEAM_TARGET = 1.3
GPU_RATE = 100.0  # images/s: issue 18's goal for one GPU (features and 14 views)


def digests(manifest: dict) -> dict:
    return {s["name"]: s["sha256"] for k in manifest["kinds"].values() for s in k["shards"]}


def beam_row(coco: str, models: str, tmp: str, reps: int) -> dict:
    times: dict[str, list[float]] = {"loop": [], "beam": []}
    outputs = {}
    for rep in range(reps):
        for name in ("loop", "beam"):
            cfg = BuildConfig(input=coco, models=models, out=os.path.join(tmp, f"{name}{rep}"), split="train",
                              stages=PRESETS["corpus"], device="cpu", num_shards={"image": 2, "text": 2})
            start = time.perf_counter()
            if name == "loop":
                outputs[name] = run_local(cfg, progress=False)
            else:
                outputs[name] = run_beam(cfg, "direct", ["--direct_running_mode=in_memory"])
            times[name].append(time.perf_counter() - start)
            print(f"beam row, rep {rep} {name:5s} {times[name][-1]:7.2f} s")
    best = {k: min(v) for k, v in times.items()}
    return {"stages": list(PRESETS["corpus"]), "loop_s": round(best["loop"], 2), "beam_s": round(best["beam"], 2),
            "beam_over_loop": round(best["beam"] / best["loop"], 3),
            "identical_shards": digests(outputs["loop"]) == digests(outputs["beam"])}


def end_to_end_commits(coco: str, models: str, tmp: str, reps: int, images: int) -> dict:
    runs: dict[str, list[BuildTimings]] = {"inline": [], "overlapped": []}
    outputs = {}
    for rep in range(reps):
        for name in ("inline", "overlapped"):
            cfg = BuildConfig(input=coco, models=models, out=os.path.join(tmp, f"commit-{name}{rep}"),
                              split="train", stages=PRESETS["views"], device="cpu",
                              num_shards={"image": max(2, images // 4), "text": 2})
            timings = BuildTimings()
            outputs[name] = run_local(cfg, progress=False, overlap_commits=name == "overlapped", timings=timings)
            runs[name].append(timings)
            print(f"commit row, rep {rep} {name:10s} wall {timings.wall_s:6.2f} s, busy {timings.busy_fraction:.3f}, "
                  f"waited {timings.commit_wait_s:.2f} s on {timings.shards_committed} commits")
    out = {}
    for name, timings in runs.items():
        out[name] = {"busy_fraction_median": round(float(np.median([t.busy_fraction for t in timings])), 4),
                     "commit_wait_s_median": round(float(np.median([t.commit_wait_s for t in timings])), 3),
                     "wall_s_median": round(float(np.median([t.wall_s for t in timings])), 2)}
    out["identical_shards"] = digests(outputs["inline"]) == digests(outputs["overlapped"])
    return out


def full_size_records(count: int, seed: int = 0) -> list:
    """Image records at their real size: 36 regions, 2048-d fp16 features (random values)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        boxes = np.sort(rng.uniform(0, 600, (36, 4)).astype(np.float32), axis=1)
        records.append(ImageRecord(
            image_id=i // VIEWS_PER_IMAGE, view=f"v{i % VIEWS_PER_IMAGE}", height=480, width=640, boxes=boxes,
            features=rng.standard_normal((36, 2048)).astype(np.float16), obj_ids=rng.integers(0, 1600, 36, np.int32),
            obj_conf=rng.random(36, np.float32), attr_ids=rng.integers(0, 400, 36, np.int32),
            attr_conf=rng.random(36, np.float32)))
    return records


def full_shard_commits(tmp: str, shard_mb: int, threads: int, reps: int) -> dict:
    probe = encode_all(full_size_records(1))[0][1]
    per_shard = max(VIEWS_PER_IMAGE, (shard_mb << 20) // len(probe))
    records = full_size_records(per_shard)
    made = itertools.count()

    def commit() -> None:  # each commit into its own one-shard corpus: every key belongs to its one shard
        writer = CorpusWriter(os.path.join(tmp, f"full-shard-{next(made)}"), CorpusPlan({"image": 1}))
        writer.open()
        writer.commit_shard(writer.plan.specs()[0], encode_all(records), {})

    serial, parallel = [], []
    for _ in range(reps):
        start = time.perf_counter()
        commit()
        serial.append(time.perf_counter() - start)
        start = time.perf_counter()
        workers = [threading.Thread(target=commit) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        parallel.append(time.perf_counter() - start)
        print(f"full-size shard ({per_shard} records, {per_shard * len(probe) / 2**20:.0f} MB): one commit "
              f"{serial[-1]:.2f} s, {threads} at once {parallel[-1]:.2f} s")
    one, together = float(np.median(serial)), float(np.median(parallel))
    images_per_shard = per_shard / VIEWS_PER_IMAGE
    return {"records_per_shard": per_shard, "record_bytes": len(probe),
            "shard_mb": round(per_shard * len(probe) / 2**20, 1), "commit_s_median": round(one, 3),
            f"{threads}_commits_at_once_s_median": round(together, 3), "commit_threads": threads,
            "images_per_shard": round(images_per_shard, 1),
            "keeps_up_to_img_per_s_one_thread": round(images_per_shard / one, 1),
            f"keeps_up_to_img_per_s_{threads}_threads": round(threads * images_per_shard / together, 1),
            "projected_at_gpu_rate": projected_busy(images_per_shard, one, together / threads, GPU_RATE)}


def projected_busy(images_per_shard: float, commit_s: float, overlapped_commit_s: float, rate: float) -> dict:
    """Arithmetic from the measured commit times: the extractor's busy fraction at ``rate`` images/s."""
    extract_s = images_per_shard / rate
    return {"img_per_s": rate, "extract_s_per_shard": round(extract_s, 3),
            "busy_inline": round(extract_s / (extract_s + commit_s), 3),
            "busy_overlapped": round(min(1.0, extract_s / overlapped_commit_s), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="beam,commit", help="comma-separated: beam, commit")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--shard-mb", type=int, default=256, help="size of the full-size shard committed")
    parser.add_argument("--commit-threads", type=int, default=2, help="the local runner's default")
    args = parser.parse_args()
    rows = set(args.rows.split(","))
    os.environ.setdefault("SSRP_TRUST_KEY", os.path.join(tempfile.mkdtemp(), "trust.key"))
    import torch

    torch.set_num_threads(1)
    result: dict = {"images": args.images, "captions": args.images * 5, "rows": {}, "met": {}}
    with tempfile.TemporaryDirectory() as tmp:
        coco, models = os.path.join(tmp, "coco"), os.path.join(tmp, "models")
        write_sample(coco, SampleConfig(images=args.images, val_images=0, seed=0))
        build_tiny(models)
        if "beam" in rows:
            beam = result["rows"]["beam"] = beam_row(coco, models, tmp, args.reps)
            result["met"][f"beam_over_loop_le_{BEAM_TARGET}"] = {
                "value": beam["beam_over_loop"], "met": beam["beam_over_loop"] <= BEAM_TARGET and beam["identical_shards"]}
        if "commit" in rows:
            e2e = result["rows"]["commit_end_to_end"] = end_to_end_commits(coco, models, tmp, args.reps, args.images)
            full = result["rows"]["commit_full_size_shard"] = full_shard_commits(tmp, args.shard_mb,
                                                                                 args.commit_threads, args.reps)
            result["met"]["overlap_cuts_the_wait_on_commits_same_shards"] = {
                "wait_s_overlapped": e2e["overlapped"]["commit_wait_s_median"],
                "wait_s_inline": e2e["inline"]["commit_wait_s_median"],
                "met": e2e["overlapped"]["commit_wait_s_median"] < e2e["inline"]["commit_wait_s_median"]
                and e2e["identical_shards"]}
            keeps_up = full[f"keeps_up_to_img_per_s_{args.commit_threads}_threads"]
            result["met"][f"extractor_never_waits_on_commits_at_{GPU_RATE:g}_img_per_s"] = {
                "keeps_up_to_img_per_s": keeps_up, "met": keeps_up >= GPU_RATE}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
