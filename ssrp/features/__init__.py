"""Bottom-up-attention (BUTD) region features: a faithful and fast Faster R-CNN RoI extractor.

Public API (docs/features.md):

* ``decode_image(image_id, data, file_name) -> DecodedImage`` (raises RecordFailure on bad input);
* ``Extractor(FeaturesConfig)``: the stage object (load(), __call__(decoded) -> ImageRecord | DeadLetter);
* ``extract(images, cfg)``: the same in one call;
* ``FeaturesConfig`` and its parts, ``DetectorArch``;
* ``load_detector``, ``convert_checkpoint``, ``build_tiny``; exporters in ``ssrp.features.export``.

Importing this package imports neither torch nor Pillow; the names load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DecodedImage": "ssrp.features.image",
    "decode_image": "ssrp.features.image",
    "Extractor": "ssrp.features.stage",
    "extract": "ssrp.features.stage",
    "FeaturesConfig": "ssrp.features.config",
    "DetectorArch": "ssrp.features.config",
    "PreprocessConfig": "ssrp.features.config",
    "RPNConfig": "ssrp.features.config",
    "RoIConfig": "ssrp.features.config",
    "SelectConfig": "ssrp.features.config",
    "DecodeConfig": "ssrp.features.config",
    "BUTDEngine": "ssrp.features.engine",
    "load_detector": "ssrp.features.models",
    "convert_checkpoint": "ssrp.features.convert",
    "build_tiny": "ssrp.features.tiny",
    "SOURCE": "ssrp.features.models",
    "select_batch": "ssrp.features.select",
    "select_loop": "ssrp.features.select",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ssrp.features' has no attribute {name!r}")
