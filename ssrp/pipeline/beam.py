"""The Beam corpus builder: the same stages and shard writer as the local runner, on any runner.

    images:   Create | list the inputs (inside the pipeline) | drop committed shards | Reshuffle
              | read (file bytes, or a source corpus's records) | RunInference(detector + views)
              | keyed by image shard
    captions: Create | list the captions | drop committed shards | Reshuffle
              | RunInference(back-translation + parse) | keyed by text shard
    writing:  (every planned shard, its Outcomes, its ReadFailures) | GroupByKey
              | StageShard (build locally, copy to a unique temporary name)
              | Reshuffle (commit barrier) | PromoteShard (rename, report, marker)
              | ToList | FinishCorpus (index shards from the reports, manifest last)

A retried bundle re-stages its shard under a new temporary name; only the attempt that reaches the
barrier is promoted, and promotion is idempotent, so retries never duplicate or lose a record.
Shards depend only on their records, so they are byte-identical to a local run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from ssrp.corpus import INDEX, CorpusPlan, CorpusWriter, ShardSpec, Storage
from ssrp.deadletter import DeadLetter
from ssrp.fileutil import remove_stale_scratch
from ssrp.pipeline.config import BuildConfig
from ssrp.pipeline.inputs import CaptionInput, ImageInput, read_inputs
from ssrp.pipeline.plan import image_report, image_shard, index_items, index_reports, text_report, text_shard
from ssrp.pipeline.stages import BuildStages, CaptionResult, encode_all

logger = logging.getLogger(__name__)
NAMESPACE = "ssrp"


def beam_open(path: str, mode: str = "rb"):
    """``open`` for any Beam filesystem (local, gs://, s3://); read-only."""
    if mode != "rb":
        raise ValueError("beam_open reads only")
    return FileSystems.open(path)


class BeamStorage(Storage):
    """A corpus directory on any Beam filesystem (gs://, s3://, local)."""

    def path(self, name: str) -> str:
        return FileSystems.join(self.root, name)

    def exists(self, name: str) -> bool:
        return FileSystems.exists(self.path(name))

    def read_text(self, name: str) -> str:
        with FileSystems.open(self.path(name)) as fh:
            return fh.read().decode("utf-8")

    def write_text_atomic(self, name: str, text: str) -> None:
        tmp = f"{name}.tmp-{_uuid()}"
        with FileSystems.create(self.path(tmp)) as fh:
            fh.write(text.encode("utf-8"))
        self.rename(tmp, name)

    def put_file(self, local_path: str, name: str) -> None:
        with open(local_path, "rb") as src, FileSystems.create(self.path(name)) as dst:
            while block := src.read(1 << 20):
                dst.write(block)

    def rename(self, src: str, dst: str) -> None:
        if FileSystems.exists(self.path(dst)):
            FileSystems.delete([self.path(dst)])  # same content (deterministic shards): replace
        FileSystems.rename([self.path(src)], [self.path(dst)])

    def delete(self, name: str) -> None:
        if self.exists(name):
            FileSystems.delete([self.path(name)])

    def size(self, name: str) -> int:
        return FileSystems.match([self.path(name)])[0].metadata_list[0].size_in_bytes

    def sha256(self, name: str) -> str:
        h = hashlib.sha256()
        with FileSystems.open(self.path(name)) as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    def remove_orphans(self) -> int:
        matches = FileSystems.match([self.path("**.tmp-*")])[0].metadata_list
        if matches:
            FileSystems.delete([m.path for m in matches])
        return len(matches)


def _uuid() -> str:
    return uuid.uuid4().hex


def storage_for(root: str) -> Storage:
    return BeamStorage(root) if "://" in root else Storage(root)


# ---------------------------------------------------------------------------------------------
# Model handlers: thin wrappers around BuildStages, loaded once per worker process.


class StageHandler(ModelHandler):
    """RunInference handler around BuildStages: loads one side's models once per worker process and
    returns one PredictionResult per input, in order."""

    side = ""  # "images" or "captions"

    def __init__(self, cfg: BuildConfig, max_batch: int, require_gpu: bool = False, stages_cls=BuildStages):
        super().__init__()
        self._cfg, self._max_batch, self._require_gpu, self._cls = cfg, max_batch, require_gpu, stages_cls

    def load_model(self) -> BuildStages:
        _check_gpu(self._require_gpu)
        stages = self._cls(self._cfg, open_fn=beam_open)
        return stages.load(images=self.side == "images", captions=self.side == "captions")

    def run_inference(self, batch: Sequence, model: BuildStages, inference_args=None) -> Iterable:
        outputs = getattr(model, self.side)(list(batch))
        return [PredictionResult(x, y) for x, y in zip(batch, outputs, strict=True)]

    def batch_elements_kwargs(self) -> dict:
        # Fixed-size batches (the last of a bundle may be smaller): BatchElements' adaptive sizing starts
        # at one element, and a translator or detector fed single items wastes its batching.
        return {"min_batch_size": self._max_batch, "max_batch_size": self._max_batch}

    def get_metrics_namespace(self) -> str:
        return f"{NAMESPACE}_{self.side}"


class ImageStageHandler(StageHandler):
    """The detector (and the RoI views): a batch of (ImageInput, bytes)."""

    side = "images"


class CaptionStageHandler(StageHandler):
    """Back-translation and parsing: a batch of CaptionInput."""

    side = "captions"


def _check_gpu(required: bool) -> None:
    if required:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--require_gpu is set but this worker sees no CUDA device (check the accelerator flags)")


# ---------------------------------------------------------------------------------------------
# Elements: what travels to a shard's group, keyed by (kind, shard id).


class Outcome(NamedTuple):
    """An input and what its stages made of it: records (encoded), a CaptionResult, or a DeadLetter."""

    input: ImageInput | CaptionInput
    result: Any


class ReadFailure(NamedTuple):
    """An annotation problem found while listing the inputs (no input object to carry)."""

    letter: DeadLetter


class Planned(NamedTuple):
    """A shard to write even if no input reaches it (an empty shard is still committed)."""

    kind: str


# ---------------------------------------------------------------------------------------------
# DoFns.


class ReadImages(beam.DoFn):
    """An image's file bytes (or a source corpus's records of it); unreadable ones go to ``dead``."""

    def __init__(self, cfg: BuildConfig, num_image_shards: int, stages_cls=BuildStages):
        self._cfg, self._n, self._cls = cfg, num_image_shards, stages_cls

    def setup(self) -> None:
        self._stages = self._cls(self._cfg, open_fn=beam_open)
        self._read = Metrics.counter(NAMESPACE, "images_read")
        self._failed = Metrics.counter(NAMESPACE, "images_unreadable")

    def process(self, inp: ImageInput):
        data = self._stages.read_image(inp)
        if isinstance(data, DeadLetter):
            self._failed.inc()
            yield beam.pvalue.TaggedOutput("dead", (("image", image_shard(inp.image_id, self._n)), Outcome(inp, data)))
        else:
            self._read.inc()
            yield inp, data


def _image_outcome(result, n: int):
    (inp, _), out = result.example, result.inference
    payload = out if isinstance(out, DeadLetter) else encode_all(out)
    return ("image", image_shard(inp.image_id, n)), Outcome(inp, payload)


def _caption_outcome(result, n: int):
    caption, out = result.example, result.inference
    if isinstance(out, CaptionResult):
        out = CaptionResult(caption, encode_all(out.records), out.dropped)  # records as bytes from here on
    return ("text", text_shard(caption.key, n)), Outcome(caption, out)


class StageShard(beam.DoFn):
    """Phase 1: build one shard from its group and copy it to a unique temporary name."""

    def __init__(self, out: str, plan: CorpusPlan):
        self._out, self._plan = out, plan

    def setup(self) -> None:
        remove_stale_scratch()  # staging folders of killed workers on this machine
        self._writer = CorpusWriter(storage_for(self._out), self._plan)
        self._records = Metrics.counter(NAMESPACE, "records_written")
        self._dead = Metrics.counter(NAMESPACE, "dead_letters")

    def process(self, element):
        (kind, shard_id), values = element
        spec = ShardSpec(kind, shard_id, self._plan.num_shards[kind])
        outcomes = [v for v in values if isinstance(v, Outcome)]
        read_dead = [v.letter for v in values if isinstance(v, ReadFailure)]
        items, report = _shard_items(kind, outcomes, read_dead)
        tmp_name, info = self._writer.stage_shard(spec, items)
        self._records.inc(info.records)
        self._dead.inc(len(report["dead_letters"]))
        yield spec, tmp_name, info, json.dumps(report)


def _shard_items(kind: str, outcomes: list[Outcome], read_dead: list[DeadLetter]) -> tuple[list, dict]:
    if kind == "image":
        items = [pair for o in outcomes if not isinstance(o.result, DeadLetter) for pair in o.result]
        return items, image_report([(o.input, o.result) for o in outcomes])
    results = [o.result for o in outcomes]
    items = [pair for r in results if isinstance(r, CaptionResult) for pair in r.records]
    return items, text_report(results, read_dead)


class PromoteShard(beam.DoFn):
    """Phase 2, after the barrier: rename into place, write the report and the marker."""

    def __init__(self, out: str, plan: CorpusPlan):
        self._out, self._plan = out, plan

    def setup(self) -> None:
        self._writer = CorpusWriter(storage_for(self._out), self._plan)
        self._shards = Metrics.counter(NAMESPACE, "shards_committed")

    def process(self, element):
        spec, tmp_name, info, report = element
        self._writer.promote_shard(spec, tmp_name, info, json.loads(report))
        self._shards.inc()
        yield spec.name


class FinishCorpus(beam.DoFn):
    """Index shards from every shard's report, then the manifest (last)."""

    def __init__(self, cfg: BuildConfig, plan: CorpusPlan):
        self._cfg, self._plan = cfg, plan

    def process(self, _committed):
        writer = CorpusWriter(storage_for(self._cfg.out), self._plan)
        if INDEX in self._plan.num_shards:
            reports = [writer.report(s) or {} for s in self._plan.specs() if s.kind != INDEX]
            groups, dead, splits = index_items(_inputs(self._cfg).images, reports, self._plan)
            index_report = index_reports(self._plan, dead, splits)
            for spec in (s for s in self._plan.specs() if s.kind == INDEX):
                if writer.committed(spec) is None:
                    writer.commit_shard(spec, groups[spec.shard_id], index_report[spec.shard_id])
        yield writer.finalize()


# ---------------------------------------------------------------------------------------------
# The pipeline.


def _inputs(cfg: BuildConfig):
    return read_inputs(cfg.source, cfg.input, cfg.split, open_fn=beam_open, max_images=cfg.max_images)


def _image_inputs(_, cfg: BuildConfig, n: int, done: frozenset):
    for img in _inputs(cfg).images:
        if image_shard(img.image_id, n) not in done:
            yield img


def _caption_inputs(_, cfg: BuildConfig, n: int, done: frozenset):
    inputs = _inputs(cfg)
    for cap in inputs.captions:
        if text_shard(cap.key, n) not in done:
            yield cap
    for dead in inputs.dead_letters:
        shard = text_shard(dead.key, n) if dead.key.count("/") == 2 and dead.key.split("/")[1].isdigit() else 0
        if shard not in done:
            yield beam.pvalue.TaggedOutput("dead", (("text", shard), ReadFailure(dead)))


def build_pipeline(p: beam.Pipeline, cfg: BuildConfig, plan: CorpusPlan, committed: frozenset,
                   require_gpu: bool = False, stages_cls=BuildStages) -> beam.PCollection:
    """Wire the build into ``p``; ``committed`` holds (kind, shard_id) already done. Returns the manifest."""
    start = p | "Start" >> beam.Create([None])
    todo = [(s.kind, s.shard_id) for s in plan.specs() if s.kind != INDEX and (s.kind, s.shard_id) not in committed]
    branches = [p | "PlannedShards" >> beam.Create([(key, Planned(key[0])) for key in todo])]
    branches += _image_branch(start, cfg, plan, committed, require_gpu, stages_cls)
    if "text" in plan.num_shards:
        branches += _caption_branch(start, cfg, plan, committed, require_gpu, stages_cls)
    return (
        tuple(branches)
        | "Gather" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "StageShards" >> beam.ParDo(StageShard(cfg.out, plan))
        | "CommitBarrier" >> beam.Reshuffle()
        | "PromoteShards" >> beam.ParDo(PromoteShard(cfg.out, plan))
        | "AllCommitted" >> beam.combiners.ToList()
        | "FinishCorpus" >> beam.ParDo(FinishCorpus(cfg, plan))
    )


def _image_branch(start, cfg, plan, committed, require_gpu, stages_cls) -> list:
    n = plan.num_shards["image"]
    done = frozenset(i for k, i in committed if k == "image")
    images = (
        start
        | "ListImages" >> beam.FlatMap(_image_inputs, cfg, n, done)
        | "ShuffleImages" >> beam.Reshuffle()
        | "ReadImages" >> beam.ParDo(ReadImages(cfg, n, stages_cls)).with_outputs("dead", main="ok")
    )
    processed = (
        images.ok
        | "Detect" >> RunInference(ImageStageHandler(cfg, cfg.image_batch, require_gpu, stages_cls))
        | "KeyImages" >> beam.Map(_image_outcome, n)
    )
    return [processed, images.dead]


def _caption_branch(start, cfg, plan, committed, require_gpu, stages_cls) -> list:
    n = plan.num_shards["text"]
    done = frozenset(i for k, i in committed if k == "text")
    captions = start | "ListCaptions" >> beam.FlatMap(_caption_inputs, cfg, n, done).with_outputs("dead", main="ok")
    processed = (
        captions.ok
        | "ShuffleCaptions" >> beam.Reshuffle()
        | "TranslateParse" >> RunInference(CaptionStageHandler(cfg, cfg.caption_batch, require_gpu, stages_cls))
        | "KeyCaptions" >> beam.Map(_caption_outcome, n)
    )
    return [processed, captions.dead]
