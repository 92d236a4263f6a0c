"""ssrp build: the one corpus builder (local loop, Beam's local runner, Dataflow, ...), and the arguments every
corpus-building command shares: ``ssrp features``, ``ssrp views`` and ``ssrp parse --corpus`` are presets of it.
"""

from __future__ import annotations

import argparse
import json

from ssrp.config import parse_value
from ssrp.fileutil import require_dir_path
from ssrp.pipeline.config import PRESETS, RUNNERS, STAGES, BuildConfig

EXAMPLES = (
    "examples:\n"
    "  ssrp build --coco coco/ --models models/ --out corpus/\n"
    "  ssrp build --images photos/ --models models/ --out corpus/ --preset views\n"
    "  ssrp build --coco coco/ --models models/ --out corpus/ --runner direct -- --direct_num_workers=4\n"
    "  ssrp build --coco coco/ --models models/ --out corpus/ --runner dask --dask-workers 4\n"
    "  ssrp build --coco /shared/coco --models /shared/models --out /shared/corpus --runner dask --require-gpu \\\n"
    "      --dask-scheduler tcp://scheduler:8786\n"
    "  ssrp build --coco gs://b/coco --models /models --out gs://b/corpus --runner dataflow --require-gpu \\\n"
    "      -- --project=P --region=us-central1 --temp_location=gs://b/tmp \\\n"
    "         --sdk_container_image=IMAGE --sdk_location=container --machine_type=g2-standard-8 \\\n"
    '         --dataflow_service_options="worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"\n'
)


def register(sub) -> None:
    p = sub.add_parser(
        "build",
        help="build a corpus from raw MSCOCO, a folder of images or another corpus (features, views, "
             "back-translation, parses)",
        description="Build an ssrp corpus. Arguments after -- go to Beam unchanged.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets: " + "; ".join(f"{k} = {'+'.join(v)}" for k, v in PRESETS.items()) + "\n\n" + EXAMPLES,
    )
    add_input_args(p, ("coco", "images", "corpus"))
    p.add_argument("--preset", choices=sorted(PRESETS), default="corpus", help="which stages (default: corpus, all)")
    p.add_argument("--stages", nargs="+", choices=STAGES, help="explicit stage list instead of a preset")
    add_build_args(p)
    p.set_defaults(func=_build)


def add_input_args(p: argparse.ArgumentParser, sources: tuple[str, ...], required: bool = True) -> None:
    """One of the inputs a build reads."""
    helps = {"coco": "an MSCOCO 2017 root (annotations/, train2017/, val2017/)",
             "images": "a folder of images (ids: numeric file names, else name order); no captions",
             "corpus": "an ssrp corpus whose images are copied and whose captions are processed again"}
    group = p.add_mutually_exclusive_group(required=required)
    for source in sources:
        group.add_argument(f"--{source}", metavar="DIR", help=helps[source])


def add_build_args(p: argparse.ArgumentParser, beam: bool = True, required: bool = True) -> None:
    """Output, models and run settings of every corpus-building command (``beam``: Beam options after --;
    ``required=False`` for a command whose actions need neither output nor models)."""
    p.add_argument("--out", required=required, help="corpus directory to write (resumable; refuses another config)")
    p.add_argument("--models", required=required, help="models directory (ssrp models fetch / ssrp models tiny)")
    p.add_argument("--split", choices=["train", "val", "trainval"], default="train",
                   help="COCO split to read: train (default; the paper's 118,287 images and 591,753 captions), val "
                        "(the held-out corpus to evaluate on), or trainval (both: then no image is held out)")
    p.add_argument("--runner", choices=RUNNERS, default="local", help="local loop (default) or a Beam runner")
    p.add_argument("--require-gpu", action="store_true", help="fail fast where workers have no CUDA device")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument("--dask-scheduler", metavar="ADDRESS",
                      help="--runner dask: the scheduler of a running Dask cluster, e.g. tcp://host:8786")
    dask.add_argument("--dask-workers", type=int, metavar="N",
                      help="--runner dask: start N worker processes on this machine for this build (default 2)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images (debugging)")
    p.add_argument("--num-shards", nargs="*", default=[], metavar="KIND=N", help="e.g. image=64 text=16")
    p.add_argument("--image-batch", type=int, default=8, help="images per image-stage call (default 8)")
    p.add_argument("--caption-batch", type=int, default=256, help="captions per translate/parse call (default 256)")
    p.add_argument("--decode-workers", type=int, default=2,
                   help="local runner: processes reading and decoding images ahead of the detector (default 2)")
    p.add_argument("--commit-threads", type=int, default=2,
                   help="local runner: threads committing finished shards (build, copy, sha256, fsync) while the "
                        "next shards are extracted (default 2; about 1.8 s per 256 MB shard each)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="a stage setting, e.g. --set translate.back_beam=4 --set features.select.max_boxes=100")
    p.add_argument("--no-progress", action="store_true")
    if beam:
        p.add_argument("beam_args", nargs=argparse.REMAINDER, help="-- then Beam pipeline options")


def stage_settings(items: list[str]) -> dict[str, dict]:
    """``STAGE.KEY=VALUE`` items grouped by stage (values read as Python literals, typed when resolved)."""
    out: dict[str, dict] = {stage: {} for stage in STAGES}
    for item in items:
        name, sep, raw = item.partition("=")
        stage, dot, key = name.partition(".")
        if not sep or not dot or not key or stage not in out:
            raise ValueError(f"--set {item!r}: expected STAGE.KEY=VALUE with STAGE in {sorted(out)}")
        out[stage][key] = parse_value(raw)
    return out


def _num_shards(items: list[str]) -> dict[str, int]:
    shards = {}
    for item in items:
        kind, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise ValueError(f"--num-shards {item!r}: expected KIND=N, e.g. image=64 text=16")
        shards[kind] = int(n)
    return shards


def config_from_args(args, stages: tuple[str, ...], extra_settings: dict[str, dict] | None = None) -> BuildConfig:
    """The build config of a command line, every stage setting resolved and type-checked (nothing runs yet)."""
    from ssrp.pipeline.settings import resolved_config  # imports the stage configs and model manifests readers

    source = next(s for s in ("coco", "images", "corpus") if getattr(args, s, None))
    if "://" not in args.out:
        require_dir_path(args.out, "--out")
    settings = stage_settings(args.settings)
    for stage, values in (extra_settings or {}).items():
        settings[stage] = {**values, **settings[stage]}
    cfg = BuildConfig(
        out=args.out, models=args.models, source=source, input=getattr(args, source), split=args.split,
        stages=stages, max_images=args.max_images, num_shards=_num_shards(args.num_shards),
        image_batch=args.image_batch, caption_batch=args.caption_batch, decode_workers=args.decode_workers,
        commit_threads=args.commit_threads,
        device=args.device, **settings,
    )
    resolved_config(cfg)  # every --set checked against its stage's typed config before any file is written
    return cfg


def run_from_args(cfg: BuildConfig, args) -> int:
    """Run a build and print its counts; exit 1 when the counts do not add up."""
    from ssrp.pipeline.run import run_build  # imports torch and the stages

    beam_args = [a for a in getattr(args, "beam_args", []) if a != "--"]
    manifest = run_build(cfg, args.runner, beam_args, args.require_gpu, progress=not args.no_progress,
                         dask_scheduler=args.dask_scheduler, dask_workers=args.dask_workers)
    summary = manifest.get("summary", {})
    print(json.dumps({"out": cfg.out, "records": {k: v["records"] for k, v in manifest["kinds"].items()},
                      "summary": summary}, indent=1))
    return 0 if all(s.get("balanced", True) for s in summary.values()) else 1


def _build(args) -> int:
    stages = tuple(args.stages) if args.stages else PRESETS[args.preset]
    if args.corpus and not args.stages:
        stages = tuple(s for s in stages if s in ("translate", "parse")) or ("parse",)
    return run_from_args(config_from_args(args, stages), args)
