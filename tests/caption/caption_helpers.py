"""A tiny synthetic captioning set with a planted pattern, in the formats real runs read.

Each image has 3-6 detected objects with 16-d features. One of them (at a random position) carries the
planted pattern: a one-hot colour in dims 0-3 and a one-hot shape in dims 4-7; the others are noise.
Every caption names that object's colour and shape ("a red ball on a table", "the ball is red", ...).
A model that reads the features can caption held-out images; one that does not cannot beat guessing.

The set is written as a Karpathy split file (``dataset_coco.json``) and an ssrp corpus (raw view, and
parsed caption records so that SSRP can be pretrained on it), the inputs ``ssrp caption train`` reads.
"""

from __future__ import annotations

import json
import os

import numpy as np
from train_helpers import random_heads, tree_distances

from ssrp.corpus import CorpusPlan, ImageRecord, IndexRecord, TextRecord, encode, write_corpus

COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("ball", "box", "cup", "star")
TEMPLATES = ("a {c} {s} on a table", "there is a {c} {s}", "the {s} is {c}", "a picture of a {c} {s}",
             "a small {c} {s}", "a {c} {s} next to a wall")
FEATURE_DIM = 16
WIDTH, HEIGHT = 160, 120
NUM_LABELS = 12


def planted_image(image_id: int, rng: np.random.Generator) -> dict:
    n = int(rng.integers(3, 7))
    colour, shape = int(rng.integers(len(COLOURS))), int(rng.integers(len(SHAPES)))
    feats = 0.3 * rng.standard_normal((n, FEATURE_DIM))
    k = int(rng.integers(n))
    feats[k, colour] += 2.0
    feats[k, 4 + shape] += 2.0
    xy = rng.uniform(0, [WIDTH - 40, HEIGHT - 40], (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (n, 2))], 1).astype(np.float32)
    templates = rng.permutation(len(TEMPLATES))[:5]
    captions = [TEMPLATES[t].format(c=COLOURS[colour], s=SHAPES[shape]) for t in templates]
    return {"image_id": image_id, "features": feats.astype(np.float16), "boxes": boxes, "captions": captions,
            "colour": COLOURS[colour], "shape": SHAPES[shape]}


def planted_set(n_train: int = 48, n_val: int = 8, n_test: int = 16, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    images = [planted_image(1000 + i, rng) for i in range(n_train + n_val + n_test)]
    for k, img in enumerate(images):
        img["split"] = "train" if k < n_train else ("val" if k < n_train + n_val else "test")
    return images


def write_karpathy(images: list[dict], path: str) -> str:
    data = {"dataset": "coco", "images": [
        {"cocoid": img["image_id"], "split": img["split"], "filepath": "train2017",
         "filename": f"{img['image_id']:012d}.jpg",
         "sentences": [{"tokens": c.split(), "raw": c.capitalize() + "."} for c in img["captions"]]}
        for img in images]}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return path


def _text(caption_id: int, image_id: int, caption: str, rng: np.random.Generator) -> TextRecord:
    words = tuple(caption.split())
    n = len(words)
    heads = random_heads(rng, n)
    ids = [101] + [2000 + (sum(map(ord, w)) % 500) for w in words] + [102]
    return TextRecord(caption_id=caption_id, image_id=image_id, variant="raw", text=caption, words=words,
                      upos=("NOUN",) * n, deprels=tuple("root" if h == 0 else "dep" for h in heads), heads=heads,
                      input_ids=np.array(ids, np.int32), piece_word=np.array([-1, *range(n), -1], np.int32),
                      tree_dist=tree_distances(heads))


def write_corpus_of(images: list[dict], root: str, seed: int = 0) -> str:
    """An ssrp corpus: the raw view of every image and its captions, parsed."""
    rng = np.random.default_rng(seed)
    records = []
    for img in images:
        i, n = img["image_id"], len(img["features"])
        rec = ImageRecord(image_id=i, view="raw", height=HEIGHT, width=WIDTH, boxes=img["boxes"],
                          features=img["features"], obj_ids=rng.integers(1, NUM_LABELS, n).astype(np.int32),
                          obj_conf=np.sort(rng.uniform(0.2, 1, n))[::-1].astype(np.float32),
                          attr_ids=np.zeros(n, np.int32), attr_conf=np.zeros(n, np.float32),
                          file_name=f"{i:012d}.jpg")
        records.append((rec.key, encode(rec)))
        caption_ids = [i * 10 + k for k in range(len(img["captions"]))]
        for cid, cap in zip(caption_ids, img["captions"], strict=True):
            t = _text(cid, i, cap, rng)
            records.append((t.key, encode(t)))
        ix = IndexRecord(image_id=i, caption_ids=np.array(caption_ids, np.int64), file_name=f"{i:012d}.jpg",
                         height=HEIGHT, width=WIDTH)
        records.append((ix.key, encode(ix)))
    write_corpus(root, CorpusPlan({"image": 2, "text": 2, "index": 1}, config={"test": "caption"}), records)
    return root
