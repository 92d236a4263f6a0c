"""RPN proposals exactly as Caffe's ``lib/rpn/proposal_layer.py`` (test phase) computes them.

Caffe: anchors from ``generate_anchors(base 16, ratios (0.5, 1, 2), scales (4, 8, 16, 32))`` --
ratio-major, centred on (7.5, 7.5), widths with the +1 convention -- shifted by k*16 over the res4
grid in (h, w, a) order; deltas decoded with ``bbox_transform_inv`` (+1 widths, no clamp on dw/dh);
boxes clipped to [0, W-1] x [0, H-1] of the resized image; boxes with a side under 16 * im_scale
dropped; sorted by objectness; top 6000; NMS 0.7 with +1 IoU; top 300.

With ``legacy_plus_one=False`` every +1 disappears (detectron2 semantics); everything else is the same.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms

from ssrp.features.config import RPNConfig


def caffe_anchor_table(base_size: int = 16, ratios=(0.5, 1.0, 2.0), scales=(4.0, 8.0, 16.0, 32.0)) -> np.ndarray:
    """The cell anchors [len(ratios) * len(scales), 4] of Caffe ``generate_anchors``, ratio-major."""
    w = h = float(base_size)
    x_ctr, y_ctr = 0.5 * (w - 1), 0.5 * (h - 1)
    rows = []
    for ratio in ratios:
        ws = np.round(np.sqrt(w * h / ratio))
        hs = np.round(ws * ratio)
        for scale in scales:
            sw, sh = ws * scale, hs * scale
            rows.append([x_ctr - 0.5 * (sw - 1), y_ctr - 0.5 * (sh - 1), x_ctr + 0.5 * (sw - 1), y_ctr + 0.5 * (sh - 1)])
    return np.asarray(rows, dtype=np.float64)


def grid_anchors(cell: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """All anchors [H * W * A, 4], rows in (h, w, a) order, shifts k * stride (no half-cell offset)."""
    dev = cell.device
    sy, sx = torch.meshgrid(torch.arange(height, device=dev, dtype=torch.float32) * stride,
                            torch.arange(width, device=dev, dtype=torch.float32) * stride, indexing="ij")
    shifts = torch.stack([sx.reshape(-1), sy.reshape(-1), sx.reshape(-1), sy.reshape(-1)], dim=1)
    return (shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4)


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor, plus_one: bool = True) -> torch.Tensor:
    """Caffe ``bbox_transform_inv``: ctr = x1 + 0.5 * w with w = x2 - x1 + 1; x2 = ctr + 0.5 * pred_w."""
    one = 1.0 if plus_one else 0.0
    widths = anchors[:, 2] - anchors[:, 0] + one
    heights = anchors[:, 3] - anchors[:, 1] + one
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    dx, dy, dw, dh = deltas.unbind(dim=1)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    return torch.stack([pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                        pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h], dim=1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int, plus_one: bool = True) -> torch.Tensor:
    """Caffe clips to [0, W-1] x [0, H-1]; without +1 to [0, W] x [0, H]."""
    off = 1 if plus_one else 0
    x = boxes[:, 0::2].clamp(min=0, max=width - off)
    y = boxes[:, 1::2].clamp(min=0, max=height - off)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def size_filter(boxes: torch.Tensor, min_size: float, plus_one: bool = True) -> torch.Tensor:
    """Indices of boxes whose both sides (+1) are at least ``min_size`` (Caffe ``_filter_boxes``)."""
    one = 1.0 if plus_one else 0.0
    ws = boxes[:, 2] - boxes[:, 0] + one
    hs = boxes[:, 3] - boxes[:, 1] + one
    return torch.nonzero((ws >= min_size) & (hs >= min_size)).squeeze(1)


def nms_boxes(boxes: torch.Tensor, scores: torch.Tensor, thresh: float, plus_one: bool = True) -> torch.Tensor:
    """Greedy NMS; with +1 the IoU of Caffe's nms (equal to torchvision's IoU on boxes grown by 1)."""
    if plus_one:
        boxes = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    return nms(boxes, scores, thresh)


def stable_descending(scores: torch.Tensor) -> torch.Tensor:
    """Order by score, highest first; ties keep index order (Caffe's argsort()[::-1] leaves ties unordered)."""
    return torch.sort(scores, descending=True, stable=True).indices


def image_proposals(logits: torch.Tensor, deltas: torch.Tensor, cell: torch.Tensor, image_hw: tuple[int, int],
                    scale: float, cfg: RPNConfig, stride: int = 16) -> torch.Tensor:
    """One image's proposals [R, 4] (resized-image pixels), R <= post_nms_topk, best first.

    ``logits`` [A, h, w] (one objectness logit per anchor; sorting by it equals sorting by Caffe's
    fg softmax probability), ``deltas`` [4A, h, w].
    """
    num_anchors, fh, fw = logits.shape
    scores = logits.float().permute(1, 2, 0).reshape(-1)
    deltas = deltas.float().permute(1, 2, 0).reshape(-1, 4)
    anchors = grid_anchors(cell.float(), fh, fw, stride)
    boxes = decode_boxes(anchors, deltas, cfg.legacy_plus_one)
    boxes = clip_boxes(boxes, image_hw[0], image_hw[1], cfg.legacy_plus_one)
    keep = size_filter(boxes, cfg.min_size * scale, cfg.legacy_plus_one)
    boxes, scores = boxes[keep], scores[keep]
    order = stable_descending(scores)[: cfg.pre_nms_topk]
    boxes, scores = boxes[order], scores[order]
    keep = prefix_nms(boxes, scores, cfg.nms_thresh, cfg.post_nms_topk, cfg.legacy_plus_one, cfg.early_stop_nms)
    return boxes[keep]


def prefix_nms(boxes: torch.Tensor, scores: torch.Tensor, thresh: float, limit: int, plus_one: bool = True,
               early_stop: bool = True) -> torch.Tensor:
    """The first ``limit`` boxes greedy NMS keeps (boxes already sorted best first).

    Greedy NMS decides box i from the boxes before it only, so NMS over a prefix of the list keeps
    exactly the full result's boxes inside that prefix: grow the prefix until ``limit`` are kept.
    """
    n = boxes.shape[0]
    size = min(n, 4 * limit) if early_stop else n
    while True:
        keep = nms_boxes(boxes[:size], scores[:size], thresh, plus_one)
        if keep.shape[0] >= limit or size == n:
            return keep[:limit]
        size = min(n, 2 * size)
