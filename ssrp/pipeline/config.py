"""The build config: what a corpus build reads, which stages it runs, where it writes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ssrp.pipeline.coco import SPLITS

STAGES = ("features", "views", "translate", "parse")

# make targets -> the stages their corpus holds (each builds a complete corpus from raw COCO)
PRESETS: dict[str, tuple[str, ...]] = {
    "features": ("features",),  # raw view, raw captions (unparsed)
    "augment": ("features", "views", "translate"),  # 14 views, 3 variants per caption (unparsed)
    "parse": ("features", "parse"),  # raw view, raw captions parsed
    "corpus": STAGES,  # everything: the SSRP pretraining corpus
}

RUNNERS = ("local", "direct", "dataflow", "flink", "spark", "portable")

# Bytes per record, for choosing shard counts: 36 x 2048 fp16 features plus boxes and labels.
_IMAGE_RECORD_BYTES = 36 * 2048 * 2 + 36 * 24 + 512
_TEXT_RECORD_BYTES = 2 * 1024
_TARGET_SHARD_BYTES = 256 << 20


@dataclass(frozen=True)
class BuildConfig:
    coco: str  # MSCOCO 2017 root (local path or gs://, s3://)
    out: str  # corpus directory (local path or gs://, s3://)
    models: str  # models directory (what `ssrp models fetch` or `ssrp models tiny` wrote)
    split: str = "trainval"  # the paper: train + val, 118k images, 591k captions
    stages: tuple[str, ...] = STAGES
    max_images: int | None = None  # the first N images by id (debugging); None: all
    num_shards: dict[str, int] = field(default_factory=dict)  # per kind; missing kinds chosen from the size
    image_batch: int = 8  # images per extractor call
    caption_batch: int = 256  # captions per translation / parse call
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    # per-stage settings, passed to that stage's config class (see docs/pipeline.md)
    features: dict[str, Any] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)
    translate: dict[str, Any] = field(default_factory=dict)
    parse: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        unknown = set(self.stages) - set(STAGES)
        if unknown or "features" not in self.stages:
            raise ValueError(f"stages must include 'features' and come from {STAGES}, got {self.stages}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be positive, got {self.max_images}")
        if self.image_batch < 1 or self.caption_batch < 1:
            raise ValueError("image_batch and caption_batch must be positive")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for kind, n in self.num_shards.items():
            if kind not in ("image", "text", "index") or not isinstance(n, int) or n < 1:
                raise ValueError(f"num_shards: {kind}={n!r}; kinds are image, text, index with positive counts")

    def has(self, stage: str) -> bool:
        return stage in self.stages


def shard_counts(cfg: BuildConfig, n_images: int, n_captions: int, views_per_image: int) -> dict[str, int]:
    """Shard counts from the input size (about 256 MB a shard), unless the config fixes them."""
    variants = 3 if cfg.has("translate") else 1
    auto = {
        "image": max(1, math.ceil(n_images * views_per_image * _IMAGE_RECORD_BYTES / _TARGET_SHARD_BYTES)),
        "text": max(1, math.ceil(n_captions * variants * _TEXT_RECORD_BYTES / _TARGET_SHARD_BYTES)),
        "index": 1,
    }
    auto.update(cfg.num_shards)
    return auto
