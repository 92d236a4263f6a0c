"""Features of given boxes: the detector's res5 features and class/attribute scores for boxes a user supplies.

The request BUTD users make most often (ground-truth or another detector's boxes): no proposals and no
selection. Each image goes through the same trunk as extraction (Caffe preprocessing, res4), then every given
box, scaled like a proposal (``box * im_scale``), is RoI-pooled (14x14 max), run through res5 and averaged
over 7x7 (the 2048-d feature of ``extract``), then classified: object ids/confidences are the argmax/max over
the foreground classes, attributes those of the attribute head given the box's class logits, exactly as for
detected regions (``ssrp.features.stage.region_labels``). Boxes keep the order given.

The boxes file is JSON: ``{"IMAGE": [[x1, y1, x2, y2], ...], ...}``, with IMAGE a path relative to the images
folder (or absolute) and boxes in that image's pixels (after EXIF rotation, as decoded).

    records = given_box_records("images/", read_boxes("boxes.json"), FeaturesConfig(models_dir="models"))
    write(records, "npz", "out/")          # ssrp.features.export
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ssrp.corpus import ImageRecord
from ssrp.deadletter import RecordFailure
from ssrp.features.config import FeaturesConfig
from ssrp.features.engine import BUTDEngine, Prepared, RoIJob
from ssrp.features.image import decode_image
from ssrp.features.stage import make_record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoxedImage:
    """One image of the boxes file and its boxes (float32 [K, 4], x1 y1 x2 y2 in the image's pixels)."""

    key: str  # the image's name in the boxes file
    path: str
    image_id: int
    boxes: np.ndarray


def read_boxes(path: str, images_dir: str = "") -> list[BoxedImage]:
    """Parse and check a boxes file (shape and numbers; each box against its image's size at extraction)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"--boxes {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--boxes {path}: not a JSON file ({err})") from None
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"--boxes {path}: expected a non-empty JSON object {{\"image file\": [[x1, y1, x2, y2], ...]}}")
    out = []
    for index, (key, boxes) in enumerate(data.items()):
        out.append(BoxedImage(key, os.path.join(images_dir, key), image_id_of(key, index), _box_array(boxes, path, key)))
    ids = [b.image_id for b in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"--boxes {path}: two images have the same id (ids come from numeric file names)")
    return out


def image_id_of(name: str, index: int) -> int:
    """The id of an image file: its numeric stem (``000000000009.jpg``), the digits after the last ``_``
    (``COCO_train2014_000000000009.jpg``), else its position in the boxes file."""
    stem = os.path.splitext(os.path.basename(name))[0]
    m = re.fullmatch(r"(?:.*_)?(\d+)", stem)
    return int(m.group(1)) if m else index


def _box_array(boxes, path: str, key: str) -> np.ndarray:
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"--boxes {path}: {key}: boxes must be numbers [[x1, y1, x2, y2], ...]") from None
    if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
        raise ValueError(f"--boxes {path}: {key}: expected a non-empty list of [x1, y1, x2, y2], got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr).all(1) | (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))
    if len(bad):
        raise ValueError(f"--boxes {path}: {key}: box {int(bad[0])} {arr[bad[0]].tolist()} is not a box "
                         "(need finite x1 <= x2, y1 <= y2)")
    return arr.astype(np.float32)


def check_inside(item: BoxedImage, width: int, height: int) -> None:
    """ValueError naming the first box that leaves the image."""
    b = item.boxes
    outside = np.flatnonzero((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height))
    if len(outside):
        k = int(outside[0])
        raise ValueError(f"{item.key}: box {k} {b[k].tolist()} is not inside the {width}x{height} image")


def features_of_boxes(engine: BUTDEngine, prepared: Sequence[Prepared], boxes: Sequence[np.ndarray]
                      ) -> list[ImageRecord]:
    """Records of the given boxes of prepared images (one trunk pass per size group, all RoIs pooled together)."""
    maps, _ = engine.feature_maps(prepared)
    device = engine.device
    jobs = [RoIJob(m, torch.as_tensor(b, device=device) * p.scale) for m, p, b in zip(maps, prepared, boxes,
                                                                                         strict=True)]
    feats = [f[0] for f in engine.roi_features(jobs)]
    logits, probs = engine.classify(torch.cat(feats))
    attrs = engine.attributes(torch.cat(feats), logits)
    sizes = [len(b) for b in boxes]
    records = []
    for p, b, f, cp, ap in zip(prepared, boxes, feats, probs.split(sizes), attrs.split(sizes), strict=True):
        params = {"im_scale": float(p.scale), "given_boxes": len(b)}
        records.append(make_record(p.image, "raw", torch.as_tensor(b), f, cp, ap, params))
    return records


def given_box_records(items: Sequence[BoxedImage], cfg: FeaturesConfig, batch_size: int = 8,
                      engine: BUTDEngine | None = None, progress: bool = True) -> Iterator[ImageRecord]:
    """ImageRecords (view ``raw``) of every image of ``items`` with the given boxes, in order."""
    from tqdm import tqdm

    engine = engine or BUTDEngine.load(cfg)
    with tqdm(total=len(items), desc="features of given boxes", unit="img", disable=not progress) as bar:
        for start in range(0, len(items), max(1, batch_size)):
            chunk = items[start : start + batch_size]
            prepared = [_prepare(engine, item, cfg) for item in chunk]
            yield from features_of_boxes(engine, prepared, [item.boxes for item in chunk])
            bar.update(len(chunk))


def _prepare(engine: BUTDEngine, item: BoxedImage, cfg: FeaturesConfig) -> Prepared:
    """The image decoded, its boxes checked against its size, and its Caffe blob; errors name the image."""
    try:
        with open(item.path, "rb") as fh:
            image = decode_image(item.image_id, fh.read(), os.path.basename(item.path), cfg.decode)
        check_inside(item, image.width, image.height)
        return engine.prepare(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"{item.path}: image of the boxes file not found (key {item.key!r})") from None
    except RecordFailure as failure:
        raise ValueError(f"{item.path}: {failure}") from None
