import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssrp.features.config import CAFFE_PIXEL_MEAN_BGR, PreprocessConfig
from ssrp.features.preprocess import caffe_scale, image_blob, resize_linear, resized_size


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((480, 640), 600 / 480),  # COCO landscape: short side 600, long side 800
        ((640, 480), 600 / 480),
        ((500, 1500), 1000 / 1500),  # long side capped at 1000
        ((300, 500), 2.0),  # exactly 1000: not capped
        ((300, 501), 1000 / 501),  # 1002 > 1000: capped
        ((1200, 2001), 0.5),  # np.round(1000.5) = 1000 (half to even): not capped
        ((1200, 2003), 1000 / 2003),
    ],
)
def test_caffe_scale_rule(hw, expected):
    assert caffe_scale(*hw, 600, 1000) == pytest.approx(expected, rel=0, abs=1e-15)


def test_output_size_rounds_half_to_even_like_cv2():
    assert resized_size(1200, 2001, 0.5) == (600, 1000)  # 1000.5 -> 1000
    assert resized_size(3, 5, 0.5) == (2, 2)  # 1.5 -> 2, 2.5 -> 2
    assert resized_size(480, 640, 1.25) == (600, 800)


def _cv2_linear_reference(img: np.ndarray, scale: float) -> np.ndarray:
    """cv2.resize(INTER_LINEAR) for a float image, written out pixel by pixel (horizontal pass first;
    horizontal taps outside the image collapse to the edge pixel, vertical rows are clamped)."""
    c, h, w = img.shape
    oh, ow = int(np.rint(h * scale)), int(np.rint(w * scale))
    inv = 1.0 / scale
    rows = np.zeros((c, h, ow), np.float32)
    for dx in range(ow):
        fx = np.float32((dx + 0.5) * inv - 0.5)
        sx = math.floor(fx)
        fx = np.float32(fx - np.float32(sx))
        if sx < 0:
            fx, sx = np.float32(0), 0
        if sx >= w - 1:
            fx, sx = np.float32(0), w - 1
        sx1 = min(sx + 1, w - 1)
        rows[:, :, dx] = img[:, :, sx] * (np.float32(1) - fx) + img[:, :, sx1] * fx
    out = np.zeros((c, oh, ow), np.float32)
    for dy in range(oh):
        fy = np.float32((dy + 0.5) * inv - 0.5)
        sy = math.floor(fy)
        fy = np.float32(fy - np.float32(sy))
        y0, y1 = min(max(sy, 0), h - 1), min(max(sy + 1, 0), h - 1)
        out[:, dy, :] = rows[:, y0, :] * (np.float32(1) - fy) + rows[:, y1, :] * fy
    return out


@pytest.mark.parametrize("scale", [1.7, 0.6, 1.0, 2.0, 0.37])
def test_resize_matches_the_cv2_algorithm(scale):
    img = np.random.default_rng(0).normal(size=(3, 9, 13)).astype(np.float32) * 50
    got = resize_linear(torch.from_numpy(img), scale).numpy()
    np.testing.assert_allclose(got, _cv2_linear_reference(img, scale), rtol=0, atol=1e-4)


@pytest.mark.parametrize("scale", [2.0, 0.5])
def test_resize_equals_torch_bilinear_without_antialias_at_exact_scales(scale):
    img = torch.randn(3, 16, 24) * 30
    ref = F.interpolate(img[None], scale_factor=scale, mode="bilinear", align_corners=False, antialias=False)[0]
    torch.testing.assert_close(resize_linear(img, scale), ref, rtol=0, atol=1e-4)


def test_blob_is_bgr_mean_subtracted_before_the_resize():
    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    blob, scale = image_blob(rgb, PreprocessConfig(test_scale=45, max_size=100))
    assert scale == 45 / 30 and tuple(blob.shape) == (3, 45, 60)
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float64)
    centred = (bgr - np.asarray(CAFFE_PIXEL_MEAN_BGR)[:, None, None]).astype(np.float32)  # float64 math, as numpy
    expected = resize_linear(torch.from_numpy(centred), scale)
    assert torch.equal(blob, expected)


def test_mean_after_resize_and_rgb_are_settings():
    rgb = np.random.default_rng(2).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    after, _ = image_blob(rgb, PreprocessConfig(test_scale=30, max_size=60, mean_before_resize=False))
    ref = resize_linear(torch.from_numpy(rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)), 1.5)
    torch.testing.assert_close(after, ref - torch.tensor(CAFFE_PIXEL_MEAN_BGR, dtype=torch.float32)[:, None, None])
    as_rgb, _ = image_blob(rgb, PreprocessConfig(test_scale=20, max_size=60, channel_order="RGB",
                                                 pixel_mean=(0.0, 0.0, 0.0)))
    assert torch.equal(as_rgb, torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32)))


def test_bad_preprocess_settings_are_rejected():
    with pytest.raises(ValueError, match="channel_order"):
        PreprocessConfig(channel_order="BRG")
    with pytest.raises(ValueError, match="max_size"):
        PreprocessConfig(test_scale=600, max_size=500)
