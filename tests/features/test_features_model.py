import math
from dataclasses import replace

import pytest
import torch
from torchvision.ops import roi_pool

from ssrp.features.config import DetectorArch
from ssrp.features.modeling import BasicStem, BottleneckBlock, BUTDDetector, RoIHeads
from ssrp.features.models import expected_shapes
from ssrp.features.stage import region_labels
from ssrp.features.tiny import TINY_ARCH, random_state_dict


def _model(arch: DetectorArch) -> BUTDDetector:
    model = BUTDDetector(arch)
    model.load_state_dict(random_state_dict(arch))
    return model.eval()


@pytest.mark.parametrize("size", [15, 16, 17, 38, 39])
def test_caffe_maxpool_pads_nothing_and_rounds_up(size):
    x = torch.randn(1, 3, size * 2, size * 2)
    caffe = BasicStem(4, caffe_maxpool=True, eps=1e-5).eval()
    torchvision_like = BasicStem(4, caffe_maxpool=False, eps=1e-5).eval()
    conv = size  # 7x7/2 pad 3 halves the input
    assert caffe(x).shape[-1] == math.ceil((conv - 3) / 2) + 1  # Caffe pooling output size
    assert torchvision_like(x).shape[-1] == math.floor((conv + 2 - 3) / 2) + 1


def test_msra_blocks_put_the_stride_in_the_first_1x1():
    msra = BottleneckBlock(8, 16, 4, stride=2, stride_in_1x1=True, dilation=1, eps=1e-5)
    assert msra.conv1.stride == (2, 2) and msra.conv2.stride == (1, 1)
    v15 = BottleneckBlock(8, 16, 4, stride=2, stride_in_1x1=False, dilation=1, eps=1e-5)
    assert v15.conv1.stride == (1, 1) and v15.conv2.stride == (2, 2)


def test_res5_has_stride_1_and_dilation_2_on_14x14_rois():
    heads = RoIHeads(TINY_ARCH).eval()
    first = heads.res5[0]
    assert first.conv1.stride == (1, 1) and first.shortcut.stride == (1, 1)
    assert all(b.conv2.dilation == (2, 2) and b.conv2.padding == (2, 2) for b in heads.res5)
    x = torch.randn(2, TINY_ARCH.res4_channels, 14, 14)
    assert heads.res5(x).shape[-2:] == (14, 14)
    halved = RoIHeads(replace(TINY_ARCH, res5_dilation=1)).eval()
    assert halved.res5(x).shape[-2:] == (7, 7)  # detectron2's RES5HALVE


def test_full_r101_shapes_are_the_caffe_ones():
    shapes = expected_shapes(DetectorArch())
    assert shapes["proposal_generator.rpn_head.conv.weight"] == (512, 1024, 3, 3)  # 512-channel RPN
    assert shapes["proposal_generator.rpn_head.objectness_logits.weight"] == (12, 512, 1, 1)
    assert shapes["proposal_generator.rpn_head.anchor_deltas.weight"] == (48, 512, 1, 1)
    assert shapes["proposal_generator.caffe_anchors"] == (12, 4)
    assert shapes["roi_heads.box_predictor.cls_score.weight"] == (1601, 2048)  # background + 1600
    assert shapes["roi_heads.box_predictor.cls_embedding.weight"] == (1601, 256)
    assert shapes["roi_heads.box_predictor.fc_attr.weight"] == (512, 2304)
    assert shapes["roi_heads.box_predictor.attr_score.weight"] == (401, 512)
    assert len([k for k in shapes if k.startswith("backbone.res4.") and k.endswith(".conv1.weight")]) == 23
    assert not [k for k in shapes if "bbox_pred" in k]
    params = sum(math.prod(s) for k, s in shapes.items() if "running" not in k and "norm" not in k)
    assert 40e6 < params < 70e6


def test_folding_batchnorm_keeps_the_function():
    model = _model(TINY_ARCH)
    x = torch.randn(2, 3, 64, 80)
    with torch.inference_mode():
        before = model.trunk(x)
        pooled = torch.randn(3, TINY_ARCH.res4_channels, 14, 14)
        feat_before = model.region_features(pooled)
        assert model.fold_batchnorm() > 0
        torch.testing.assert_close(model.trunk(x), before, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.region_features(pooled), feat_before, rtol=1e-4, atol=1e-5)
    assert not [k for k in model.state_dict() if ".norm." in k]


def _caffe_roi_pool(fmap: torch.Tensor, box, size: int, scale: float) -> torch.Tensor:
    """Caffe ROIPoolingLayer::Forward_cpu for one RoI, loop by loop."""
    c, h, w = fmap.shape
    x1, y1, x2, y2 = (math.floor(v * scale + 0.5) for v in box)  # C round(): half away from zero (v >= 0)
    rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    bw, bh = rw / size, rh / size
    out = torch.zeros(c, size, size)
    for ph in range(size):
        for pw in range(size):
            hs = min(max(math.floor(ph * bh) + y1, 0), h)
            he = min(max(math.ceil((ph + 1) * bh) + y1, 0), h)
            ws = min(max(math.floor(pw * bw) + x1, 0), w)
            we = min(max(math.ceil((pw + 1) * bw) + x1, 0), w)
            if he > hs and we > ws:
                out[:, ph, pw] = fmap[:, hs:he, ws:we].amax(dim=(1, 2))
    return out


def test_roi_pool_is_caffe_roi_max_pooling_14x14_at_one_sixteenth():
    fmap = torch.randn(5, 20, 24)
    boxes = [(0.0, 0.0, 100.0, 60.0), (33.3, 17.9, 300.2, 280.7), (120.0, 40.0, 127.0, 47.0), (8.0, 8.0, 383.0, 319.0)]
    got = roi_pool(fmap[None], [torch.tensor(boxes)], (14, 14), 1 / 16)
    for i, box in enumerate(boxes):
        torch.testing.assert_close(got[i], _caffe_roi_pool(fmap, box, 14, 1 / 16), rtol=0, atol=0)


def test_classifier_has_background_at_index_0_and_labels_skip_it():
    probs = torch.tensor([[0.9, 0.06, 0.04], [0.1, 0.2, 0.7]])
    attrs = torch.tensor([[0.8, 0.15, 0.05], [0.3, 0.3, 0.4]])
    obj_ids, obj_conf, attr_ids, attr_conf = region_labels(probs, attrs)
    assert obj_ids.tolist() == [0, 1] and obj_conf.tolist() == pytest.approx([0.06, 0.7])
    assert attr_ids.tolist() == [0, 1] and attr_conf.tolist() == pytest.approx([0.15, 0.4])


def test_attribute_head_embeds_the_argmax_over_all_classes_background_included():
    model = _model(TINY_ARCH)
    pred = model.roi_heads.box_predictor
    feats = torch.randn(2, TINY_ARCH.feature_dim)
    logits = torch.full((2, TINY_ARCH.num_classes), -5.0)
    logits[0, 0] = 9.0  # background wins for region 0
    logits[1, 7] = 9.0
    with torch.inference_mode():
        got = pred.attribute_logits(feats, logits)
        emb = pred.cls_embedding.weight[[0, 7]]
        hidden = torch.relu(pred.fc_attr(torch.cat([feats, emb], 1)))
        torch.testing.assert_close(got, pred.attr_score(hidden))


def test_detector_identity_carries_the_vocabularies_a_corpus_names_regions_with(tiny_models):
    import os

    from ssrp.features.models import detector_dir, detector_identity
    from ssrp.features.tiny import TINY_ATTRIBUTES, TINY_OBJECTS
    from ssrp.fileutil import sha256_file

    folder = detector_dir(tiny_models)
    ident = detector_identity(folder)
    assert ident["objects_vocab"] == list(TINY_OBJECTS) and ident["attributes_vocab"] == list(TINY_ATTRIBUTES)
    assert ident["objects_vocab_sha256"] == sha256_file(os.path.join(folder, "objects_vocab.txt"))
    assert ident["name"] == "butd-tiny-random" and len(ident["weights_sha256"]) == 64
