"""The features stage: decoded images -> one raw-view ImageRecord each (or a DeadLetter).

    ext = Extractor(FeaturesConfig(models_dir="models"))   # cheap, picklable
    ext.load()                                              # loads the detector
    records = ext([decode_image(1, data, "a.jpg"), ...])    # one ImageRecord | DeadLetter per input

``extract(images)`` does the same for paths, bytes, arrays or DecodedImages in one call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ssrp.corpus import ImageRecord, image_key
from ssrp.deadletter import DeadLetter, RecordFailure
from ssrp.features.config import FeaturesConfig
from ssrp.features.engine import BUTDEngine, Detection
from ssrp.features.image import DecodedImage, decode_image, to_rgb_array

logger = logging.getLogger(__name__)

STAGE = "features"


def image_group_key(image_id: int) -> str:
    """The key a dead letter of an image carries: image/{id:012d}."""
    return image_key(image_id, "raw").rsplit("/", 1)[0]


def region_labels(class_probs: torch.Tensor, attr_probs: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Caffe/LXMERT labels: argmax and max over columns 1: of the full softmaxes (0-based vocab ids)."""
    obj_conf, obj_ids = class_probs[:, 1:].max(dim=1)
    attr_conf, attr_ids = attr_probs[:, 1:].max(dim=1)
    return (obj_ids.to(torch.int32).cpu().numpy(), obj_conf.float().cpu().numpy(),
            attr_ids.to(torch.int32).cpu().numpy(), attr_conf.float().cpu().numpy())


def make_record(image: DecodedImage, view: str, boxes: torch.Tensor, features: torch.Tensor,
                class_probs: torch.Tensor, attr_probs: torch.Tensor, view_params: dict[str, Any],
                height: int | None = None, width: int | None = None) -> ImageRecord:
    obj_ids, obj_conf, attr_ids, attr_conf = region_labels(class_probs, attr_probs)
    return ImageRecord(
        image_id=image.image_id,
        view=view,
        height=height or image.height,
        width=width or image.width,
        boxes=boxes.float().cpu().numpy().astype(np.float32),
        features=features.float().cpu().numpy().astype(np.float16),
        obj_ids=obj_ids,
        obj_conf=obj_conf,
        attr_ids=attr_ids,
        attr_conf=attr_conf,
        view_params=view_params,
        file_name=image.file_name,
    )


class Extractor:
    """BUTD features of the raw view: load(), then __call__(decoded images) -> records."""

    stage = STAGE

    def __init__(self, cfg: FeaturesConfig):
        self.cfg = cfg
        self._engine: BUTDEngine | None = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "_engine": None}

    @property
    def engine(self) -> BUTDEngine:
        if self._engine is None:
            raise RuntimeError("Extractor.load() has not been called")
        return self._engine

    @property
    def model_identity(self) -> dict:
        return self.engine.loaded.identity

    def load(self) -> Extractor:
        if self._engine is None:
            self._engine = BUTDEngine.load(self.cfg)
        return self

    def __call__(self, batch: Sequence[DecodedImage | DeadLetter]) -> list[ImageRecord | DeadLetter]:
        images = [b for b in batch if isinstance(b, DecodedImage)]
        detections, _, _ = self.engine.detect(images)
        by_image = dict(zip((id(i) for i in images), detections, strict=True))
        out: list[ImageRecord | DeadLetter] = []
        for item in batch:
            if isinstance(item, DeadLetter):
                out.append(item)
                continue
            det = by_image[id(item)]
            key = image_group_key(item.image_id)
            out.append(DeadLetter.from_failure(key, STAGE, det) if isinstance(det, RecordFailure)
                       else self.raw_record(det))
        return out

    def raw_record(self, det: Detection) -> ImageRecord:
        keep = det.keep
        attr_probs = self.engine.attributes(det.features[keep], det.class_logits[keep])
        params = {
            "im_scale": float(det.prepared.scale),
            "num_proposals": int(det.proposals.shape[0]),
            "max_conf": [float(x) for x in det.selection.max_conf[keep].cpu()],
        }
        return make_record(det.prepared.image, "raw", det.boxes[keep], det.features[keep],
                           det.class_probs[keep], attr_probs, params)


# --------------------------------------------------------------------------------------------
# One-call API.


def as_decoded(item: Any, index: int, cfg: FeaturesConfig) -> DecodedImage:
    """A path, bytes, RGB array, PIL image or DecodedImage -> DecodedImage (id: numeric file stem or index)."""
    if isinstance(item, DecodedImage):
        return item
    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(path, "rb") as fh:
            return decode_image(int(stem) if stem.isdigit() else index, fh.read(), os.path.basename(path), cfg.decode)
    if isinstance(item, (bytes, bytearray)):
        return decode_image(index, bytes(item), f"image-{index}", cfg.decode)
    if isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
            raise ValueError(f"arrays must be uint8 [H, W, 3] RGB, got {item.dtype} {item.shape}")
        return DecodedImage(index, f"array-{index}", np.ascontiguousarray(item))
    if hasattr(item, "convert"):  # a PIL image

        return DecodedImage(index, f"image-{index}", to_rgb_array(item, cfg.decode.alpha_background))
    raise TypeError(f"cannot make an image of {type(item).__name__}")


def extract(images: Iterable[Any], cfg: FeaturesConfig | None = None, *, models_dir: str | None = None,
            batch_size: int = 8, extractor: Extractor | None = None) -> list[ImageRecord | DeadLetter]:
    """Raw-view records of ``images`` (paths, bytes, RGB arrays, PIL images or DecodedImages)."""
    cfg = cfg or FeaturesConfig()
    if models_dir is not None:
        cfg = replace(cfg, models_dir=models_dir)
    ext = (extractor or Extractor(cfg)).load()
    decoded: list[DecodedImage | DeadLetter] = []
    for i, item in enumerate(images):
        try:
            decoded.append(as_decoded(item, i, cfg))
        except RecordFailure as failure:
            decoded.append(DeadLetter.from_failure(image_group_key(i), "decode", failure))
    out: list[ImageRecord | DeadLetter] = []
    for start in range(0, len(decoded), batch_size):
        out += ext(decoded[start : start + batch_size])
    return out
