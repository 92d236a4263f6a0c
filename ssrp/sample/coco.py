"""A deterministic mini-COCO in exactly the MSCOCO 2017 layout.

    OUT/annotations/captions_train2017.json   {"info", "licenses", "images", "annotations"}
    OUT/annotations/captions_val2017.json
    OUT/train2017/000000000001.jpg ...
    OUT/val2017/...

Images are real JPEG files of varied sizes (the aspect ratios COCO has), each a scene of a few
coloured objects on a textured background; each image has five captions written from what was
drawn, in COCO's style. Everything follows from the seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

# (width, height) pairs seen often in COCO, plus a few odd ones.
SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (640, 640), (612, 612), (640, 360), (333, 500)]
COLOURS = {
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 160, 60),
    "yellow": (230, 210, 50),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
    "brown": (120, 80, 40),
    "orange": (240, 140, 30),
}
THINGS = ["dog", "cat", "horse", "man", "woman", "bus", "car", "kite", "pizza", "umbrella", "boat", "bird", "train"]
PLACES = ["on a beach", "in a field", "on a street", "in a kitchen", "near a lake", "in a park", "on a table"]
RELATIONS = ["next to", "behind", "in front of", "near", "beside", "above", "under"]
ACTIONS = ["standing", "sitting", "walking", "lying", "playing", "waiting", "resting"]
TEMPLATES = [
    "A {c1} {t1} {r} a {c2} {t2} {p}.",
    "There is a {c1} {t1} {a} {r} the {t2}.",
    "A {t1} and a {t2} {p}.",
    "Two objects {p}: a {c1} {t1} and a {c2} {t2}.",
    "The {c1} {t1} is {a} {r} a {t2} {p}.",
    "a {t1} {a} {p} with a {c2} {t2} {r} it",
    "Close up of a {c1} {t1} {r} a {c2} {t2}.",
]


@dataclass(frozen=True)
class SampleConfig:
    images: int = 8
    val_images: int = 2
    captions_per_image: int = 5
    seed: int = 0
    quality: int = 90

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ValueError(f"images must be at least 1, got {self.images}")
        if self.val_images < 0:
            raise ValueError(f"val_images must be >= 0, got {self.val_images}")
        if not 1 <= self.captions_per_image <= 20:
            raise ValueError(f"captions_per_image must lie in 1..20, got {self.captions_per_image}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must lie in 1..100, got {self.quality}")


def _draw_scene(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, list[tuple[str, str]]]:
    w, h = size
    base = tuple(rng.randrange(60, 200) for _ in range(3))
    img = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(img)
    for _ in range(40):  # texture, so the detector's features are not constant
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randrange(4, max(5, min(w, h) // 10))
        tone = tuple(max(0, min(255, c + rng.randrange(-40, 40))) for c in base)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tone)
    objects = []
    for _ in range(rng.randint(2, 5)):
        colour = rng.choice(sorted(COLOURS))
        thing = rng.choice(THINGS)
        bw, bh = rng.randrange(w // 8, w // 2), rng.randrange(h // 8, h // 2)
        x0, y0 = rng.randrange(0, w - bw), rng.randrange(0, h - bh)
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([x0, y0, x0 + bw, y0 + bh], fill=COLOURS[colour], outline=(0, 0, 0), width=2)
        objects.append((colour, thing))
    return img.filter(ImageFilter.SMOOTH), objects


def _captions(rng: random.Random, objects: list[tuple[str, str]], n: int) -> list[str]:
    out = []
    templates = rng.sample(TEMPLATES, k=min(n, len(TEMPLATES))) + [rng.choice(TEMPLATES) for _ in range(n - len(TEMPLATES))]
    for template in templates:
        (c1, t1), (c2, t2) = rng.sample(objects, 2)
        out.append(
            template.format(
                c1=c1, t1=t1, c2=c2, t2=t2, r=rng.choice(RELATIONS), p=rng.choice(PLACES), a=rng.choice(ACTIONS)
            )
        )
    return out


def _jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _write_split(out: str, split: str, count: int, first_id: int, cfg: SampleConfig, rng: random.Random) -> tuple[int, int]:
    folder = os.path.join(out, f"{split}2017")
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    for image_id in range(first_id, first_id + count):
        size = rng.choice(SIZES)
        img, objects = _draw_scene(rng, size)
        file_name = f"{image_id:012d}.jpg"
        with open(os.path.join(folder, file_name), "wb") as fh:
            fh.write(_jpeg_bytes(img, cfg.quality))
        images.append(
            {
                "license": 1,
                "file_name": file_name,
                "coco_url": f"http://images.cocodataset.org/{split}2017/{file_name}",
                "height": size[1],
                "width": size[0],
                "date_captured": "2013-11-14 11:18:45",
                "flickr_url": "",
                "id": image_id,
            }
        )
        for j, text in enumerate(_captions(rng, objects, cfg.captions_per_image)):
            caption_id = image_id * 100 + j + 1  # unique across splits, like COCO's ids
            annotations.append({"image_id": image_id, "id": caption_id, "caption": text})
    doc = {
        "info": {"description": "ssrp mini-COCO sample", "version": "1.0", "year": 2017, "seed": cfg.seed},
        "licenses": [{"url": "", "id": 1, "name": "synthetic, public domain"}],
        "images": images,
        "annotations": annotations,
    }
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    with open(os.path.join(out, "annotations", f"captions_{split}2017.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    return len(images), len(annotations)


def write_sample(out: str, cfg: SampleConfig) -> dict:
    """Write the sample; returns counts per split."""
    rng = random.Random(cfg.seed)
    counts = {"train": _write_split(out, "train", cfg.images, 1, cfg, rng)}
    if cfg.val_images:
        counts["val"] = _write_split(out, "val", cfg.val_images, cfg.images + 1, cfg, rng)
    logger.info("wrote mini-COCO to %s: %s", out, counts)
    return {split: {"images": i, "captions": c} for split, (i, c) in counts.items()}
