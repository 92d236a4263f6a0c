"""torch.profiler of one image at full R101-C4 width: ssrp's extractor or the per-image loop (random weights).

Profiling only (not a timed benchmark): prints the ops by self CPU time, then by op and input shape, which
splits the time into stages (trunk at [1, C, h, w], res5 at [300, C, 14, 14], roi_pool, heads).

    python bench/profile_features.py ours|baseline [--threads 2] [--rows 25]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.features import PerImageLoop, bench_config, write_models
    from ssrp.features.image import read_and_decode
    from ssrp.features.stage import Extractor
    from ssrp.pipeline.inputs import read_coco
    from ssrp.sample import SampleConfig, write_sample

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("side", choices=("ours", "baseline"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25, help="rows of each table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ssrp-profile-features-") as tmp:
        models = write_models(os.path.join(tmp, "models"), {})
        write_sample(os.path.join(tmp, "coco"), SampleConfig(images=1, val_images=0, seed=1))
        item = read_coco(os.path.join(tmp, "coco"), "train").images[0]
        cfg = bench_config(models, {})
        if args.side == "ours":
            ext = Extractor(cfg).load()
            image = read_and_decode(item.image_id, item.path)

            def run():
                return ext([image])
        else:
            loop = PerImageLoop(cfg)

            def run():
                return loop(item)
        run()  # warm-up
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            start = time.perf_counter()
            run()
            print(f"{args.side}: {time.perf_counter() - start:.2f} s for one image (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
