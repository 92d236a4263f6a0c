"""View augmentation benchmark: all 14 views of an image against one raw extraction and the naive way.

On the same random weights and decoded images (decoding excluded), in one run:

* raw: the features stage (one raw-view record per image);
* views: ViewAugmenter with all 14 views (two trunk passes per image, every RoI variant of every
  image through res5 together);
* naive: the detector once per view -- for each of the 14 views a full extraction of the raw or
  mirrored image (trunk, RPN, res5 on all proposals, selection), then the view's RoI transform or
  jitter re-pooled through res5.

Same moderate configuration as bench/features.py (ResNet (2, 2, 2, 2) at 1/8 width, 400/667 input,
RPN 6000 -> 300, 36 boxes, 1601 classes). Each timing is the best of ``--repeats`` passes after a
warm-up. Prints figures, then one JSON object as the last line.

    python bench/roi_augment.py [--images 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from features import MODERATE_ARCH, MODERATE_RUN, write_models  # noqa: E402


def naive_views(ext, images: list) -> int:
    """14 detector runs per image: one extraction per view, then its transform."""
    from ssrp.features.engine import RoIJob
    from ssrp.views.config import ALL_VIEWS, ViewsConfig
    from ssrp.views.stage import GRID_OP, jitter_boxes, jitter_factors, mirror_boxes

    engine = ext.engine
    cfg = ViewsConfig(features=ext.cfg)
    records = 0
    for view in ALL_VIEWS:
        flip = view.startswith("hflip")
        base = view[len("hflip_"):] if view.startswith("hflip_") else ("raw" if view in ("raw", "hflip") else view)
        dets, prep_flip, flip_maps = engine.detect(images, images if flip else ())
        jobs = []
        for k, det in enumerate(dets):
            boxes = det.boxes[det.keep].numpy()
            fmap = flip_maps[k] if flip else det.feature_map
            if flip:
                boxes = mirror_boxes(boxes, images[k].width)
            if base.startswith("jitter"):
                boxes = jitter_boxes(boxes, jitter_factors(cfg, images[k].image_id, view, len(boxes)),
                                     images[k].width, images[k].height)
            import torch

            pool = torch.from_numpy(boxes * det.prepared.scale)
            jobs.append(RoIJob(fmap, pool, (GRID_OP.get(base, "none"),)))
        feats = engine.roi_features(jobs)
        for f in feats:
            logits, _ = engine.classify(f[0])
            engine.attributes(f[0], logits)
            records += 1
    return records


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from ssrp.config import with_settings
    from ssrp.features.config import FeaturesConfig
    from ssrp.features.image import read_and_decode
    from ssrp.features.stage import Extractor
    from ssrp.pipeline.inputs import read_coco
    from ssrp.sample import SampleConfig, write_sample
    from ssrp.views.config import ViewsConfig
    from ssrp.views.stage import ViewAugmenter

    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="ssrp-bench-views-")
    models = write_models(os.path.join(tmp, "models"), MODERATE_ARCH)
    write_sample(os.path.join(tmp, "coco"), SampleConfig(images=args.images, val_images=0, seed=2))
    items = read_coco(os.path.join(tmp, "coco"), "train").images
    images = [read_and_decode(i.image_id, i.path) for i in items]
    cfg = with_settings(FeaturesConfig(models_dir=models, device="cpu"), MODERATE_RUN)
    ext = Extractor(cfg).load()
    aug = ViewAugmenter(ViewsConfig(features=cfg)).load()
    n = len(images)
    t_raw = best_time(lambda: ext(images), args.repeats)
    t_views = best_time(lambda: aug(images), args.repeats)
    t_naive = best_time(lambda: naive_views(ext, images), 1)
    result = {
        "images": n,
        "threads": args.threads,
        "views_per_image": 14,
        "config": {"arch": MODERATE_ARCH, **MODERATE_RUN, "rpn": "6000 -> 300", "boxes": 36, "classes": 1601},
        "raw_ms_per_image": round(1000 * t_raw / n, 1),
        "views_ms_per_image": round(1000 * t_views / n, 1),
        "naive_ms_per_image": round(1000 * t_naive / n, 1),
        "views_over_raw": round(t_views / t_raw, 2),
        "naive_over_raw": round(t_naive / t_raw, 2),
        "speedup_over_naive": round(t_naive / t_views, 2),
        "res5_rois_per_image": {"raw": 300, "views": 300 + 36 * 13, "naive": 14 * 300 + 12 * 36},
    }
    result["target_views_at_most_2.5x_raw"] = result["views_over_raw"] <= 2.5
    for key, value in result.items():
        if key != "config":
            print(f"{key:34s} {value}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
