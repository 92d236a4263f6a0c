"""Stages for the Dask tests that leave a trace on disk (the worker processes are other processes): which
process loaded which models, and which process is running a caption batch (so a test can kill it)."""

from __future__ import annotations

import os
import time
import uuid

from fake_stages import FakeStages

from ssrp.pipeline.stages import BuildStages

TRACE_ENV = "SSRP_TEST_DASK_TRACE"  # a folder, set before the cluster's workers start


def _leave(kind: str, *fields) -> None:
    folder = os.environ.get(TRACE_ENV)
    if folder:
        name = "-".join([kind, str(os.getpid()), *map(str, fields), uuid.uuid4().hex[:8]])
        open(os.path.join(folder, name), "w").close()


def traces(folder: str, kind: str) -> list[list[str]]:
    """The fields (pid first) of every trace of ``kind``."""
    return [name.split("-")[1:-1] for name in sorted(os.listdir(folder)) if name.startswith(kind + "-")]


class CountingStages(BuildStages):
    """The real stages, recording every model load with the loading process's pid."""

    def load(self, images: bool = True, captions: bool = True):
        _leave("load", "images" if images else "", "captions" if captions else "")
        return super().load(images=images, captions=captions)


class SlowStages(FakeStages):
    """Fake stages whose caption batches take a while and say which process runs them."""

    def captions(self, batch):
        _leave("captions")
        time.sleep(0.4)
        return super().captions(batch)
