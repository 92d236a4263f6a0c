"""Shared helpers of the features and augment tests (tiny models, small settings, images)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ssrp.features.config import FeaturesConfig, PreprocessConfig, RPNConfig


def small_config(models_dir: str, **overrides) -> FeaturesConfig:
    """The tiny detector at a small input size: fast on 2 CPU cores, every code path the same."""
    cfg = dict(
        models_dir=models_dir,
        device="cpu",
        preprocess=PreprocessConfig(test_scale=160, max_size=240),
        rpn=RPNConfig(pre_nms_topk=600, post_nms_topk=60),
    )
    cfg.update(overrides)
    return FeaturesConfig(**cfg)


def jpeg_bytes(width: int, height: int, seed: int = 0, mode: str = "RGB", fmt: str = "JPEG", **save) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB scene with a few blocks (structured enough for proposals to differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // max(1, width - 1)), (yy * 255 // max(1, height - 1)),
                     ((xx + yy) * 127 // max(1, width + height))], axis=2).astype(np.int32)
    for _ in range(6):
        x0, y0 = rng.integers(0, width - 8), rng.integers(0, height - 8)
        w, h = rng.integers(8, max(9, width // 2)), rng.integers(8, max(9, height // 2))
        base[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    return np.clip(base, 0, 255).astype(np.uint8)
