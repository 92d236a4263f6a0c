"""The build config: what a corpus build reads, which stages it runs, where it writes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ssrp.pipeline.inputs import SOURCES, SPLITS

STAGES = ("features", "views", "translate", "parse")
IMAGE_STAGES = ("features", "views")
CAPTION_STAGES = ("translate", "parse")

# make targets and CLI presets -> the stages their corpus holds (each builds a complete corpus from its input)
PRESETS: dict[str, tuple[str, ...]] = {
    "features": ("features",),  # raw view, raw captions (unparsed)
    "views": ("features", "views"),  # 14 views, raw captions (unparsed)
    "augment": ("features", "views", "translate"),  # 14 views, 3 variants per caption (unparsed)
    "parse": ("features", "parse"),  # raw view, raw captions parsed
    "corpus": STAGES,  # everything: the SSRP pretraining corpus
}

RUNNERS = ("local", "direct", "dask", "dataflow", "flink", "spark", "portable")

# Bytes per record, for choosing shard counts: 36 x 2048 fp16 features plus boxes and labels.
IMAGE_RECORD_BYTES = 36 * 2048 * 2 + 36 * 24 + 512
TEXT_RECORD_BYTES = 2 * 1024
TARGET_SHARD_BYTES = 256 << 20


@dataclass(frozen=True)
class BuildConfig:
    # settings of where and how fast, not of what the corpus holds (ssrp.config.config_identity)
    RUNTIME: ClassVar[frozenset[str]] = frozenset(
        {"out", "models", "image_batch", "caption_batch", "device", "decode_workers", "commit_threads"}
    )

    out: str  # corpus directory (local path or gs://, s3://)
    models: str  # models directory (what `ssrp models fetch` or `ssrp models tiny` wrote)
    source: str = "coco"  # what the input is: coco (an MSCOCO 2017 root) | images (a folder) | corpus (re-process one)
    input: str = ""  # its path (local, or gs:// / s3:// for coco)
    split: str = "train"  # coco: train = the paper's 118,287 images / 591,753 captions; val = held out
    stages: tuple[str, ...] = STAGES
    max_images: int | None = None  # the first N images by id (debugging); None: all
    num_shards: dict[str, int] = field(default_factory=dict)  # per kind; missing kinds chosen from the size
    image_batch: int = 8  # images per image-stage call
    caption_batch: int = 256  # captions per translation / parse call
    decode_workers: int = 2  # local runner: processes reading and decoding images ahead of the detector
    commit_threads: int = 2  # local runner: threads committing finished shards while the next are extracted
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    # per-stage settings, passed to that stage's config class (ssrp.pipeline.settings, docs/pipeline.md)
    features: dict[str, Any] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)
    translate: dict[str, Any] = field(default_factory=dict)
    parse: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES or not self.input:
            raise ValueError(f"give an input: one of {SOURCES} and its path (got {self.source!r}, {self.input!r})")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {self.split!r}")
        unknown = set(self.stages) - set(STAGES)
        if unknown or not self.stages:
            raise ValueError(f"stages must come from {STAGES}, got {self.stages}")
        if self.source == "corpus" and set(self.stages) & set(IMAGE_STAGES):
            raise ValueError("a corpus input keeps its image records: its stages can only be translate and parse")
        if self.source != "corpus" and "features" not in self.stages:
            raise ValueError(f"stages must include 'features' for a {self.source} input, got {self.stages}")
        if self.source == "images" and set(self.stages) & set(CAPTION_STAGES):
            raise ValueError("a folder of images has no captions: drop the translate and parse stages")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be positive, got {self.max_images}")
        if self.image_batch < 1 or self.caption_batch < 1 or self.decode_workers < 0:
            raise ValueError("image_batch and caption_batch must be positive, decode_workers >= 0")
        if self.commit_threads < 1:
            raise ValueError(f"commit_threads must be at least 1, got {self.commit_threads}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for kind, n in self.num_shards.items():
            if kind not in ("image", "text", "index") or not isinstance(n, int) or n < 1:
                raise ValueError(f"num_shards: {kind}={n!r}; kinds are image, text, index with positive counts")

    def has(self, stage: str) -> bool:
        return stage in self.stages


def shard_counts(n_images: int, views_per_image: int, n_captions: int, variants: int,
                 fixed: dict[str, int] | None = None) -> dict[str, int]:
    """Shard counts from the input size (about 256 MB a shard), unless fixed; no text or index kind without
    captions."""
    counts = {"image": max(1, math.ceil(n_images * views_per_image * IMAGE_RECORD_BYTES / TARGET_SHARD_BYTES))}
    if n_captions:
        counts["text"] = max(1, math.ceil(n_captions * variants * TEXT_RECORD_BYTES / TARGET_SHARD_BYTES))
        counts["index"] = 1
    counts.update({k: v for k, v in (fixed or {}).items() if k in counts})
    return counts
