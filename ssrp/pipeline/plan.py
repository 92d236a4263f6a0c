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

from ssrp.corpus import INDEX, CorpusPlan, IndexRecord, ShardSpec, encode, image_key, stable_shard
from ssrp.deadletter import DeadLetter
from ssrp.pipeline.coco import CaptionInput, CocoInputs, ImageInput
from ssrp.pipeline.config import BuildConfig, shard_counts


def image_shard(image_id: int, n: int) -> int:
    return stable_shard(image_key(image_id, "raw"), n)


def text_shard(key: str, n: int) -> int:
    return stable_shard(key, n)


def make_plan(cfg: BuildConfig, inputs: CocoInputs, views_per_image: int, models: dict, config: dict) -> CorpusPlan:
    """``config``: the resolved settings that decide the corpus's bytes (hashed into the manifest)."""
    counts = shard_counts(cfg, len(inputs.images), len(inputs.captions), views_per_image)
    return CorpusPlan(num_shards=counts, config=config, models=models)


def group_images(images: Sequence[ImageInput], n: int) -> dict[int, list[ImageInput]]:
    groups: dict[int, list[ImageInput]] = {i: [] for i in range(n)}
    for img in images:
        groups[image_shard(img.image_id, n)].append(img)
    return groups


def group_captions(inputs: CocoInputs, n: int) -> dict[int, tuple[list[CaptionInput], list[DeadLetter]]]:
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
    dead = [r.__dict__ for _, r in results if isinstance(r, DeadLetter)]
    written = sorted(inp.image_id for inp, r in results if not isinstance(r, DeadLetter))
    views = sum(len(r) for _, r in results if not isinstance(r, DeadLetter))
    return {
        "inputs": {"images": {"inputs": len(results), "written": len(written), "counters": {"view_records": views}}},
        "dead_letters": sorted(dead, key=lambda d: d["key"]),
        "written": written,
    }


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


def index_items(images: Iterable[ImageInput], reports: Iterable[dict], plan: CorpusPlan) -> dict[int, list]:
    """Index records (image -> written captions) for images with image records and captions, by shard."""
    written_images: set[int] = set()
    captions: dict[int, list[int]] = {}
    for report in reports:
        if "images" in report.get("inputs", {}):
            written_images.update(report["written"])
        elif "captions" in report.get("inputs", {}):
            for cid, iid in report["written"]:
                captions.setdefault(iid, []).append(cid)
    n = plan.num_shards[INDEX]
    groups: dict[int, list] = {i: [] for i in range(n)}
    for img in images:
        if img.image_id in written_images and captions.get(img.image_id):
            rec = IndexRecord(image_id=img.image_id, caption_ids=np.array(sorted(captions[img.image_id]), np.int64),
                              file_name=img.file_name, height=img.height, width=img.width)
            groups[stable_shard(rec.key, n)].append((rec.key, encode(rec)))
    return groups


def specs_of(plan: CorpusPlan, kind: str) -> list[ShardSpec]:
    return [s for s in plan.specs() if s.kind == kind]
