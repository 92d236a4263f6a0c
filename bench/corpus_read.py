"""Corpus read benchmark: ssrp's LMDB shards against what users of the anchors run today.

Baseline: UNITER's default image database (``DetectFeatLmdb`` with ``compress=False``, as its pretraining
configs set it): one LMDB whose values are ``msgpack`` dicts of numpy arrays (``msgpack_numpy``), written by
UNITER's ``scripts/convert_imgdir.py`` without ``--compress`` (float32 arrays stored as float16). Both sides
hold the same content per image: 36x2048 features, boxes (UNITER: ``norm_bb``, normalised x1 y1 x2 y2 w h),
object ids and confidences, attribute ids and confidences.

Rows, each timed alternately (ssrp, UNITER, ssrp, ...) over the same random keys, outputs compared:

* ``same_arrays`` (headline, equal work): fetch a record and get its features and boxes as numpy arrays.
  ssrp: ``CorpusReader.get_arrays`` (zero-copy views; crc off, as UNITER checks nothing);
  UNITER: ``msgpack.loads(txn.get(key), raw=False)`` then ``['features']`` and ``['norm_bb']``.
* ``same_arrays_crc``: the same with ssrp's per-record crc32 on (its default: ssrp does more work here).
* ``full_record``: every array of the record. ssrp: ``CorpusReader.get`` (a private copy, a full record).
* ``dataset_item`` (extra row, not equal work): each system's own dataset step for one image:
  ssrp ``CorpusRecords.image`` (fp16 features copied, boxes normalised, labels) against UNITER's
  ``DetectFeatLmdb.__getitem__`` (features and norm_bb to float32 torch tensors).
* start-up time and memory of a reader: ssrp's lazy reader against LXMERT's ``load_obj_tsv`` (base64 TSV
  parsed whole into memory), each in a fresh subprocess.

Prints a table, then one JSON object as the last line (``met``: the 2x target on the headline row).

    python bench/corpus_read.py [--sizes 500 2000] [--reads 3000] [--reps 5]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import lmdb
import msgpack
import msgpack_numpy
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssrp.corpus import CorpusPlan, CorpusReader, ImageRecord, encode, image_key, write_corpus  # noqa: E402

N_BOXES, DIM, H, W = 36, 2048, 480, 640
TSV_FIELDS = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes", "boxes",
              "features"]
TARGET_READ_RATIO = 2.0


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
            rec = ImageRecord(image_id=i, view="raw", height=H, width=W, **make_arrays(i))
            yield rec.key, encode(rec)

    write_corpus(root, CorpusPlan({"image": max(1, n // 500)}), records())


def uniter_key(i: int) -> bytes:
    return f"coco_train2014_{i:012d}.npz".encode()


def uniter_dump(a: dict) -> dict:
    """What convert_imgdir.py stores for one image (float32 -> float16, like it)."""
    x1, y1, x2, y2 = (a["boxes"] / [W, H, W, H]).T
    norm_bb = np.stack([x1, y1, x2, y2, x2 - x1, y2 - y1], 1)
    return {"features": a["features"], "norm_bb": norm_bb.astype(np.float16), "conf": a["obj_conf"].astype(np.float16),
            "soft_labels": a["obj_ids"], "attr_ids": a["attr_ids"], "attr_conf": a["attr_conf"].astype(np.float16)}


def build_uniter(path: str, n: int) -> None:
    msgpack_numpy.patch()
    env = lmdb.open(path, map_size=1 << 36, subdir=True, lock=False)
    with env.begin(write=True) as txn:
        for i in range(n):
            txn.put(uniter_key(i), msgpack.dumps(uniter_dump(make_arrays(i)), use_bin_type=True))
    env.close()


def build_lxmert_tsv(path: str, n: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, TSV_FIELDS, delimiter="\t")
        for i in range(n):
            a = make_arrays(i)
            b64 = lambda x: base64.b64encode(np.ascontiguousarray(x).tobytes()).decode()  # noqa: E731
            writer.writerow({
                "img_id": i, "img_h": H, "img_w": W, "num_boxes": N_BOXES,
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


# ------------------------------------------------------------------------------------------------
# The readers of each row: a function of one image id, returning what the row reads.


class UniterImgDb:
    """UNITER's DetectFeatLmdb, compress=False, every box kept (nbb = all): data/data.py, rewritten."""

    def __init__(self, path: str):
        msgpack_numpy.patch()
        self.env = lmdb.open(path, readonly=True, create=False, readahead=False)
        self.txn = self.env.begin(buffers=True)

    def same_arrays(self, i: int):
        dump = msgpack.loads(self.txn.get(uniter_key(i)), raw=False)
        return dump["features"], dump["norm_bb"]

    def full_record(self, i: int):
        dump = msgpack.loads(self.txn.get(uniter_key(i)), raw=False)
        return [dump[k] for k in dump]

    def dataset_item(self, i: int):
        import torch

        dump = msgpack.loads(self.txn.get(uniter_key(i)), raw=False)
        return torch.tensor(dump["features"]).float(), torch.tensor(dump["norm_bb"]).float()


class SsrpReads:
    def __init__(self, root: str, check_crc: bool):
        self.reader = CorpusReader(root, check_crc=check_crc)
        self.root = root
        self.records = None

    def same_arrays(self, i: int):
        _, arrays = self.reader.get_arrays(image_key(i, "raw"), ("features", "boxes"))
        return arrays["features"], arrays["boxes"]

    def full_record(self, i: int):
        return self.reader.get(image_key(i, "raw"))

    def dataset_item(self, i: int):
        if self.records is None:
            from ssrp.train.config import DataConfig, ModelConfig
            from ssrp.train.data import CorpusRecords

            self.records = CorpusRecords(self.root, DataConfig(), ModelConfig(feature_dim=DIM))
        return self.records.image(i, "raw")


def check_same_arrays(n: int, ours: SsrpReads, theirs: UniterImgDb) -> None:
    """Both sides read the same content: identical features, boxes equal up to UNITER's float16 norm_bb."""
    for i in random.Random(1).sample(range(n), min(n, 50)):
        (f1, b1), (f2, b2) = ours.same_arrays(i), theirs.same_arrays(i)
        assert np.array_equal(f1, f2), f"features of image {i} differ"
        assert np.allclose(b1 / [W, H, W, H], b2[:, :4].astype(np.float32), atol=1e-3), f"boxes of image {i} differ"


def alternate(a: Callable, b: Callable, ids: list[int], reps: int) -> dict:
    """Time ``a`` and ``b`` over ``ids`` alternately, ``reps`` times each; reads/s and the ratio a/b."""
    for f in (a, b):
        for i in ids[:50]:
            f(i)
    ra, rb = [], []
    for _ in range(reps):
        for f, out in ((a, ra), (b, rb)):
            t = time.perf_counter()
            for i in ids:
                f(i)
            out.append(len(ids) / (time.perf_counter() - t))
    ratios = [x / y for x, y in zip(ra, rb, strict=True)]
    return {"ssrp_reads_per_s": round(statistics.median(ra)), "uniter_reads_per_s": round(statistics.median(rb)),
            "ratio_median": round(statistics.median(ratios), 2), "ratio_best": round(max(ra) / max(rb), 2)}


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


ROWS = ("same_arrays", "same_arrays_crc", "full_record", "dataset_item")


def measure(n: int, tmp: str, reads: int, reps: int) -> dict:
    root, uni, tsv = (os.path.join(tmp, f"{name}{n}") for name in ("ssrp", "uniter", "lxmert.tsv"))
    build_ssrp(root, n)
    build_uniter(uni, n)
    build_lxmert_tsv(tsv, n)
    ids = [random.Random(0).randrange(n) for _ in range(reads)]
    theirs, plain, crc = UniterImgDb(uni), SsrpReads(root, check_crc=False), SsrpReads(root, check_crc=True)
    check_same_arrays(n, plain, theirs)
    out = {
        "same_arrays": alternate(plain.same_arrays, theirs.same_arrays, ids, reps),
        "same_arrays_crc": alternate(crc.same_arrays, theirs.same_arrays, ids, reps),
        "full_record": alternate(plain.full_record, theirs.full_record, ids, reps),
        "dataset_item": alternate(crc.dataset_item, theirs.dataset_item, ids, reps),
    }
    s_t, s_m = startup(f"from ssrp.corpus import CorpusReader\nr = CorpusReader({root!r}); r.image(0)")
    l_t, l_m = startup(f"from bench.corpus_read import load_obj_tsv\nd = load_obj_tsv({tsv!r})")
    out["startup"] = {"ssrp_s": round(s_t, 4), "ssrp_mb": round(s_m, 1), "lxmert_s": round(l_t, 3),
                      "lxmert_mb": round(l_m, 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[500, 2000])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict = {"records": f"{N_BOXES}x{DIM} fp16 features per image", "sizes": args.sizes,
                     "baseline": "UNITER DetectFeatLmdb(compress=False): msgpack_numpy values"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            results[str(n)] = r = measure(n, tmp, args.reads, args.reps)
            for row in ROWS:
                x = r[row]
                print(f"n={n:5d} {row:16s} ssrp {x['ssrp_reads_per_s']:8d}/s  uniter {x['uniter_reads_per_s']:8d}/s  "
                      f"{x['ratio_median']:5.2f}x median ({x['ratio_best']:.2f}x best)")
            st = r["startup"]
            print(f"n={n:5d} start-up ssrp {st['ssrp_s'] * 1e3:6.1f} ms {st['ssrp_mb']:6.1f} MB  lxmert "
                  f"{st['lxmert_s']:6.2f} s {st['lxmert_mb']:7.1f} MB")
    small, large = (results[str(n)] for n in args.sizes)
    headline = min(small["same_arrays"]["ratio_median"], large["same_arrays"]["ratio_median"])
    results["summary"] = {
        "read_ratio_vs_uniter": headline,
        "read_ratio_vs_uniter_crc_on": min(small["same_arrays_crc"]["ratio_median"],
                                           large["same_arrays_crc"]["ratio_median"]),
        "ssrp_startup_growth": round(large["startup"]["ssrp_s"] / small["startup"]["ssrp_s"], 2),
        "lxmert_startup_growth": round(large["startup"]["lxmert_s"] / small["startup"]["lxmert_s"], 2),
        "corpus_growth": args.sizes[1] / args.sizes[0],
    }
    results["met"] = {f"reads >= {TARGET_READ_RATIO}x UNITER (same arrays)": headline >= TARGET_READ_RATIO}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
