import io
import struct
import zlib

import numpy as np
import pytest
from features_helpers import jpeg_bytes
from PIL import Image

from ssrp.deadletter import DeadLetter, RecordFailure
from ssrp.features.config import DecodeConfig
from ssrp.features.image import decode_image


def _png(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def _reason(data: bytes, cfg: DecodeConfig | None = None) -> str:
    with pytest.raises(RecordFailure) as err:
        decode_image(1, data, "x", cfg)
    return err.value.reason


def test_rgb_jpeg_decodes_to_uint8_hw3():
    img = decode_image(7, jpeg_bytes(40, 30), "a.jpg")
    assert img.pixels.shape == (30, 40, 3) and img.pixels.dtype == np.uint8 and img.image_id == 7
    assert img.meta["format"] == "JPEG"


def test_cmyk_jpeg_becomes_rgb():
    rgb = np.zeros((20, 24, 3), np.uint8)
    rgb[:, :12] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    img = decode_image(1, buf.getvalue(), "c.jpg")
    assert img.meta["mode"] == "CMYK" and img.pixels.shape == (20, 24, 3)
    assert img.pixels[10, 3, 0] > 150 and img.pixels[10, 3, 1] < 80  # still red


def test_grayscale_is_replicated_into_three_channels():
    gray = Image.fromarray(np.arange(20 * 30, dtype=np.uint8).reshape(20, 30) % 251, "L")
    img = decode_image(1, _png(gray), "g.png")
    assert img.pixels.shape == (20, 30, 3)
    assert (img.pixels[:, :, 0] == np.asarray(gray)).all() and (img.pixels[:, :, 2] == np.asarray(gray)).all()


def test_16_bit_images_are_rescaled_not_clipped():
    values = (np.arange(20 * 20, dtype=np.uint16).reshape(20, 20) * 163).astype(np.uint16)  # up to 65037
    img = decode_image(1, _png(Image.fromarray(values)), "d.png")
    assert img.pixels.shape == (20, 20, 3)
    np.testing.assert_array_equal(img.pixels[:, :, 0], np.rint(values / 257.0).astype(np.uint8))
    assert img.pixels.max() > 250  # Pillow's own convert("RGB") would clip everything above 255 to white


def test_rgba_and_transparent_palette_are_composited_on_the_background():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :10, 3] = 255  # left half opaque red, right half transparent
    img = decode_image(1, _png(Image.fromarray(rgba, "RGBA")), "t.png", DecodeConfig(alpha_background=(0, 0, 255)))
    assert tuple(img.pixels[5, 2]) == (255, 0, 0) and tuple(img.pixels[5, 15]) == (0, 0, 255)
    pal = Image.fromarray(rgba[..., :3]).convert("P")
    pal.info["transparency"] = 0
    img = decode_image(1, _png(pal, transparency=0), "p.png")
    assert img.pixels.shape == (20, 20, 3)
    plain = decode_image(1, _png(Image.fromarray(rgba[..., :3]).convert("P")), "p2.png")
    assert tuple(plain.pixels[5, 2]) == (255, 0, 0)


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :5] = 255  # a white band on the left of a 40x20 image
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    dec = decode_image(1, buf.getvalue(), "r.jpg")
    assert dec.pixels.shape == (40, 20, 3) and dec.meta["orientation"] == 6
    assert dec.pixels[:5, :, 0].mean() > 200  # the band is now on top


def test_bad_inputs_have_named_reasons():
    assert _reason(b"") == "empty_file"
    assert _reason(b"<html>404 not found</html>" * 10) == "not_an_image"
    assert _reason(jpeg_bytes(40, 30)[:300]) == "truncated_image"
    assert _reason(jpeg_bytes(15, 40)) == "too_small"
    assert _reason(jpeg_bytes(200, 200), DecodeConfig(max_pixels=30_000)) == "decompression_bomb"
    float_img = Image.fromarray(np.ones((20, 20), np.float32), "F")
    buf = io.BytesIO()
    float_img.save(buf, "TIFF")
    assert _reason(buf.getvalue()) == "unsupported_mode"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, followed by a few bytes of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_huge_header_is_refused_before_decoding():
    # 60000 x 60000 pixels claimed (10.8 GB decoded) in a 100-byte file: refused from the header alone
    data = _png_header_only(60000, 60000)
    assert len(data) < 200
    assert _reason(data) == "decompression_bomb"
    assert _reason(_png_header_only(8000, 8000)) == "decompression_bomb"  # 64 M > max_pixels (50 M)


def test_bad_images_become_dead_letters_without_crashing_the_batch(extractor, images):
    from ssrp.features.stage import extract

    out = extract([images[0], b"not an image at all", jpeg_bytes(10, 10)], extractor=extractor)
    assert not isinstance(out[0], DeadLetter) and out[0].num_boxes > 0
    assert isinstance(out[1], DeadLetter) and out[1].reason == "not_an_image" and out[1].stage == "decode"
    assert isinstance(out[2], DeadLetter) and out[2].reason == "too_small"
