"""Augmentation of the corpus: the visual views (``ssrp.augment.views``).

Exports of the views part (torch is imported on first use only):
``ViewAugmenter``, ``ViewsConfig``, ``ALL_VIEWS``, ``ROI_VIEWS``, ``TABLE2``, ``view_counts``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ViewAugmenter": "ssrp.augment.views",
    "ViewsConfig": "ssrp.augment.views",
    "ALL_VIEWS": "ssrp.augment.views",
    "ROI_VIEWS": "ssrp.augment.views",
    "TABLE2": "ssrp.augment.views",
    "view_counts": "ssrp.augment.views",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssrp.augment' has no attribute {name!r}")
