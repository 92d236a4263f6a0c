"""Launching a build on a runner: local loop, Beam's local runner, a Dask cluster, Dataflow, Flink, Spark.

    ssrp build --coco COCO --out OUT --models MODELS [--preset corpus] [--runner local]
    ssrp build ... --runner direct -- --direct_num_workers=4
    ssrp build ... --runner dask --dask-scheduler tcp://HOST:8786   (or --dask-workers 4: local processes)
    ssrp build ... --runner dataflow --require_gpu -- --project=P --region=R --temp_location=gs://B/tmp \\
        --sdk_container_image=REGION-docker.pkg.dev/P/repo/ssrp-worker:0.1.0 --sdk_location=container \\
        --machine_type=g2-standard-8 --dataflow_service_options="worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"

Everything after ``--`` goes to Beam's PipelineOptions unchanged. See docs/pipeline.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence

from ssrp.corpus import INDEX, CorpusWriter
from ssrp.pipeline.config import RUNNERS, BuildConfig
from ssrp.pipeline.inputs import read_inputs
from ssrp.pipeline.local import run_local
from ssrp.pipeline.lock import build_lock
from ssrp.pipeline.plan import make_plan
from ssrp.pipeline.progress import ShardProgress
from ssrp.pipeline.settings import with_trusted_translation_digests
from ssrp.pipeline.stages import BuildStages

logger = logging.getLogger(__name__)

_DATAFLOW_REQUIRED = ("project", "region", "temp_location")
_BEAM_RUNNERS = {"dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner", "portable": "PortableRunner"}


def pipeline_options_for(runner: str, beam_args: Sequence[str], require_gpu: bool):
    """PipelineOptions for a runner, validated before anything is launched."""
    with _quiet_root_logger():  # Beam's GCP modules warn on the root logger that apitools is missing
        from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if runner == "direct":
        # Beam's local runner without Prism (which downloads a binary): FnApiRunner, several processes; their
        # harness logs only from errors up (progress comes from ShardProgress; pass the option to see them)
        args = ["--direct_running_mode=multi_processing", *args]
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append("--direct_num_workers=2")
        if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
            args.append("--default_sdk_harness_log_level=ERROR")
    elif runner in _BEAM_RUNNERS:
        args = [f"--runner={_BEAM_RUNNERS[runner]}", *args]
    options = PipelineOptions(args)
    problems = validate_options(runner, options.get_all_options(drop_default=True), require_gpu)
    if problems:
        raise ValueError(f"cannot launch on {runner}: " + "; ".join(problems))
    return options


def validate_options(runner: str, opts: dict, require_gpu: bool) -> list[str]:
    """What would make a launch fail late (on a paid cluster), found before it starts."""
    problems = []
    if runner == "dataflow":
        problems += [f"--{name} is required" for name in _DATAFLOW_REQUIRED if not opts.get(name)]
        if not str(opts.get("temp_location", "")).startswith("gs://"):
            problems.append("--temp_location must be a gs:// path")
        if not opts.get("sdk_container_image"):
            problems.append("--sdk_container_image is required (build it with `make image`; Beam versions must match)")
        services = " ".join(opts.get("dataflow_service_options") or [])
        if require_gpu and "worker_accelerator" not in services:
            problems.append('--require_gpu needs --dataflow_service_options="worker_accelerator=type:...;count:1;'
                            'install-nvidia-driver"')
        if "worker_accelerator" in services and "install-nvidia-driver" not in services:
            problems.append("worker_accelerator without install-nvidia-driver leaves the GPU unusable")
    if runner in ("flink", "spark", "portable") and require_gpu and opts.get("environment_type", "").upper() == "DOCKER":
        problems.append("DOCKER environments cannot pass GPUs; use --environment_type=EXTERNAL with a GPU worker pool")
    return problems


def run_build(cfg: BuildConfig, runner: str = "local", beam_args: Sequence[str] = (), require_gpu: bool = False,
              progress: bool = True, stages_cls=None, dask_scheduler: str | None = None,
              dask_workers: int | None = None) -> dict:
    """Run a build to the end and return its manifest."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    if (dask_scheduler or dask_workers) and runner != "dask":
        raise ValueError("--dask-scheduler and --dask-workers go with --runner dask")
    if require_gpu and (runner in LOCAL_RUNNERS or (runner == "dask" and not dask_scheduler)):
        check_local_gpu(runner)
    if runner == "local":
        return run_local(cfg, stages=stages_cls(cfg) if stages_cls else None, progress=progress)
    if runner == "dask":
        return run_dask(cfg, dask_scheduler, dask_workers, beam_args, require_gpu, stages_cls, progress)
    return run_beam(cfg, runner, beam_args, require_gpu, stages_cls, progress=progress)


# runners whose workers run on this machine: --require-gpu is checked here, before anything starts
LOCAL_RUNNERS = ("local", "direct")


def check_local_gpu(runner: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--require-gpu: this machine has no CUDA device, and the {runner} runner's workers run here")


def run_beam(cfg: BuildConfig, runner: str, beam_args: Sequence[str] = (), require_gpu: bool = False,
             stages_cls=None, test_runner=None, progress: bool = True) -> dict:
    """Run the build on a Beam runner; the driver holds the output's lock (local outputs) throughout and shows
    the shards committed as the workers commit them."""
    with build_lock(cfg.out):
        return _run_beam(cfg, runner, beam_args, require_gpu, stages_cls, test_runner, progress)


def _run_beam(cfg: BuildConfig, runner: str, beam_args: Sequence[str], require_gpu: bool, stages_cls,
              test_runner, progress: bool) -> dict:
    with _quiet_root_logger():  # Beam's GCP modules warn on the root logger that apitools is missing
        import apache_beam as beam  # the Beam SDK is heavy; the local runner never imports it

        from ssrp.pipeline.beam import beam_open, build_pipeline, storage_for  # imports Beam

    stages_cls = stages_cls or BuildStages
    options = pipeline_options_for(runner, beam_args, require_gpu)
    if stages_cls is BuildStages:
        cfg = with_trusted_translation_digests(cfg)
    inputs = read_inputs(cfg.source, cfg.input, cfg.split, beam_open, cfg.max_images)  # counts for the plan
    probe = stages_cls(cfg)
    source_shards = probe.source.manifest["num_shards"] if cfg.source == "corpus" else None
    plan = make_plan(cfg, inputs, probe.model_identities(), probe.resolved_config(), source_shards)
    writer = CorpusWriter(storage_for(cfg.out), plan)
    writer.open()
    committed = frozenset((s.kind, s.shard_id) for s in plan.specs() if s.kind != INDEX and writer.committed(s))
    if committed:
        logger.info("resuming: %d shards already committed are kept", len(committed))
    pipeline_runner = test_runner or _local_runner(runner)
    pending = [s for s in plan.specs() if s.kind != INDEX and (s.kind, s.shard_id) not in committed]
    with _harness_logs(runner == "direct" and progress) as terminal, \
            ShardProgress(writer, pending, enabled=progress, file=terminal), \
            beam.Pipeline(runner=pipeline_runner, options=options) as p:
        build_pipeline(p, cfg, plan, committed, require_gpu=require_gpu, stages_cls=stages_cls)
    return json.loads(writer.storage.read_text("manifest.json"))


@contextlib.contextmanager
def _harness_logs(divert: bool):
    """Beam's local worker processes log their start-up and harness chatter to stderr: with ``divert``, this
    process's stderr (which they inherit) goes to a log file for the run, and the progress bar to the terminal
    (yielded). The file is removed after a successful run; after an error it is kept and its path logged: its
    tail is the place to look."""
    if not divert:
        yield sys.stderr
        return
    log = tempfile.NamedTemporaryFile("w", prefix="ssrp-beam-", suffix=".log", delete=False)
    logger.info("Beam's worker logs: %s", log.name)
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    succeeded = False
    try:
        yield terminal
        succeeded = True
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        terminal.close()
        log.close()
        if succeeded:
            os.remove(log.name)
        else:
            logger.error("the build failed; Beam's worker logs are kept in %s", log.name)


@contextlib.contextmanager
def _quiet_root_logger():
    old = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.root.setLevel(old)


def run_dask(cfg: BuildConfig, scheduler: str | None = None, workers: int | None = None,
             beam_args: Sequence[str] = (), require_gpu: bool = False, stages_cls=None,
             progress: bool = True) -> dict:
    """Run the build with Beam on a Dask cluster: the one whose scheduler is at ``scheduler``, or else
    ``workers`` worker processes started on this machine (one thread each; default 2) for this build.

    Partitions (the pieces Dask schedules): Beam's ``--dask_npartitions=N`` after ``--``, by default four per
    worker thread. See docs/pipeline.md (GPU clusters: one worker process per GPU, one thread each)."""
    from distributed import Client, LocalCluster  # Dask is needed by this runner alone

    from ssrp.pipeline.beam_dask import DaskBuildRunner, dask_partitions  # imports Beam

    if scheduler and workers:
        raise ValueError("give --dask-scheduler or --dask-workers, not both")
    if workers is not None and workers < 1:
        raise ValueError(f"--dask-workers must be positive, got {workers}")
    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        if require_gpu:
            check_dask_gpus(client)
        runner = DaskBuildRunner(client, dask_partitions(client, beam_args))
        return run_beam(cfg, "dask", beam_args, require_gpu, stages_cls, test_runner=runner, progress=progress)


def check_dask_gpus(client) -> None:
    """--require-gpu on Dask: every worker sees a CUDA device, checked before anything starts."""
    without = sorted(addr for addr, ok in client.run(_has_cuda).items() if not ok)
    if without:
        raise ValueError(f"--require-gpu: {len(without)} Dask workers see no CUDA device: {', '.join(without[:4])}")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _local_runner(runner: str):
    if runner == "direct":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return None  # taken from --runner in the options
