"""The local runner: the build as a plain loop over the same stage objects and shard writer.

It processes one shard at a time (memory stays at one shard's records), commits each shard as
soon as it is complete, and skips shards committed by an earlier run, so an interrupted build
resumes where it stopped and ends with the same manifest as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tqdm import tqdm

from ssrp.corpus import INDEX, CorpusWriter
from ssrp.deadletter import DeadLetter
from ssrp.pipeline.coco import read_coco
from ssrp.pipeline.config import BuildConfig
from ssrp.pipeline.lock import build_lock
from ssrp.pipeline.plan import (
    group_captions,
    group_images,
    image_report,
    index_items,
    index_reports,
    make_plan,
    specs_of,
    text_report,
)
from ssrp.pipeline.stages import BuildStages, encode_all

logger = logging.getLogger(__name__)


def run_local(cfg: BuildConfig, stages: BuildStages | None = None, progress: bool = True,
              open_fn: Callable = open) -> dict:
    """Build the corpus ``cfg.out`` from ``cfg.coco``; returns the manifest. One build at a time per output."""
    with build_lock(cfg.out):
        return _run_local(cfg, stages, progress, open_fn)


def _run_local(cfg: BuildConfig, stages: BuildStages | None, progress: bool, open_fn: Callable) -> dict:
    inputs = read_coco(cfg.coco, cfg.split, open_fn=open_fn, max_images=cfg.max_images)
    stages = stages or BuildStages(cfg, open_fn=open_fn)
    plan = make_plan(cfg, inputs, views_per_image(cfg), stages.model_identities(), stages.resolved_config())
    writer = CorpusWriter(cfg.out, plan)
    writer.open()
    image_groups = group_images(inputs.images, plan.num_shards["image"])
    caption_groups = group_captions(inputs, plan.num_shards["text"])
    todo = [s for s in plan.specs() if s.kind != INDEX and writer.committed(s) is None]
    skipped = len([s for s in plan.specs() if s.kind != INDEX]) - len(todo)
    if skipped:
        logger.info("resuming: %d shards already committed are kept", skipped)
    if todo:
        stages.load()
    total_images = sum(len(image_groups[s.shard_id]) for s in todo if s.kind == "image")
    total_captions = sum(len(caption_groups[s.shard_id][0]) for s in todo if s.kind == "text")
    with tqdm(total=total_images, unit="img", desc="images", disable=not progress) as bar:
        for spec in (s for s in todo if s.kind == "image"):
            _image_shard(writer, spec, image_groups[spec.shard_id], stages, cfg, bar)
    with tqdm(total=total_captions, unit="cap", desc="captions", disable=not progress) as bar:
        for spec in (s for s in todo if s.kind == "text"):
            caps, read_dead = caption_groups[spec.shard_id]
            _text_shard(writer, spec, caps, read_dead, stages, cfg, bar)
    reports = [writer.report(s) or {} for s in plan.specs() if s.kind != INDEX]
    groups, dead = index_items(inputs.images, reports, plan)
    index_report = index_reports(plan, dead)
    for spec in specs_of(plan, INDEX):
        if writer.committed(spec) is None:
            writer.commit_shard(spec, groups[spec.shard_id], index_report[spec.shard_id])
    manifest = writer.finalize()
    _log_summary(manifest)
    return manifest


def views_per_image(cfg: BuildConfig) -> int:
    """Image records per image, for sizing shards: the chosen views (all 14 by default) or the raw one."""
    if not cfg.has("views"):
        return 1
    from ssrp.pipeline.models import views_config

    return len(views_config(cfg).views)


def _image_shard(writer, spec, images, stages, cfg, bar) -> None:
    results, items = [], []
    for start in range(0, len(images), cfg.image_batch):
        chunk = images[start : start + cfg.image_batch]
        readable, batch = [], []
        for inp in chunk:
            data = stages.read_image(inp)
            if isinstance(data, bytes):
                batch.append((inp, data))
                readable.append(inp)
            else:
                results.append((inp, data))
        for inp, out in zip(readable, stages.images(batch) if batch else [], strict=True):
            results.append((inp, out))
            if isinstance(out, list):
                items += encode_all(out)
        bar.update(len(chunk))
    writer.commit_shard(spec, items, image_report(results))


def _text_shard(writer, spec, captions, read_dead, stages, cfg, bar) -> None:
    results, items = [], []
    for start in range(0, len(captions), cfg.caption_batch):
        chunk = captions[start : start + cfg.caption_batch]
        for out in stages.captions(chunk):
            results.append(out)
            if not isinstance(out, DeadLetter):
                items += encode_all(out.records)
        bar.update(len(chunk))
    writer.commit_shard(spec, items, text_report(results, read_dead))


def _log_summary(manifest: dict) -> None:
    for kind, s in manifest.get("summary", {}).items():
        logger.info("%s: %d in, %d written, %d dead letters %s%s", kind, s["inputs"], s["written"],
                    s["dead_letters"], s["by_reason"] or "", "" if s["balanced"] else "  (COUNTS DO NOT ADD UP)")
