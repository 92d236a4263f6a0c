"""ssrp: rebuild the SSRP pretraining corpus from raw MSCOCO and train SSRP on it.

``ssrp.load(DIR)`` loads a model released with ``ssrp export hf`` (ssrp.eval.release.load). Importing ssrp
imports nothing heavy; the name loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {"load": "ssrp.eval.release"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssrp' has no attribute {name!r}")
