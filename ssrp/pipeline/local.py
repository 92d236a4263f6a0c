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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

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


@dataclass
class BuildTimings:
    """Where the main thread of a local build spent its wall time, in seconds (``run_local(timings=...)``).

    ``extract_s``: inside the stages (detector and views, translation, parsing): the device's work.
    ``commit_wait_s``: waiting on shard commits (inline commits, a full commit queue, the final join).
    """

    wall_s: float = 0.0
    extract_s: float = 0.0
    commit_wait_s: float = 0.0
    shards_committed: int = 0

    @property
    def busy_fraction(self) -> float:
        """The share of the build's wall time the extractor was busy (1.0: it never waited)."""
        return self.extract_s / self.wall_s if self.wall_s > 0 else 0.0


def run_local(cfg: BuildConfig, stages: BuildStages | None = None, progress: bool = True,
              open_fn: Callable = open, overlap_commits: bool = True, timings: BuildTimings | None = None) -> dict:
    """Build the corpus ``cfg.out`` from ``cfg.input``; returns the manifest. One build at a time per output.
    ``overlap_commits=False`` commits each shard on the main thread (bench/pipeline.py compares both);
    ``timings``, when given, is filled with where the main thread's time went (also logged)."""
    timings = timings if timings is not None else BuildTimings()
    with build_lock(cfg.out):
        return _run_local(cfg, stages or BuildStages(cfg, open_fn=open_fn), progress, open_fn, overlap_commits,
                          timings)


def _run_local(cfg: BuildConfig, stages: BuildStages, progress: bool, open_fn: Callable, overlap: bool,
               timings: BuildTimings) -> dict:
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
    start = time.perf_counter()
    with ShardCommitter(writer, background=overlap, threads=cfg.commit_threads, timings=timings) as committer:
        image_specs = [s for s in todo if s.kind == "image"]
        _image_shards(image_specs, group_images(inputs.images, plan.num_shards["image"]), stages, cfg, committer,
                      progress, timings)
        if "text" in plan.num_shards:
            text_specs = [s for s in todo if s.kind == "text"]
            _text_shards(text_specs, group_captions(inputs, plan.num_shards["text"]), stages, cfg, committer,
                         progress, timings)
    timings.wall_s = time.perf_counter() - start
    _log_timings(timings, overlap)
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
    """Encodes, builds and commits finished shards on ``threads`` background threads (``background=False``: inline).

    Shards are independent, so several commit at once (a commit is mostly hashing, copying and fsync, which
    release the GIL). ``submit`` blocks while ``threads`` shards wait, which bounds memory; an error on a
    thread is raised in the main thread at the next ``submit`` or at the end of the ``with`` block.
    """

    def __init__(self, writer: CorpusWriter, background: bool = True, threads: int = 1,
                 timings: BuildTimings | None = None):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.writer = writer
        self.background = background
        self.timings = timings if timings is not None else BuildTimings()
        self._queue: queue.Queue = queue.Queue(maxsize=threads)
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"ssrp-commit-{i}", daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> ShardCommitter:
        if self.background:
            for thread in self._threads:
                thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.background:
            start = time.perf_counter()
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join()
            self.timings.commit_wait_s += time.perf_counter() - start
        if exc is None and self._error is not None:
            raise self._error

    def submit(self, spec: ShardSpec, records: list, report: dict) -> None:
        if self._error is not None:
            raise self._error
        start = time.perf_counter()
        if self.background:
            self._queue.put((spec, records, report))
        else:
            self._commit(spec, records, report)
        self.timings.commit_wait_s += time.perf_counter() - start

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._commit(*item)
                except BaseException as err:  # noqa: BLE001 - handed to the main thread in submit()/__exit__
                    self._error = err

    def _commit(self, spec: ShardSpec, records: list, report: dict) -> None:
        self.writer.commit_shard(spec, encode_all(records), report)
        with self._lock:
            self.timings.shards_committed += 1


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
                  cfg: BuildConfig, committer: ShardCommitter, progress: bool, timings: BuildTimings) -> None:
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
            start = time.perf_counter()
            outs = iter(stages.run_images(live) if live else [])
            timings.extract_s += time.perf_counter() - start
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
                 committer: ShardCommitter, progress: bool, timings: BuildTimings) -> None:
    total = sum(len(groups[s.shard_id][0]) for s in specs)
    with tqdm(total=total, unit="cap", desc="captions", disable=not progress) as bar:
        for spec in specs:
            captions, read_dead = groups[spec.shard_id]
            results, records = [], []
            for start in range(0, len(captions), cfg.caption_batch):
                chunk = captions[start : start + cfg.caption_batch]
                begin = time.perf_counter()
                outs = stages.captions(chunk)
                timings.extract_s += time.perf_counter() - begin
                for out in outs:
                    results.append(out)
                    if not isinstance(out, DeadLetter):
                        records += out.records
                bar.update(len(chunk))
            committer.submit(spec, records, text_report(results, read_dead))


def _log_timings(timings: BuildTimings, overlap: bool) -> None:
    logger.info("extraction busy %.0f%% of %.1f s; %.1f s waiting on %d shard commits (%s)",
                100 * timings.busy_fraction, timings.wall_s, timings.commit_wait_s, timings.shards_committed,
                "overlapped" if overlap else "inline")


def _log_summary(manifest: dict) -> None:
    for kind, s in manifest.get("summary", {}).items():
        logger.info("%s: %d in, %d written, %d dead letters %s%s", kind, s["inputs"], s["written"],
                    s["dead_letters"], s["by_reason"] or "", "" if s["balanced"] else "  (COUNTS DO NOT ADD UP)")
