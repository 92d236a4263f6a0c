"""Progress of a build on any runner: shards counted as their commit markers appear in the output.

Beam's runners report little while they run (Dataflow has its job page; the local runners only their harness
logs), so the driver watches the output itself: a thread polls each pending shard's marker and report and
shows shards committed, images and captions done, and their rates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm

from ssrp.corpus import CorpusWriter, ShardSpec
from ssrp.corpus.writer import marker_name


class ShardProgress:
    """``with ShardProgress(writer, specs):`` shows a bar of committed shards until the block ends."""

    def __init__(self, writer: CorpusWriter, specs: Iterable[ShardSpec], enabled: bool = True,
                 interval: float = 2.0, file: TextIO | None = None):
        self.writer = writer
        self.pending = list(specs)
        self.interval = interval
        self.done = {"images": 0, "captions": 0}
        self.bar = tqdm(total=len(self.pending), unit="shard", desc="shards committed", disable=not enabled, file=file)
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssrp-progress", daemon=True)

    def __enter__(self) -> ShardProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        self.bar.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> int:
        """Count the shards committed since the last poll; returns how many there were."""
        committed = [s for s in self.pending if self.writer.storage.exists(marker_name(s.name))]
        for spec in committed:
            self.pending.remove(spec)
            for kind, part in (self.writer.report(spec) or {}).get("inputs", {}).items():
                self.done[kind] = self.done.get(kind, 0) + part.get("inputs", 0)
        if committed:
            seconds = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix({k: f"{n} ({n / seconds:.1f}/s)" for k, n in self.done.items() if n}, refresh=False)
            self.bar.update(len(committed))
        return len(committed)
