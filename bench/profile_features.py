"""torch.profiler of one full-width R101-C4 image: ssrp's batched path vs the per-image loop, by op.

Run (outside the bench lock; profiling only, not a timing):
    PYTHONPATH=$PWD python bench/profile_features.py --tmp /tmp/feat-prof --threads 2
"""

from __future__ import annotations

import argparse
import os
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tmp", default="/tmp/ssrp-feat-prof", help="folder for random weights and the sample")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--rows", type=int, default=18, help="ops per table (default 18)")
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.features import NETWORKS, PerImageLoop, bench_config, write_models
    from ssrp.features.image import read_and_decode
    from ssrp.features.stage import Extractor
    from ssrp.pipeline.inputs import read_coco
    from ssrp.sample import SampleConfig, write_sample

    torch.set_num_threads(args.threads)
    arch, settings = NETWORKS["r101"]
    models = os.path.join(args.tmp, "models-r101")
    if not os.path.exists(models):
        write_models(models, arch)
    coco = os.path.join(args.tmp, "coco")
    if not os.path.exists(coco):
        write_sample(coco, SampleConfig(images=1, val_images=0, seed=1))
    item = read_coco(coco, "train").images[0]
    cfg = bench_config(models, settings)
    ext, loop = Extractor(cfg).load(), PerImageLoop(cfg)
    image = read_and_decode(item.image_id, item.path)
    for name, run in (("ours", lambda: ext([image])), ("per-image loop", lambda: loop(item))):
        run()  # warm-up
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        print(f"{name}: {time.perf_counter() - start:.2f} s wall (profiled)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
