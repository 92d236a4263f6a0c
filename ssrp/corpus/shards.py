"""Building one LMDB shard file deterministically from (key, value) pairs.

Records are first staged in a scratch LMDB on local disk (any order, duplicates dropped), then
copied in key order with append-only puts into a fresh environment, which is written out with
LMDB's compacting copy. The same set of records always gives the same bytes, whatever order or
how many times (retries) they arrived in.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import lmdb

from ssrp.corpus.records import KINDS, parse_key, stable_shard
from ssrp.fileutil import scratch_dir
from ssrp.fileutil import sha256_and_size as file_sha256

logger = logging.getLogger(__name__)

_STAGING_MAP_SIZE = 1 << 40  # sparse reservation on local disk
_PUT_CHUNK = 1024


class DuplicateKeyError(ValueError):
    """Two different values arrived for one key."""


@dataclass(frozen=True)
class ShardSpec:
    kind: str
    shard_id: int
    num_shards: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown record kind {self.kind!r}; expected one of {KINDS}")
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard id {self.shard_id} outside 0..{self.num_shards - 1}")

    @property
    def name(self) -> str:
        return f"{self.kind}/shard-{self.shard_id:05d}-of-{self.num_shards:05d}.lmdb"


@dataclass(frozen=True)
class ShardInfo:
    """What a committed shard holds; written beside it as a marker and into the manifest."""

    name: str
    kind: str
    shard_id: int
    num_shards: int
    records: int
    bytes: int
    sha256: str
    counts: dict[str, int] = field(default_factory=dict)  # records per view / variant
    duplicates_dropped: int = 0

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shard_id": self.shard_id,
            "num_shards": self.num_shards,
            "records": self.records,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "counts": dict(sorted(self.counts.items())),
            "duplicates_dropped": self.duplicates_dropped,
        }

    @classmethod
    def from_json(cls, data: dict) -> ShardInfo:
        return cls(**data)


def final_map_size(payload_bytes: int) -> int:
    """A map size that depends only on the data, so the meta page is deterministic."""
    need = 2 * payload_bytes + (64 << 20)
    return 1 << max(need - 1, 1).bit_length()


def _stage(items: Iterable[tuple[str, bytes]], spec: ShardSpec, workdir: str) -> tuple[lmdb.Environment, int, int]:
    env = lmdb.open(
        os.path.join(workdir, "staging"),
        map_size=_STAGING_MAP_SIZE,
        sync=False,
        metasync=False,
        lock=False,
        meminit=False,
        writemap=False,
    )
    duplicates, payload = 0, 0
    txn = env.begin(write=True)
    try:
        for n, (key, value) in enumerate(items, 1):
            _check_key(key, spec)
            k = key.encode("ascii")
            if not txn.put(k, value, overwrite=False):
                if bytes(txn.get(k)) != bytes(value):
                    raise DuplicateKeyError(f"two different values for key {key!r} in shard {spec.name}")
                duplicates += 1
            else:
                payload += len(k) + len(value)
            if n % 4096 == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.commit()
    except BaseException:
        txn.abort()
        env.close()
        raise
    return env, duplicates, payload


def _check_key(key: str, spec: ShardSpec) -> None:
    kind, _, _ = parse_key(key)
    if kind != spec.kind or stable_shard(key, spec.num_shards) != spec.shard_id:
        raise ValueError(f"key {key!r} does not belong in shard {spec.name}")


def _sorted_in_memory(items: Sequence[tuple[str, bytes]], spec: ShardSpec) -> tuple[list, int, int]:
    """The records of an in-memory list in key order, first of equal duplicates kept (what staging gives)."""
    unique: dict[bytes, bytes] = {}
    duplicates, payload = 0, 0
    for key, value in items:
        _check_key(key, spec)
        k = key.encode("ascii")
        seen = unique.get(k)
        if seen is None:
            unique[k] = value
            payload += len(k) + len(value)
        elif bytes(seen) != bytes(value):
            raise DuplicateKeyError(f"two different values for key {key!r} in shard {spec.name}")
        else:
            duplicates += 1
    return sorted(unique.items()), duplicates, payload


def _append_sorted(dst, records: Iterable[tuple[bytes, bytes]], counts: Counter, spec: ShardSpec) -> None:
    cursor = dst.cursor()
    batch: list[tuple[bytes, bytes]] = []
    for key, value in records:
        counts[parse_key(key.decode("ascii"))[2] or spec.kind] += 1
        batch.append((key, value))
        if len(batch) >= _PUT_CHUNK:
            cursor.putmulti(batch, append=True)
            batch = []
    cursor.putmulti(batch, append=True)


def build_shard(items: Iterable[tuple[str, bytes]], spec: ShardSpec, out_path: str) -> ShardInfo:
    """Write the records of one shard to ``out_path`` (a single LMDB file) and describe it.

    An in-memory list is sorted in memory; any other iterable streams through a staging LMDB. Both give the
    same bytes."""
    workdir = scratch_dir("shard")
    try:
        if isinstance(items, (list, tuple)):
            staging = None
            ordered, duplicates, payload = _sorted_in_memory(items, spec)
        else:
            staging, duplicates, payload = _stage(items, spec, workdir)
        counts: Counter[str] = Counter()
        final = lmdb.open(
            os.path.join(workdir, "final"),
            map_size=final_map_size(payload),
            sync=False,
            metasync=False,
            lock=False,
            meminit=True,  # zero unused page bytes: otherwise stale heap bytes break determinism
        )
        with final.begin(write=True) as dst:
            if staging is None:
                _append_sorted(dst, ordered, counts, spec)
            else:
                with staging.begin() as src:
                    _append_sorted(dst, src.cursor(), counts, spec)
                staging.close()
        with open(out_path, "wb") as fh:
            final.copyfd(fh.fileno(), compact=True)
            fh.flush()
            os.fsync(fh.fileno())
        final.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    digest, size = file_sha256(out_path)
    return ShardInfo(
        name=spec.name,
        kind=spec.kind,
        shard_id=spec.shard_id,
        num_shards=spec.num_shards,
        records=sum(counts.values()),
        bytes=size,
        sha256=digest,
        counts=dict(counts),
        duplicates_dropped=duplicates,
    )


def _open_readonly(path: str) -> lmdb.Environment:
    return lmdb.open(
        path,
        subdir=False,
        readonly=True,
        lock=False,
        readahead=False,
        meminit=False,
        max_readers=2048,
    )


# LMDB allows one Environment per file per process, so readers of the same corpus in one process
# share handles. Keyed by pid: a forked child never touches its parent's handles.
_OPEN: dict[tuple[int, str], list] = {}


def acquire_shard(path: str) -> lmdb.Environment:
    """Open a committed shard read-only and lock-free, or share the handle already open here."""
    key = (os.getpid(), os.path.realpath(path))
    entry = _OPEN.get(key)
    if entry is None:
        _drop_inherited(key[1])
        entry = _OPEN[key] = [_open_readonly(path), 0]
    entry[1] += 1
    return entry[0]


def _drop_inherited(real: str) -> None:
    """Close, in a forked child, the handle its parent had open on this file.

    py-lmdb refuses to open a file that is "already open in this process", and a child inherits
    its parent's record of open files. The shards are read-only and lock-free (no lock file, no
    reader table), so closing the child's copy unmaps only the child's memory and closes only the
    child's descriptor; the parent is unaffected.
    """
    for stale in [k for k in _OPEN if k[1] == real and k[0] != os.getpid()]:
        _OPEN.pop(stale)[0].close()


def release_shard(path: str) -> None:
    key = (os.getpid(), os.path.realpath(path))
    entry = _OPEN.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[0].close()
        del _OPEN[key]
