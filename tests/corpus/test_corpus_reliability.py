"""Nothing corrupt is read silently, a corrupt committed shard is rebuilt on resume, verify checks the
manifest against itself (issue 14, points 2, 3, 4, 8)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from corpus_helpers import make_image

from ssrp.corpus import (
    CorpusError,
    CorpusPlan,
    CorpusReader,
    CorpusWriter,
    RecordError,
    ShardSpec,
    encode,
    stable_shard,
    verify,
)
from ssrp.corpus.records import image_key


def _image_shard_with(root: str, key: str) -> tuple[str, dict]:
    manifest = json.load(open(os.path.join(root, "manifest.json")))
    reader = CorpusReader(root)
    name = reader._shard_for(key)
    return os.path.join(root, name), manifest


def _flip_inside_value(path: str, value: bytes) -> None:
    """Flip one byte in the middle of a record's stored value (its features), nowhere else."""
    data = open(path, "rb").read()
    where = data.find(value) + len(value) // 2
    assert where > len(value) // 2, "the value's bytes are stored contiguously in the shard"
    with open(path, "r+b") as fh:
        fh.seek(where)
        b = fh.read(1)
        fh.seek(where)
        fh.write(bytes([b[0] ^ 0x40]))


def test_reader_checks_each_records_crc_by_default(corpus):
    key = image_key(3, "rot90")
    path, _ = _image_shard_with(corpus, key)
    _flip_inside_value(path, CorpusReader(corpus).get_raw(key))
    with pytest.raises(RecordError, match=r"shard-\d+-of-\d+\.lmdb: record image/000000000003/rot90: .*crc32"):
        CorpusReader(corpus).image(3, "rot90")
    unchecked = CorpusReader(corpus, check_crc=False).image(3, "rot90")  # the opt-out still reads it
    assert not np.array_equal(unchecked.features, make_image(3, "rot90").features)
    assert CorpusReader(corpus).image(3, "raw").num_boxes == 36  # the other records are fine


def test_a_truncated_shard_is_one_clear_error_not_a_bus_error(corpus):
    key = image_key(3, "raw")
    path, _ = _image_shard_with(corpus, key)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - 8192)
    with pytest.raises(CorpusError, match=r"bytes, the manifest says \d+ \(truncated"):
        CorpusReader(corpus).get(key)
    # `ssrp corpus show` in its own process: a SIGBUS would kill it (returncode -7) with no message
    proc = subprocess.run([sys.executable, "-m", "ssrp", "corpus", "show", corpus, key],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and os.path.basename(path) in lines[0] and "truncated" in lines[0]


def _items():
    return [(make_image(i).key, encode(make_image(i))) for i in range(1, 9)]


def _writer(root):
    plan = CorpusPlan({"image": 2})
    writer = CorpusWriter(root, plan)
    writer.open()
    return writer, plan


def test_resume_rebuilds_a_committed_shard_whose_bytes_changed(tmp_path):
    root = str(tmp_path / "c")
    writer, plan = _writer(root)
    spec = ShardSpec("image", 0, 2)
    mine = [(k, v) for k, v in _items() if stable_shard(k, 2) == 0]
    info = writer.commit_shard(spec, mine)
    path = os.path.join(root, spec.name)
    with open(path, "r+b") as fh:  # one flipped byte, same size: only the sha256 can tell
        fh.seek(info.bytes // 2)
        b = fh.read(1)
        fh.seek(info.bytes // 2)
        fh.write(bytes([b[0] ^ 1]))
    fresh = CorpusWriter(root, plan)  # a rerun
    assert fresh.committed(spec) is None and not os.path.exists(path)  # not skipped: deleted, to be rebuilt
    again = fresh.commit_shard(spec, mine)
    assert again.sha256 == info.sha256


def test_resume_rebuilds_a_truncated_shard_and_ignores_an_unreadable_marker(tmp_path):
    root = str(tmp_path / "c")
    writer, plan = _writer(root)
    items = _items()
    specs = [ShardSpec("image", i, 2) for i in range(2)]
    for spec in specs:
        writer.commit_shard(spec, [(k, v) for k, v in items if stable_shard(k, 2) == spec.shard_id])
    with open(os.path.join(root, specs[0].name), "r+b") as fh:
        fh.truncate(100)
    with open(os.path.join(root, specs[1].name + ".json"), "w") as fh:
        fh.write("{not json")
    fresh = CorpusWriter(root, plan)
    assert fresh.committed(specs[0], check="size") is None and fresh.committed(specs[1]) is None


def _edit_manifest(root, change):
    path = os.path.join(root, "manifest.json")
    manifest = json.load(open(path))
    change(manifest)
    json.dump(manifest, open(path, "w"))


@pytest.mark.parametrize("change, problem", [
    (lambda m: m["kinds"]["image"].update(records=23), "manifest says 23 records, its shards hold 24"),
    (lambda m: m["kinds"]["text"]["counts"].update(de=25), "manifest counts"),
    (lambda m: m["config"].update(stage="other"), "config_hash"),
])
def test_verify_checks_the_manifest_against_itself(corpus, change, problem):
    assert verify(corpus).ok
    _edit_manifest(corpus, change)
    report = verify(corpus, deep=False)
    assert not report.ok and any(problem in p for p in report.problems), report.problems


def test_verify_checks_per_view_counts_against_the_records(corpus):
    """A shard marker whose per-view counts were altered (with the manifest kept consistent) is caught
    only by counting the records themselves."""
    def shift(m):
        shard = m["kinds"]["image"]["shards"][0]
        shard["counts"]["raw"] += 1
        shard["counts"]["rot90"] -= 1
        m["kinds"]["image"]["counts"]["raw"] += 1
        m["kinds"]["image"]["counts"]["rot90"] -= 1
    _edit_manifest(corpus, shift)
    report = verify(corpus)
    assert not report.ok and any("records per view/variant" in p for p in report.problems), report.problems


def test_the_readers_shard_lookup_agrees_with_stable_shard(corpus):
    """The reader's fast path for canonical keys picks the shard stable_shard picks, for every kind."""
    reader = CorpusReader(corpus)
    keys = [*reader.keys("image"), *reader.keys("text"), *reader.keys("index"), "image/3/raw", "index/7", "text/30/de"]
    for key in keys:
        kind = key.split("/")[0]
        assert reader._shard_for(key) == reader.shard_names(kind)[stable_shard(key, reader.num_shards(kind))], key
