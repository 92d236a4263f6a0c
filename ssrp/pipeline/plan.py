"""Planning a build and accounting for its shards (shared by the local runner and Beam).

Every input belongs to exactly one shard, by a pure function of its key: an image to the image
shard of ``image/<id>``, a caption (annotation) to the text shard of ``text/<id>``. A shard's
report says how many inputs it had, how many were written, and which died and why; the index is
computed from the reports once every image and text shard is committed, so it only lists what was
really written, whichever run wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ssrp.corpus import (
    INDEX,
    CorpusPlan,
    ImageRecord,
    IndexRecord,
    ShardSpec,
    encode,
    image_key,
    stable_shard,
    text_key,
)
from ssrp.corpus.records import decode_header
from ssrp.deadletter import DeadLetter
from ssrp.pipeline.config import BuildConfig, shard_counts
from ssrp.pipeline.inputs import BuildInputs, CaptionInput, ImageInput
from ssrp.pipeline.settings import variants_per_caption, views_per_image


def image_shard(image_id: int, n: int) -> int:
    return stable_shard(image_key(image_id, "raw"), n)


def text_shard(key: str, n: int) -> int:
    return stable_shard(key, n)


def make_plan(cfg: BuildConfig, inputs: BuildInputs, models: dict, config: dict,
              source_shards: dict[str, int] | None = None) -> CorpusPlan:
    """The plan of a build. ``config``: the resolved settings that decide the corpus's bytes (hashed into the
    manifest). A corpus input keeps its source's shard counts (``source_shards``), so copied shards keep their
    bytes."""
    fixed = {**(source_shards or {}), **cfg.num_shards}
    counts = shard_counts(len(inputs.images), views_per_image(cfg),
                          len(inputs.captions), variants_per_caption(cfg), fixed)
    return CorpusPlan(num_shards=counts, config=config, models=models, inputs=inputs.fingerprint())


def group_images(images: Sequence[ImageInput], n: int) -> dict[int, list[ImageInput]]:
    groups: dict[int, list[ImageInput]] = {i: [] for i in range(n)}
    for img in images:
        groups[image_shard(img.image_id, n)].append(img)
    return groups


def group_captions(inputs: BuildInputs, n: int) -> dict[int, tuple[list[CaptionInput], list[DeadLetter]]]:
    groups: dict[int, tuple[list[CaptionInput], list[DeadLetter]]] = {i: ([], []) for i in range(n)}
    for cap in inputs.captions:
        groups[text_shard(cap.key, n)][0].append(cap)
    for dead in inputs.dead_letters:
        if dead.key.startswith("text/") and dead.key.count("/") == 2 and dead.key.split("/")[1].isdigit():
            groups[text_shard(dead.key, n)][1].append(dead)
        else:  # a malformed annotation has no id: account for it in shard 0
            groups[0][1].append(dead)
    return groups


def image_report(results: Sequence[tuple[ImageInput, list | DeadLetter]]) -> dict:
    """``results``: per input image, its records (ImageRecords or encoded ``(key, value)`` pairs) or a dead
    letter. ``sizes`` holds each written image's decoded size (after EXIF rotation), which the index records."""
    dead = [r.__dict__ for _, r in results if isinstance(r, DeadLetter)]
    ok = [(inp, r) for inp, r in results if not isinstance(r, DeadLetter)]
    views = sum(len(r) for _, r in ok)
    return {
        "inputs": {"images": {"inputs": len(results), "written": len(ok), "counters": {"view_records": views}}},
        "dead_letters": sorted(dead, key=lambda d: d["key"]),
        "written": sorted(inp.image_id for inp, _ in ok),
        "sizes": sorted([inp.image_id, *raw_size(r, inp)] for inp, r in ok),
    }


def raw_size(records: Sequence, inp: ImageInput) -> tuple[int, int]:
    """(height, width) of an image's raw view among its records; the annotation's if there is none."""
    for rec in records:
        if isinstance(rec, ImageRecord):
            if rec.view == "raw":
                return rec.height, rec.width
        elif rec[0].endswith("/raw"):
            fields = decode_header(rec[1])[0]["fields"]
            return int(fields["height"]), int(fields["width"])
    return inp.height, inp.width


def text_report(results: Sequence, read_dead: Sequence[DeadLetter]) -> dict:
    """``results``: CaptionResult | DeadLetter per caption of the shard."""
    dead = [r.__dict__ for r in results if isinstance(r, DeadLetter)] + [d.__dict__ for d in read_dead]
    ok = [r for r in results if not isinstance(r, DeadLetter)]
    counters: dict[str, int] = {"text_records": sum(len(r.records) for r in ok)}
    for r in ok:
        for name, n in r.dropped.items():
            counters[f"dropped:{name}"] = counters.get(f"dropped:{name}", 0) + n
    return {
        "inputs": {"captions": {"inputs": len(results) + len(read_dead), "written": len(ok), "counters": counters}},
        "dead_letters": sorted(dead, key=lambda d: (d["key"], d["stage"])),
        "written": sorted([r.caption.caption_id, r.caption.image_id] for r in ok),
    }


def index_items(images: Iterable[ImageInput], reports: Iterable[dict], plan: CorpusPlan
                ) -> tuple[dict[int, list], list[DeadLetter], dict[str, int]]:
    """Index records (image -> written captions, the image's decoded size and its COCO split) by shard, for
    images with image records and captions, and dead letters for what was written but cannot be reached from
    the index: captions whose image has no image record, images none of whose captions was written (they
    count as not written in the summary). The third value counts the indexed images per split."""
    written_images: set[int] = set()
    sizes: dict[int, tuple[int, int]] = {}
    captions: dict[int, list[int]] = {}
    for report in reports:
        if "images" in report.get("inputs", {}):
            written_images.update(report["written"])
            sizes.update({iid: (h, w) for iid, h, w in report.get("sizes", [])})
        elif "captions" in report.get("inputs", {}):
            for cid, iid in report["written"]:
                captions.setdefault(iid, []).append(cid)
    n = plan.num_shards[INDEX]
    groups: dict[int, list] = {i: [] for i in range(n)}
    splits: dict[str, int] = {}
    for img in images:
        if img.image_id in written_images and captions.get(img.image_id):
            splits[img.split] = splits.get(img.split, 0) + 1
            height, width = sizes.get(img.image_id, (img.height, img.width))
            rec = IndexRecord(image_id=img.image_id, caption_ids=np.array(sorted(captions[img.image_id]), np.int64),
                              file_name=img.file_name, height=height, width=width, split=img.split)
            groups[stable_shard(rec.key, n)].append((rec.key, encode(rec)))
    return groups, unreachable(written_images, captions), dict(sorted(splits.items()))


def unreachable(written_images: set[int], captions: dict[int, list[int]]) -> list[DeadLetter]:
    dead = [DeadLetter(text_key(cid, "raw"), "index", "image_not_written", f"image {iid} has no image record")
            for iid, cids in captions.items() if iid not in written_images for cid in cids]
    dead += [DeadLetter(image_key(iid, "raw").rsplit("/", 1)[0], "index", "no_caption_written",
                        "none of the image's captions was written") for iid in written_images if iid not in captions]
    return sorted(dead, key=lambda d: d.key)


def index_reports(plan: CorpusPlan, dead: list[DeadLetter], splits: dict[str, int]) -> dict[int, dict]:
    """The index shards' reports: the unreachable records and the images per split go with shard 0."""
    return {i: {"inputs": {}, "dead_letters": [d.__dict__ for d in dead] if i == 0 else [],
                **({"splits": splits} if i == 0 else {})}
            for i in range(plan.num_shards[INDEX])}


def specs_of(plan: CorpusPlan, kind: str) -> list[ShardSpec]:
    return [s for s in plan.specs() if s.kind == kind]
