"""ssrp build: the corpus builder over raw MSCOCO (local loop, Beam local runner, Dataflow, ...)."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from ssrp.pipeline.config import PRESETS, RUNNERS, STAGES

    p = sub.add_parser(
        "build",
        help="build a corpus from raw MSCOCO (features, RoI views, back-translation, parses)",
        description="Build an ssrp corpus from an MSCOCO 2017 root. Arguments after -- go to Beam unchanged.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "presets: " + "; ".join(f"{k} = {'+'.join(v)}" for k, v in PRESETS.items()) + "\n\n"
            "examples:\n"
            "  ssrp build --coco coco/ --models models/ --out corpus/\n"
            "  ssrp build --coco coco/ --models models/ --out corpus/ --runner direct -- --direct_num_workers=4\n"
            "  ssrp build --coco gs://b/coco --models /models --out gs://b/corpus --runner dataflow --require-gpu \\\n"
            "      -- --project=P --region=us-central1 --temp_location=gs://b/tmp \\\n"
            "         --sdk_container_image=IMAGE --sdk_location=container --machine_type=g2-standard-8 \\\n"
            '         --dataflow_service_options="worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"\n'
        ),
    )
    p.add_argument("--coco", required=True, help="MSCOCO 2017 root (annotations/, train2017/, val2017/)")
    p.add_argument("--out", required=True, help="corpus directory to write (resumable; refuses another config)")
    p.add_argument("--models", required=True, help="models directory (ssrp models fetch / ssrp models tiny)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="corpus", help="which stages (default: corpus, all)")
    p.add_argument("--stages", nargs="+", choices=STAGES, help="explicit stage list instead of a preset")
    p.add_argument("--split", choices=["train", "val", "trainval"], default="trainval",
                   help="trainval = the paper's 118k images (default)")
    p.add_argument("--runner", choices=RUNNERS, default="local", help="local loop (default) or a Beam runner")
    p.add_argument("--require-gpu", action="store_true", help="fail fast on workers without CUDA")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images (debugging)")
    p.add_argument("--num-shards", nargs="*", default=[], metavar="KIND=N", help="e.g. image=64 text=16")
    p.add_argument("--image-batch", type=int, default=8)
    p.add_argument("--caption-batch", type=int, default=256)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="a stage setting, e.g. --set translate.back_beam=4 --set features.select.max_boxes=100")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("beam_args", nargs=argparse.REMAINDER, help="-- then Beam pipeline options")
    p.set_defaults(func=_build)


def _stage_settings(items: list[str]) -> dict[str, dict]:
    """``STAGE.KEY=VALUE`` items grouped by stage (values read as Python literals, typed when resolved)."""
    from ssrp.config import parse_value
    from ssrp.pipeline.config import STAGES

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


def config_from_args(args):
    """The build config of the command line, every stage setting resolved and type-checked (nothing runs yet)."""
    from ssrp.fileutil import require_dir_path
    from ssrp.pipeline.config import PRESETS, BuildConfig
    from ssrp.pipeline.models import resolved_config

    if "://" not in args.out:
        require_dir_path(args.out, "--out")
    cfg = BuildConfig(
        coco=args.coco, out=args.out, models=args.models, split=args.split,
        stages=tuple(args.stages) if args.stages else PRESETS[args.preset],
        max_images=args.max_images, num_shards=_num_shards(args.num_shards), image_batch=args.image_batch,
        caption_batch=args.caption_batch, device=args.device, **_stage_settings(args.settings),
    )
    resolved_config(cfg)  # every --set checked against its stage's typed config before any file is written
    return cfg


def _build(args) -> int:
    from ssrp.pipeline.run import run_build

    cfg = config_from_args(args)
    beam_args = [a for a in args.beam_args if a != "--"]
    manifest = run_build(cfg, args.runner, beam_args, args.require_gpu, progress=not args.no_progress)
    summary = manifest.get("summary", {})
    print(json.dumps({"out": cfg.out, "records": {k: v["records"] for k, v in manifest["kinds"].items()},
                      "summary": summary}, indent=1))
    return 0 if all(s.get("balanced", True) for s in summary.values()) else 1
