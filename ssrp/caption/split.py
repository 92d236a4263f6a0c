"""A Karpathy-format split file from COCO caption annotations (for a corpus of one's own, or the demo).

The real COCO experiments use Karpathy's own ``dataset_coco.json`` (its val/test images are what
published numbers are on); this builds a file of the same format from ``annotations/captions_*2017.json``
of a COCO root: tokens as Karpathy made them (lower case, punctuation removed, split on white space),
``val`` and ``test`` images drawn with a seed, the others ``train``.
"""

from __future__ import annotations

import glob
import json
import os
import random
import string

from ssrp.fileutil import atomic_file

_PUNCT = str.maketrans("", "", string.punctuation)


def karpathy_tokens(sentence: str) -> list[str]:
    return sentence.lower().translate(_PUNCT).strip().split()


def coco_images(coco: str) -> list[dict]:
    """Images with their captions from every annotations/captions_*.json of a COCO root, by id."""
    paths = sorted(glob.glob(os.path.join(coco, "annotations", "captions_*.json")))
    if not paths:
        raise FileNotFoundError(f"{coco}/annotations: no captions_*.json (a COCO root?)")
    images: dict[int, dict] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        folder = os.path.basename(path)[len("captions_") : -len(".json")]
        for img in data["images"]:
            images[int(img["id"])] = {"cocoid": int(img["id"]), "filepath": folder, "filename": img["file_name"],
                                      "sentences": []}
        for ann in data["annotations"]:
            img = images.get(int(ann["image_id"]))
            if img is None:
                raise ValueError(f"{path}: annotation {ann.get('id')} names image {ann['image_id']}, not in the file")
            tokens = karpathy_tokens(ann["caption"])
            if tokens:
                img["sentences"].append({"tokens": tokens, "raw": ann["caption"].strip()})
    return [images[k] for k in sorted(images) if images[k]["sentences"]]


def make_split(coco: str, out: str, val: int, test: int, seed: int = 0) -> dict:
    images = coco_images(coco)
    if val + test >= len(images):
        raise ValueError(f"{len(images)} images with captions: too few for {val} val and {test} test images")
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    split = {k: "val" for k in order[:val]} | {k: "test" for k in order[val : val + test]}
    for k, img in enumerate(images):
        img["split"] = split.get(k, "train")
    with atomic_file(out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"dataset": "coco", "images": images}, fh)
    return {"path": out, "images": len(images), "train": len(images) - val - test, "val": val, "test": test}
