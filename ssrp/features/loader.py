"""Image inputs: a folder or an MSCOCO 2017 root, and a DataLoader that decodes in worker processes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ssrp.corpus import IndexRecord
from ssrp.deadletter import DeadLetter, RecordFailure
from ssrp.features.config import DecodeConfig
from ssrp.features.image import DecodedImage, read_and_decode

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageItem:
    image_id: int
    path: str
    file_name: str

    @property
    def key(self) -> str:
        return f"image/{self.image_id:012d}"


def list_image_dir(root: str) -> list[ImageItem]:
    """Image files of a folder (not recursive), by name. Ids: the numeric file stems (COCO style) when
    every stem is a number, else the position in name order."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such image directory")
    names = sorted(n for n in os.listdir(root) if n.lower().endswith(IMAGE_SUFFIXES))
    stems = [os.path.splitext(n)[0] for n in names]
    numeric = bool(stems) and all(s.isdigit() for s in stems)
    items = [ImageItem(int(s) if numeric else i, os.path.join(root, n), n)
             for i, (n, s) in enumerate(zip(names, stems, strict=True))]
    ids = [it.image_id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{root}: two files have the same numeric id; rename them")
    return items


def list_coco(root: str, splits: Sequence[str] | None = None) -> tuple[list[ImageItem], list[IndexRecord]]:
    """Images and index records (image -> caption ids) of MSCOCO 2017 splits (default: every captions file)."""
    ann_dir = os.path.join(root, "annotations")
    if splits is None:
        found = sorted(n for n in os.listdir(ann_dir) if n.startswith("captions_") and n.endswith("2017.json")) \
            if os.path.isdir(ann_dir) else []
        splits = [n[len("captions_") : -len("2017.json")] for n in found]
    if not splits:
        raise FileNotFoundError(f"{ann_dir}: no captions_*2017.json; is {root} an MSCOCO 2017 root?")
    items: list[ImageItem] = []
    index: list[IndexRecord] = []
    for split in splits:
        split_items, split_index = _coco_split(root, split)
        items += split_items
        index += split_index
    if len({i.image_id for i in items}) != len(items):
        raise ValueError(f"{root}: an image id appears in two splits")
    return items, index


def _coco_split(root: str, split: str) -> tuple[list[ImageItem], list[IndexRecord]]:
    path = os.path.join(root, "annotations", f"captions_{split}2017.json")
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    captions: dict[int, list[int]] = {}
    for ann in doc.get("annotations", []):
        captions.setdefault(int(ann["image_id"]), []).append(int(ann["id"]))
    items, index = [], []
    for img in sorted(doc.get("images", []), key=lambda m: int(m["id"])):
        iid = int(img["id"])
        items.append(ImageItem(iid, os.path.join(root, f"{split}2017", img["file_name"]), img["file_name"]))
        index.append(IndexRecord(image_id=iid, caption_ids=np.asarray(sorted(captions.get(iid, [])), dtype=np.int64),
                                 file_name=img["file_name"], height=int(img.get("height", 0)),
                                 width=int(img.get("width", 0))))
    return items, index


class ImageFileDataset(torch.utils.data.Dataset):
    """Item i -> DecodedImage, or a DeadLetter naming why the file cannot be used (never raises)."""

    def __init__(self, items: Sequence[ImageItem], cfg: DecodeConfig):
        self.items = list(items)
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> DecodedImage | DeadLetter:
        item = self.items[i]
        try:
            return read_and_decode(item.image_id, item.path, item.file_name, self.cfg)
        except RecordFailure as failure:
            return DeadLetter.from_failure(item.key, "decode", failure)


def _as_list(batch: list) -> list:
    return batch


def image_batches(items: Sequence[ImageItem], cfg: DecodeConfig, batch_size: int = 8,
                  workers: int = 2) -> Iterator[list[DecodedImage | DeadLetter]]:
    """Batches of decoded images in input order; decoding runs in ``workers`` processes (0: here)."""
    loader = torch.utils.data.DataLoader(
        ImageFileDataset(items, cfg), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_as_list, prefetch_factor=4 if workers else None, persistent_workers=False,
    )
    yield from loader
