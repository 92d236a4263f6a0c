import json
import multiprocessing as mp
import os
import pickle
import random

import numpy as np
import pytest
from corpus_helpers import PLAN, make_image

from ssrp.corpus import (
    ConfigMismatchError,
    CorpusError,
    CorpusPlan,
    CorpusReader,
    CorpusWriter,
    DuplicateKeyError,
    ShardSpec,
    encode,
    stats,
    verify,
    write_corpus,
)


def test_round_trip_through_shards(corpus, records):
    reader = CorpusReader(corpus)
    expected = dict(records)
    for kind in ("image", "text", "index"):
        keys = list(reader.keys(kind))
        assert sorted(keys) == sorted(k for k in expected if k.startswith(kind))
    for key, value in expected.items():
        assert reader.get_raw(key) == value
    img = reader.image(3, "rot90")
    assert img.features.shape == (36, 2048) and np.array_equal(img.features, make_image(3, "rot90").features)
    assert list(reader.index(3).caption_ids) == [30, 31]
    assert reader.text(30, "de").words == ("a", "dog", "runs", ".")
    assert reader.image_ids() == list(range(1, 13))
    assert reader.views() == ["raw", "rot90"] and reader.variants() == ["de", "raw"]
    with pytest.raises(KeyError):
        reader.image(999)


def test_stats_count_views_and_variants(corpus):
    s = stats(corpus)
    assert s["records"] == {"image": 24, "index": 12, "text": 48}
    assert s["image_views"] == {"raw": 12, "rot90": 12} and s["text_variants"] == {"de": 24, "raw": 24}
    assert s["views_per_image"] == 2.0


def test_shards_are_byte_identical_whatever_the_order_and_retries(tmp_path, records):
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    a = write_corpus(str(tmp_path / "a"), CorpusPlan(PLAN), records)
    b = write_corpus(str(tmp_path / "b"), CorpusPlan(PLAN), shuffled + shuffled[:10])  # retried duplicates
    digests = lambda m: [s["sha256"] for k in sorted(m["kinds"]) for s in m["kinds"][k]["shards"]]  # noqa: E731
    assert digests(a) == digests(b)
    assert sum(s["duplicates_dropped"] for s in b["kinds"]["image"]["shards"]) + sum(
        s["duplicates_dropped"] for k in ("text", "index") for s in b["kinds"][k]["shards"]
    ) == 10


def test_conflicting_duplicate_is_an_error(tmp_path):
    r1, r2 = make_image(1), make_image(1, seed=5)
    writer = CorpusWriter(str(tmp_path / "c"), CorpusPlan({"image": 1}))
    writer.open()
    with pytest.raises(DuplicateKeyError, match="image/000000000001/raw"):
        writer.commit_shard(ShardSpec("image", 0, 1), [(r1.key, encode(r1)), (r2.key, encode(r2))])


def test_record_in_the_wrong_shard_is_refused(tmp_path):
    r = make_image(1)
    writer = CorpusWriter(str(tmp_path / "c"), CorpusPlan({"image": 3}))
    writer.open()
    from ssrp.corpus import stable_shard

    wrong = (stable_shard(r.key, 3) + 1) % 3
    with pytest.raises(ValueError, match="does not belong"):
        writer.commit_shard(ShardSpec("image", wrong, 3), [(r.key, encode(r))])


def test_rerun_with_another_config_is_refused(corpus, records):
    with pytest.raises(ConfigMismatchError, match="changed: config.stage"):
        write_corpus(corpus, CorpusPlan(PLAN, config={"stage": "other"}), records)
    with pytest.raises(ConfigMismatchError, match="num_shards"):
        write_corpus(corpus, CorpusPlan({"image": 4, "text": 2, "index": 1}, config={"stage": "test"}), records)


def test_interrupted_build_is_refused_with_another_config_and_resumed_with_the_same(tmp_path, records):
    root = str(tmp_path / "c")
    plan = CorpusPlan(PLAN, config={"stage": "test"})
    writer = CorpusWriter(root, plan)
    writer.open()
    first = plan.specs()[0]
    info = writer.commit_shard(first, [(k, v) for k, v in records if k.startswith(first.kind)
                                       and __import__("ssrp.corpus").corpus.stable_shard(k, first.num_shards) == 0])
    with pytest.raises(CorpusError, match="interrupted"):
        CorpusReader(root)  # no manifest yet
    with pytest.raises(ConfigMismatchError):
        CorpusWriter(root, CorpusPlan(PLAN, config={"stage": "x"})).open()
    mtime = os.path.getmtime(os.path.join(root, first.name))
    manifest = write_corpus(root, plan, records)  # resumes: the committed shard is kept as it is
    assert os.path.getmtime(os.path.join(root, first.name)) == mtime
    assert manifest["kinds"][first.kind]["shards"][0]["sha256"] == info.sha256
    assert verify(root).ok


def test_verify_passes_on_a_good_corpus(corpus):
    report = verify(corpus)
    assert report.ok, report.problems
    assert report.records_checked == 24 + 48 + 12 and report.shards_checked == 6


def _first_shard(root):
    manifest = json.load(open(os.path.join(root, "manifest.json")))
    return os.path.join(root, manifest["kinds"]["image"]["shards"][0]["name"]), manifest


def test_verify_catches_a_single_flipped_byte(corpus):
    path, _ = _first_shard(corpus)
    size = os.path.getsize(path)
    for offset in (size // 3, size - 5000):
        with open(path, "r+b") as fh:
            fh.seek(offset)
            b = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([b[0] ^ 0x04]))
        report = verify(corpus)
        assert not report.ok and "image/shard-00000-of-00003.lmdb" in report.problems[0]
        assert "sha256" in report.problems[0]
        with open(path, "r+b") as fh:  # restore
            fh.seek(offset)
            fh.write(b)
    assert verify(corpus).ok


def test_verify_catches_a_truncated_shard(corpus):
    path, _ = _first_shard(corpus)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    report = verify(corpus)
    assert not report.ok and "truncated" in report.problems[0] and "shard-00000" in report.problems[0]


def test_verify_and_reader_catch_a_missing_manifest(corpus):
    os.remove(os.path.join(corpus, "manifest.json"))
    report = verify(corpus)
    assert not report.ok and "manifest" in report.problems[0]
    with pytest.raises(CorpusError, match="no manifest"):
        CorpusReader(corpus)


def test_wrong_format_version_is_named(corpus):
    path = os.path.join(corpus, "manifest.json")
    m = json.load(open(path))
    m["format_version"] = 99
    json.dump(m, open(path, "w"))
    with pytest.raises(CorpusError, match="version 99"):
        CorpusReader(corpus)
    assert "version 99" in verify(corpus).problems[0]


def test_verify_catches_a_record_of_the_wrong_shape_even_with_matching_checksums(tmp_path):
    """A shard whose bytes match its manifest entry but hold a record that breaks the schema."""
    import lmdb

    from ssrp.corpus.records import _ARRAYS  # noqa: F401 - schema lives there

    root = str(tmp_path / "c")
    good = make_image(1)
    write_corpus(root, CorpusPlan({"image": 1}), [(good.key, encode(good))])
    path, manifest = _first_shard(root)
    # rewrite the record with a hand-made value whose features have 35 rows for 36 boxes
    value = bytearray(encode(good))
    import msgpack

    from ssrp.corpus.records import _PREFIX, decode_header

    header, _ = decode_header(bytes(value))
    for d in header["arrays"]:
        if d[0] == "features":
            d[2] = [35, 2048]
            d[4] = 35 * 2048 * 2
    new_header = msgpack.packb(header, use_bin_type=True)
    old_len = _PREFIX.unpack_from(value)[2]
    assert len(new_header) == old_len
    value[_PREFIX.size : _PREFIX.size + old_len] = new_header
    env = lmdb.open(path, subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(good.key.encode(), bytes(value))
    env.close()
    from ssrp.corpus.shards import file_sha256

    digest, size = file_sha256(path)
    entry = manifest["kinds"]["image"]["shards"][0]
    entry["sha256"], entry["bytes"] = digest, size
    json.dump(manifest, open(os.path.join(root, "manifest.json"), "w"))
    report = verify(root)
    assert not report.ok
    assert "image/000000000001/raw" in report.problems[0] and "features" in report.problems[0]


def _read_in_child(reader, key, queue):
    queue.put(reader.image(*key).features.astype(np.float32).sum().item())


def test_reader_opens_lazily_and_survives_fork(corpus):
    reader = CorpusReader(corpus)
    assert reader._envs == {}  # nothing opened at construction
    parent = reader.image(2).features.astype(np.float32).sum().item()  # opens a shard in the parent
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_read_in_child, args=(reader, (i, "raw"), queue)) for i in (2, 5, 7)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    expected = sorted(reader.image(i).features.astype(np.float32).sum().item() for i in (2, 5, 7))
    assert results == expected and parent in results


def test_reader_pickles_without_handles(corpus):
    reader = CorpusReader(corpus)
    reader.image(1)
    # Beam ships stages to workers by pickling them: round-trip the object built here (no file is read)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._envs == {} and np.array_equal(clone.image(1).boxes, reader.image(1).boxes)


def test_two_readers_of_one_corpus_in_one_process(corpus):
    a, b = CorpusReader(corpus), CorpusReader(corpus)
    assert np.array_equal(a.image(4).features, b.image(4).features)
    a.close()
    assert b.image(4).num_boxes == 36  # closing one reader leaves the other working


def test_plan_validation():
    with pytest.raises(ValueError, match="unknown record kind"):
        CorpusPlan({"images": 2})
    with pytest.raises(ValueError, match="positive"):
        CorpusPlan({"image": 0})


def test_an_in_memory_list_and_a_stream_build_the_same_shard(tmp_path, records):
    from ssrp.corpus.shards import build_shard

    spec = ShardSpec("image", 0, 1)
    images = [(k, v) for k, v in records if k.startswith("image/")]
    shuffled = images[:]
    random.Random(2).shuffle(shuffled)
    shuffled += shuffled[:3]  # retried duplicates, same values
    listed = build_shard(shuffled, spec, str(tmp_path / "list.lmdb"))
    streamed = build_shard(iter(shuffled), spec, str(tmp_path / "stream.lmdb"))
    assert listed == streamed and listed.duplicates_dropped == 3 and listed.records == len(images)
    assert (tmp_path / "list.lmdb").read_bytes() == (tmp_path / "stream.lmdb").read_bytes()
    r1, r2 = make_image(1), make_image(1, seed=5)
    for items in ([(r1.key, encode(r1)), (r2.key, encode(r2))], iter([(r1.key, encode(r1)), (r2.key, encode(r2))])):
        with pytest.raises(DuplicateKeyError, match="image/000000000001/raw"):
            build_shard(items, spec, str(tmp_path / "dup.lmdb"))
    with pytest.raises(ValueError, match="does not belong"):
        build_shard([(r1.key, encode(r1))], ShardSpec("text", 0, 1), str(tmp_path / "wrong.lmdb"))


def test_a_shard_put_on_the_same_file_system_is_linked_not_copied(tmp_path):
    from ssrp.corpus.writer import Storage

    local = tmp_path / "built.lmdb"
    local.write_bytes(b"shard bytes")
    storage = Storage(str(tmp_path / "corpus"))
    storage.put_file(str(local), "image/shard.tmp-1")
    dest = tmp_path / "corpus" / "image" / "shard.tmp-1"
    assert dest.read_bytes() == b"shard bytes" and os.stat(dest).st_ino == os.stat(local).st_ino
    local.unlink()  # the builder removes its scratch folder: the shard stays
    assert dest.read_bytes() == b"shard bytes"


def test_a_shard_put_across_file_systems_is_copied(tmp_path, monkeypatch):
    import errno

    from ssrp.corpus.writer import Storage

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    local = tmp_path / "built.lmdb"
    local.write_bytes(b"shard bytes")
    Storage(str(tmp_path / "corpus")).put_file(str(local), "image/shard.tmp-1")
    dest = tmp_path / "corpus" / "image" / "shard.tmp-1"
    assert dest.read_bytes() == b"shard bytes" and os.stat(dest).st_ino != os.stat(local).st_ino
