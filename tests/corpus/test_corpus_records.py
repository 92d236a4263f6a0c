import numpy as np
import pytest
from corpus_helpers import make_image, make_text

from ssrp.corpus import (
    ImageRecord,
    IndexRecord,
    RecordError,
    TextRecord,
    decode,
    encode,
    image_key,
    parse_key,
    stable_shard,
)


def test_image_round_trip_is_exact_and_zero_copy():
    rec = make_image(42, "rot90")
    value = encode(rec)
    back = decode(value)
    assert isinstance(back, ImageRecord)
    for name in ("boxes", "features", "obj_ids", "obj_conf", "attr_ids", "attr_conf"):
        a, b = getattr(rec, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
        assert not b.flags.writeable  # a view of the value's bytes, not a copy
    assert back.features.dtype == np.float16 and back.boxes.dtype == np.float32
    assert back.view_params == {"angle": 90} and back.key == "image/000000000042/rot90"


def test_text_and_index_round_trip():
    t = make_text(7, 3, "ru")
    back = decode(encode(t))
    assert isinstance(back, TextRecord) and back.words == t.words and back.deprels == t.deprels
    assert np.array_equal(back.tree_dist, t.tree_dist) and back.tree_dist.dtype == np.uint8
    ix = IndexRecord(image_id=3, caption_ids=np.array([7, 8], np.int64))
    assert list(decode(encode(ix)).caption_ids) == [7, 8]


def test_unparsed_text_record_is_valid():
    t = TextRecord(caption_id=1, image_id=1, variant="de", text="a cat", pivot="eine Katze")
    back = decode(encode(t))
    assert not back.parsed and back.pivot == "eine Katze" and back.heads.shape == (0,)


def test_array_blobs_start_on_16_byte_boundaries():
    value = encode(make_image(1))
    back = decode(value)
    start = np.frombuffer(value, np.uint8).ctypes.data
    for name in ("boxes", "features", "obj_ids", "attr_conf"):
        assert (getattr(back, name).ctypes.data - start) % 16 == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(features=np.zeros((35, 2048), np.float16)), "features"),
        (dict(boxes=np.zeros((36, 5), np.float32)), "boxes"),
        (dict(obj_conf=np.zeros(3, np.float32)), "obj_conf"),
        (dict(height=0), "image size"),
        (dict(view="a/b"), "view"),
    ],
)
def test_wrong_shapes_are_refused_with_the_key(change, message):
    import dataclasses

    bad = dataclasses.replace(make_image(5), **change)
    with pytest.raises(RecordError, match=message) as err:
        encode(bad)
    assert "image/000000000005" in str(err.value)


def test_text_schema_consistency():
    import dataclasses

    t = make_text(1, 1)
    with pytest.raises(RecordError, match="tree_dist"):
        encode(dataclasses.replace(t, tree_dist=np.zeros((3, 3), np.uint8)))
    with pytest.raises(RecordError, match="heads must lie"):
        encode(dataclasses.replace(t, heads=np.array([9, 0, 1, 1], np.int32)))


def test_corrupt_values_raise_record_error():
    value = encode(make_image(1))
    with pytest.raises(RecordError, match="magic"):
        decode(b"XXXX" + value[4:])
    with pytest.raises(RecordError, match="version"):
        decode(value[:4] + (99).to_bytes(2, "little") + value[6:])
    with pytest.raises(RecordError):
        decode(value[: len(value) // 2])
    flipped = bytearray(value)
    flipped[-100] ^= 0x01
    decode(bytes(flipped))  # arrays still decode...
    with pytest.raises(RecordError, match="crc32"):
        decode(bytes(flipped), check_crc=True)  # ...but the checksum catches the flip


def test_keys_and_stable_shards():
    assert parse_key(image_key(7, "hflip_rot90")) == ("image", 7, "hflip_rot90")
    with pytest.raises(RecordError):
        parse_key("image/abc/raw")
    # all views of one image share a shard; assignment is crc32-based, identical in every process
    assert len({stable_shard(image_key(123, v), 16) for v in ("raw", "rot90", "jitter0")}) == 1
    import zlib

    assert stable_shard(image_key(123, "raw"), 16) == zlib.crc32(b"image/000000000123") % 16
