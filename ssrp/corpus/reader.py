"""Reading a corpus: lazy, read-only, lock-free; safe in DataLoader workers and DDP ranks.

Start-up reads only ``manifest.json``. Shard files are opened on first use in each process
(the reader notices a fork by its pid and reopens), so a reader built in the parent can be
handed to workers. Memory does not grow with the corpus: LMDB maps the files and the OS page
cache is shared between every process reading them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from ssrp.corpus.records import (
    FORMAT_VERSION,
    IMAGE,
    INDEX,
    KINDS,
    TEXT,
    ImageRecord,
    IndexRecord,
    Record,
    TextRecord,
    decode,
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
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CorpusError(
            f"{path}: corpus format version {manifest.get('format_version')}, this ssrp reads version {FORMAT_VERSION}"
        )
    return manifest


class CorpusReader:
    def __init__(self, root: str):
        self.root = root
        self.manifest = load_manifest(root)
        self._envs: dict[str, Any] = {}
        self._txns: dict[str, Any] = {}
        self._pid = os.getpid()

    # pickling for spawn-started workers: ship the path and manifest, never open handles
    def __getstate__(self) -> dict:
        return {"root": self.root, "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.root = state["root"]
        self.manifest = state["manifest"]
        self._envs, self._txns, self._pid = {}, {}, os.getpid()

    def num_shards(self, kind: str) -> int:
        return int(self.manifest["kinds"].get(kind, {}).get("num_shards", 0))

    def count(self, kind: str, subtype: str | None = None) -> int:
        info = self.manifest["kinds"].get(kind, {})
        return int(info.get("records", 0) if subtype is None else info.get("counts", {}).get(subtype, 0))

    def shard_names(self, kind: str) -> list[str]:
        return [s["name"] for s in self.manifest["kinds"].get(kind, {}).get("shards", [])]

    def _txn(self, name: str):
        if self._pid != os.getpid():  # forked: handles of the parent must not be used here
            self._envs, self._txns, self._pid = {}, {}, os.getpid()
        txn = self._txns.get(name)
        if txn is None:
            path = os.path.join(self.root, name)
            if not os.path.exists(path):
                raise CorpusError(f"{path}: shard listed in the manifest is missing")
            env = acquire_shard(path)
            self._envs[name] = path
            txn = self._txns[name] = env.begin(buffers=False)
        return txn

    def _shard_for(self, key: str) -> str:
        kind = parse_key(key)[0]
        n = self.num_shards(kind)
        if n == 0:
            raise KeyError(f"this corpus has no {kind} records (key {key!r})")
        return self.shard_names(kind)[stable_shard(key, n)]

    def get_raw(self, key: str) -> bytes:
        value = self._txn(self._shard_for(key)).get(key.encode("ascii"))
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str) -> Record:
        return decode(self.get_raw(key))

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
            for key, value in self._txn(name).cursor():
                yield bytes(key).decode("ascii"), decode(value)

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
