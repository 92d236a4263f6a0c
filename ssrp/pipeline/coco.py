"""Reading raw MSCOCO 2017: annotations into image and caption inputs (no Beam here).

Works on any filesystem through an ``open_fn(path, mode)`` (plain ``open`` locally, Beam's
FileSystems for gs:// or s3://). Problems in the annotations become dead letters, not crashes:
a duplicate annotation id keeps the first and reports the rest, a caption whose image is not
listed is reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ssrp.corpus import image_key, text_key
from ssrp.deadletter import DeadLetter

logger = logging.getLogger(__name__)

SPLITS = {"train": ("train",), "val": ("val",), "trainval": ("train", "val")}


@dataclass(frozen=True)
class ImageInput:
    image_id: int
    path: str  # full path of the image file
    file_name: str
    height: int
    width: int
    split: str

    @property
    def key(self) -> str:
        return image_key(self.image_id, "raw").rsplit("/", 1)[0]


@dataclass(frozen=True)
class CaptionInput:
    caption_id: int
    image_id: int
    text: str

    @property
    def key(self) -> str:
        return text_key(self.caption_id, "raw")


@dataclass(frozen=True)
class CocoInputs:
    images: list[ImageInput]
    captions: list[CaptionInput]
    dead_letters: list[DeadLetter]
    annotation_sha256: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of its bytes
    root: str = ""

    def fingerprint(self) -> dict:
        """What identifies these inputs (recorded in a corpus's plan; a rerun over other inputs is refused).
        ``paths`` is provenance only: the same content under another path is the same input."""
        return {
            "paths": {"coco": self.root},
            "images": len(self.images),
            "captions": len(self.captions),
            "annotation_problems": len(self.dead_letters),
            "annotations_sha256": dict(sorted(self.annotation_sha256.items())),
        }


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def annotation_path(root: str, split: str) -> str:
    return join(root, "annotations", f"captions_{split}2017.json")


def read_split(root: str, split: str, open_fn: Callable = open) -> tuple[list[ImageInput], list[dict], str]:
    """Images, raw annotations and the sha256 of the annotation file of one split (train or val)."""
    path = annotation_path(root, split)
    try:
        with open_fn(path, "rb") as fh:
            data = fh.read()
        digest = hashlib.sha256(data).hexdigest()
        doc = json.loads(data.decode("utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such annotation file; is {root} an MSCOCO 2017 root?") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise ValueError(f"{path}: expected an object with 'images' and 'annotations'")
    images = [
        ImageInput(
            image_id=int(img["id"]),
            path=join(root, f"{split}2017", img["file_name"]),
            file_name=img["file_name"],
            height=int(img.get("height", 0)),
            width=int(img.get("width", 0)),
            split=split,
        )
        for img in doc["images"]
    ]
    return images, doc["annotations"], digest


def read_coco(root: str, split: str = "trainval", open_fn: Callable = open, max_images: int | None = None) -> CocoInputs:
    """All image and caption inputs of a split choice, with annotation problems as dead letters."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    images: list[ImageInput] = []
    annotations: list[dict] = []
    digests: dict[str, str] = {}
    for part in SPLITS[split]:
        imgs, anns, digests[annotation_path("", part).lstrip("/")] = read_split(root, part, open_fn)
        images += imgs
        annotations += anns
    images = _unique_images(images)
    if max_images is not None:
        images = sorted(images, key=lambda i: i.image_id)[:max_images]
    known = {img.image_id for img in images}
    captions, dead = _captions(annotations, known, limited=max_images is not None)
    logger.info("%s: %d images, %d captions, %d annotation problems", root, len(images), len(captions), len(dead))
    return CocoInputs(sorted(images, key=lambda i: i.image_id), captions, dead, digests, root)


def _unique_images(images: list[ImageInput]) -> list[ImageInput]:
    seen: dict[int, ImageInput] = {}
    for img in images:
        if img.image_id in seen:
            raise ValueError(f"image id {img.image_id} is listed twice ({seen[img.image_id].path} and {img.path})")
        seen[img.image_id] = img
    return list(seen.values())


def _captions(annotations: list[dict], known: set[int], limited: bool) -> tuple[list[CaptionInput], list[DeadLetter]]:
    captions: dict[int, CaptionInput] = {}
    dead: list[DeadLetter] = []
    for ann in annotations:
        try:
            cid, iid, text = int(ann["id"]), int(ann["image_id"]), ann["caption"]
        except (KeyError, TypeError, ValueError) as err:
            dead.append(DeadLetter(f"text/annotation/{ann!r:.60}", "read", "malformed_annotation", str(err)))
            continue
        key = text_key(cid, "raw")
        if iid not in known:
            if not limited:
                dead.append(DeadLetter(key, "read", "unknown_image", f"image {iid} is not in the annotation file"))
            continue
        if cid in captions:
            dead.append(DeadLetter(key, "read", "duplicate_annotation_id", f"caption id {cid} appears again"))
            continue
        captions[cid] = CaptionInput(cid, iid, text if isinstance(text, str) else "")
    return sorted(captions.values(), key=lambda c: c.caption_id), dead
