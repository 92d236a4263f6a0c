"""Attention features per image, read from a source, optionally refined by SSRP-Visual, cached in HDF5.

Sources of the detector (BUTD) features, by the path given:

* an ssrp corpus directory (its ``raw`` view);
* an HDF5 file in the ``ssrp features export --hdf5`` layout (bottom-up-attention-vqa's: ``image_ids``,
  ``pos_boxes``, ``features``, ``boxes``, ``image_h``, ``image_w``);
* a TSV file of the bottom-up-attention ``generate_tsv.py`` format (``image_id, image_w, image_h, num_boxes,
  boxes, features``, base64 float32), or an LXMERT TSV (``ssrp features export --tsv``).

Each object's attention feature is the concatenation of ``features.parts`` (docs/caption.md):

* ``butd``: the detector feature;
* ``objects``: SSRP-Visual's refined object state, the stage-2 encoder's object output V;
* ``objects_rel``: V propagated over the probed relations, ``softmax_j(-R_v[i, j] / t) @ V`` with
  R_v = the visual probe's squared distances (Eq. 2) and t the image's median off-diagonal distance
  (``features.rel_temperature`` = 0) or a fixed temperature: the Obj.+Rel. enhancement of ``ssrp retrieve``.

SSRP-Visual's object states do not depend on the caption (its visual branch never attends to text), so
they are computed from the image alone, as captioning needs. SSRP-Cross (and Share with joint attention)
let the caption change the object states, so their checkpoints are refused here (paper Sec. 4.2).

The cache (``features-<hash>.h5``, written atomically) holds ``image_ids`` int64 [M], ``offsets`` int64
[M + 1] (rows of each image in ``att``) and ``att`` float16/float32 [T, D]; its attributes say what it holds.
"""

from __future__ import annotations

import base64
import csv
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ssrp.caption.config import FeatureConfig
from ssrp.config import config_hash, to_dict
from ssrp.corpus import CorpusReader
from ssrp.devices import resolve_device
from ssrp.eval.retrieval import enhance
from ssrp.fileutil import atomic_file
from ssrp.train.checkpoint import load_checkpoint, train_config_of
from ssrp.train.steps import Stage2Model

logger = logging.getLogger(__name__)

FORMAT = "ssrp-caption-features/1"
BUTD_TSV_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
LXMERT_TSV_FIELDS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
                     "boxes", "features")
TEXT_FREE_VARIANTS = {"visual": "", "share": "separate"}  # variant -> share_attention needed ("" = any)


@dataclass(frozen=True)
class Objects:
    """One image's detections as a source gives them."""

    image_id: int
    features: np.ndarray  # [n, D]
    boxes: np.ndarray  # float32 [n, 4] x1 y1 x2 y2 in pixels
    height: int
    width: int


# ------------------------------------------------------------------------------------------------
# Sources


class CorpusSource:
    def __init__(self, path: str):

        self.path = path
        self.reader = CorpusReader(path)

    def read(self, image_ids: Sequence[int]) -> Iterator[Objects]:
        for i in image_ids:
            try:
                rec = self.reader.image(int(i), "raw")
            except KeyError:
                raise ValueError(f"image {i}: no raw view in the corpus {self.path}") from None
            yield Objects(int(i), np.asarray(rec.features), np.asarray(rec.boxes, np.float32), rec.height, rec.width)


class Hdf5Source:
    def __init__(self, path: str):
        import h5py

        self.path = path
        self.h5 = h5py.File(path, "r")
        for name in ("image_ids", "pos_boxes", "features", "boxes", "image_h", "image_w"):
            if name not in self.h5:
                raise ValueError(f"{path}: no '{name}' dataset (expected the `ssrp features export --hdf5` layout)")
        self.rows = {int(i): k for k, i in enumerate(self.h5["image_ids"][:])}
        self.pos = self.h5["pos_boxes"][:]
        self.heights, self.widths = self.h5["image_h"][:], self.h5["image_w"][:]

    def read(self, image_ids: Sequence[int]) -> Iterator[Objects]:
        for i in image_ids:
            k = self.rows.get(int(i))
            if k is None:
                raise ValueError(f"image {i}: not in {self.path}")
            s, e = (int(x) for x in self.pos[k])
            yield Objects(int(i), self.h5["features"][s:e], self.h5["boxes"][s:e].astype(np.float32),
                          int(self.heights[k]), int(self.widths[k]))


class TsvSource:
    """Streams the file once per ``read``, keeping the requested images (in file order)."""

    def __init__(self, path: str):
        self.path = path

    def read(self, image_ids: Sequence[int]) -> Iterator[Objects]:
        csv.field_size_limit(sys.maxsize)
        wanted = {int(i) for i in image_ids}
        with open(self.path, encoding="ascii") as fh:
            for line_no, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
                obj = self._parse(row, line_no)
                if obj.image_id in wanted:
                    wanted.discard(obj.image_id)
                    yield obj
        if wanted:
            raise ValueError(f"{len(wanted)} images are not in {self.path}, e.g. {sorted(wanted)[:5]}")

    def _parse(self, row: list[str], line_no: int) -> Objects:
        where = f"{self.path}:{line_no}"
        if len(row) == len(BUTD_TSV_FIELDS):
            item = dict(zip(BUTD_TSV_FIELDS, row, strict=True))
            image_id, height, width = item["image_id"], item["image_h"], item["image_w"]
        elif len(row) == len(LXMERT_TSV_FIELDS):
            item = dict(zip(LXMERT_TSV_FIELDS, row, strict=True))
            image_id, height, width = item["img_id"], item["img_h"], item["img_w"]
        else:
            raise ValueError(f"{where}: {len(row)} fields; expected the BUTD TSV's {len(BUTD_TSV_FIELDS)} "
                             f"({', '.join(BUTD_TSV_FIELDS)}) or the LXMERT TSV's {len(LXMERT_TSV_FIELDS)}")
        digits = re.search(r"(\d+)$", image_id)
        if not digits:
            raise ValueError(f"{where}: image id {image_id!r} has no number")
        try:
            n = int(item["num_boxes"])
            boxes = np.frombuffer(base64.b64decode(item["boxes"]), np.float32).reshape(n, 4)
            feats = np.frombuffer(base64.b64decode(item["features"]), np.float32).reshape(n, -1)
        except ValueError as err:
            raise ValueError(f"{where}: unreadable boxes/features: {err}") from None
        return Objects(int(digits.group(1)), feats, boxes, int(height), int(width))


def open_source(path: str):
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "manifest.json")):
            raise ValueError(f"{path}: a directory but not an ssrp corpus (no manifest.json)")
        return CorpusSource(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such feature source")
    if path.endswith((".h5", ".hdf5")):
        return Hdf5Source(path)
    if path.endswith(".tsv"):
        return TsvSource(path)
    raise ValueError(f"{path}: unknown feature source; give an ssrp corpus directory, an .h5/.hdf5 file "
                     "(ssrp features export --hdf5) or a .tsv file (BUTD generate_tsv or LXMERT)")


# ------------------------------------------------------------------------------------------------
# SSRP-Visual's refined objects


class SSRPObjects:
    """A stage-2 checkpoint's encoder and visual probe, run on images alone."""

    def __init__(self, ckpt_path: str, device: str = "auto"):

        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("stage") != "stage2":
            raise ValueError(f"{ckpt_path} is a {ckpt.get('stage')} checkpoint; the refined objects and relations "
                             "come from stage 2: pass the stage-2 run's checkpoint.pt")
        cfg = train_config_of(ckpt)
        check_text_free(cfg.model, ckpt_path)
        model = Stage2Model(cfg)
        model.load_state_dict(ckpt["model"])
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.path = ckpt_path

    @property
    def feature_dim(self) -> int:
        return self.cfg.model.feature_dim

    def __call__(self, batch: list[Objects]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(V [n, H], R_v [n, n]) of each image."""
        feats, boxes, mask = _pad_objects(batch)
        b = len(batch)
        ids = torch.tensor([[101, 102]] * b) if self.cfg.model.vocab_size > 102 else torch.ones((b, 2), dtype=torch.long)
        dev = self.device
        with torch.no_grad():
            _, objects = self.model.encoder(ids.to(dev), torch.ones((b, 2), dtype=torch.bool, device=dev),
                                            torch.from_numpy(feats).to(dev), torch.from_numpy(boxes).to(dev),
                                            torch.from_numpy(mask).to(dev))
            objects = objects.float()
            r_v = self.model.heads.visual_probe(objects)
        objects, r_v = objects.cpu().numpy(), r_v.cpu().numpy()
        out = []
        for k, obj in enumerate(batch):
            n = len(obj.features)
            out.append((objects[k, :n], r_v[k, :n, :n]))
        return out


def check_text_free(model_cfg, path: str) -> None:
    """Captioning has no caption to give the encoder: only variants whose object states ignore the text."""
    need = TEXT_FREE_VARIANTS.get(model_cfg.variant)
    if need is None or (need and model_cfg.share_attention != need):
        raise ValueError(
            f"{path}: an SSRP-{model_cfg.variant} checkpoint; its object states depend on the caption, which "
            "captioning does not have. Use an SSRP-Visual checkpoint (paper Sec. 4.2), or Share with separate attention"
        )


def _pad_objects(batch: list[Objects]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoder inputs: features [B, N, D], boxes normalised by the image size [B, N, 4], mask [B, N]."""
    n = max(1, max(len(o.features) for o in batch))
    d = batch[0].features.shape[1]
    feats = np.zeros((len(batch), n, d), np.float32)
    boxes = np.zeros((len(batch), n, 4), np.float32)
    mask = np.zeros((len(batch), n), bool)
    for k, o in enumerate(batch):
        m = len(o.features)
        scale = np.array([o.width, o.height, o.width, o.height], np.float32)
        feats[k, :m] = o.features
        boxes[k, :m] = np.clip(o.boxes / scale, 0.0, 1.0)
        mask[k, :m] = True
    return feats, boxes, mask


# ------------------------------------------------------------------------------------------------
# Building the cache


def combine(parts: Sequence[str], obj: Objects, refined: tuple[np.ndarray, np.ndarray] | None,
            temperature: float) -> np.ndarray:
    """The attention features of one image: its parts concatenated per object."""

    cols = []
    for part in parts:
        if part == "butd":
            cols.append(np.asarray(obj.features, np.float32))
        elif part == "objects":
            cols.append(refined[0])
        else:
            cols.append(enhance(refined[0], refined[1], temperature).astype(np.float32))
    return np.concatenate(cols, axis=1)


def cache_identity(cfg: FeatureConfig, source: str, ckpt: str | None, image_ids: Sequence[int]) -> dict:
    ident = {"format": FORMAT, "features": to_dict(cfg), "source": os.path.abspath(source),
             "images": config_hash(sorted(int(i) for i in image_ids))}
    ident["features"].pop("batch_size")
    if cfg.needs_ssrp:
        st = os.stat(ckpt)
        ident["ssrp"] = {"path": os.path.abspath(ckpt), "size": st.st_size, "mtime": int(st.st_mtime)}
    return ident


def ensure_cache(cfg: FeatureConfig, source: str, ckpt: str | None, image_ids: Sequence[int], out_dir: str,
                 device: str = "auto", progress: bool = True) -> str:
    """The path of a cache of these images' attention features, built if it is not there yet."""
    if cfg.needs_ssrp and not ckpt:
        raise ValueError(f"features.parts={cfg.parts} needs SSRP-Visual's stage-2 checkpoint (--ssrp CKPT); "
                         "the plain-BUTD baseline is --baseline (features.parts=('butd',))")
    ident = cache_identity(cfg, source, ckpt, image_ids)
    path = os.path.join(out_dir, f"features-{config_hash(ident)}.h5")
    if os.path.exists(path):
        return path
    os.makedirs(out_dir, exist_ok=True)
    build_cache(cfg, source, ckpt, image_ids, path, ident, device, progress)
    return path


def build_cache(cfg: FeatureConfig, source: str, ckpt: str | None, image_ids: Sequence[int], path: str,
                ident: dict, device: str = "auto", progress: bool = True) -> None:
    import h5py
    from tqdm import tqdm

    src = open_source(source)
    ssrp = SSRPObjects(ckpt, device) if cfg.needs_ssrp else None
    dtype = np.float16 if cfg.fp16 else np.float32
    ids, offsets = [], [0]
    bar = tqdm(total=len(image_ids), desc="caption features", unit="img", disable=not progress)
    try:
        with atomic_file(path) as tmp, h5py.File(tmp, "w") as h5:
            att = None
            for chunk in _chunks(src.read(image_ids), cfg.batch_size):
                chunk = [_cut(o, cfg.max_objects) for o in chunk]
                if ssrp is not None:
                    _check_dim(chunk[0], ssrp)
                refined = ssrp(chunk) if ssrp is not None else [None] * len(chunk)
                for obj, ref in zip(chunk, refined, strict=True):
                    rows = combine(cfg.parts, obj, ref, cfg.rel_temperature).astype(dtype)
                    if att is None:
                        att = h5.create_dataset("att", shape=(0, rows.shape[1]), maxshape=(None, rows.shape[1]),
                                                dtype=dtype, chunks=(max(1, cfg.max_objects), rows.shape[1]))
                    if rows.shape[1] != att.shape[1]:
                        raise ValueError(f"image {obj.image_id}: {rows.shape[1]}-d features, the others {att.shape[1]}-d")
                    att.resize(offsets[-1] + len(rows), axis=0)
                    att[offsets[-1] :] = rows
                    ids.append(obj.image_id)
                    offsets.append(offsets[-1] + len(rows))
                bar.update(len(chunk))
            if att is None:
                raise ValueError("no images to build caption features for")
            h5.create_dataset("image_ids", data=np.asarray(ids, np.int64))
            h5.create_dataset("offsets", data=np.asarray(offsets, np.int64))
            h5.attrs["format"] = FORMAT
            h5.attrs["identity"] = _json(ident)
            h5.attrs["parts"] = ",".join(cfg.parts)
    finally:
        bar.close()
    logger.info("cached %s features of %d images in %s", "+".join(cfg.parts), len(ids), path)


def _json(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True)


def _cut(obj: Objects, max_objects: int) -> Objects:
    if len(obj.features) == 0:
        raise ValueError(f"image {obj.image_id}: no detected objects")
    if len(obj.features) <= max_objects:
        return obj
    return Objects(obj.image_id, obj.features[:max_objects], obj.boxes[:max_objects], obj.height, obj.width)


def _check_dim(obj: Objects, ssrp: SSRPObjects) -> None:
    if obj.features.shape[1] != ssrp.feature_dim:
        raise ValueError(f"image {obj.image_id}: {obj.features.shape[1]}-d features, but {ssrp.path} was trained "
                         f"on {ssrp.feature_dim}-d features")


def _chunks(items: Iterator[Objects], size: int) -> Iterator[list[Objects]]:
    chunk: list[Objects] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ------------------------------------------------------------------------------------------------
# Reading the cache


class FeatureStore:
    """Padded batches of cached attention features; the file is opened lazily in each process."""

    def __init__(self, path: str):
        import h5py

        self.path = path
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT:
                raise ValueError(f"{path}: not an ssrp caption feature cache ({FORMAT})")
            ids = h5["image_ids"][:]
            self.offsets = h5["offsets"][:]
            self.dim = int(h5["att"].shape[1])
        self.rows = {int(i): k for k, i in enumerate(ids)}
        self._h5 = None
        self._pid = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    def _file(self):
        import h5py

        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def __contains__(self, image_id: int) -> bool:
        return int(image_id) in self.rows

    def missing(self, image_ids: Sequence[int]) -> list[int]:
        return [int(i) for i in image_ids if int(i) not in self.rows]

    def get(self, image_id: int) -> np.ndarray:
        k = self.rows.get(int(image_id))
        if k is None:
            raise KeyError(f"image {image_id}: not in the feature cache {self.path}")
        return self._file()["att"][self.offsets[k] : self.offsets[k + 1]]

    def batch(self, image_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """float32 [B, N, D] features (zeros past each image's objects) and the bool [B, N] object mask."""
        rows = [self.get(i) for i in image_ids]
        n = max(len(r) for r in rows)
        att = np.zeros((len(rows), n, self.dim), np.float32)
        mask = np.zeros((len(rows), n), bool)
        for k, r in enumerate(rows):
            att[k, : len(r)] = r
            mask[k, : len(r)] = True
        return att, mask
