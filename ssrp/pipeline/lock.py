"""One build at a time per output directory, and the scratch left by builds that were killed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ssrp.fileutil import exclusive_lock, remove_stale_scratch

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def build_lock(out: str) -> Iterator[None]:
    """Hold the output's lock for a build (local outputs; a remote one cannot be locked and is logged),
    and remove the scratch folders of earlier builds that were killed."""
    if "://" in out:
        logger.warning("%s is remote and cannot be locked: run one build at a time into it", out)
        yield
        return
    with exclusive_lock(out, "build"):
        removed = remove_stale_scratch()
        if removed:
            logger.info("removed %d scratch folders left in TMPDIR by killed builds", removed)
        yield
