"""Which images and captions an evaluation runs on.

The corpus does not record the COCO split of an image. Held-out captions are either a corpus built from
held-out images only (``ssrp build --split val``), or a trainval corpus restricted to the images of one
split of a COCO root (``--split val --coco COCO_ROOT``, which reads annotations/captions_val2017.json).
"""

from __future__ import annotations

import json
import logging
import os

from ssrp.corpus import CorpusReader, image_key, text_key
from ssrp.eval.inference import Pair

logger = logging.getLogger(__name__)

SPLITS = ("all", "train", "val")


def coco_split_ids(coco: str, split: str) -> set[int]:
    path = os.path.join(coco, "annotations", f"captions_{split}2017.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no COCO {split} annotations under --coco {coco}")
    with open(path, encoding="utf-8") as fh:
        return {int(img["id"]) for img in json.load(fh)["images"]}


def select_images(reader: CorpusReader, split: str = "all", coco: str | None = None, max_images: int = 0) -> list[int]:
    """Sorted image ids of the corpus, restricted to a COCO split, the first ``max_images`` (0 = all)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: use one of {SPLITS}")
    ids = reader.image_ids()
    if split != "all":
        if not coco:
            raise ValueError(f"--split {split} needs --coco COCO_ROOT (its annotations name the split's images)")
        wanted = coco_split_ids(coco, split)
        ids = [i for i in ids if i in wanted]
    if max_images:
        ids = ids[:max_images]
    if not ids:
        raise ValueError(f"{reader.root}: no images selected (split={split}, max_images={max_images})")
    return ids


def image_views(reader: CorpusReader, image_id: int) -> list[str]:
    """The views of one image present in the corpus, 'raw' first."""
    views = [v for v in reader.views() if image_key(image_id, v) in reader]
    return sorted(views, key=lambda v: (v != "raw", v))


def caption_variants(reader: CorpusReader, caption_id: int) -> list[str]:
    """The variants of one caption present in the corpus, 'raw' first."""
    variants = [v for v in reader.variants() if text_key(caption_id, v) in reader]
    return sorted(variants, key=lambda v: (v != "raw", v))


def caption_ids(reader: CorpusReader, image_id: int, limit: int = 0) -> list[int]:
    ids = [int(c) for c in reader.index(image_id).caption_ids]
    return ids[:limit] if limit else ids


def caption_pairs(reader: CorpusReader, image_ids: list[int], variants: list[str] | None = None) -> list[Pair]:
    """(raw view, caption variant) pairs for every caption of the images, each variant present."""
    wanted = variants or reader.variants()
    pairs, unparsed = [], 0
    for image_id in image_ids:
        for cid in caption_ids(reader, image_id):
            for v in caption_variants(reader, cid):
                if v not in wanted:
                    continue
                if _parsed(reader, cid, v):
                    pairs.append(Pair(image_id, cid, "raw", v))
                else:
                    unparsed += 1
    if unparsed:
        logger.warning("%d caption variants are not parsed and are left out (run the parse stage)", unparsed)
    return pairs


def _parsed(reader: CorpusReader, caption_id: int, variant: str) -> bool:
    rec = reader.text(caption_id, variant)
    return rec.parsed and len(rec.input_ids) > 0
