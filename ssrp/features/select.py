"""Region selection of Caffe ``tools/generate_tsv.py``, vectorised across classes and images.

The rule, per image: boxes are the RPN proposals in original-image pixels; for every foreground class
c, greedy NMS (IoU > 0.3 suppresses, Caffe +1 IoU) over *all* proposals ordered by that class's
score; ``max_conf[i]`` is the highest score of box i among the classes where it survived (0 if none);
keep the boxes with ``max_conf >= 0.2``, at least ``min_boxes`` and at most ``max_boxes`` of them by
``max_conf``. Kept boxes are always returned sorted by ``max_conf`` (highest first, ties by proposal
index) -- Caffe leaves the in-between case in proposal order; sorting makes any prefix a valid smaller set.

The vectorised form gives bit-identical results to ``select_loop`` (one ``torchvision.ops.nms`` per
class): every proposal is shared by all classes, so one IoU matrix per image, packed into 64-bit
words, serves every class. All (image, class) rows then run greedy NMS in lock-step: step t takes
each row's t-th best box, keeps it if no kept box suppressed it, and ORs its overlap bits into the
row's suppressed mask. Because a box alive at step t overlaps no kept box before it, its overlap row
never touches an earlier kept box, so the mask needs no order check. Two exact shortcuts skip work:
classes that can raise no box's ``max_conf`` are dropped (each class's top box always survives, which
gives lower bounds), and the steps stop once no unprocessed (class, box) score exceeds that box's
``max_conf`` so far.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ssrp.features.proposals import nms_boxes

_WORD = 64


@dataclass(frozen=True)
class Selection:
    keep: torch.Tensor  # int64 [N]: proposal indices, best max_conf first
    max_conf: torch.Tensor  # float32 [R]: every proposal's max_conf


def overlap_matrix(boxes: torch.Tensor, thresh: float, plus_one: bool = True) -> torch.Tensor:
    """bool [R, R]: IoU(i, j) > thresh, computed with the very float32 operations of torchvision's nms."""
    b = boxes.float()
    if plus_one:
        b = b + b.new_tensor([0.0, 0.0, 1.0, 1.0])
    x1, y1, x2, y2 = b.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, None], x2[None, :]) - torch.maximum(x1[:, None], x1[None, :])).clamp(min=0)
    h = (torch.minimum(y2[:, None], y2[None, :]) - torch.maximum(y1[:, None], y1[None, :])).clamp(min=0)
    inter = w * h
    iou = inter / (areas[:, None] + areas[None, :] - inter)
    return iou.double() > thresh  # torchvision compares float IoU with a double threshold


def pack_bits(mask: torch.Tensor, words: int) -> torch.Tensor:
    """bool [..., R] -> int64 [..., words]; bit j % 64 of word j // 64 is mask[..., j]."""
    r = mask.shape[-1]
    padded = torch.zeros(*mask.shape[:-1], words * _WORD, dtype=torch.int64, device=mask.device)
    padded[..., :r] = mask.to(torch.int64)
    shifts = torch.arange(_WORD, dtype=torch.int64, device=mask.device)
    return (padded.reshape(*mask.shape[:-1], words, _WORD) << shifts).sum(dim=-1)


def select_batch(boxes: list[torch.Tensor], class_probs: list[torch.Tensor], nms_thresh: float = 0.3,
                 conf_thresh: float = 0.2, min_boxes: int = 36, max_boxes: int = 36,
                 plus_one: bool = True) -> list[Selection]:
    """Caffe selection for several images at once.

    ``boxes[i]`` float32 [R_i, 4] proposals in original-image pixels; ``class_probs[i]`` float32
    [R_i, C] softmax over all classes, column 0 the background (skipped).
    """
    with _cpu_threads(1 if boxes and boxes[0].device.type == "cpu" else None):
        max_conf = max_conf_batch(boxes, class_probs, nms_thresh, plus_one, exact_top=max_boxes)
        return [Selection(choose(mc, conf_thresh, min_boxes, max_boxes), mc) for mc in max_conf]


@contextlib.contextmanager
def _cpu_threads(n: int | None):
    """Run the selection's many small CPU ops on one thread: OpenMP fan-out over a few thousand
    elements costs more than it saves (3x slower on 2 busy cores). Restores the count after."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def max_conf_batch(boxes: list[torch.Tensor], class_probs: list[torch.Tensor], nms_thresh: float,
                   plus_one: bool = True, exact_top: int | None = None) -> list[torch.Tensor]:
    """Each proposal's max_conf. With ``exact_top=K`` only the K highest are guaranteed exact (the
    others are lower bounds, each provably below the K-th highest): all the selection needs."""
    counts = [int(b.shape[0]) for b in boxes]
    r = max(counts, default=0)
    if r == 0:
        return [torch.zeros(0, dtype=torch.float32, device=b.device) for b in boxes]
    dev = boxes[0].device
    words = (r + _WORD - 1) // _WORD
    over = torch.zeros(len(boxes), r, words, dtype=torch.int64, device=dev)
    for i, b in enumerate(boxes):
        if counts[i]:
            over[i, : counts[i]] = pack_bits(overlap_matrix(b, nms_thresh, plus_one), words)
    scores = _padded_scores(class_probs, counts, r)
    rows, row_image, lower = _relevant_rows(scores)
    best = lower.reshape(-1).clone()  # each class's top box survives its NMS: true contributions
    if rows.shape[0]:
        _greedy_rows(rows, row_image, over, counts, best, exact_top)
    best = best.view(len(boxes), r)
    return [best[i, : counts[i]].clone() for i in range(len(boxes))]


def _padded_scores(class_probs: list[torch.Tensor], counts: list[int], r: int) -> torch.Tensor:
    """Foreground scores [B, R, C-1]; boxes past an image's count get -1 (sorted last, never relevant)."""
    if all(c == r for c in counts):
        return torch.stack([p[:, 1:].float() for p in class_probs])
    scores = torch.full((len(counts), r, class_probs[0].shape[1] - 1), -1.0, device=class_probs[0].device)
    for i, p in enumerate(class_probs):
        scores[i, : counts[i]] = p[:, 1:].float()
    return scores


def _relevant_rows(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, class) score rows [N, R] that can change some box's max_conf, each row's image, and
    the lower bounds [B, R] of max_conf that the classes' top boxes give."""
    n_img, r, n_cls = scores.shape
    top = scores.argmax(dim=1)  # [B, C]: each class's best box (first on ties), always kept by NMS
    top_score = scores.gather(1, top[:, None, :]).squeeze(1)
    lower = torch.zeros(n_img, r, device=scores.device)
    lower.scatter_reduce_(1, top, top_score, reduce="amax")
    relevant = (scores > lower[:, :, None]).any(dim=1)  # [B, C]
    img_idx, cls_idx = torch.nonzero(relevant, as_tuple=True)
    return scores.permute(0, 2, 1)[img_idx, cls_idx], img_idx, lower


def _greedy_rows(rows: torch.Tensor, row_image: torch.Tensor, over: torch.Tensor, counts: list[int],
                 best: torch.Tensor, exact_top: int | None) -> None:
    """Greedy NMS over (image, class) rows in lock-step; raises ``best`` (flat [B * R]) to max_conf.

    A row is only ever processed over a prefix of its stable descending order: the boxes scoring at
    least a bound theta of its image. After processing every (class, box) pair scoring >= theta, a
    box whose max_conf so far is >= theta is exact, and every other box is below theta. So once the
    K-th highest max_conf so far (K = ``exact_top``) reaches theta, the top K are exact and every
    other box provably below them: done. Stage 1 guesses theta = the K-th highest of the boxes' best
    scores; if that falls short, stage 2 uses theta = the K-th highest max_conf after stage 1, which
    cannot fall short (max_conf bounds only grow). Without ``exact_top``, theta is -inf: everything.
    """
    n, r = rows.shape
    dev = rows.device
    valid = torch.zeros(len(counts), r, dtype=torch.bool, device=dev)
    for i, c in enumerate(counts):
        valid[i, :c] = True
    state = _RowState(rows, row_image * r, over.reshape(-1, over.shape[2]), pack_bits(~valid, over.shape[2])[row_image])
    few = torch.tensor([exact_top is None or c <= exact_top for c in counts], device=dev)
    best_score = rows.new_full((len(counts), r), -1.0)  # each box's best score among the rows
    best_score.view(-1).scatter_reduce_(0, (state.base[:, None] + torch.arange(r, device=dev)).reshape(-1),
                                        rows.reshape(-1), reduce="amax")
    theta = torch.where(few, float("-inf"), _kth_largest(best_score, valid, exact_top or 1))
    state.extend_to(theta[row_image], best)
    tau = _kth_largest(best.view(len(counts), r), valid, exact_top or 1)
    short = ~few & (tau < theta)
    if bool(short.any()):
        state.extend_to(torch.where(short, tau, theta)[row_image], best)


def _kth_largest(values: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """[B]: the k-th largest valid value of each row of [B, R] (-inf where fewer than k are valid)."""
    ranked = torch.where(valid, values, float("-inf"))
    return torch.topk(ranked, min(k, values.shape[1]), dim=1).values[:, -1]


class _RowState:
    """Per-row progress of the lock-step greedy NMS: processed prefix lengths and suppressed masks."""

    def __init__(self, rows: torch.Tensor, base: torch.Tensor, flat_over: torch.Tensor, suppressed: torch.Tensor):
        self.rows, self.base, self.flat_over, self.suppressed = rows, base, flat_over, suppressed
        self.done = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)

    def extend_to(self, theta: torch.Tensor, best: torch.Tensor) -> None:
        """Process every row up to (and including) its last box scoring >= theta[row]."""
        target = (self.rows >= theta[:, None]).sum(dim=1)
        sel = torch.nonzero(target > self.done).squeeze(1)
        if sel.numel() == 0:
            return
        target, done = target[sel], self.done[sel]
        by_len = torch.argsort(target, descending=True, stable=True)  # active rows: a shrinking prefix
        sel, target, done = sel[by_len], target[by_len], done[by_len]
        sub, base = self.rows[sel], self.base[sel]
        width = int(target[0])
        order = _prefix_order(sub, width)
        suppressed = self.suppressed[sel]
        kept = _greedy_steps(order, target, done, base, self.flat_over, suppressed)
        span = torch.arange(width, device=sub.device)
        fresh = kept & (span[None, :] >= done[:, None]) & (span[None, :] < target[:, None])
        _flush(best, base, order, sub.gather(1, order), fresh)
        self.suppressed[sel] = suppressed
        self.done[sel] = target


def _prefix_order(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of each row's k best scores in stable descending order."""
    if 4 * k >= rows.shape[1]:  # IEEE bit patterns of non-negative floats sort like the values
        return torch.sort(rows.contiguous().view(torch.int32), dim=1, descending=True, stable=True).indices[:, :k]
    return torch.topk(_sort_keys(rows), k, dim=1, sorted=True).indices


def _greedy_steps(order: torch.Tensor, target: torch.Tensor, done: torch.Tensor, base: torch.Tensor,
                  flat_over: torch.Tensor, suppressed: torch.Tensor) -> torch.Tensor:
    """Steps max(done)..max(target) of greedy NMS for rows sorted by target (descending): at step t
    the rows with target > t take their t-th box unless already past it (t < done). Updates
    ``suppressed`` in place; returns which (row, step) boxes were alive when reached."""
    width = order.shape[1]
    order_t = order.t().contiguous()  # [steps, N]: each step reads contiguous memory
    word_t, bit_t = order_t >> 6, order_t & 63
    over_t = base[None, :] + order_t
    hist = torch.bincount(target, minlength=width + 1)
    active = (target.numel() - torch.cumsum(hist, 0))[:width].tolist()  # rows with target > t
    start = int(done.min())
    lagging = int(done.max())
    masks = torch.empty(width, order.shape[0], dtype=torch.int64, device=order.device)  # steps < start: unread
    for t in range(start, width):
        m = active[t]
        word = suppressed[:m].gather(1, word_t[t, :m, None]).squeeze(1)
        mask = masks[t, :m]
        torch.sub((word >> bit_t[t, :m]) & 1, 1, out=mask)  # -1 (all bits set) if alive, 0 if suppressed
        if t < lagging:
            mask &= (done[:m] <= t).to(torch.int64).neg_()
        suppressed[:m] |= flat_over.index_select(0, over_t[t, :m]) & mask[:, None]
    return masks.t() != 0


def _sort_keys(rows: torch.Tensor) -> torch.Tensor:
    """Unique int64 keys whose descending order is the stable descending order of the scores."""
    r = rows.shape[1]
    bits = rows.contiguous().view(torch.int32).to(torch.int64)  # IEEE order = value order for x >= 0
    rank = torch.arange(r - 1, -1, -1, dtype=torch.int64, device=rows.device)
    return (bits << 32) + rank


def _flush(best: torch.Tensor, base: torch.Tensor, order: torch.Tensor, scores: torch.Tensor,
           kept: torch.Tensor) -> None:
    """Fold the scores of kept (row, box) pairs into best (max)."""
    idx = (base[:, None] + order).reshape(-1)
    vals = torch.where(kept, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    best.scatter_reduce_(0, idx, vals.reshape(-1), reduce="amax")


def choose(max_conf: torch.Tensor, conf_thresh: float, min_boxes: int, max_boxes: int) -> torch.Tensor:
    """Indices of the kept boxes, best max_conf first (ties: lower proposal index first)."""
    above = int((max_conf.double() >= conf_thresh).sum())
    count = min(max(above, min_boxes), max_boxes, int(max_conf.shape[0]))
    order = torch.sort(max_conf, descending=True, stable=True).indices
    return order[:count]


# --------------------------------------------------------------------------------------------
# The reference: one NMS call per class (Caffe generate_tsv, MILVLG save_roi_features).


def select_loop(boxes: torch.Tensor, class_probs: torch.Tensor, nms_thresh: float = 0.3, conf_thresh: float = 0.2,
                min_boxes: int = 36, max_boxes: int = 36, plus_one: bool = True) -> Selection:
    max_conf = torch.zeros(boxes.shape[0], dtype=torch.float32, device=boxes.device)
    for c in range(1, class_probs.shape[1]):
        scores = class_probs[:, c].float()
        keep = nms_boxes(boxes.float(), scores, nms_thresh, plus_one)
        max_conf[keep] = torch.where(scores[keep] > max_conf[keep], scores[keep], max_conf[keep])
    mc = max_conf.cpu().numpy()
    keep_boxes = np.where(mc.astype(np.float64) >= conf_thresh)[0]
    ranked = np.argsort(-mc, kind="stable")
    if len(keep_boxes) < min_boxes:
        keep_boxes = ranked[:min_boxes]
    elif len(keep_boxes) > max_boxes:
        keep_boxes = ranked[:max_boxes]
    else:
        keep_boxes = ranked[: len(keep_boxes)]
    return Selection(torch.as_tensor(keep_boxes, dtype=torch.int64, device=boxes.device), max_conf)
