import numpy as np
import pytest
import torch

from ssrp.features.select import choose, max_conf_batch, overlap_matrix, pack_bits, select_batch, select_loop


def _case(gen, r: int, c: int, ties: bool, peaked: bool):
    xy = torch.rand(r, 2, generator=gen) * 400
    boxes = torch.cat([xy, xy + torch.rand(r, 2, generator=gen) * 150 + 5], 1)
    logits = torch.randn(r, c, generator=gen) * (6.0 if peaked else 1.0)
    if ties:  # repeated boxes and repeated scores: the order rules must agree exactly
        boxes = torch.round(boxes / 25) * 25
        logits = torch.round(logits * 2) / 2
    return boxes, torch.softmax(logits, dim=1)


# (min, max, conf_thresh): fixed 36, adaptive 10-100, everything above, nearly nothing above, nothing above
SETTINGS = [(36, 36, 0.2), (10, 100, 0.2), (1, 4, 0.0), (3, 3, 0.999), (5, 50, 1.1)]


def _caffe_rule(max_conf: torch.Tensor, th: float, mn: int, mx: int) -> list[int]:
    """generate_tsv's MIN/MAX rule, then sorted by max_conf (ties: lower index first)."""
    mc = max_conf.numpy()
    above = np.where(mc.astype(np.float64) >= th)[0]
    ranked = np.argsort(-mc, kind="stable")
    if len(above) < mn:
        return ranked[:mn].tolist()
    if len(above) > mx:
        return ranked[:mx].tolist()
    return sorted(above.tolist(), key=lambda i: (-mc[i], i))


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_selection_is_bit_identical_to_the_per_class_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    r = [300, 120, 37, 7, 1, 60][seed]
    c = [1601, 41, 5][seed % 3]
    cases = [_case(gen, r if i == 0 else max(1, r // (4 * i)), c, seed % 2 == 1, seed % 3 == 0) for i in range(3)]
    mn0, mx0, th0 = SETTINGS[seed % 5]
    refs = [select_loop(b, p, 0.3, th0, mn0, mx0) for b, p in cases]  # the 1600-call loop, once per case
    for k, (mn, mx, th) in enumerate(SETTINGS):
        got = select_batch([b for b, _ in cases], [p for _, p in cases], 0.3, th, mn, mx)
        for ref, sel in zip(refs, got, strict=True):
            assert sel.keep.tolist() == _caffe_rule(ref.max_conf, th, mn, mx), (mn, mx, th)
            assert torch.equal(sel.max_conf[sel.keep], ref.max_conf[sel.keep])  # exact where it is used
            assert torch.all(sel.max_conf <= ref.max_conf)  # elsewhere a lower bound
            if k == seed % 5:
                assert torch.equal(sel.keep, ref.keep)
    exact = max_conf_batch([b for b, _ in cases], [p for _, p in cases], 0.3, exact_top=None)
    for ref, mc in zip(refs, exact, strict=True):
        assert torch.equal(mc, ref.max_conf)  # every proposal's max_conf, bit for bit


def test_all_below_threshold_takes_the_min_boxes_best():
    gen = torch.Generator().manual_seed(1)
    boxes, probs = _case(gen, 50, 300, False, False)  # near-uniform scores: max_conf << 0.2
    sel = select_batch([boxes], [probs], 0.3, 0.2, 10, 100)[0]
    assert sel.max_conf.max() < 0.2 and sel.keep.shape[0] == 10
    assert torch.all(sel.max_conf[sel.keep][:-1] >= sel.max_conf[sel.keep][1:])


def test_more_than_max_above_threshold_is_cut_to_max_and_sorted():
    gen = torch.Generator().manual_seed(2)
    xy = torch.arange(120, dtype=torch.float32)[:, None].repeat(1, 2) * 50  # disjoint boxes: nothing suppressed
    boxes = torch.cat([xy, xy + 20], 1)
    probs = torch.softmax(torch.randn(120, 6, generator=gen) * 8, 1)
    sel = select_batch([boxes], [probs], 0.3, 0.2, 10, 100)[0]
    assert sel.keep.shape[0] == 100
    top = probs[:, 1:].max(1).values  # every box survives every class
    assert torch.equal(sel.max_conf[sel.keep], top[sel.keep])
    assert sel.keep.tolist() == torch.sort(top, descending=True, stable=True).indices[:100].tolist()
    assert torch.all(sel.max_conf[sel.keep][:-1] >= sel.max_conf[sel.keep][1:])


def test_choose_counts_and_tie_order():
    mc = torch.tensor([0.5, 0.1, 0.5, 0.3, 0.2, 0.0])
    assert choose(mc, 0.2, 1, 10).tolist() == [0, 2, 3, 4]  # >= 0.2, ties by index
    assert choose(mc, 0.2, 5, 10).tolist() == [0, 2, 3, 4, 1]
    assert choose(mc, 0.2, 1, 2).tolist() == [0, 2]
    assert choose(mc, 0.2, 36, 36).tolist() == [0, 2, 3, 4, 1, 5]  # fewer proposals than MIN


def test_fewer_proposals_and_empty_images():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    out = select_batch([boxes, torch.zeros(0, 4)], [probs, torch.zeros(0, 3)])
    assert out[0].keep.tolist() == [0] and out[0].max_conf.tolist() == pytest.approx([0.3])
    assert out[1].keep.numel() == 0


def test_overlap_bits_roundtrip():
    gen = torch.Generator().manual_seed(3)
    boxes, _ = _case(gen, 130, 3, False, False)
    over = overlap_matrix(boxes, 0.3)
    words = pack_bits(over, 3)
    unpacked = ((words[:, :, None] >> torch.arange(64)) & 1).reshape(130, -1)[:, :130].bool()
    assert torch.equal(unpacked, over) and torch.equal(over, over.T)
