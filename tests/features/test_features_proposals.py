import numpy as np
import torch

from ssrp.features.config import RPNConfig
from ssrp.features.proposals import (
    caffe_anchor_table,
    clip_boxes,
    decode_boxes,
    grid_anchors,
    image_proposals,
    nms_boxes,
    size_filter,
)

# generate_anchors(scales=(4, 8, 16, 32)) of peteanderson80/bottom-up-attention, as printed by the repo's code
CAFFE_ANCHORS = [
    [-38, -16, 53, 31], [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
    [-24, -24, 39, 39], [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
    [-14, -36, 29, 51], [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359],
]


def test_anchor_table_is_caffes_ratio_major_table():
    assert caffe_anchor_table().tolist() == CAFFE_ANCHORS


def test_anchors_are_shifted_in_h_w_a_order_without_half_cell_offset():
    cell = torch.tensor(CAFFE_ANCHORS, dtype=torch.float32)
    anchors = grid_anchors(cell, 2, 3, 16)
    assert anchors.shape == (2 * 3 * 12, 4)
    torch.testing.assert_close(anchors[0], cell[0])
    torch.testing.assert_close(anchors[12 * 1 + 5], cell[5] + torch.tensor([16.0, 0, 16, 0]))  # h0 w1 a5
    torch.testing.assert_close(anchors[12 * 3 + 2], cell[2] + torch.tensor([0.0, 16, 0, 16]))  # h1 w0 a2


def test_decode_uses_the_plus_one_width_and_no_clamp():
    anchor = torch.tensor([[0.0, 0.0, 15.0, 15.0]])
    zero = torch.zeros(1, 4)
    # Caffe bbox_transform_inv: w = 16, ctr = x1 + 0.5 w = 8, x2 = ctr + 0.5 w = 16
    assert decode_boxes(anchor, zero, plus_one=True).tolist() == [[0.0, 0.0, 16.0, 16.0]]
    assert decode_boxes(anchor, zero, plus_one=False).tolist() == [[0.0, 0.0, 15.0, 15.0]]
    big = decode_boxes(anchor, torch.tensor([[0.0, 0.0, 10.0, 0.0]]))  # exp(10): detectron2 would clamp at 4.135
    assert big[0, 2] - big[0, 0] > 16 * 20000


def test_clip_to_last_pixel_and_min_size_with_plus_one():
    boxes = torch.tensor([[-5.0, -3.0, 120.0, 90.0], [0.0, 0.0, 14.0, 20.0], [0.0, 0.0, 15.0, 15.0]])
    clipped = clip_boxes(boxes, 80, 100)
    assert clipped[0].tolist() == [0.0, 0.0, 99.0, 79.0]  # W - 1, H - 1
    assert clip_boxes(boxes, 80, 100, plus_one=False)[0].tolist() == [0.0, 0.0, 100.0, 80.0]
    assert size_filter(boxes, 16.0).tolist() == [0, 2]  # 14 - 0 + 1 = 15 < 16
    assert size_filter(boxes, 16.0, plus_one=False).tolist() == [0]


def _greedy_nms_plus_one(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """py-faster-rcnn's py_cpu_nms (areas and overlaps with +1)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][ovr <= thresh]
    return keep


def test_nms_with_plus_one_iou_matches_py_faster_rcnn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        xy = rng.integers(0, 60, (80, 2)).astype(np.float64)
        boxes = np.concatenate([xy, xy + rng.integers(0, 30, (80, 2))], 1)
        scores = rng.random(80)
        got = nms_boxes(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3).tolist()
        assert got == _greedy_nms_plus_one(boxes, scores, 0.3)


def test_image_proposals_follow_the_caffe_order_of_steps():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 6, 8, generator=gen)
    deltas = torch.randn(48, 6, 8, generator=gen) * 0.2
    cell = torch.tensor(CAFFE_ANCHORS, dtype=torch.float32)
    cfg = RPNConfig(pre_nms_topk=200, post_nms_topk=25, nms_thresh=0.7, min_size=16)
    boxes = image_proposals(logits, deltas, cell, (90, 120), 1.5, cfg)
    assert 0 < boxes.shape[0] <= 25
    assert (boxes[:, 0::2] <= 119).all() and (boxes[:, 1::2] <= 89).all() and (boxes >= 0).all()
    assert ((boxes[:, 2] - boxes[:, 0] + 1 >= 24) & (boxes[:, 3] - boxes[:, 1] + 1 >= 24)).all()  # 16 * 1.5
    # the reference: same steps spelled out with numpy
    sc = logits.permute(1, 2, 0).reshape(-1).numpy()
    dl = deltas.permute(1, 2, 0).reshape(-1, 4)
    allb = clip_boxes(decode_boxes(grid_anchors(cell, 6, 8, 16), dl), 90, 120).numpy()
    ok = (allb[:, 2] - allb[:, 0] + 1 >= 24) & (allb[:, 3] - allb[:, 1] + 1 >= 24)
    allb, sc = allb[ok], sc[ok]
    order = np.argsort(-sc, kind="stable")[:200]
    keep = _greedy_nms_plus_one(allb[order].astype(np.float64), sc[order].astype(np.float64), 0.7)[:25]
    np.testing.assert_allclose(boxes.numpy(), allb[order][keep], rtol=0, atol=1e-5)


def test_early_stopping_nms_keeps_exactly_the_full_results_prefix():
    from ssrp.features.proposals import prefix_nms

    gen = torch.Generator().manual_seed(4)
    xy = torch.rand(3000, 2, generator=gen) * 500
    boxes = torch.cat([xy, xy + torch.rand(3000, 2, generator=gen) * 100 + 4], 1)
    scores = torch.sort(torch.rand(3000, generator=gen), descending=True).values
    for limit in (1, 50, 300, 2000):
        full = nms_boxes(boxes, scores, 0.7)[:limit]
        assert torch.equal(prefix_nms(boxes, scores, 0.7, limit), full)
        assert torch.equal(prefix_nms(boxes, scores, 0.7, limit, early_stop=False), full)
