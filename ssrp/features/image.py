"""Image file bytes -> an RGB uint8 array, or a named reason why not.

``decode_image`` is a plain function so the pipeline can run it as its own step (in DataLoader
workers, or a Beam DoFn) before the GPU stage. Every problem raises ``RecordFailure`` with a
stable reason code:

==================== ==========================================================================
reason               when
==================== ==========================================================================
empty_file           no bytes at all
not_an_image         Pillow cannot identify the format (text, HTML error page, random bytes)
decompression_bomb   the header declares more pixels than ``DecodeConfig.max_pixels``
truncated_image      the file ends early or its data is corrupt
too_small            a side shorter than ``DecodeConfig.min_side`` (after EXIF rotation)
unsupported_mode     a pixel format with no sound conversion to RGB
==================== ==========================================================================

Conversions: EXIF orientation is applied (``ImageOps.exif_transpose``); CMYK and YCbCr go
through Pillow's RGB conversion; grayscale is replicated into three channels; 16- and 32-bit
integer images are rescaled to 8 bits (value / 257, rounded; Pillow's own conversion clips them);
RGBA, LA and palette images with transparency are composited onto ``alpha_background``; animated
files give their first frame.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ssrp.deadletter import RecordFailure
from ssrp.features.config import DecodeConfig

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_DIRECT_RGB_MODES = ("RGB", "CMYK", "YCbCr", "L", "1", "LAB", "HSV")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image: RGB uint8 pixels [H, W, 3] in display orientation."""

    image_id: int
    file_name: str
    pixels: np.ndarray  # uint8 [H, W, 3], RGB
    meta: dict[str, Any] = field(default_factory=dict)  # source mode, format, EXIF orientation applied

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def decode_image(image_id: int, data: bytes, file_name: str = "", cfg: DecodeConfig | None = None) -> DecodedImage:
    """Decode image file bytes; raises RecordFailure with a reason code for every bad input."""
    from PIL import Image, UnidentifiedImageError

    cfg = cfg or DecodeConfig()
    if not data:
        raise RecordFailure("empty_file", f"{file_name or image_id}: 0 bytes")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        _check_pixels(img.size, cfg, file_name)
        img.load()
    except Image.DecompressionBombError as err:
        raise RecordFailure("decompression_bomb", f"{file_name}: {err}") from err
    except UnidentifiedImageError as err:
        raise RecordFailure("not_an_image", f"{file_name}: not an image file Pillow can identify") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise RecordFailure("truncated_image", f"{file_name}: {err}") from err
    return _finish(img, image_id, file_name, cfg)


def _check_pixels(size: tuple[int, int], cfg: DecodeConfig, file_name: str) -> None:
    w, h = size
    if w * h > cfg.max_pixels:
        raise RecordFailure(
            "decompression_bomb", f"{file_name}: {w}x{h} = {w * h} pixels exceeds max_pixels {cfg.max_pixels}"
        )


def _finish(img, image_id: int, file_name: str, cfg: DecodeConfig) -> DecodedImage:
    from PIL import ImageOps

    meta = {"format": img.format or "", "mode": img.mode, "orientation": _orientation(img)}
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise RecordFailure("truncated_image", f"{file_name}: bad EXIF data: {err}") from err
    w, h = img.size
    if min(w, h) < cfg.min_side:
        raise RecordFailure("too_small", f"{file_name}: {w}x{h} is under the minimum side {cfg.min_side}")
    pixels = to_rgb_array(img, cfg.alpha_background, file_name)
    return DecodedImage(image_id=int(image_id), file_name=file_name, pixels=pixels, meta=meta)


def _orientation(img) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1


def to_rgb_array(img, background: tuple[int, int, int], file_name: str = "") -> np.ndarray:
    """Any Pillow image -> contiguous uint8 [H, W, 3] RGB."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    try:
        if mode in _WIDE_GRAY_MODES:
            gray = _wide_to_uint8(np.asarray(img))
            return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
        if mode in _ALPHA_MODES:
            return _composite(img.convert("RGBA"), background)
        if mode in _DIRECT_RGB_MODES:
            return np.array(img.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as err:
        raise RecordFailure("unsupported_mode", f"{file_name}: cannot convert mode {mode} to RGB: {err}") from err
    raise RecordFailure("unsupported_mode", f"{file_name}: pixel mode {mode!r} has no RGB conversion here")


def _wide_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit int holding 16-bit) gray -> 8 bits: round(v / 257), clipped."""
    values = arr.astype(np.float64)
    if values.size and values.max() > 65535:
        values = values / 65537.0  # 32-bit data: map the full range down to 16 bits first
    return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)


def _composite(rgba, background: tuple[int, int, int]) -> np.ndarray:
    arr = np.asarray(rgba, dtype=np.float32)
    alpha = arr[:, :, 3:4] / 255.0
    bg = np.asarray(background, dtype=np.float32)[None, None, :]
    out = arr[:, :, :3] * alpha + bg * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def read_and_decode(image_id: int, path: str, file_name: str = "", cfg: DecodeConfig | None = None) -> DecodedImage:
    """Read a local file and decode it; a missing or unreadable file is a RecordFailure too."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as err:
        raise RecordFailure("missing_file", f"{path} does not exist") from err
    except OSError as err:
        raise RecordFailure("unreadable_file", f"{path}: {err}") from err
    return decode_image(image_id, data, file_name or path, cfg)
