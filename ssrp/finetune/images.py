"""Image features for the task images: from an ssrp corpus or from LXMERT TSV files.

Both sources give, per image, at most ``max_objects`` RoIs as the pretraining trainer takes them: features
(float16 [N, D]) and boxes normalised by the image size and clipped to [0, 1] (float32 [N, 4]).

* ``CorpusImages``: the raw view of a corpus built over the task's images (``ssrp build`` over COCO for VQA,
  ``ssrp features --images DIR`` for GQA's or NLVR2's images). Opened lazily in each loader worker.
* ``TsvImages``: LXMERT's ``*_obj36.tsv`` files (``load_obj_tsv``'s fields). Indexed once (byte offset of
  every row), rows decoded on demand, so memory does not grow with the file.

A task's ``img_id`` is matched to an image by name (a TSV's ``img_id``, a corpus record's file name without
extension) or by number: ``COCO_train2014_000000458752`` and ``000000458752`` are image 458752, ``2354786``
is 2354786.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Iterable

import numpy as np

from ssrp.corpus import IMAGE, CorpusReader, image_key, parse_key
from ssrp.corpus.records import decode_header
from ssrp.features.export import LXMERT_FIELDS
from ssrp.train.config import DataConfig, ModelConfig
from ssrp.train.data import CorpusRecords

logger = logging.getLogger(__name__)

_COCO_NAME = re.compile(r"^COCO_[A-Za-z]+\d*_(\d+)$")
RAW = "raw"


class ImageDataError(ValueError):
    """Image features that cannot feed the model (missing image, wrong feature size, bad TSV row)."""


def numeric_id(name: str) -> int | None:
    """The number a COCO-style or all-digit image name stands for, or None."""
    m = _COCO_NAME.match(name)
    if m:
        return int(m.group(1))
    return int(name) if name.isdigit() else None


def _stem(file_name: str) -> str:
    return os.path.splitext(os.path.basename(file_name))[0]


def _file_name(reader: CorpusReader, image_id: int) -> str:
    """The file name a raw image record holds (its header only is decoded)."""
    header, _ = decode_header(reader.get_raw(image_key(image_id, RAW)))
    return header["fields"].get("file_name", "")


def _normalise(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    scale = np.array([width, height, width, height], dtype=np.float32)
    return np.clip(np.asarray(boxes, np.float32) / scale, 0.0, 1.0)


class CorpusImages:
    """The raw view of the images of an ssrp corpus."""

    def __init__(self, corpus: str, max_objects: int, model: ModelConfig):
        self.path = corpus
        self.records = CorpusRecords(corpus, DataConfig(max_objects=max_objects), model)
        self.feature_dim = model.feature_dim
        self.index: dict[str, int] = {}

    def describe(self) -> str:
        return f"corpus {self.path}"

    def resolve(self, names: Iterable[str]) -> list[str]:
        """Match task image names to corpus images; returns the names that have no image.

        A corpus whose image ids are its images' numbers (built from COCO, or from a folder whose file names are
        all numbers) is matched by number; any other (a folder of NLVR2's or GQA's ``n123.jpg`` files, ids by
        position) by file name, so a task's "1" never lands on the image that happens to have id 1."""
        reader = self.records.reader
        raw_ids = {parse_key(k)[1] for k in reader.keys(IMAGE) if parse_key(k)[2] == RAW}
        stems = None if self._numbers_are_names(reader, raw_ids) else self._file_stems(reader, raw_ids)
        missing = []
        for name in set(names) - set(self.index):
            n = numeric_id(name)
            found = stems.get(name) if stems is not None else (n if n in raw_ids else None)
            if found is None:
                missing.append(name)
            else:
                self.index[name] = found
        return sorted(missing)

    @staticmethod
    def _numbers_are_names(reader: CorpusReader, raw_ids: set[int]) -> bool:
        """Whether image ids are the numbers of the file names (checked on the first, middle and last image)."""
        ids = sorted(raw_ids)
        for image_id in {ids[0], ids[len(ids) // 2], ids[-1]} if ids else ():
            stem = _stem(_file_name(reader, image_id))
            if stem and numeric_id(stem) != image_id:
                return False
        return True

    @staticmethod
    def _file_stems(reader: CorpusReader, raw_ids: set[int]) -> dict[str, int]:
        logger.info("matching image names to the file names of %d corpus images", len(raw_ids))
        return {_stem(name): i for i in sorted(raw_ids) if (name := _file_name(reader, i))}

    def get(self, name: str) -> dict[str, np.ndarray]:
        img = self.records.image(self.index[name], RAW)
        return {"features": img["features"], "boxes": img["boxes"]}


class TsvImages:
    """LXMERT obj36 TSV files, read row by row on demand."""

    def __init__(self, paths: list[str], max_objects: int, feature_dim: int):
        self.paths = list(paths)
        self.max_objects = max_objects
        self.feature_dim = feature_dim
        self.rows: dict[str, tuple[int, int]] = self._scan()  # img_id -> (file index, byte offset)
        self.index: dict[str, str] = {}
        self._files: dict[int, object] = {}
        self._pid = os.getpid()

    def describe(self) -> str:
        return f"TSV {', '.join(self.paths)}"

    def _scan(self) -> dict[str, tuple[int, int]]:
        rows: dict[str, tuple[int, int]] = {}
        for f, path in enumerate(self.paths):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no such TSV file")
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    img_id = line.split(b"\t", 1)[0].decode("ascii", "replace")
                    if line.strip():
                        rows.setdefault(img_id, (f, offset))
                    offset += len(line)
        logger.info("indexed %d images in %d TSV file(s)", len(rows), len(self.paths))
        return rows

    def resolve(self, names: Iterable[str]) -> list[str]:
        numeric = {}
        for key in self.rows:
            n = numeric_id(key)
            if n is not None:
                numeric.setdefault(n, key)
        missing = []
        for name in set(names) - set(self.index):
            n = numeric_id(name)
            key = name if name in self.rows else numeric.get(n) if n is not None else None
            if key is None:
                missing.append(name)
            else:
                self.index[name] = key
        return sorted(missing)

    def __getstate__(self) -> dict:  # loader workers reopen the files
        state = dict(self.__dict__)
        state["_files"], state["_pid"] = {}, None
        return state

    def _line(self, key: str) -> str:
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        f, offset = self.rows[key]
        fh = self._files.get(f)
        if fh is None:
            fh = self._files[f] = open(self.paths[f], "rb")  # noqa: SIM115 - kept open for the worker's life
        fh.seek(offset)
        return fh.readline().decode("ascii")

    def get(self, name: str) -> dict[str, np.ndarray]:
        key = self.index[name]
        where = f"{self.paths[self.rows[key][0]]} row {key!r}"
        row = decode_lxmert_row(self._line(key), where)
        n = min(row["num_boxes"], self.max_objects)
        feats = row["features"][:n]
        if feats.shape[1] != self.feature_dim:
            raise ImageDataError(f"{where}: features are {feats.shape[1]}-d but the model takes {self.feature_dim}-d")
        if n == 0:  # no detection: one neutral object, as the corpus path does
            return {"features": np.zeros((1, self.feature_dim), np.float16),
                    "boxes": np.array([[0, 0, 1, 1]], np.float32)}
        return {"features": feats.astype(np.float16),
                "boxes": _normalise(row["boxes"][:n], row["img_w"], row["img_h"])}


def decode_lxmert_row(line: str, where: str) -> dict:
    """One row of an LXMERT TSV: ``img_h, img_w, num_boxes`` as ints; boxes float32 [N, 4]; features float32 [N, D]."""
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) != len(LXMERT_FIELDS):
        raise ImageDataError(f"{where}: {len(parts)} fields, an LXMERT TSV row has {len(LXMERT_FIELDS)}")
    item = dict(zip(LXMERT_FIELDS, parts, strict=True))
    try:
        h, w, n = int(item["img_h"]), int(item["img_w"]), int(item["num_boxes"])
        boxes = np.frombuffer(base64.b64decode(item["boxes"]), dtype="<f4").reshape(n, 4)
        feats = np.frombuffer(base64.b64decode(item["features"]), dtype="<f4")
        feats = feats.reshape(n, -1) if n else feats.reshape(0, 0)
    except ValueError as err:
        raise ImageDataError(f"{where}: cannot decode ({err})") from None
    if h <= 0 or w <= 0:
        raise ImageDataError(f"{where}: image size {w}x{h} must be positive")
    return {"img_h": h, "img_w": w, "num_boxes": n, "boxes": boxes, "features": feats}


def open_images(corpus: str | None, tsv: list[str] | None, max_objects: int, model: ModelConfig):
    """The image source a run names: a corpus, or LXMERT TSV files (exactly one of the two)."""
    if bool(corpus) == bool(tsv):
        raise ValueError("give the image features either as --corpus DIR or as --tsv FILE (repeatable), not both")
    if corpus:
        return CorpusImages(corpus, max_objects, model)
    return TsvImages(list(tsv), max_objects, model.feature_dim)
