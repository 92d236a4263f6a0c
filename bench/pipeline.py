"""Pipeline benchmark: the Beam pipeline against a plain loop over the same stage objects.

In one run, on a mini-COCO sample with the tiny models, the same corpus (all stages) is built
twice: by the local runner (a plain loop, no Beam) and by the Beam pipeline on FnApiRunner (in-process).
Both load the same models and write the same shards (checked). Reports the wall time of each and the
ratio (target: Beam at most 1.3x the loop). Last line: one JSON object.

    python bench/pipeline.py [--images 16] [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssrp.models.hub import build_tiny  # noqa: E402
from ssrp.pipeline.config import PRESETS, BuildConfig  # noqa: E402
from ssrp.pipeline.local import run_local  # noqa: E402
from ssrp.pipeline.run import run_beam  # noqa: E402
from ssrp.sample import SampleConfig, write_sample  # noqa: E402


def digests(manifest: dict) -> dict:
    return {s["name"]: s["sha256"] for k in manifest["kinds"].values() for s in k["shards"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("SSRP_TRUST_KEY", os.path.join(tempfile.mkdtemp(), "trust.key"))
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        coco, models = os.path.join(tmp, "coco"), os.path.join(tmp, "models")
        write_sample(coco, SampleConfig(images=args.images, val_images=0, seed=0))
        build_tiny(models)
        times: dict[str, list[float]] = {"loop": [], "beam": []}
        outputs = {}
        for rep in range(args.reps):
            for name in ("loop", "beam"):
                cfg = BuildConfig(input=coco, models=models, out=os.path.join(tmp, f"{name}{rep}"), split="train",
                                  stages=PRESETS["corpus"], device="cpu", num_shards={"image": 2, "text": 2})
                start = time.perf_counter()
                if name == "loop":
                    outputs[name] = run_local(cfg, progress=False)
                else:
                    outputs[name] = run_beam(cfg, "direct", ["--direct_running_mode=in_memory"])
                times[name].append(time.perf_counter() - start)
                print(f"rep {rep} {name:5s} {times[name][-1]:7.2f} s")
        same = digests(outputs["loop"]) == digests(outputs["beam"])
    best = {k: min(v) for k, v in times.items()}
    result = {
        "images": args.images,
        "captions": args.images * 5,
        "stages": list(PRESETS["corpus"]),
        "loop_s": round(best["loop"], 2),
        "beam_s": round(best["beam"], 2),
        "beam_over_loop": round(best["beam"] / best["loop"], 3),
        "identical_shards": same,
        "target": "beam_over_loop <= 1.3",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
