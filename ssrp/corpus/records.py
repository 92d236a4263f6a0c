"""Corpus records and their binary encoding (the contract between pipeline and trainer).

A record value is::

    b"SSRP" | u16 format version | u32 header length | msgpack header | padding | array blobs

The msgpack header holds the record kind, scalar fields, a crc32 of the array blobs and one
descriptor ``[name, dtype, shape, offset, nbytes]`` per array. Every blob starts on a 16-byte
boundary, so decoding is a header parse plus one ``np.frombuffer`` view per array: no copy,
no pickle. Arrays decoded from a value are read-only views of that value's bytes.

See docs/corpus-format.md for the schema of each kind.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
from isal.isal_zlib import crc32  # zlib's crc32, computed with carry-less multiplication (about 15x faster)

FORMAT_VERSION = 2  # 2: index records carry the COCO split of their image
READABLE_VERSIONS = (1, 2)  # version 1 records read with their new fields at the defaults
MAGIC = b"SSRP"
_PREFIX = struct.Struct("<4sHI")
_ALIGN = 16

IMAGE, TEXT, INDEX = "image", "text", "index"
KINDS = (IMAGE, TEXT, INDEX)


class RecordError(ValueError):
    """A record value that cannot be decoded or does not follow the schema."""


# --------------------------------------------------------------------------------------------
# Keys: ASCII, zero-padded ids so byte order equals numeric order.


def image_key(image_id: int, view: str) -> str:
    return f"image/{image_id:012d}/{view}"


def text_key(caption_id: int, variant: str) -> str:
    return f"text/{caption_id:012d}/{variant}"


def index_key(image_id: int) -> str:
    return f"index/{image_id:012d}"


def parse_key(key: str) -> tuple[str, int, str]:
    """Split a key into (kind, id, subtype); subtype is the view, variant or '' for index."""
    parts = key.split("/")
    if len(parts) not in (2, 3) or parts[0] not in KINDS or not parts[1].isdigit():
        raise RecordError(f"malformed key {key!r}: expected image/ID/VIEW, text/ID/VARIANT or index/ID")
    return parts[0], int(parts[1]), parts[2] if len(parts) == 3 else ""


def shard_group(key: str) -> str:
    """The part of a key that decides its shard: every view of one image lands in one shard."""
    kind, ident, _ = parse_key(key)
    return f"{kind}/{ident:012d}"


def stable_shard(key: str, num_shards: int) -> int:
    """Shard of a key: crc32 of its group, never Python's salted hash()."""
    return zlib.crc32(shard_group(key).encode("ascii")) % num_shards


# --------------------------------------------------------------------------------------------
# Records.


@dataclass(frozen=True)
class ImageRecord:
    """One view of one image: the detector's regions in that view."""

    image_id: int
    view: str
    height: int
    width: int
    boxes: np.ndarray  # float32 [N, 4], x1 y1 x2 y2 in the view's pixels
    features: np.ndarray  # float16 [N, D]
    obj_ids: np.ndarray  # int32 [N]
    obj_conf: np.ndarray  # float32 [N]
    attr_ids: np.ndarray  # int32 [N]
    attr_conf: np.ndarray  # float32 [N]
    view_params: dict[str, Any] = field(default_factory=dict)
    file_name: str = ""

    @property
    def key(self) -> str:
        return image_key(self.image_id, self.view)

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class TextRecord:
    """One variant of one caption (raw, or a back-translation), with its parse once parsed.

    The parse fields are empty until the parse stage fills them. Word indices are 0-based;
    ``heads`` are 1-based with 0 for the root (CoNLL-U); ``piece_word`` gives, for each WordPiece
    id including [CLS] and [SEP], the index of its word, or -1 for special tokens.
    """

    caption_id: int
    image_id: int
    variant: str
    text: str
    pivot: str = ""
    words: tuple[str, ...] = ()
    upos: tuple[str, ...] = ()
    deprels: tuple[str, ...] = ()
    heads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # int32 [W]
    input_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # int32 [T]
    piece_word: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # int32 [T]
    tree_dist: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))  # uint8 [W, W]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return text_key(self.caption_id, self.variant)

    @property
    def parsed(self) -> bool:
        return len(self.words) > 0


@dataclass(frozen=True)
class IndexRecord:
    """An image and the ids of its captions."""

    image_id: int
    caption_ids: np.ndarray  # int64 [C]
    file_name: str = ""
    height: int = 0
    width: int = 0
    split: str = ""  # the COCO split of the image (train, val); "" for images of no split (a folder)

    @property
    def key(self) -> str:
        return index_key(self.image_id)


Record = ImageRecord | TextRecord | IndexRecord

# name -> (dtype, ndim); dtypes are little-endian and fixed by the format.
_ARRAYS: dict[str, dict[str, tuple[str, int]]] = {
    IMAGE: {
        "boxes": ("<f4", 2),
        "features": ("<f2", 2),
        "obj_ids": ("<i4", 1),
        "obj_conf": ("<f4", 1),
        "attr_ids": ("<i4", 1),
        "attr_conf": ("<f4", 1),
    },
    TEXT: {
        "heads": ("<i4", 1),
        "input_ids": ("<i4", 1),
        "piece_word": ("<i4", 1),
        "tree_dist": ("|u1", 2),
    },
    INDEX: {"caption_ids": ("<i8", 1)},
}
_SCALARS: dict[str, tuple[str, ...]] = {
    IMAGE: ("image_id", "view", "height", "width", "view_params", "file_name"),
    TEXT: ("caption_id", "image_id", "variant", "text", "pivot", "words", "upos", "deprels", "meta"),
    INDEX: ("image_id", "file_name", "height", "width", "split"),
}
_CLASSES = {IMAGE: ImageRecord, TEXT: TextRecord, INDEX: IndexRecord}
_TUPLE_FIELDS = ("words", "upos", "deprels")


def kind_of(record: Record) -> str:
    for kind, cls in _CLASSES.items():
        if isinstance(record, cls):
            return kind
    raise TypeError(f"not a corpus record: {type(record).__name__}")


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def encode(record: Record) -> bytes:
    """Encode a record; validates it first, so a bad record never reaches a shard."""
    validate(record)
    kind = kind_of(record)
    arrays = []
    for name, (dtype, _) in _ARRAYS[kind].items():
        arr = np.ascontiguousarray(np.asarray(getattr(record, name)), dtype=np.dtype(dtype))
        arrays.append((name, dtype, arr))
    blob = bytearray()
    descriptors = []
    for name, dtype, arr in arrays:
        blob += b"\0" * _pad(len(blob))
        descriptors.append([name, dtype, list(arr.shape), len(blob), arr.nbytes])
        blob += arr.tobytes()
    scalars = {}
    for name in _SCALARS[kind]:
        value = getattr(record, name)
        scalars[name] = list(value) if name in _TUPLE_FIELDS else value
    header = msgpack.packb(
        {"kind": kind, "fields": scalars, "arrays": descriptors, "crc": crc32(blob)},
        use_bin_type=True,
    )
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    return bytes(head + b"\0" * _pad(len(head)) + blob)


_HEAD = _PREFIX.size


def decode_header(value: bytes | memoryview) -> tuple[dict, int]:
    """Parse the prefix and header of a value; returns (header, offset of the first blob)."""
    size = len(value)
    if size < _HEAD:
        raise RecordError(f"value of {size} bytes is shorter than the record prefix")
    magic, version, header_len = _PREFIX.unpack_from(value)
    if magic != MAGIC:
        raise RecordError(f"bad magic {bytes(magic)!r}: not an ssrp corpus record")
    if version not in READABLE_VERSIONS:
        raise RecordError(f"record format version {version}, this ssrp reads versions {READABLE_VERSIONS}")
    end = _HEAD + header_len
    if end > size:
        raise RecordError("record header runs past the end of the value (truncated)")
    try:
        header = msgpack.unpackb(memoryview(value)[_HEAD:end], raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as err:
        raise RecordError(f"corrupt record header: {err}") from err
    if type(header) is not dict or header.get("kind") not in KINDS:
        raise RecordError("record header has no valid kind")
    return header, end + (-end) % _ALIGN


_DTYPES = {dtype: np.dtype(dtype) for arrays in _ARRAYS.values() for dtype, _ in arrays.values()}


def decode(value: bytes | memoryview, check_crc: bool = False, validate: bool = True) -> Record:
    """Decode a value into a record whose arrays are read-only views of ``value``.

    ``check_crc`` compares the arrays' bytes with the header's crc32. ``validate`` runs the schema's
    cross-field checks (shapes agreeing with each other); the per-array checks that keep every view inside
    ``value`` (dtype, number of dimensions, bounds) always run.
    """
    header, base = decode_header(value)
    kind = header["kind"]
    if check_crc:
        _check_crc(value, base, header)
    fields = dict(header["fields"])
    for name in _TUPLE_FIELDS:
        if name in fields:
            fields[name] = tuple(fields[name])
    try:
        record = _CLASSES[kind](**fields, **_views(kind, header["arrays"], value, base, None))
    except TypeError as err:
        raise RecordError(f"{kind} record fields do not match the schema: {err}") from err
    if validate:
        _VALIDATORS[kind](record)
    return record


def decode_arrays(value: bytes | memoryview, names: Collection[str], check_crc: bool = False
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The scalar fields and only the named arrays of a value (read-only views), without building a record:
    the reading path of a trainer that needs two of an image record's six arrays."""
    header, base = decode_header(value)
    if check_crc:
        _check_crc(value, base, header)
    arrays = _views(header["kind"], header["arrays"], value, base, names)
    if len(arrays) != len(names):
        missing = sorted(set(names) - set(arrays))
        raise RecordError(f"{header['kind']} record has no array {missing}")
    return header["fields"], arrays


def _check_crc(value: bytes | memoryview, base: int, header: dict) -> None:
    if crc32(memoryview(value)[base:]) != header.get("crc"):
        raise RecordError("array data does not match the record's crc32 (corrupted bytes)")


def _views(kind: str, descriptors: list, value: bytes | memoryview, base: int,
           names: Collection[str] | None) -> dict[str, np.ndarray]:
    """Read-only arrays over ``value`` for the descriptors (those in ``names``), each checked to lie inside it."""
    schema = _ARRAYS[kind]
    room = len(value) - base
    arrays = {}
    for name, dtype, shape, offset, nbytes in descriptors:
        if names is not None and name not in names:
            continue
        expect = schema.get(name)
        if expect is None or expect[0] != dtype or len(shape) != expect[1]:
            raise RecordError(f"array {name!r} has dtype {dtype} and {len(shape)} dims; schema says {expect}")
        dt = _DTYPES[dtype]
        if offset < 0 or offset + nbytes > room or math.prod(shape) * dt.itemsize != nbytes:
            raise RecordError(f"array {name!r} of shape {shape} does not fit the value (truncated?)")
        arrays[name] = np.ndarray(shape, dt, value, base + offset)
    return arrays


# --------------------------------------------------------------------------------------------
# Schema validation.


def _check(cond: bool, record: Record, message: str) -> None:
    if not cond:
        raise RecordError(f"{record.key}: {message}")


def _validate_image(r: ImageRecord) -> None:
    n = r.boxes.shape[0] if r.boxes.ndim == 2 else -1
    _check(r.boxes.ndim == 2 and r.boxes.shape[1] == 4, r, f"boxes must be [N,4], got {r.boxes.shape}")
    _check(r.features.ndim == 2 and r.features.shape[0] == n, r, f"features must be [{n},D], got {r.features.shape}")
    for name in ("obj_ids", "obj_conf", "attr_ids", "attr_conf"):
        shape = np.shape(getattr(r, name))
        _check(shape == (n,), r, f"{name} must be [{n}], got {shape}")
    _check(r.height > 0 and r.width > 0, r, f"image size must be positive, got {r.height}x{r.width}")
    _check(bool(r.view) and "/" not in r.view, r, f"bad view name {r.view!r}")


def _validate_text(r: TextRecord) -> None:
    _check(bool(r.variant) and "/" not in r.variant, r, f"bad variant name {r.variant!r}")
    _check(isinstance(r.text, str), r, "text must be a string")
    w = len(r.words)
    _check(len(r.upos) == w and len(r.deprels) == w, r, "words, upos and deprels must have one entry per word")
    _check(np.shape(r.heads) == (w,), r, f"heads must be [{w}], got {np.shape(r.heads)}")
    _check(np.shape(r.tree_dist) == (w, w), r, f"tree_dist must be [{w},{w}], got {np.shape(r.tree_dist)}")
    _check(np.shape(r.piece_word) == np.shape(r.input_ids), r, "piece_word must have one entry per input id")
    if w:
        heads = np.asarray(r.heads)
        _check(bool(((heads >= 0) & (heads <= w)).all()), r, "heads must lie in 0..W")
        pw = np.asarray(r.piece_word)
        _check(bool(((pw >= -1) & (pw < w)).all()), r, "piece_word must lie in -1..W-1")


def _validate_index(r: IndexRecord) -> None:
    _check(np.ndim(r.caption_ids) == 1, r, "caption_ids must be 1-d")


_VALIDATORS = {IMAGE: _validate_image, TEXT: _validate_text, INDEX: _validate_index}


def validate(record: Record) -> None:
    """Raise RecordError naming the record's key if it does not follow the schema."""
    _VALIDATORS[kind_of(record)](record)
