"""Exporters from a corpus's image records to the formats downstream code reads.

LXMERT TSV (airsplay/lxmert ``load_obj_tsv``): tab-separated, no header, fields
``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features``;
array fields are base64 of raw little-endian buffers: int64 ids, float32 confidences, float32 boxes
[N, 4] (x1, y1, x2, y2 in image pixels), float32 features [N, D].

HDF5 (h5py), flat with per-image offsets (bottom-up-attention-vqa style, any number of boxes)::

    image_ids int64 [M]         image_h, image_w int32 [M]
    pos_boxes int64 [M, 2]      rows [start, end) of each image in the flat arrays
    features  float32 | float16 [T, D]      boxes float32 [T, 4]
    spatial_features float32 [T, 6]         x1/W, y1/H, x2/W, y2/H, w/W, h/H
    obj_ids int32 [T]  obj_conf float32 [T]  attr_ids int32 [T]  attr_conf float32 [T]
    attrs: view, num_images, num_boxes_fixed (N when every image has N boxes, else -1)

With a fixed box count, ``features[...].reshape(M, N, D)`` is the usual [images, 36, 2048] array.
"""

from __future__ import annotations

import base64
import csv
import logging
import sys
from collections.abc import Iterator

import numpy as np

from ssrp.corpus import CorpusReader, ImageRecord, parse_key

logger = logging.getLogger(__name__)

LXMERT_FIELDS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
                 "boxes", "features")


def image_records(corpus: str, view: str = "raw") -> Iterator[ImageRecord]:
    with CorpusReader(corpus) as reader:
        ids = sorted(ident for kind, ident, sub in map(parse_key, reader.keys("image")) if sub == view)
        for image_id in ids:
            yield reader.image(image_id, view)


def _b64(arr: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=np.dtype(dtype)).tobytes()).decode("ascii")


def lxmert_row(record: ImageRecord, img_id: str | None = None) -> dict[str, str | int]:
    return {
        "img_id": img_id or (record.file_name.rsplit(".", 1)[0] if record.file_name else str(record.image_id)),
        "img_h": record.height,
        "img_w": record.width,
        "objects_id": _b64(record.obj_ids, "<i8"),
        "objects_conf": _b64(record.obj_conf, "<f4"),
        "attrs_id": _b64(record.attr_ids, "<i8"),
        "attrs_conf": _b64(record.attr_conf, "<f4"),
        "num_boxes": record.num_boxes,
        "boxes": _b64(record.boxes, "<f4"),
        "features": _b64(record.features, "<f4"),
    }


def export_lxmert_tsv(corpus: str, out_path: str, view: str = "raw") -> int:
    """Write one LXMERT TSV row per image; returns the number of rows."""
    n = 0
    with open(out_path, "w", newline="", encoding="ascii") as fh:
        writer = csv.DictWriter(fh, fieldnames=LXMERT_FIELDS, delimiter="\t")
        for record in image_records(corpus, view):
            writer.writerow(lxmert_row(record))
            n += 1
    logger.info("wrote %d rows to %s", n, out_path)
    return n


def read_lxmert_tsv(path: str) -> list[dict]:
    """Read an LXMERT TSV the way LXMERT's load_obj_tsv does (decoded arrays, read-only)."""
    csv.field_size_limit(sys.maxsize)
    decode = {"objects_id": ("<i8", None), "objects_conf": ("<f4", None), "attrs_id": ("<i8", None),
              "attrs_conf": ("<f4", None), "boxes": ("<f4", 4), "features": ("<f4", -1)}
    rows = []
    with open(path, encoding="ascii") as fh:
        for item in csv.DictReader(fh, LXMERT_FIELDS, delimiter="\t"):
            for key in ("img_h", "img_w", "num_boxes"):
                item[key] = int(item[key])
            n = item["num_boxes"]
            for key, (dtype, cols) in decode.items():
                arr = np.frombuffer(base64.b64decode(item[key]), dtype=dtype)
                item[key] = arr.reshape(n, cols) if cols else arr
                item[key].setflags(write=False)
            rows.append(item)
    return rows


def export_hdf5(corpus: str, out_path: str, view: str = "raw", feature_dtype: str = "float32") -> int:
    """Write the flat HDF5 layout above; returns the number of images."""
    import h5py

    if feature_dtype not in ("float32", "float16"):
        raise ValueError(f"feature_dtype must be float32 or float16, got {feature_dtype!r}")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("features", "boxes", "spatial_features", "obj_ids",
                                                         "obj_conf", "attr_ids", "attr_conf")}
    ids, heights, widths, pos = [], [], [], []
    start = 0
    for r in image_records(corpus, view):
        ids.append(r.image_id)
        heights.append(r.height)
        widths.append(r.width)
        pos.append((start, start + r.num_boxes))
        start += r.num_boxes
        for name in ("features", "boxes", "obj_ids", "obj_conf", "attr_ids", "attr_conf"):
            cols[name].append(np.asarray(getattr(r, name)))
        cols["spatial_features"].append(spatial_features(r.boxes, r.height, r.width))
    counts = {e - s for s, e in pos}
    dims = {"features": (0, cols["features"][0].shape[1] if cols["features"] else 0), "boxes": (0, 4),
            "spatial_features": (0, 6)}
    dtypes = {"features": feature_dtype, "boxes": "float32", "spatial_features": "float32", "obj_ids": "int32",
              "obj_conf": "float32", "attr_ids": "int32", "attr_conf": "float32"}
    with h5py.File(out_path, "w") as h5:
        h5.create_dataset("image_ids", data=np.asarray(ids, dtype=np.int64))
        h5.create_dataset("image_h", data=np.asarray(heights, dtype=np.int32))
        h5.create_dataset("image_w", data=np.asarray(widths, dtype=np.int32))
        h5.create_dataset("pos_boxes", data=np.asarray(pos, dtype=np.int64).reshape(-1, 2))
        for name, parts in cols.items():
            data = np.concatenate(parts) if parts else np.zeros(dims.get(name, (0,)))
            h5.create_dataset(name, data=data.astype(dtypes[name]))
        h5.attrs["view"] = view
        h5.attrs["num_images"] = len(ids)
        h5.attrs["num_boxes_fixed"] = counts.pop() if len(counts) == 1 else -1
    logger.info("wrote %d images to %s", len(ids), out_path)
    return len(ids)


def spatial_features(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[N, 6]: x1/W, y1/H, x2/W, y2/H, w/W, h/H (the BUTD-VQA spatial feature)."""
    b = np.asarray(boxes, dtype=np.float32)
    scaled = b / np.asarray([width, height, width, height], dtype=np.float32)
    wh = scaled[:, 2:4] - scaled[:, 0:2]
    return np.concatenate([scaled, wh], axis=1).astype(np.float32)
