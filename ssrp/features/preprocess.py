"""Caffe-exact input blobs (``lib/fast_rcnn/test.py::_get_image_blob`` of bottom-up-attention).

Caffe: ``im = cv2.imread(...)`` (BGR uint8) -> float32 -> subtract ``PIXEL_MEANS`` -> ``cv2.resize(fx=s,
fy=s, INTER_LINEAR)``. The resize here is cv2's INTER_LINEAR for float images written out in torch
(runs on the GPU too): the source coordinate of output pixel ``d`` is ``(d + 0.5) / s - 0.5`` with
the *requested* factor ``s`` (not out/in), the output size is ``round(in * s)`` (round half to even,
as cv2's saturate_cast), horizontal taps past the border collapse onto the edge pixel, vertical
taps are clamped, and there is no antialiasing when shrinking.
"""

from __future__ import annotations

import numpy as np
import torch

from ssrp.features.config import PreprocessConfig


def caffe_scale(height: int, width: int, test_scale: int = 600, max_size: int = 1000) -> float:
    """The 600/1000 rule: short side to ``test_scale`` unless the long side would pass ``max_size``."""
    size_min, size_max = min(height, width), max(height, width)
    scale = float(test_scale) / float(size_min)
    if np.round(scale * size_max) > max_size:
        scale = float(max_size) / float(size_max)
    return scale


def resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """cv2.resize's output size for fx = fy = scale: saturate_cast<int> rounds half to even."""
    return max(1, int(np.rint(height * scale))), max(1, int(np.rint(width * scale)))


def linear_taps(out_len: int, in_len: int, scale: float, collapse_border: bool) -> tuple[np.ndarray, ...]:
    """Source indices (i0, i1) and weights (w0, w1) of cv2 INTER_LINEAR along one axis.

    ``collapse_border`` is cv2's horizontal rule (a tap left of 0 or right of in_len-1 becomes the
    edge pixel with weight 1); without it the indices are clamped and the weights kept (vertical).
    """
    inv = 1.0 / scale
    pos = ((np.arange(out_len, dtype=np.float64) + 0.5) * inv - 0.5).astype(np.float32)
    start = np.floor(pos).astype(np.int64)
    frac = (pos - start.astype(np.float32)).astype(np.float32)
    if collapse_border:
        low = start < 0
        frac[low], start[low] = 0.0, 0
        high = start >= in_len - 1
        frac[high], start[high] = 0.0, in_len - 1
    i0 = np.clip(start, 0, in_len - 1)
    i1 = np.clip(start + 1, 0, in_len - 1)
    w1 = frac
    w0 = (np.float32(1.0) - frac).astype(np.float32)
    return i0, i1, w0, w1


def resize_linear(image: torch.Tensor, scale: float) -> torch.Tensor:
    """cv2.resize(image, None, fx=scale, fy=scale, INTER_LINEAR) for a float tensor [C, H, W]."""
    _, h, w = image.shape
    out_h, out_w = resized_size(h, w, scale)
    dev = image.device
    xi0, xi1, xw0, xw1 = (torch.from_numpy(a).to(dev) for a in linear_taps(out_w, w, scale, True))
    rows = image.index_select(2, xi0) * xw0 + image.index_select(2, xi1) * xw1
    yi0, yi1, yw0, yw1 = (torch.from_numpy(a).to(dev) for a in linear_taps(out_h, h, scale, False))
    return rows.index_select(1, yi0) * yw0[:, None] + rows.index_select(1, yi1) * yw1[:, None]


def image_blob(pixels_rgb: np.ndarray | torch.Tensor, cfg: PreprocessConfig, device: torch.device | str = "cpu",
               scale: float | None = None) -> tuple[torch.Tensor, float]:
    """RGB uint8 [H, W, 3] -> (float32 blob [3, h, w] in cfg.channel_order, mean subtracted; scale)."""
    if isinstance(pixels_rgb, np.ndarray):
        pixels_rgb = np.require(pixels_rgb, requirements=["C", "W"])  # torch wants writable memory
    pixels = torch.as_tensor(pixels_rgb).to(device)
    h, w = int(pixels.shape[0]), int(pixels.shape[1])
    if scale is None:
        scale = caffe_scale(h, w, cfg.test_scale, cfg.max_size)
    chw = pixels.permute(2, 0, 1)
    if cfg.channel_order == "BGR":
        chw = chw.flip(0)
    if cfg.mean_before_resize:
        blob = resize_linear(centred(chw, cfg.pixel_mean), scale)
    else:
        mean = torch.tensor(cfg.pixel_mean, dtype=torch.float32, device=chw.device)[:, None, None]
        blob = resize_linear(chw.to(torch.float32), scale) - mean
    return blob.contiguous(), scale


def centred(chw_uint8: torch.Tensor, mean: tuple[float, float, float]) -> torch.Tensor:
    """float32(v - mean) per channel, as numpy's float32 -= float64 computes it (in float64, then
    rounded), through a 256-entry table per channel."""
    levels = torch.arange(256, dtype=torch.float64, device=chw_uint8.device)
    table = (levels[None, :] - torch.tensor(mean, dtype=torch.float64, device=chw_uint8.device)[:, None])
    table = table.to(torch.float32)  # [3, 256]
    idx = chw_uint8.to(torch.int64).reshape(3, -1)
    return table.gather(1, idx).reshape(chw_uint8.shape)
