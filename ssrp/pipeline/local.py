"""The local runner: the build as a plain loop over the same stage objects and shard writer as Beam.

Images are read and decoded ahead of the detector by ``decode_workers`` processes (a DataLoader), the image
stage runs on the main thread (the GPU), and finished shards are encoded, built and committed by a background
thread (``ShardCommitter``) while the next shard is extracted, so the device never waits on a commit.
Memory stays at about two shards' records. Shards committed by an earlier run are skipped, so an interrupted
build resumes where it stopped and ends with the same manifest as an uninterrupted one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ssrp.corpus import INDEX, CorpusWriter, ShardSpec
from ssrp.deadletter import DeadLetter
from ssrp.pipeline.config import BuildConfig
from ssrp.pipeline.inputs import ImageInput, read_inputs
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
              open_fn: Callable = open, overlap_commits: bool = True) -> dict:
    """Build the corpus ``cfg.out`` from ``cfg.input``; returns the manifest. One build at a time per output.
    ``overlap_commits=False`` commits each shard on the main thread (bench/pipeline.py compares both)."""
    with build_lock(cfg.out):
        return _run_local(cfg, stages or BuildStages(cfg, open_fn=open_fn), progress, open_fn, overlap_commits)


def _run_local(cfg: BuildConfig, stages: BuildStages, progress: bool, open_fn: Callable, overlap: bool) -> dict:
    inputs = read_inputs(cfg.source, cfg.input, cfg.split, open_fn, cfg.max_images)
    source_shards = stages.source.manifest["num_shards"] if cfg.source == "corpus" else None
    plan = make_plan(cfg, inputs, stages.model_identities(), stages.resolved_config(), source_shards)
    writer = CorpusWriter(cfg.out, plan)
    writer.open()
    todo = [s for s in plan.specs() if s.kind != INDEX and writer.committed(s) is None]
    skipped = len([s for s in plan.specs() if s.kind != INDEX]) - len(todo)
    if skipped:
        logger.info("resuming: %d shards already committed are kept", skipped)
    if todo:
        stages.load()
    with ShardCommitter(writer, background=overlap) as committer:
        image_specs = [s for s in todo if s.kind == "image"]
        _image_shards(image_specs, group_images(inputs.images, plan.num_shards["image"]), stages, cfg, committer,
                      progress)
        if "text" in plan.num_shards:
            text_specs = [s for s in todo if s.kind == "text"]
            _text_shards(text_specs, group_captions(inputs, plan.num_shards["text"]), stages, cfg, committer,
                         progress)
    if INDEX in plan.num_shards:
        _index_shards(writer, plan, inputs.images)
    manifest = writer.finalize()
    _log_summary(manifest)
    return manifest


def _index_shards(writer: CorpusWriter, plan, images: Sequence[ImageInput]) -> None:
    reports = [writer.report(s) or {} for s in plan.specs() if s.kind != INDEX]
    groups, dead, splits = index_items(images, reports, plan)
    index_report = index_reports(plan, dead, splits)
    for spec in specs_of(plan, INDEX):
        if writer.committed(spec) is None:
            writer.commit_shard(spec, groups[spec.shard_id], index_report[spec.shard_id])


# ------------------------------------------------------------------------------------------------
# Committing shards off the main thread


class ShardCommitter:
    """Encodes, builds and commits finished shards on one background thread (``background=False``: inline).

    ``submit`` blocks while ``depth`` shards wait, which bounds memory; an error on the thread is raised in
    the main thread at the next ``submit`` or at the end of the ``with`` block.
    """

    def __init__(self, writer: CorpusWriter, background: bool = True, depth: int = 1):
        self.writer = writer
        self.background = background
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ssrp-commit", daemon=True)

    def __enter__(self) -> ShardCommitter:
        if self.background:
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.background:
            self._queue.put(None)
            self._thread.join()
        if exc is None and self._error is not None:
            raise self._error

    def submit(self, spec: ShardSpec, records: list, report: dict) -> None:
        if self._error is not None:
            raise self._error
        if not self.background:
            self._commit(spec, records, report)
            return
        self._queue.put((spec, records, report))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._commit(*item)
                except BaseException as err:  # noqa: BLE001 - handed to the main thread in submit()/__exit__
                    self._error = err

    def _commit(self, spec: ShardSpec, records: list, report: dict) -> None:
        self.writer.commit_shard(spec, encode_all(records), report)


# ------------------------------------------------------------------------------------------------
# Images


class _ReadAndDecode(Dataset):
    """Item i: (shard, input, DecodedImage | source records | DeadLetter), computed in a worker process."""

    def __init__(self, order: list[tuple[ShardSpec, ImageInput]], stages: BuildStages):
        self.order = order
        self.stages = stages

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        spec, inp = self.order[i]
        return spec, inp, self.stages.read_and_decode(inp)


def _as_list(batch: list) -> list:
    return batch


def decoded_batches(order: list[tuple[ShardSpec, ImageInput]], stages: BuildStages, batch: int,
                    workers: int) -> Iterator[list]:
    """Batches of (shard, input, decoded) in input order; reading and decoding run in ``workers`` processes."""
    if workers == 0:
        for start in range(0, len(order), batch):
            yield [(spec, inp, stages.read_and_decode(inp)) for spec, inp in order[start : start + batch]]
        return
    loader = DataLoader(_ReadAndDecode(order, stages), batch_size=batch, num_workers=workers,
                        collate_fn=_as_list, prefetch_factor=4, generator=torch.Generator().manual_seed(0))
    yield from loader


def _image_shards(specs: list[ShardSpec], groups: dict[int, list[ImageInput]], stages: BuildStages,
                  cfg: BuildConfig, committer: ShardCommitter, progress: bool) -> None:
    order = [(spec, inp) for spec in specs for inp in groups[spec.shard_id]]
    results: dict[int, list] = {spec.shard_id: [] for spec in specs}
    remaining = {spec.shard_id: len(groups[spec.shard_id]) for spec in specs}
    for spec in specs:
        if remaining[spec.shard_id] == 0:
            committer.submit(spec, [], image_report([]))
    workers = min(cfg.decode_workers, max(0, len(order) // cfg.image_batch))
    with tqdm(total=len(order), unit="img", desc="images", disable=not progress) as bar:
        for chunk in decoded_batches(order, stages, cfg.image_batch, workers):
            live = [d for _, _, d in chunk if not isinstance(d, DeadLetter)]
            outs = iter(stages.run_images(live) if live else [])
            for spec, inp, decoded in chunk:
                out = decoded if isinstance(decoded, DeadLetter) else next(outs)
                results[spec.shard_id].append((inp, out))
                remaining[spec.shard_id] -= 1
                if remaining[spec.shard_id] == 0:
                    _submit_images(committer, spec, results.pop(spec.shard_id))
            bar.update(len(chunk))


def _submit_images(committer: ShardCommitter, spec: ShardSpec, results: list) -> None:
    records = [r for _, out in results if not isinstance(out, DeadLetter) for r in out]
    committer.submit(spec, records, image_report(results))


# ------------------------------------------------------------------------------------------------
# Captions


def _text_shards(specs: list[ShardSpec], groups: dict, stages: BuildStages, cfg: BuildConfig,
                 committer: ShardCommitter, progress: bool) -> None:
    total = sum(len(groups[s.shard_id][0]) for s in specs)
    with tqdm(total=total, unit="cap", desc="captions", disable=not progress) as bar:
        for spec in specs:
            captions, read_dead = groups[spec.shard_id]
            results, records = [], []
            for start in range(0, len(captions), cfg.caption_batch):
                chunk = captions[start : start + cfg.caption_batch]
                for out in stages.captions(chunk):
                    results.append(out)
                    if not isinstance(out, DeadLetter):
                        records += out.records
                bar.update(len(chunk))
            committer.submit(spec, records, text_report(results, read_dead))


def _log_summary(manifest: dict) -> None:
    for kind, s in manifest.get("summary", {}).items():
        logger.info("%s: %d in, %d written, %d dead letters %s%s", kind, s["inputs"], s["written"],
                    s["dead_letters"], s["by_reason"] or "", "" if s["balanced"] else "  (COUNTS DO NOT ADD UP)")
