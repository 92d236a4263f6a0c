"""Reading a corpus: lazy, read-only, lock-free; safe in DataLoader workers and DDP ranks.

Start-up reads only ``manifest.json``. Shard files are opened on first use in each process
(the reader notices a fork by its pid and reopens), so a reader built in the parent can be
handed to workers. Memory does not grow with the corpus: LMDB maps the files and the OS page
cache is shared between every process reading them.

Nothing corrupt is served silently: a shard's size is compared with the manifest before it is
mapped (a truncated file would otherwise crash the process with SIGBUS on first access), and every
record's crc32 is checked as it is decoded (``check_crc``, on by default; bench/corpus_read.py
measures its cost).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np

from ssrp.corpus.records import (
    IMAGE,
    INDEX,
    KINDS,
    READABLE_VERSIONS,
    TEXT,
    ImageRecord,
    IndexRecord,
    Record,
    RecordError,
    TextRecord,
    decode,
    decode_arrays,
    image_key,
    index_key,
    parse_key,
    stable_shard,
    text_key,
)
from ssrp.corpus.shards import acquire_shard, release_shard
from ssrp.corpus.writer import FORMAT_NAME, MANIFEST


class CorpusError(RuntimeError):
    """A corpus directory that cannot be read: missing manifest, wrong version, bad shard."""


def load_manifest(root: str) -> dict:
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        hint = " (a build is in progress or was interrupted)" if os.path.exists(os.path.join(root, "_plan.json")) else ""
        raise CorpusError(f"{path}: no manifest; not a complete ssrp corpus{hint}")
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise CorpusError(f"{path}: unreadable manifest: {err}") from err
    if manifest.get("format") != FORMAT_NAME:
        raise CorpusError(f"{path}: format {manifest.get('format')!r} is not {FORMAT_NAME!r}")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise CorpusError(
            f"{path}: corpus format version {manifest.get('format_version')}, this ssrp reads versions "
            f"{READABLE_VERSIONS}"
        )
    return manifest


def check_shard_size(path: str, expected: int) -> None:
    """CorpusError unless the file at ``path`` exists and has the manifest's size.

    Mapping a truncated LMDB file and touching a page past its end kills the process with SIGBUS,
    so every shard is measured before it is opened.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise CorpusError(f"{path}: shard listed in the manifest is missing") from None
    if size != expected:
        raise CorpusError(
            f"{path}: {size} bytes, the manifest says {expected} (truncated or replaced); "
            "run `ssrp corpus verify` on this corpus and rebuild it"
        )


class CorpusReader:
    """Reads records by key. ``check_crc`` (default on) checks each record's crc32 as it is decoded."""

    def __init__(self, root: str, check_crc: bool = True):
        self.root = root
        self.check_crc = check_crc
        self.manifest = load_manifest(root)
        self._index_shards()
        self._envs: dict[str, Any] = {}
        self._txns: dict[str, Any] = {}
        self._pid = os.getpid()

    def _index_shards(self) -> None:
        """Shard names and sizes per kind, computed once (not on every read)."""
        kinds = self.manifest["kinds"]
        self._names = {k: [s["name"] for s in v.get("shards", [])] for k, v in kinds.items()}
        self._sizes = {s["name"]: int(s["bytes"]) for v in kinds.values() for s in v.get("shards", [])}

    # pickling for spawn-started workers: ship the path and manifest, never open handles
    def __getstate__(self) -> dict:
        return {"root": self.root, "manifest": self.manifest, "check_crc": self.check_crc}

    def __setstate__(self, state: dict) -> None:
        self.root = state["root"]
        self.manifest = state["manifest"]
        self.check_crc = state.get("check_crc", True)
        self._index_shards()
        self._envs, self._txns, self._pid = {}, {}, os.getpid()

    def num_shards(self, kind: str) -> int:
        return len(self._names.get(kind, ()))

    def count(self, kind: str, subtype: str | None = None) -> int:
        info = self.manifest["kinds"].get(kind, {})
        return int(info.get("records", 0) if subtype is None else info.get("counts", {}).get(subtype, 0))

    def shard_names(self, kind: str) -> list[str]:
        return list(self._names.get(kind, ()))

    def _txn(self, name: str):
        """The shard's read transaction; its values are zero-copy views of the mapped file (``buffers``)."""
        if self._pid != os.getpid():  # forked: handles of the parent must not be used here
            self._envs, self._txns, self._pid = {}, {}, os.getpid()
        txn = self._txns.get(name)
        if txn is None:
            path = os.path.join(self.root, name)
            check_shard_size(path, self._sizes[name])
            env = acquire_shard(path)
            self._envs[name] = path
            txn = self._txns[name] = env.begin(buffers=True)
        return txn

    def _shard_for(self, key: str) -> str:
        kind, _, rest = key.partition("/")
        names = self._names.get(kind)
        if not names:
            raise KeyError(f"this corpus has no {kind} records (key {key!r})")
        if (len(rest) == 12 or len(rest) > 12 and rest[12] == "/") and rest[:12].isdigit():
            # a canonical key (zero-padded id): its shard group is its first two parts, as stable_shard says
            return names[zlib.crc32(key[: len(kind) + 13].encode("ascii")) % len(names)]
        return names[stable_shard(key, len(names))]

    def _view(self, key: str) -> memoryview:
        name = self._shard_for(key)
        txn = self._txns.get(name) if self._pid == os.getpid() else None
        value = (txn or self._txn(name)).get(key.encode("ascii"))
        if value is None:
            raise KeyError(key)
        return value

    def get_raw(self, key: str) -> bytes:
        return bytes(self._view(key))

    def get(self, key: str) -> Record:
        """The record of ``key``, decoded from a private copy of its bytes (it outlives the reader)."""
        return self._decode(key, self.get_raw(key))

    def get_arrays(self, key: str, names: Collection[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Scalar fields and the named arrays of ``key`` as read-only views of the mapped shard, with no copy:
        valid until this reader is closed, so copy what you keep (the trainer's reading path)."""
        try:
            return decode_arrays(self._view(key), names, check_crc=self.check_crc)
        except RecordError as err:
            raise self._located(key, err) from None

    def _decode(self, key: str, value: bytes) -> Record:
        try:
            return decode(value, check_crc=self.check_crc, validate=False)
        except RecordError as err:
            raise self._located(key, err) from None

    def _located(self, key: str, err: RecordError) -> RecordError:
        shard = os.path.join(self.root, self._shard_for(key))
        return RecordError(f"{shard}: record {key}: {err}; run `ssrp corpus verify {self.root}`")

    def __contains__(self, key: str) -> bool:
        try:
            self.get_raw(key)
        except KeyError:
            return False
        return True

    def image(self, image_id: int, view: str = "raw") -> ImageRecord:
        return self.get(image_key(image_id, view))  # type: ignore[return-value]

    def text(self, caption_id: int, variant: str = "raw") -> TextRecord:
        return self.get(text_key(caption_id, variant))  # type: ignore[return-value]

    def index(self, image_id: int) -> IndexRecord:
        return self.get(index_key(image_id))  # type: ignore[return-value]

    def keys(self, kind: str) -> Iterator[str]:
        """Every key of a kind, shard by shard, in key order within each shard."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        for name in self.shard_names(kind):
            for key in self._txn(name).cursor().iternext(keys=True, values=False):
                yield bytes(key).decode("ascii")

    def items(self, kind: str) -> Iterator[tuple[str, Record]]:
        for name in self.shard_names(kind):
            for raw_key, value in self._txn(name).cursor():
                key = bytes(raw_key).decode("ascii")
                yield key, self._decode(key, bytes(value))

    def image_ids(self) -> list[int]:
        return sorted(parse_key(k)[1] for k in self.keys(INDEX))

    def views(self) -> list[str]:
        return sorted(self.manifest["kinds"].get(IMAGE, {}).get("counts", {}))

    def variants(self) -> list[str]:
        return sorted(self.manifest["kinds"].get(TEXT, {}).get("counts", {}))

    def close(self) -> None:
        if self._pid == os.getpid():
            for txn in self._txns.values():
                txn.abort()
            for path in self._envs.values():
                release_shard(path)
        self._envs, self._txns = {}, {}

    def __enter__(self) -> CorpusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CorpusReader", "CorpusError", "load_manifest", "IMAGE", "TEXT", "INDEX"]
