"""The batched BUTD computation, in steps the extractor and the view augmenter share.

    prepare       decoded image -> Caffe blob (device), scale
    feature_maps  blobs grouped by resized size -> trunk (+ channels_last, autocast) -> res4 per image
    proposals     RPN head per size group, decoding/NMS per image in fp32
    roi_features  RoI jobs of *all* images in flight -> roi_pool -> optional grid transform ->
                  res5 in chunks of ``roi.chunk`` RoIs -> mean over 14x14 (fp32)
    classify      fp32 class logits and softmax; attributes for chosen regions only
    detect        all of the above + the Caffe selection: one Detection per image

Results do not depend on how images are batched: the trunk runs images of one size together,
RoI chunks are split by count only, and on CPU the convolutions compute each sample alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import roi_pool

from ssrp.deadletter import RecordFailure
from ssrp.devices import resolve_device
from ssrp.features.config import FeaturesConfig
from ssrp.features.image import DecodedImage
from ssrp.features.models import LoadedDetector, load_detector
from ssrp.features.preprocess import image_blob
from ssrp.features.proposals import image_proposals
from ssrp.features.select import Selection, select_batch, select_loop

logger = logging.getLogger(__name__)

GRID_OPS = ("none", "hflip", "rot90", "rot180", "rot270")


def transform_grid(grid: torch.Tensor, op: str) -> torch.Tensor:
    """RoI-level transforms on pooled grids [K, C, S, S]: horizontal flip, rotations counter-clockwise."""
    if op == "none":
        return grid
    if op == "hflip":
        return torch.flip(grid, dims=(3,))
    if op in ("rot90", "rot180", "rot270"):
        return torch.rot90(grid, k=int(op[3:]) // 90, dims=(2, 3))
    raise ValueError(f"unknown grid op {op!r}; known: {GRID_OPS}")


@dataclass
class Prepared:
    image: DecodedImage
    blob: torch.Tensor  # float32 [3, h, w] on the device
    scale: float
    flipped: bool = False

    @property
    def resized_hw(self) -> tuple[int, int]:
        return int(self.blob.shape[1]), int(self.blob.shape[2])


@dataclass
class RoIJob:
    """RoIs to pool from one feature map, each through one or more grid ops."""

    feature_map: torch.Tensor  # [C, h, w]
    boxes: torch.Tensor  # float32 [K, 4], resized-image pixels
    ops: tuple[str, ...] = ("none",)


@dataclass
class Detection:
    """One image through the detector: what the extractor writes and the augmenter reuses."""

    prepared: Prepared
    feature_map: torch.Tensor  # res4 [C, h, w]
    proposals: torch.Tensor  # [R, 4] resized-image pixels
    features: torch.Tensor  # float32 [R, D]
    class_logits: torch.Tensor  # float32 [R, C]
    class_probs: torch.Tensor  # float32 [R, C]
    selection: Selection

    @property
    def boxes(self) -> torch.Tensor:
        """Proposals in original-image pixels (Caffe: rois / im_scale)."""
        return self.proposals / self.prepared.scale

    @property
    def keep(self) -> torch.Tensor:
        return self.selection.keep


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if device.type != "cuda" and precision in ("fp16", "tf32"):
        raise ValueError(f"precision {precision!r} needs a CUDA device; on CPU use fp32 or bf16")
    return precision


class BUTDEngine:
    """A loaded detector on a device with its precision; the steps of a batched extraction."""

    def __init__(self, cfg: FeaturesConfig, loaded: LoadedDetector, device: torch.device):
        self.cfg = cfg
        self.loaded = loaded
        self.model = loaded.model
        self.device = device
        self.precision = resolve_precision(cfg.precision, device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        if cfg.fold_bn:
            self.model.fold_batchnorm()
        self.model.to(device=device, memory_format=self.memory_format)
        self.stride = loaded.arch.feat_stride
        self.trunk_batch = cfg.trunk_batch or (8 if device.type == "cuda" else 1)

    @classmethod
    def load(cls, cfg: FeaturesConfig) -> BUTDEngine:
        if not cfg.models_dir:
            raise ValueError("FeaturesConfig.models_dir is empty: point it at the directory holding detector/")
        device = resolve_device(cfg.device)
        loaded = load_detector(cfg.models_dir, device=device, verify=cfg.verify_weights)
        engine = cls(cfg, loaded, device)
        logger.info("detector %s on %s (%s)", loaded.manifest.get("name"), device, engine.precision)
        return engine

    # -- precision ------------------------------------------------------------------------------

    def conv_context(self):
        """Autocast for the convolutions; cuDNN TF32 only when asked (scoped, restored after)."""
        stack = contextlib.ExitStack()
        if self.device.type == "cuda":
            stack.enter_context(torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False,
                                                           allow_tf32=self.precision == "tf32"))
        if self.precision in ("fp16", "bf16"):
            dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
            stack.enter_context(torch.autocast(self.device.type, dtype=dtype))
        return stack

    # -- steps ----------------------------------------------------------------------------------

    def prepare(self, image: DecodedImage, flip: bool = False) -> Prepared:
        pixels = image.pixels[:, ::-1] if flip else image.pixels
        blob, scale = image_blob(pixels.copy() if flip else pixels, self.cfg.preprocess, self.device)
        h, w = blob.shape[1:]
        if min(h, w) < self.stride:
            raise RecordFailure("too_small", f"{image.file_name}: resized to {h}x{w}, under one feature cell")
        return Prepared(image, blob, scale, flip)

    @torch.inference_mode()
    def feature_maps(self, prepared: Sequence[Prepared]) -> tuple[list[torch.Tensor], list[tuple]]:
        """res4 maps and RPN outputs per image; images of one resized size share trunk calls."""
        maps: list[torch.Tensor | None] = [None] * len(prepared)
        rpn: list[tuple | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(p.resized_hw, []).append(i)
        for idxs in groups.values():
            for start in range(0, len(idxs), self.trunk_batch):
                part = idxs[start : start + self.trunk_batch]
                batch = torch.stack([prepared[i].blob for i in part]).contiguous(memory_format=self.memory_format)
                with self.conv_context():
                    res4 = self.model.trunk(batch)
                    logits, deltas = self.model.rpn(res4)
                res4 = res4.contiguous()  # roi_pool reads NCHW: convert once per trunk call, not per RoI job
                for j, i in enumerate(part):
                    maps[i], rpn[i] = res4[j], (logits[j].float(), deltas[j].float())
        return maps, rpn  # type: ignore[return-value]

    @torch.inference_mode()
    def proposals(self, prepared: Prepared, rpn_out: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cell = self.model.proposal_generator.caffe_anchors
        boxes = image_proposals(rpn_out[0], rpn_out[1], cell, prepared.resized_hw, prepared.scale, self.cfg.rpn,
                                self.stride)
        if boxes.shape[0] == 0:
            raise RecordFailure("no_proposals", f"{prepared.image.file_name}: the RPN kept no proposal")
        return boxes

    @torch.inference_mode()
    def roi_features(self, jobs: Sequence[RoIJob]) -> list[list[torch.Tensor]]:
        """float32 features [K_j, D] for every job and op; all RoIs share chunks of ``roi.chunk``."""
        out: list[list[list[torch.Tensor]]] = [[[] for _ in job.ops] for job in jobs]
        pending: list[tuple[int, int, torch.Tensor]] = []  # (job, op index, grids)
        size = 0
        chunk = self.cfg.roi.chunk
        step = max(1, chunk // max(len(job.ops) for job in jobs)) if jobs else 1
        for j, job in enumerate(jobs):
            for start in range(0, job.boxes.shape[0], step):
                pooled = self._pool(job.feature_map, job.boxes[start : start + step])  # once for all ops
                for o, op in enumerate(job.ops):
                    if size + pooled.shape[0] > chunk:
                        self._run_chunk(pending, out)
                        pending, size = [], 0
                    pending.append((j, o, transform_grid(pooled, op)))
                    size += pooled.shape[0]
        if pending:
            self._run_chunk(pending, out)
        dim = self.loaded.arch.feature_dim
        return [[torch.cat(parts) if parts else torch.zeros(0, dim, device=self.device) for parts in job]
                for job in out]

    def _pool(self, feature_map: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes.float()], dim=1)
        res = self.cfg.roi.pooler_resolution
        # roi_pool wants the map in the boxes' float32 (fp16 boxes would round pixels); max-pooling an
        # upcast fp16 map and casting back gives the same values
        pooled = roi_pool(feature_map[None].float(), rois, (res, res), 1.0 / self.stride)
        return pooled.to(feature_map.dtype)

    def _run_chunk(self, pending: list[tuple[int, int, torch.Tensor]], out: list) -> None:
        grids = torch.cat([g for _, _, g in pending]).contiguous(memory_format=self.memory_format)
        with self.conv_context():
            feats = self.model.region_features(grids)
        start = 0
        for j, o, g in pending:
            out[j][o].append(feats[start : start + g.shape[0]])
            start += g.shape[0]

    @torch.inference_mode()
    def classify(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp32 logits, fp32 softmax) over all classes, background at 0."""
        logits = self.model.roi_heads.box_predictor.class_logits(features.float())
        return logits, torch.softmax(logits, dim=1)

    @torch.inference_mode()
    def attributes(self, features: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
        """fp32 attribute softmax (Caffe attr_prob), "no attribute" at 0."""
        logits = self.model.roi_heads.box_predictor.attribute_logits(features.float(), class_logits.float())
        return torch.softmax(logits, dim=1)

    @torch.inference_mode()
    def select(self, boxes: list[torch.Tensor], probs: list[torch.Tensor]) -> list[Selection]:
        s = self.cfg.select
        plus_one = self.cfg.rpn.legacy_plus_one
        if s.method == "loop":
            return [select_loop(b, p, s.nms_thresh, s.conf_thresh, s.min_boxes, s.max_boxes, plus_one)
                    for b, p in zip(boxes, probs, strict=True)]
        return select_batch(boxes, probs, s.nms_thresh, s.conf_thresh, s.min_boxes, s.max_boxes, plus_one)

    # -- all together ---------------------------------------------------------------------------

    def detect(self, images: Sequence[DecodedImage], flipped: Sequence[DecodedImage] = ()
               ) -> tuple[list[Detection | RecordFailure], list[Prepared | RecordFailure], list[torch.Tensor | None]]:
        """Detections of ``images``; ``flipped`` images (if any) only go through the trunk with them.

        Returns (detection or failure per image, prepared flipped image or failure, its res4 map).
        """
        prepared = [self._try(self.prepare, img) for img in images]
        prepared_flip = [self._try(self.prepare, img, True) for img in flipped]
        ok = [p for p in prepared + prepared_flip if isinstance(p, Prepared)]
        maps, rpn_outs = self.feature_maps(ok)
        by_id = {id(p): (m, r) for p, m, r in zip(ok, maps, rpn_outs, strict=True)}
        results: list[Detection | RecordFailure] = []
        jobs, pending = [], []
        for p in prepared:
            if isinstance(p, RecordFailure):
                results.append(p)
                continue
            props = self._try(self.proposals, p, by_id[id(p)][1])
            results.append(props)
            if isinstance(props, torch.Tensor):
                jobs.append(RoIJob(by_id[id(p)][0], props))
                pending.append(len(results) - 1)
        feats = [f[0] for f in self.roi_features(jobs)]
        self._finish(prepared, results, pending, feats, by_id)
        flip_maps = [by_id[id(p)][0] if isinstance(p, Prepared) else None for p in prepared_flip]
        return results, prepared_flip, flip_maps

    def _finish(self, prepared, results, pending, feats, by_id) -> None:
        """Classify every proposal of every image at once, then select per image (batched)."""
        if not pending:
            return
        logits, probs = self.classify(torch.cat(feats))
        sizes = [f.shape[0] for f in feats]
        logit_parts, prob_parts = logits.split(sizes), probs.split(sizes)
        boxes = [results[i] / prepared[i].scale for i in pending]
        selections = self.select(boxes, list(prob_parts))
        for k, i in enumerate(pending):
            p = prepared[i]
            results[i] = Detection(p, by_id[id(p)][0], results[i], feats[k], logit_parts[k], prob_parts[k],
                                   selections[k])

    @staticmethod
    def _try(fn, *args):
        try:
            return fn(*args)
        except RecordFailure as failure:
            return failure
