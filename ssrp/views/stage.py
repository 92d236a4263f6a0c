"""The 14 visual views of SSRP (paper Table 2) from two backbone passes per image.

Views of an image (names as written to the corpus, ``image/{id}/{view}``):

    raw        the BUTD regions of the image (identical to the features stage's record)
    roi_hflip  the raw regions, each pooled 14x14 grid mirrored left-right before res5
    rot90      ... each grid rotated 90 degrees counter-clockwise (np.rot90) before res5
    rot180     ... 180 degrees
    rot270     ... 270 degrees counter-clockwise
    jitter0    each raw box scaled about its centre by factors drawn from [0.8, 1.2], clipped to the
    jitter1    image, and re-pooled from the same res4 map (two independent draws)
    hflip      the image mirrored left-right: the raw boxes mirrored into it (region order kept),
               pooled from the flipped image's own res4 map
    hflip_roi_hflip, hflip_rot90, hflip_rot180, hflip_rot270, hflip_jitter0, hflip_jitter1
               the six RoI-level views above, applied to the hflip view's regions

Region k is the same object in all 14 views: every view derives its box k from raw box k. Each view's
labels (objects, attributes) come from its own features. Jitter factors come from a generator seeded
by (seed, image id, view name) and are stored in ``view_params["scale"]`` ([sx, sy] per region), so a
rerun writes identical records. The trunk runs once on the image and once on its mirror; the RoI
variants of every image in the batch go through res5 together, in chunks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssrp.corpus import ImageRecord
from ssrp.deadletter import DeadLetter, RecordFailure
from ssrp.features.engine import RoIJob
from ssrp.features.image import DecodedImage
from ssrp.features.stage import Extractor, image_group_key, make_record
from ssrp.views.config import HFLIP_PREFIX, ROI_VIEWS, STAGE, ViewsConfig

logger = logging.getLogger(__name__)

GRID_OP = {"roi_hflip": "hflip", "rot90": "rot90", "rot180": "rot180", "rot270": "rot270"}


def stable_seed(seed: int, image_id: int, view: str) -> int:
    digest = hashlib.sha256(f"{seed}/{image_id}/{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def jitter_factors(cfg: ViewsConfig, image_id: int, view: str, n: int) -> np.ndarray:
    """[n, 2] float64 (sx, sy) per region, from a generator seeded by (seed, image id, view)."""
    rng = np.random.Generator(np.random.PCG64(stable_seed(cfg.seed, image_id, view)))
    lo, hi = cfg.jitter_range
    draws = rng.uniform(lo, hi, size=(n, 1 if cfg.jitter_isotropic else 2))
    return np.repeat(draws, 2, axis=1) if cfg.jitter_isotropic else draws


def jitter_boxes(boxes: np.ndarray, factors: np.ndarray, width: int, height: int, plus_one: bool = True) -> np.ndarray:
    """Scale each box about its centre (x2 - x1 by sx, y2 - y1 by sy), then clip to the image."""
    b = np.asarray(boxes, dtype=np.float64)
    cx, cy = (b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0
    hw = (b[:, 2] - b[:, 0]) * factors[:, 0] / 2.0
    hh = (b[:, 3] - b[:, 1]) * factors[:, 1] / 2.0
    off = 1.0 if plus_one else 0.0
    out = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
    out[:, 0::2] = out[:, 0::2].clip(0.0, width - off)
    out[:, 1::2] = out[:, 1::2].clip(0.0, height - off)
    return out.astype(np.float32)


def mirror_boxes(boxes: np.ndarray, width: int, plus_one: bool = True) -> np.ndarray:
    """Boxes in the left-right mirrored image: x -> W - 1 - x (Caffe pixel-index boxes), x1/x2 swapped."""
    b = np.asarray(boxes, dtype=np.float32)
    edge = np.float32(width - (1 if plus_one else 0))
    return np.stack([edge - b[:, 2], b[:, 1], edge - b[:, 0], b[:, 3]], axis=1).astype(np.float32)


@dataclass
class _Plan:
    """One image's views: for each view, its boxes (original pixels), RoI job and params."""

    image: Any
    raw: Any  # Detection
    items: list[tuple[str, np.ndarray, int, int, dict]] = field(default_factory=list)  # view, boxes, job, op, params


class ViewAugmenter:
    """Stage: load(), then __call__(decoded images) -> one list of ImageRecord (cfg.views order) or DeadLetter."""

    stage = STAGE

    def __init__(self, cfg: ViewsConfig):
        self.cfg = cfg
        self._extractor = Extractor(cfg.features)

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "_extractor": Extractor(self.cfg.features)}

    @property
    def model_identity(self) -> dict:
        return self._extractor.model_identity

    def load(self) -> ViewAugmenter:
        self._extractor.load()
        return self

    def __call__(self, batch: Sequence[Any]) -> list[list[ImageRecord] | DeadLetter]:

        images = [b for b in batch if isinstance(b, DecodedImage)]
        need_flip = any(v.startswith("hflip") for v in self.cfg.views)
        engine = self._extractor.engine
        detections, flip_prep, flip_maps = engine.detect(images, images if need_flip else ())
        jobs: list = []
        plans: dict[int, _Plan | RecordFailure] = {}
        for k, (img, det) in enumerate(zip(images, detections, strict=True)):
            if isinstance(det, RecordFailure):
                plans[id(img)] = det
                continue
            fmap = flip_maps[k] if need_flip else None
            if need_flip and fmap is None:
                plans[id(img)] = flip_prep[k] if isinstance(flip_prep[k], RecordFailure) else RecordFailure(
                    "flip_failed", f"{img.file_name}: the mirrored image could not be prepared")
                continue
            plans[id(img)] = self._plan(img, det, fmap, jobs)
        feats = engine.roi_features(jobs) if jobs else []
        out: list[list[ImageRecord] | DeadLetter] = []
        for item in batch:
            if isinstance(item, DeadLetter):
                out.append(item)
                continue
            plan = plans[id(item)]
            if isinstance(plan, RecordFailure):
                out.append(DeadLetter.from_failure(image_group_key(item.image_id), STAGE, plan))
            else:
                out.append(self._records(plan, feats))
        return out

    # -- planning the RoI jobs of one image ----------------------------------------------------

    def _plan(self, image, det, flip_map, jobs: list) -> _Plan:

        views = self.cfg.views
        plus_one = self.cfg.features.rpn.legacy_plus_one
        scale = det.prepared.scale
        raw_boxes = det.boxes[det.keep].cpu().numpy().astype(np.float32)
        plan = _Plan(image, det)
        sides = [("", det.feature_map, raw_boxes, det.proposals[det.keep])]
        if flip_map is not None:
            mirrored = mirror_boxes(raw_boxes, image.width, plus_one)
            sides.append((HFLIP_PREFIX, flip_map, mirrored, None))
        for prefix, fmap, boxes, pooled_at in sides:
            pool_boxes = pooled_at if pooled_at is not None else _to_tensor(boxes * scale, fmap)
            ops = [GRID_OP[v] for v in ROI_VIEWS if prefix + v in views and v in GRID_OP]
            if prefix and prefix.rstrip("_") in views:
                ops = ["none", *ops]
            if ops:
                jobs.append(RoIJob(fmap, pool_boxes, tuple(ops)))
                for o, op in enumerate(ops):
                    name = _view_name(prefix, op)
                    plan.items.append((name, boxes, len(jobs) - 1, o, _grid_params(prefix, op)))
            for v in ("jitter0", "jitter1"):
                if prefix + v not in views:
                    continue
                factors = jitter_factors(self.cfg, image.image_id, prefix + v, boxes.shape[0])
                jittered = jitter_boxes(boxes, factors, image.width, image.height, plus_one)
                jobs.append(RoIJob(fmap, _to_tensor(jittered * scale, fmap), ("none",)))
                params = {"image_hflip": bool(prefix), "scale": [[float(a), float(b)] for a, b in factors]}
                plan.items.append((prefix + v, jittered, len(jobs) - 1, 0, params))
        return plan

    # -- records ---------------------------------------------------------------------------------

    def _records(self, plan: _Plan, feats: list) -> list[ImageRecord]:
        import torch

        engine = self._extractor.engine
        by_view: dict[str, ImageRecord] = {}
        if "raw" in self.cfg.views:
            by_view["raw"] = self._extractor.raw_record(plan.raw)
        if plan.items:
            view_feats = [feats[job][op] for _, _, job, op, _ in plan.items]
            allf = torch.cat(view_feats)
            logits, probs = engine.classify(allf)
            attrs = engine.attributes(allf, logits)
            start = 0
            for (view, boxes, _, _, params), f in zip(plan.items, view_feats, strict=True):
                end = start + f.shape[0]
                by_view[view] = make_record(plan.image, view, torch.from_numpy(boxes), f, probs[start:end],
                                            attrs[start:end], params)
                start = end
        return [by_view[v] for v in self.cfg.views]


def _view_name(prefix: str, op: str) -> str:
    if op == "none":
        return prefix.rstrip("_")  # the hflip view itself
    return prefix + ("roi_hflip" if op == "hflip" else op)


def _grid_params(prefix: str, op: str) -> dict:
    params: dict[str, Any] = {"image_hflip": bool(prefix)}
    if op != "none":
        params["grid_op"] = op
    return params


def _to_tensor(boxes: np.ndarray, like):
    import torch

    return torch.as_tensor(np.ascontiguousarray(boxes, dtype=np.float32), device=like.device)
