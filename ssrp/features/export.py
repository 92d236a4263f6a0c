"""Exporters from image records (a corpus's view, or the records of given boxes) to what downstream code reads.

Every writer takes an iterable of ``ImageRecord`` and streams it (memory does not grow with the number of
images). Formats (docs/features.md has each loader's snippet):

**LXMERT TSV** (airsplay/lxmert ``load_obj_tsv``): tab-separated, no header, fields
``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features``; array
fields are base64 of raw little-endian buffers: int64 ids, float32 confidences, float32 boxes [N, 4] (x1, y1,
x2, y2 in image pixels), float32 features [N, D].

**HDF5, layout "adaptive"** (default; any number of boxes per image)::

    image_ids int64 [M]   image_h, image_w int32 [M]   image_names str [M]
    pos_boxes int64 [M, 2]                rows [start, end) of each image in the flat arrays
    features  float32 | float16 [T, D]    boxes float32 [T, 4]   spatial_features float32 [T, 6]
    obj_ids int32 [T]  obj_conf float32 [T]  attr_ids int32 [T]  attr_conf float32 [T]
    image_features -> features, image_bb -> boxes   (hard links: the names of bottom-up-attention-vqa and BAN)
    attrs: view, num_images, num_boxes_fixed (N when every image has N boxes, else -1), layout

``spatial_features`` is x1/W, y1/H, x2/W, y2/H, w/W, h/H, as the BUTD-VQA converters compute it.

**HDF5, layout "fixed"** (hengyuan-hu/bottom-up-attention-vqa's 36-box files; every image must have the same N):
``image_features [M, N, D]``, ``image_bb [M, N, 4]``, ``spatial_features [M, N, 6]``, ``obj_ids``/``obj_conf``/
``attr_ids``/``attr_conf [M, N]``, ``image_ids``, ``image_h``, ``image_w``, ``image_names [M]``.

**npz**, one file per image (MILVLG/bottom-up-attention.pytorch's ``save_roi_features``, read by MCAN/OpenVQA):
``x`` float32 [N, D] (``transpose``: [D, N], the layout OpenVQA's VQA loader transposes back), ``bbox`` float32
[N, 4] image pixels, ``num_bbox``, ``image_h``, ``image_w``, and instead of that repo's pickled ``info`` dict,
plain arrays ``image_id``, ``objects_id``, ``objects_conf``, ``attrs_id``, ``attrs_conf`` (no pickle anywhere).

Object and attribute ids are 0-based lines of the detector's objects_vocab.txt / attributes_vocab.txt
(background and "no attribute" excluded), as in LXMERT's TSVs.

**Image names** (TSV ``img_id``, npz file names, HDF5 ``image_names``): ``file`` (the image file's stem, e.g.
``000000000009``), ``id`` (the decimal id) or ``coco2014`` (``COCO_train2014_000000000009``, the ids of
LXMERT's data JSONs; which 2014 split an image was in comes from a COCO 2014 root, see ``coco2014_names``).
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ssrp.corpus import CorpusReader, ImageRecord, parse_key
from ssrp.fileutil import atomic_file, require_dir_path

logger = logging.getLogger(__name__)

LXMERT_FIELDS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
                 "boxes", "features")
FORMATS = ("tsv", "hdf5", "npz")
NAMES = ("file", "id", "coco2014")
HDF5_LAYOUTS = ("adaptive", "fixed")
HDF5_ALIASES = {"image_features": "features", "image_bb": "boxes"}  # bottom-up-attention-vqa / BAN names

Namer = Callable[[ImageRecord], str]


def image_records(corpus: str, view: str = "raw") -> Iterator[ImageRecord]:
    """The corpus's records of one view, by image id."""
    with CorpusReader(corpus) as reader:
        ids = sorted(ident for kind, ident, sub in map(parse_key, reader.keys("image")) if sub == view)
        if not ids:
            raise ValueError(f"{corpus} has no image records of view {view!r} (views: {reader.views()})")
        for image_id in ids:
            yield reader.image(image_id, view)


# ------------------------------------------------------------------------------------------------
# Image names


def file_stem(record: ImageRecord) -> str:
    return record.file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0] if record.file_name else str(record.image_id)


_COCO2014 = re.compile(r"^COCO_(train|val)2014_(\d{12})$")


def coco2014_names(root: str) -> dict[int, str]:
    """Image id -> ``COCO_{train,val}2014_{id:012d}`` from a COCO 2014 root: the ``images`` of
    annotations/captions_{train,val}2014.json (or instances_*), else the file names in train2014/ and val2014/.

    COCO 2017 reuses the 2014 ids, but train2017 holds images of both 2014 splits, so the split cannot be
    told from an id alone."""
    names: dict[int, str] = {}
    for split in ("train", "val"):
        for stem in _split_stems(root, split):
            m = _COCO2014.match(stem)
            if m:
                names[int(m.group(2))] = stem
    if not names:
        raise FileNotFoundError(f"{root}: no COCO 2014 image names (need annotations/captions_train2014.json, "
                                "captions_val2014.json or the train2014/ and val2014/ folders)")
    return names


def _split_stems(root: str, split: str) -> list[str]:
    for name in (f"captions_{split}2014.json", f"instances_{split}2014.json"):
        path = os.path.join(root, "annotations", name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                return [img["file_name"].rsplit(".", 1)[0] for img in json.load(fh).get("images", [])]
    folder = os.path.join(root, f"{split}2014")
    return [n.rsplit(".", 1)[0] for n in os.listdir(folder)] if os.path.isdir(folder) else []


def make_namer(kind: str = "file", coco2014_root: str | None = None) -> Namer:
    """How each image is named in the output: ``file``, ``id`` or ``coco2014`` (needs ``coco2014_root``)."""
    if kind == "file":
        return file_stem
    if kind == "id":
        return lambda r: str(r.image_id)
    if kind != "coco2014":
        raise ValueError(f"image names {kind!r}: use one of {NAMES}")
    if not coco2014_root:
        raise ValueError("coco2014 image names need the COCO 2014 root (--coco2014 DIR) to tell train2014 from val2014")
    table = coco2014_names(coco2014_root)

    def name(record: ImageRecord) -> str:
        if record.image_id not in table:
            raise ValueError(f"image {record.image_id} ({record.file_name}) is in neither train2014 nor val2014 "
                             f"under {coco2014_root}")
        return table[record.image_id]

    return name


# ------------------------------------------------------------------------------------------------
# LXMERT TSV


def _b64(arr: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=np.dtype(dtype)).tobytes()).decode("ascii")


def lxmert_row(record: ImageRecord, img_id: str | None = None) -> dict[str, str | int]:
    return {
        "img_id": img_id or file_stem(record),
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


def write_tsv(records: Iterable[ImageRecord], path: str, name: Namer = file_stem) -> int:
    """One LXMERT TSV row per record; returns the number of rows."""
    n = empty = 0
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="ascii") as fh:
        writer = csv.DictWriter(fh, fieldnames=LXMERT_FIELDS, delimiter="\t")
        for record in records:
            writer.writerow(lxmert_row(record, name(record)))
            n += 1
            empty += record.num_boxes == 0
    if empty:
        logger.warning("%s: %d images have no boxes; LXMERT's load_obj_tsv cannot reshape such rows", path, empty)
    logger.info("wrote %d rows to %s", n, path)
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
                item[key] = (arr.reshape(n, cols) if n else arr.reshape(0, max(cols, 0))) if cols else arr
                item[key].setflags(write=False)
            rows.append(item)
    return rows


# ------------------------------------------------------------------------------------------------
# HDF5


def spatial_features(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[N, 6]: x1/W, y1/H, x2/W, y2/H, w/W, h/H (the BUTD-VQA spatial feature)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scaled = b / np.asarray([width, height, width, height], dtype=np.float32)
    wh = scaled[:, 2:4] - scaled[:, 0:2]
    return np.concatenate([scaled, wh], axis=1).astype(np.float32)


_PER_BOX = {"features": None, "boxes": "float32", "spatial_features": "float32", "obj_ids": "int32",
            "obj_conf": "float32", "attr_ids": "int32", "attr_conf": "float32"}
_PER_IMAGE = {"image_ids": "int64", "image_h": "int32", "image_w": "int32"}


def _box_columns(r: ImageRecord) -> dict[str, np.ndarray]:
    return {"features": r.features, "boxes": r.boxes, "spatial_features": spatial_features(r.boxes, r.height, r.width),
            "obj_ids": r.obj_ids, "obj_conf": r.obj_conf, "attr_ids": r.attr_ids, "attr_conf": r.attr_conf}


class _Appender:
    """Resizable HDF5 datasets (one row per appended item), filled in blocks of ``block`` rows of the first one."""

    def __init__(self, h5, specs: dict[str, tuple[tuple[int, ...], str]], block: int = 4096):
        import h5py

        self.h5, self.block = h5, block
        self.pending: dict[str, list] = {k: [] for k in specs}
        self.waiting = 0
        for name, (shape, dtype) in specs.items():
            kind = h5py.string_dtype() if dtype == "str" else dtype
            rows = max(1, min(block, (1 << 20) // max(1, int(np.prod(shape, dtype=np.int64)) * 4)))  # ~1 MB chunks
            h5.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=kind, chunks=(rows, *shape))

    def add(self, rows: int, values: dict) -> None:
        """``values``: per dataset, ``rows`` rows as one array, or one scalar/string (``rows`` = 1)."""
        for name, value in values.items():
            self.pending[name].append(value)
        self.waiting += rows
        if self.waiting >= self.block:
            self.flush()

    def flush(self) -> None:
        for name, parts in self.pending.items():
            if not parts:
                continue
            ds = self.h5[name]
            if ds.dtype.kind == "O":
                data = np.array(parts, dtype=object)
            elif isinstance(parts[0], np.ndarray) and parts[0].ndim == len(ds.shape):
                data = np.concatenate(parts).astype(ds.dtype, copy=False)
            else:
                data = np.asarray(parts, dtype=ds.dtype)
            start = ds.shape[0]
            ds.resize(start + len(data), axis=0)
            ds[start:] = data
            self.pending[name] = []
        self.waiting = 0


def write_hdf5(records: Iterable[ImageRecord], path: str, feature_dtype: str = "float32", layout: str = "adaptive",
               name: Namer = file_stem, view: str = "raw") -> int:
    """The HDF5 layouts above; returns the number of images."""
    import h5py

    if feature_dtype not in ("float32", "float16"):
        raise ValueError(f"feature_dtype must be float32 or float16, got {feature_dtype!r}")
    if layout not in HDF5_LAYOUTS:
        raise ValueError(f"HDF5 layout {layout!r}: use one of {HDF5_LAYOUTS}")
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as h5:
        counts = _write_fixed(h5, records, feature_dtype, name) if layout == "fixed" else \
            _write_adaptive(h5, records, feature_dtype, name)
        h5.attrs["view"] = view
        h5.attrs["layout"] = layout
        h5.attrs["num_images"] = h5["image_ids"].shape[0]
        h5.attrs["num_boxes_fixed"] = counts.pop() if len(counts) == 1 else -1
        images = int(h5["image_ids"].shape[0])
    logger.info("wrote %d images to %s", images, path)
    return images


def _image_columns(r: ImageRecord, name: Namer) -> dict:
    return {"image_ids": r.image_id, "image_h": r.height, "image_w": r.width, "image_names": name(r)}


def _write_adaptive(h5, records: Iterable[ImageRecord], feature_dtype: str, name: Namer) -> set[int]:
    boxes = images = None
    counts: set[int] = set()
    start = 0
    for r in records:
        if boxes is None:
            dims = {"features": (r.features.shape[1],), "boxes": (4,), "spatial_features": (6,)}
            boxes = _Appender(h5, {k: (dims.get(k, ()), dt or feature_dtype) for k, dt in _PER_BOX.items()})
            images = _Appender(h5, {**{k: ((), dt) for k, dt in _PER_IMAGE.items()}, "image_names": ((), "str"),
                                    "pos_boxes": ((2,), "int64")}, block=1024)
        boxes.add(r.num_boxes, _box_columns(r))
        images.add(1, {**_image_columns(r, name), "pos_boxes": np.array([[start, start + r.num_boxes]], np.int64)})
        start += r.num_boxes
        counts.add(r.num_boxes)
    if boxes is None:
        raise ValueError("no images to write")
    boxes.flush()
    images.flush()
    for alias, target in HDF5_ALIASES.items():
        h5[alias] = h5[target]  # a hard link: one dataset, two names
    return counts


def _write_fixed(h5, records: Iterable[ImageRecord], feature_dtype: str, name: Namer) -> set[int]:
    table = None
    n = 0
    for r in records:
        if table is None:
            n = r.num_boxes
            dims = {"image_features": (n, r.features.shape[1]), "image_bb": (n, 4), "spatial_features": (n, 6)}
            specs = {**{k: ((), dt) for k, dt in _PER_IMAGE.items()}, "image_names": ((), "str"),
                     **{_FIXED_NAMES[k]: (dims.get(_FIXED_NAMES[k], (n,)), dt or feature_dtype)
                        for k, dt in _PER_BOX.items()}}
            table = _Appender(h5, specs, block=256)
        if r.num_boxes != n:
            raise ValueError(f"image {r.image_id} has {r.num_boxes} boxes, the first image {n}: the fixed layout "
                             "needs one box count (use the adaptive layout)")
        cols = _box_columns(r)
        table.add(1, {**_image_columns(r, name), **{_FIXED_NAMES[k]: np.asarray(v)[None] for k, v in cols.items()}})
    if table is None:
        raise ValueError("no images to write")
    table.flush()
    return {n}


_FIXED_NAMES = {"features": "image_features", "boxes": "image_bb", "spatial_features": "spatial_features",
                "obj_ids": "obj_ids", "obj_conf": "obj_conf", "attr_ids": "attr_ids", "attr_conf": "attr_conf"}


# ------------------------------------------------------------------------------------------------
# npz, one file per image


def npz_arrays(record: ImageRecord, transpose: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one image's npz file (MILVLG/bottom-up-attention.pytorch names, no pickled ``info``)."""
    x = np.asarray(record.features, np.float32)
    return {
        "x": np.ascontiguousarray(x.T if transpose else x),
        "bbox": np.asarray(record.boxes, np.float32),
        "num_bbox": np.asarray(record.num_boxes, np.int64),
        "image_h": np.asarray(record.height, np.int64),
        "image_w": np.asarray(record.width, np.int64),
        "image_id": np.asarray(record.image_id, np.int64),
        "objects_id": np.asarray(record.obj_ids, np.int64),
        "objects_conf": np.asarray(record.obj_conf, np.float32),
        "attrs_id": np.asarray(record.attr_ids, np.int64),
        "attrs_conf": np.asarray(record.attr_conf, np.float32),
    }


def write_npz(records: Iterable[ImageRecord], out_dir: str, name: Namer = file_stem, transpose: bool = False) -> int:
    """``out_dir/<name>.npz`` per record (compressed, written atomically); returns the number of files."""
    require_dir_path(out_dir, "the npz output")
    os.makedirs(out_dir, exist_ok=True)
    n = 0
    for record in records:
        with atomic_file(os.path.join(out_dir, f"{name(record)}.npz")) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **npz_arrays(record, transpose))
        n += 1
    logger.info("wrote %d npz files to %s", n, out_dir)
    return n


# ------------------------------------------------------------------------------------------------
# One entry point


def write(records: Iterable[ImageRecord], fmt: str, out: str, *, name: Namer = file_stem, view: str = "raw",
          feature_dtype: str = "float32", hdf5_layout: str = "adaptive", npz_transpose: bool = False) -> int:
    """Write ``records`` in one format: ``tsv`` (a file), ``hdf5`` (a file) or ``npz`` (a folder)."""
    if fmt == "tsv":
        return write_tsv(records, out, name)
    if fmt == "hdf5":
        return write_hdf5(records, out, feature_dtype, hdf5_layout, name, view)
    if fmt == "npz":
        return write_npz(records, out, name, npz_transpose)
    raise ValueError(f"format {fmt!r}: use one of {FORMATS}")


def export_lxmert_tsv(corpus: str, out_path: str, view: str = "raw") -> int:
    """A corpus's view as an LXMERT TSV; returns the number of rows."""
    return write_tsv(image_records(corpus, view), out_path)


def export_hdf5(corpus: str, out_path: str, view: str = "raw", feature_dtype: str = "float32",
                layout: str = "adaptive") -> int:
    """A corpus's view as HDF5; returns the number of images."""
    return write_hdf5(image_records(corpus, view), out_path, feature_dtype, layout, view=view)
