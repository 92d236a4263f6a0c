"""What a build reads: an MSCOCO 2017 root, a folder of images, or an existing corpus (no Beam here).

Every command that reads COCO reads it here (``read_coco``, ``read_annotation_file``). Works on any
filesystem through an ``open_fn(path, mode)`` (plain ``open`` locally, Beam's FileSystems for gs:// or
s3://). Problems in the annotations become dead letters, not crashes: a duplicate annotation id keeps the
first and reports the rest, a caption whose image is not listed is reported.

A build's inputs carry a fingerprint (counts and the sha256 of every annotation file or source manifest):
the corpus records it, and a rerun over other inputs is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ssrp.corpus import INDEX, TEXT, CorpusReader, image_key, parse_key, text_key
from ssrp.deadletter import DeadLetter

logger = logging.getLogger(__name__)

SPLITS = {"train": ("train",), "val": ("val",), "trainval": ("train", "val")}
SOURCES = ("coco", "images", "corpus")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageInput:
    image_id: int
    path: str  # full path of the image file ("" for an image taken from a corpus)
    file_name: str
    height: int
    width: int
    split: str  # the COCO split (train, val); "" for a folder of images

    @property
    def key(self) -> str:
        return image_key(self.image_id, "raw").rsplit("/", 1)[0]


@dataclass(frozen=True)
class CaptionInput:
    caption_id: int
    image_id: int
    text: str
    variants: tuple[str, ...] = ()  # the caption's text variants in a source corpus (raw first); () for raw COCO

    @property
    def key(self) -> str:
        return text_key(self.caption_id, "raw")


@dataclass(frozen=True)
class BuildInputs:
    images: list[ImageInput]
    captions: list[CaptionInput]
    dead_letters: list[DeadLetter]
    source: str = "coco"  # coco | images | corpus
    root: str = ""
    digests: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of what identifies the source

    @property
    def has_captions(self) -> bool:
        return self.source != "images"

    def fingerprint(self) -> dict:
        """What identifies these inputs (recorded in a corpus's plan; a rerun over other inputs is refused).
        ``paths`` is provenance only: the same content under another path is the same input."""
        return {
            "paths": {self.source: self.root},
            "images": len(self.images),
            "captions": len(self.captions),
            "annotation_problems": len(self.dead_letters),
            "annotations_sha256": dict(sorted(self.digests.items())),
        }


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


# ------------------------------------------------------------------------------------------------
# MSCOCO 2017


def annotation_path(root: str, split: str) -> str:
    return join(root, "annotations", f"captions_{split}2017.json")


def read_annotation_file(path: str, open_fn: Callable = open) -> tuple[dict, str]:
    """A COCO captions file (``images`` and ``annotations``) and the sha256 of its bytes."""
    try:
        with open_fn(path, "rb") as fh:
            data = fh.read()
        doc = json.loads(data.decode("utf-8"))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such annotation file; is it an MSCOCO 2017 captions file?") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(doc, dict) or "images" not in doc or "annotations" not in doc:
        raise ValueError(f"{path}: expected an object with 'images' and 'annotations'")
    return doc, hashlib.sha256(data).hexdigest()


def read_split(root: str, split: str, open_fn: Callable = open) -> tuple[list[ImageInput], list[dict], str]:
    """Images, raw annotations and the sha256 of the annotation file of one split (train or val)."""
    doc, digest = read_annotation_file(annotation_path(root, split), open_fn)
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


def read_coco(root: str, split: str = "train", open_fn: Callable = open, max_images: int | None = None
              ) -> BuildInputs:
    """All image and caption inputs of a split choice, with annotation problems as dead letters."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    images: list[ImageInput] = []
    annotations: list[dict] = []
    digests: dict[str, str] = {}
    for part in SPLITS[split]:
        imgs, anns, digests[f"annotations/captions_{part}2017.json"] = read_split(root, part, open_fn)
        images += imgs
        annotations += anns
    images = _first(_unique_images(images), max_images)
    known = {img.image_id for img in images}
    captions, dead = captions_of(annotations, known, limited=max_images is not None)
    logger.info("%s: %d images, %d captions, %d annotation problems", root, len(images), len(captions), len(dead))
    return BuildInputs(images, captions, dead, "coco", root, digests)


def _first(images: list[ImageInput], max_images: int | None) -> list[ImageInput]:
    images = sorted(images, key=lambda i: i.image_id)
    return images if max_images is None else images[:max_images]


def _unique_images(images: list[ImageInput]) -> list[ImageInput]:
    seen: dict[int, ImageInput] = {}
    for img in images:
        if img.image_id in seen:
            raise ValueError(f"image id {img.image_id} is listed twice ({seen[img.image_id].path} and {img.path})")
        seen[img.image_id] = img
    return list(seen.values())


def captions_of(annotations: list[dict], known: set[int] | None, limited: bool = False
                ) -> tuple[list[CaptionInput], list[DeadLetter]]:
    """Caption inputs of COCO annotations (``known``: the image ids; None accepts any), problems as dead letters."""
    captions: dict[int, CaptionInput] = {}
    dead: list[DeadLetter] = []
    for ann in annotations:
        try:
            cid, iid, text = int(ann["id"]), int(ann["image_id"]), ann["caption"]
        except (KeyError, TypeError, ValueError) as err:
            dead.append(DeadLetter(f"text/annotation/{ann!r:.60}", "read", "malformed_annotation", str(err)))
            continue
        key = text_key(cid, "raw")
        if known is not None and iid not in known:
            if not limited:
                dead.append(DeadLetter(key, "read", "unknown_image", f"image {iid} is not in the annotation file"))
            continue
        if cid in captions:
            dead.append(DeadLetter(key, "read", "duplicate_annotation_id", f"caption id {cid} appears again"))
            continue
        captions[cid] = CaptionInput(cid, iid, text if isinstance(text, str) else "")
    return sorted(captions.values(), key=lambda c: c.caption_id), dead


# ------------------------------------------------------------------------------------------------
# A folder of images (no captions)


def read_image_dir(root: str, max_images: int | None = None) -> BuildInputs:
    """Image files of a folder (not recursive), by name. Ids: the numeric file stems (COCO style) when every
    stem is a number, else the position in name order. The fingerprint hashes the list of names."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such image directory")
    names = sorted(n for n in os.listdir(root) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise FileNotFoundError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    stems = [os.path.splitext(n)[0] for n in names]
    numeric = all(s.isdigit() for s in stems)
    images = [ImageInput(int(s) if numeric else i, join(root, n), n, 0, 0, "")
              for i, (n, s) in enumerate(zip(names, stems, strict=True))]
    if len({img.image_id for img in images}) != len(images):
        raise ValueError(f"{root}: two files have the same numeric id; rename them")
    listing = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
    return BuildInputs(_first(images, max_images), [], [], "images", root, {"file names": listing})


# ------------------------------------------------------------------------------------------------
# An existing corpus (its images are copied, its captions re-processed)


def read_corpus(root: str, max_images: int | None = None) -> BuildInputs:
    """Images of a corpus's index records and their captions (text, and the variants the corpus holds)."""
    with CorpusReader(root) as reader:
        images, captions = [], []
        variants: dict[int, list[str]] = {}
        for key in reader.keys(TEXT):
            _, cid, variant = parse_key(key)
            variants.setdefault(cid, []).append(variant)
        for _, rec in reader.items(INDEX):
            images.append(ImageInput(rec.image_id, "", rec.file_name, rec.height, rec.width, rec.split))
        images = _first(images, max_images)
        for img in images:
            for cid in reader.index(img.image_id).caption_ids:
                cid = int(cid)
                names = sorted(variants.get(cid, []), key=lambda v: (v != "raw", v))
                text = reader.text(cid, "raw").text if "raw" in names else ""
                captions.append(CaptionInput(cid, img.image_id, text, tuple(names)))
        digest = reader.manifest.get("config_hash", "")
        shards = hashlib.sha256("".join(s["sha256"] for k in sorted(reader.manifest["kinds"])
                                        for s in reader.manifest["kinds"][k]["shards"]).encode()).hexdigest()
    captions.sort(key=lambda c: c.caption_id)
    return BuildInputs(images, captions, [], "corpus", root, {"config_hash": digest, "shards": shards})


def read_inputs(source: str, path: str, split: str = "train", open_fn: Callable = open,
                max_images: int | None = None) -> BuildInputs:
    """The inputs of a build from one of ``SOURCES``."""
    if source == "coco":
        return read_coco(path, split, open_fn, max_images)
    if source == "images":
        return read_image_dir(path, max_images)
    if source == "corpus":
        return read_corpus(path, max_images)
    raise ValueError(f"input must be one of {SOURCES}, got {source!r}")
