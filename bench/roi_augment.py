"""View augmentation benchmark: all 14 views of an image against one raw extraction and the naive way.

On the same random weights and decoded images (decoding excluded), in one run:

* raw: the features stage (one raw-view record per image);
* views: ViewAugmenter with all 14 views (one detection and one more trunk pass per image, every RoI
  variant of every image through res5 together);
* two detections (the fair baseline, what a user of a per-image extractor does for image-level HFlip):
  a full extraction of the raw image and of the mirrored image (trunk, RPN, res5 on all proposals,
  selection: 2 detections), then each side's RoI views (roi_hflip, rot90/180/270, two jitters) re-pooled
  through res5 and classified; 14 records per image. Outputs compared: the raw side's 7 views must equal
  ours; the mirrored side's differ by design (it keeps the boxes detected on the mirrored image, ours the
  raw boxes mirrored, so region i is the same object in all 14 views), reported as the box agreement;
* naive (extra row): the detector once per view, 14 detections per image.

Timing alternates raw, views, two detections (A, B, C, A, B, C, ...) after a warm-up, ``--repeats``
rounds; ratios are per round, reported as median and best. Same moderate configuration as
bench/features.py (ResNet (2, 2, 2, 2) at 1/8 width, 400/667 input, RPN 6000 -> 300, 36 boxes, 1601
classes). Prints figures, then one JSON object as the last line (``met``: views <= 2.5x raw).

    python bench/roi_augment.py [--images 6] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def two_detection_views(ext, images: list) -> dict:
    """The fair baseline: 2 detections per image (raw, mirrored), then each side's RoI views.

    Returns {(image_id, view): fp32 features [36, D]} and the boxes of each side, 14 views per image."""
    import numpy as np
    import torch

    from ssrp.features.engine import RoIJob
    from ssrp.features.image import DecodedImage
    from ssrp.views.config import HFLIP_PREFIX, ViewsConfig
    from ssrp.views.stage import GRID_OP, jitter_boxes, jitter_factors

    engine = ext.engine
    cfg = ViewsConfig(features=ext.cfg)
    plus_one = ext.cfg.rpn.legacy_plus_one
    mirrored = [DecodedImage(i.image_id, i.file_name, np.ascontiguousarray(i.pixels[:, ::-1]), i.meta)
                for i in images]
    dets, _, _ = engine.detect(images + mirrored)
    ops = tuple(GRID_OP.values())
    jobs, items, out, boxes_of = [], [], {}, {}
    for k, det in enumerate(dets):
        img = (images + mirrored)[k]
        prefix = "" if k < len(images) else HFLIP_PREFIX
        keep = det.keep
        boxes = det.boxes[keep].numpy().astype(np.float32)
        boxes_of[(img.image_id, prefix)] = boxes
        engine.attributes(det.features[keep], det.class_logits[keep])  # the side's own record
        out[(img.image_id, prefix.rstrip("_") or "raw")] = det.features[keep]
        scale = det.prepared.scale
        jobs.append(RoIJob(det.feature_map, torch.from_numpy(boxes * scale), ops))
        items += [(img.image_id, prefix + view, len(jobs) - 1, o) for o, view in enumerate(GRID_OP)]
        for v in ("jitter0", "jitter1"):
            factors = jitter_factors(cfg, img.image_id, prefix + v, boxes.shape[0])
            jittered = jitter_boxes(boxes, factors, img.width, img.height, plus_one)
            jobs.append(RoIJob(det.feature_map, torch.from_numpy(jittered * scale), ("none",)))
            items.append((img.image_id, prefix + v, len(jobs) - 1, 0))
    feats = engine.roi_features(jobs)
    view_feats = [feats[j][o] for _, _, j, o in items]
    allf = torch.cat(view_feats)
    logits, _ = engine.classify(allf)
    engine.attributes(allf, logits)
    for (image_id, view, _, _), f in zip(items, view_feats, strict=True):
        out[(image_id, view)] = f
    return {"features": out, "boxes": boxes_of}


def compare_with_ours(ours: list, baseline: dict) -> dict:
    """The raw side's 7 views must equal ours; on the mirrored side, the share of boxes detected on the mirrored
    image that one of ours (the raw boxes, mirrored) overlaps at IoU >= 0.9."""
    import numpy as np
    import torch
    from torchvision.ops import box_iou

    from ssrp.views.config import HFLIP_PREFIX

    worst, views, agree = 0.0, 0, []
    for records in ours:
        for rec in records:
            if rec.view.startswith("hflip"):
                continue
            theirs = baseline["features"][(rec.image_id, rec.view)].numpy()
            mine = rec.features.astype(np.float32)
            scale = max(1e-6, float(np.abs(theirs).max()))
            worst = max(worst, float(np.abs(mine - theirs.astype(np.float16).astype(np.float32)).max()) / scale)
            views += 1
        hflip = next(r for r in records if r.view == "hflip")
        detected = torch.from_numpy(baseline["boxes"][(hflip.image_id, HFLIP_PREFIX)])
        if len(detected) and len(hflip.boxes):
            best = box_iou(detected, torch.from_numpy(hflip.boxes.astype(np.float32))).max(1).values
            agree.append(float((best >= 0.9).float().mean()))
    return {"raw_side_views_compared": views, "raw_side_max_rel_diff": round(worst, 6),
            "raw_side_equal": worst < 1e-2,
            "mirrored_side_boxes_matched_iou_0.9": round(float(np.mean(agree)), 3) if agree else None}


def alternate(fns: dict, repeats: int) -> dict:
    """Each function once as warm-up, then ``repeats`` rounds in turn (A, B, C, A, B, C ...)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_stats(num: list, den: list) -> dict:
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    return {"median": round(statistics.median(ratios), 2), "best": round(min(ratios), 2),
            "per_round": [round(r, 2) for r in ratios]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive 14-detection extra row")
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
    times = alternate({"raw": lambda: ext(images), "views": lambda: aug(images),
                       "two_detections": lambda: two_detection_views(ext, images)}, args.repeats)
    check = compare_with_ours(aug(images), two_detection_views(ext, images))
    t_naive = None if args.no_naive else min(alternate({"naive": lambda: naive_views(ext, images)}, 1)["naive"])
    t_raw, t_views, t_two = (min(times[k]) for k in ("raw", "views", "two_detections"))
    views_over_raw = ratio_stats(times["views"], times["raw"])
    result = {
        "images": n,
        "threads": args.threads,
        "views_per_image": 14,
        "config": {"arch": MODERATE_ARCH, **MODERATE_RUN, "rpn": "6000 -> 300", "boxes": 36, "classes": 1601},
        "raw_ms_per_image": round(1000 * t_raw / n, 1),
        "views_ms_per_image": round(1000 * t_views / n, 1),
        "two_detections_ms_per_image": round(1000 * t_two / n, 1),
        "views_over_raw": views_over_raw,
        "speedup_over_two_detections": ratio_stats(times["two_detections"], times["views"]),
        "outputs_vs_two_detections": check,
        "res5_rois_per_image": {"raw": 300, "views": 300 + 36 * 13, "two_detections": 2 * 300 + 12 * 36,
                                "naive": 14 * 300 + 12 * 36},
    }
    if t_naive is not None:
        result["naive_ms_per_image"] = round(1000 * t_naive / n, 1)
        result["speedup_over_naive (extra)"] = round(t_naive / t_views, 2)
    result["met"] = {"views_at_most_2.5x_raw": {"value": views_over_raw["median"],
                                                 "met": views_over_raw["median"] <= 2.5}}
    for key, value in result.items():
        if key != "config":
            print(f"{key:34s} {value}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
