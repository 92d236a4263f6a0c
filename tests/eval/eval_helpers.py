"""A small synthetic corpus for the evaluation tests: several views per image (the same objects in
each, boxes transformed with the view), parsed captions with raw/de/ru variants whose input_ids,
piece_word, tree_dist and upos (a final PUNCT word) agree."""

from __future__ import annotations

import numpy as np
from train_helpers import random_heads, tree_distances

from ssrp.corpus import CorpusPlan, ImageRecord, IndexRecord, TextRecord, encode, write_corpus

FEATURE_DIM = 16
NUM_LABELS = 12
WIDTH, HEIGHT = 160, 120
VIEWS = ("raw", "hflip", "rot90")
VARIANTS = ("raw", "de", "ru")
CLS, SEP = 101, 102
PUNCT_ID = 1012
OBJECT_NAMES = ("person", "dog", "cat", "kite", "pizza", "bus", "tree", "table", "sky", "grass", "water",
                "refrigerator door")  # the detector vocabulary the corpus records (obj_ids 1..11 name these)


def make_text(caption_id: int, image_id: int, variant: str, rng: np.random.Generator) -> TextRecord:
    """A random sentence of 4-10 words plus a final '.' (PUNCT, attached to the root)."""
    n = int(rng.integers(4, 11))
    words = tuple(f"w{int(rng.integers(50))}" for _ in range(n)) + (".",)
    heads = np.concatenate([random_heads(rng, n), [0]]).astype(np.int32)
    heads[-1] = int(np.flatnonzero(heads[:-1] == 0)[0]) + 1
    input_ids, piece_word = [CLS], [-1]
    for w, word in enumerate(words):
        pieces = [PUNCT_ID] if word == "." else [2000 + int(word[1:])] + ([3000] if rng.random() < 0.3 else [])
        input_ids += pieces
        piece_word += [w] * len(pieces)
    input_ids.append(SEP)
    piece_word.append(-1)
    return TextRecord(
        caption_id=caption_id,
        image_id=image_id,
        variant=variant,
        text=" ".join(words),
        pivot="" if variant == "raw" else variant,
        words=words,
        upos=("NOUN",) * n + ("PUNCT",),
        deprels=tuple("root" if h == 0 else "dep" for h in heads[:-1]) + ("punct",),
        heads=heads,
        input_ids=np.array(input_ids, np.int32),
        piece_word=np.array(piece_word, np.int32),
        tree_dist=tree_distances(heads),
    )


def view_boxes(boxes: np.ndarray, view: str) -> tuple[np.ndarray, int, int]:
    """Boxes of the raw image in a view's pixels, and the view's (height, width)."""
    x1, y1, x2, y2 = boxes.T
    if view == "hflip":
        return np.stack([WIDTH - x2, y1, WIDTH - x1, y2], 1), HEIGHT, WIDTH
    if view == "rot90":  # counter-clockwise: (x, y) -> (y, W - x)
        return np.stack([y1, WIDTH - x2, y2, WIDTH - x1], 1), WIDTH, HEIGHT
    return boxes, HEIGHT, WIDTH


def make_images(image_id: int, rng: np.random.Generator, views=VIEWS) -> list[ImageRecord]:
    n = int(rng.integers(4, 9))
    xy = rng.uniform(0, [WIDTH - 40, HEIGHT - 40], (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (n, 2))], 1).astype(np.float32)
    base = rng.standard_normal((n, FEATURE_DIM))
    obj_ids = rng.integers(1, NUM_LABELS, n).astype(np.int32)
    conf = np.sort(rng.uniform(0.2, 1, n))[::-1].astype(np.float32)
    out = []
    for view in views:
        vb, h, w = view_boxes(boxes, view)
        feats = base + (0.0 if view == "raw" else 0.1 * rng.standard_normal(base.shape))
        out.append(ImageRecord(
            image_id=image_id, view=view, height=h, width=w, boxes=vb.astype(np.float32),
            features=feats.astype(np.float16), obj_ids=obj_ids, obj_conf=conf,
            attr_ids=np.zeros(n, np.int32), attr_conf=np.zeros(n, np.float32),
            view_params={} if view == "raw" else {"op": view}, file_name=f"{image_id:012d}.jpg",
        ))
    return out


def build_corpus(root: str, n_images: int = 16, captions: int = 2, views=VIEWS, variants=VARIANTS, seed: int = 0,
                 first_id: int = 1, split: str = "train") -> str:
    """``split``: the COCO split every index record names ("" as in a format-1 corpus; "mixed": odd ids train,
    even ids val)."""
    rng = np.random.default_rng(seed)
    records = []
    for image_id in range(first_id, first_id + n_images):
        for rec in make_images(image_id, rng, views):
            records.append((rec.key, encode(rec)))
        caption_ids = [image_id * 100 + k for k in range(captions)]
        for cid in caption_ids:
            for variant in variants:
                t = make_text(cid, image_id, variant, rng)
                records.append((t.key, encode(t)))
        image_split = ("train" if image_id % 2 else "val") if split == "mixed" else split
        ix = IndexRecord(image_id=image_id, caption_ids=np.array(caption_ids, np.int64),
                         file_name=f"{image_id:012d}.jpg", height=HEIGHT, width=WIDTH, split=image_split)
        records.append((ix.key, encode(ix)))
    models = {"features": {"name": "eval-test", "objects_vocab": list(OBJECT_NAMES), "attributes_vocab": ["red"]}}
    plan = CorpusPlan({"image": 2, "text": 2, "index": 1}, config={"stage": "eval-test", "split": split, "seed": seed,
                                                                  "first_id": first_id}, models=models)
    write_corpus(root, plan, records)
    return root
