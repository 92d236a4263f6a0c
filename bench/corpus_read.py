"""Corpus read benchmark: ssrp's LMDB shards against what users have today.

In one run, on corpora of two sizes built here with the same 36x2048 records:

* random-access reads of image records decoded to numpy, records/s on one core:
  ssrp (msgpack header + raw little-endian arrays, zero-copy views) against UNITER's layout
  (one LMDB, each value an ``np.savez_compressed`` of the image's arrays);
* start-up time and memory of a reader: ssrp's lazy reader against LXMERT's ``load_obj_tsv``
  (base64 TSV parsed whole into memory). Each start-up is measured in a fresh subprocess.

Prints a table, then one JSON object as the last line.

    python bench/corpus_read.py [--sizes 500 2000] [--reads 3000]
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import lmdb
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssrp.corpus import CorpusPlan, CorpusReader, ImageRecord, encode, write_corpus  # noqa: E402

N_BOXES, DIM = 36, 2048
TSV_FIELDS = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes", "boxes",
              "features"]


def make_arrays(i: int) -> dict:
    rng = np.random.default_rng(i)
    xy = rng.uniform(0, 300, (N_BOXES, 2)).astype(np.float32)
    return {
        "boxes": np.concatenate([xy, xy + 50], 1),
        "features": np.maximum(rng.standard_normal((N_BOXES, DIM)), 0).astype(np.float16),  # ReLU'd, like pool5
        "obj_ids": rng.integers(1, 1601, N_BOXES).astype(np.int32),
        "obj_conf": rng.uniform(0.2, 1, N_BOXES).astype(np.float32),
        "attr_ids": rng.integers(1, 401, N_BOXES).astype(np.int32),
        "attr_conf": rng.uniform(0, 1, N_BOXES).astype(np.float32),
    }


def build_ssrp(root: str, n: int) -> None:
    def records():
        for i in range(n):
            rec = ImageRecord(image_id=i, view="raw", height=480, width=640, **make_arrays(i))
            yield rec.key, encode(rec)

    write_corpus(root, CorpusPlan({"image": max(1, n // 500)}), records())


def build_uniter(path: str, n: int) -> None:
    env = lmdb.open(path, map_size=1 << 36, subdir=True, lock=False)
    with env.begin(write=True) as txn:
        for i in range(n):
            a = make_arrays(i)
            buf = io.BytesIO()
            np.savez_compressed(buf, features=a["features"], norm_bb=a["boxes"] / 640, conf=a["obj_conf"],
                                soft_labels=a["obj_ids"])
            txn.put(f"coco_{i:012d}.npz".encode(), buf.getvalue())
    env.close()


def build_lxmert_tsv(path: str, n: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, TSV_FIELDS, delimiter="\t")
        for i in range(n):
            a = make_arrays(i)
            b64 = lambda x: base64.b64encode(np.ascontiguousarray(x).tobytes()).decode()  # noqa: E731
            writer.writerow({
                "img_id": i, "img_h": 480, "img_w": 640, "num_boxes": N_BOXES,
                "objects_id": b64(a["obj_ids"].astype(np.int64)), "objects_conf": b64(a["obj_conf"]),
                "attrs_id": b64(a["attr_ids"].astype(np.int64)), "attrs_conf": b64(a["attr_conf"]),
                "boxes": b64(a["boxes"]), "features": b64(a["features"].astype(np.float32)),  # LXMERT stores fp32
            })


def load_obj_tsv(path: str) -> dict:
    """LXMERT's loader (src/utils.py::load_obj_tsv), rewritten: every image decoded into memory."""
    csv.field_size_limit(sys.maxsize)
    data = {}
    with open(path) as fh:
        for item in csv.DictReader(fh, TSV_FIELDS, delimiter="\t"):
            n = int(item["num_boxes"])
            for key, shape, dtype in (("objects_id", (n,), np.int64), ("objects_conf", (n,), np.float32),
                                      ("attrs_id", (n,), np.int64), ("attrs_conf", (n,), np.float32),
                                      ("boxes", (n, 4), np.float32), ("features", (n, -1), np.float32)):
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
            data[int(item["img_id"])] = item
    return data


def rate_ssrp(root: str, n: int, reads: int) -> float:
    reader = CorpusReader(root)
    ids = [random.Random(0).randrange(n) for _ in range(reads)]
    reader.image(ids[0])
    t = time.perf_counter()
    for i in ids:
        rec = reader.image(i)
        rec.features.shape  # noqa: B018
    return reads / (time.perf_counter() - t)


def rate_uniter(path: str, n: int, reads: int) -> float:
    env = lmdb.open(path, readonly=True, lock=False, readahead=False)
    txn = env.begin(buffers=True)
    ids = [random.Random(0).randrange(n) for _ in range(reads)]
    t = time.perf_counter()
    for i in ids:
        dump = txn.get(f"coco_{i:012d}.npz".encode())
        img = np.load(io.BytesIO(dump), allow_pickle=False)
        {k: img[k] for k in img.files}  # noqa: B018 - UNITER reads every array of the npz
    rate = reads / (time.perf_counter() - t)
    env.close()
    return rate


STARTUP_CHILD = """
import sys, time, resource
sys.path.insert(0, {repo!r})
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
t0 = time.perf_counter(); base = rss()
{body}
print(time.perf_counter() - t0, rss() - base)
"""


def startup(body: str) -> tuple[float, float]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = STARTUP_CHILD.format(repo=repo, body=body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[500, 2000])
    parser.add_argument("--reads", type=int, default=3000)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict = {"records": f"{N_BOXES}x{DIM} fp16 features per image", "sizes": args.sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            root, uni, tsv = (os.path.join(tmp, f"{name}{n}") for name in ("ssrp", "uniter", "lxmert.tsv"))
            build_ssrp(root, n)
            build_uniter(uni, n)
            build_lxmert_tsv(tsv, n)
            ours, theirs = rate_ssrp(root, n, args.reads), rate_uniter(uni, n, args.reads)
            s_t, s_m = startup(f"from ssrp.corpus import CorpusReader\nr = CorpusReader({root!r}); r.image(0)")
            l_t, l_m = startup(f"from bench.corpus_read import load_obj_tsv\nd = load_obj_tsv({tsv!r})")
            results[str(n)] = {
                "ssrp_reads_per_s": round(ours),
                "uniter_reads_per_s": round(theirs),
                "read_ratio_vs_uniter": round(ours / theirs, 2),
                "ssrp_startup_s": round(s_t, 4),
                "ssrp_startup_mb": round(s_m, 1),
                "lxmert_startup_s": round(l_t, 3),
                "lxmert_startup_mb": round(l_m, 1),
            }
            print(f"n={n:6d}  reads/s ssrp {ours:9.0f}  uniter {theirs:8.0f}  ratio {ours / theirs:5.1f}x | "
                  f"start-up ssrp {s_t * 1e3:6.1f} ms {s_m:6.1f} MB  lxmert {l_t:6.2f} s {l_m:7.1f} MB")
    small, large = (results[str(n)] for n in args.sizes)
    growth = args.sizes[1] / args.sizes[0]
    results["summary"] = {
        "min_read_ratio_vs_uniter": min(small["read_ratio_vs_uniter"], large["read_ratio_vs_uniter"]),
        "ssrp_startup_growth": round(large["ssrp_startup_s"] / small["ssrp_startup_s"], 2),
        "ssrp_memory_growth": round(large["ssrp_startup_mb"] / max(small["ssrp_startup_mb"], 0.1), 2),
        "lxmert_startup_growth": round(large["lxmert_startup_s"] / small["lxmert_startup_s"], 2),
        "lxmert_memory_growth": round(large["lxmert_startup_mb"] / max(small["lxmert_startup_mb"], 0.1), 2),
        "corpus_growth": growth,
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
