"""Writing image records into a corpus without Beam, off the hot path.

``SpoolingCorpusWriter`` takes records from the extraction loop, and a background thread encodes
them and appends them to one local spool file per shard (length-prefixed key/value pairs), so
memory stays flat and the GPU loop never waits on encoding. ``close()`` commits each shard through
``ssrp.corpus.CorpusWriter`` (two-phase commit, markers, manifest last) and removes the spools.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ssrp.corpus import CorpusPlan, CorpusWriter, Record, encode, parse_key, stable_shard

logger = logging.getLogger(__name__)

_LEN = struct.Struct("<II")
_STOP = object()


class SpoolingCorpusWriter:
    def __init__(self, root: str, plan: CorpusPlan, max_pending: int = 64):
        self.plan = plan
        self.writer = CorpusWriter(root, plan)
        self.writer.open()
        self._dir = tempfile.mkdtemp(prefix="ssrp-spool-")
        self._files: dict[tuple[str, int], Any] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="ssrp-spool", daemon=True)
        self._thread.start()

    def put(self, records: Sequence[Record]) -> None:
        """Queue records for encoding and spooling (blocks when the writer is far behind)."""
        if self._error is not None:
            raise RuntimeError("the corpus writer thread failed") from self._error
        if records:
            self._queue.put(list(records))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                for record in item:
                    self._append(record.key, encode(record))
            except BaseException as err:  # noqa: BLE001 - handed to the caller in put()/close()
                self._error = err
                return

    def _append(self, key: str, value: bytes) -> None:
        kind = parse_key(key)[0]
        if kind not in self.plan.num_shards:
            raise ValueError(f"record {key} is of kind {kind!r}, which the plan has no shards for")
        shard = (kind, stable_shard(key, self.plan.num_shards[kind]))
        fh = self._files.get(shard)
        if fh is None:
            fh = self._files[shard] = open(os.path.join(self._dir, f"{kind}-{shard[1]}.spool"), "wb")
        raw_key = key.encode("ascii")
        fh.write(_LEN.pack(len(raw_key), len(value)))
        fh.write(raw_key)
        fh.write(value)
        self.records += 1

    def close(self, extra: Mapping[str, Any] | None = None) -> dict:
        """Finish spooling, commit every shard (empty ones too), write the manifest."""
        self._queue.put(_STOP)
        self._thread.join()
        try:
            if self._error is not None:
                raise RuntimeError("the corpus writer thread failed") from self._error
            for fh in self._files.values():
                fh.close()
            for spec in self.plan.specs():
                if self.writer.committed(spec) is None:
                    self.writer.commit_shard(spec, self._read_spool(spec.kind, spec.shard_id))
            return self.writer.finalize(extra)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def abort(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        for fh in self._files.values():
            fh.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _read_spool(self, kind: str, shard_id: int) -> Iterator[tuple[str, bytes]]:
        path = os.path.join(self._dir, f"{kind}-{shard_id}.spool")
        if not os.path.exists(path):
            return
        with open(path, "rb") as fh:
            while head := fh.read(_LEN.size):
                klen, vlen = _LEN.unpack(head)
                yield fh.read(klen).decode("ascii"), fh.read(vlen)
