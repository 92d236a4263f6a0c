"""Feature extraction benchmark: ssrp's extractor against the per-image loop BUTD users run.

CPU mode (default). Both sides read the same JPEG files and load the same random weights through the
same loader; decoding, preprocessing, detection, selection and the record arrays are timed, writing is
not. Timed alternately (ours, baseline, ours, baseline, ...) in one process after one warm-up image each.

* baseline: the per-image loop of MILVLG/bottom-up-attention.pytorch (``extract_features.py``, caffe
  mode, one GPU, its default path; airsplay/py-bottom-up-attention's demo loops the same way): one image
  at a time is read and decoded, turned into a blob, run through the detector -- trunk, RPN (proposal NMS
  over all 6000 boxes), ROIPool and res5 on all 300 proposals, classes and attributes of every proposal --
  with BatchNorm as its own op (detectron2's frozen BN, ``F.batch_norm``) in contiguous memory, then the
  boxes are chosen by ``save_roi_features``: one NMS call per class (1600 calls).
* ours: the features stage as the local runner drives it: a DataLoader worker reads and decodes ahead,
  batches of 8 images, BN folded into the convolutions, channels_last, proposal NMS stopped once 300 are
  kept, the RoIs of every image of the batch through res5 together, the vectorised selection, attributes
  of the chosen regions only.

Outputs are compared image by image: the chosen boxes must be identical, features and confidences equal
within float rounding (the two sides round convolutions differently: folded BN, memory layout, batching).

Rows (``--rows``):

* ``r101`` (the headline): the full R101-C4 network (DetectorArch defaults: 2048-d features, 1601
  classes, 401 attributes) at Caffe's 600/1000 input, RPN 6000 -> 300, 36 boxes, on ``--images``
  COCO-sized images (default 3), ``--rounds`` alternations (default 2).
* ``moderate`` (extra): the earlier bench's network, ResNet (2, 2, 2, 2) blocks at 1/8 of R101's widths
  (256-d features, about 1% of its FLOPs), 400/667 input, 16 images.
* ``selection`` (extra): the vectorised selection against the per-class loop on the same detector
  outputs (moderate network).

GPU mode (``--gpu``; bench/gpu_features.sh): the full R101 configuration with random weights on
synthetic 640x480 images (600x800 after resizing), images/s at fp32, tf32 and fp16 for 36 regions,
and the cosine of fp16 to fp32 features of the same boxes.

Prints lines of figures, then one JSON object as the last line (``met``: each target judged on its
fair row).

    python bench/features.py [--rows r101,moderate,selection] [--images 3] [--rounds 2] [--threads 2]
    python bench/features.py --gpu [--images 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODERATE_ARCH = dict(blocks_per_stage=(2, 2, 2, 2), stem_out_channels=16, res2_out_channels=32,
                     bottleneck_channels=8, rpn_hidden_channels=64)
MODERATE_RUN = {"preprocess.test_scale": 400, "preprocess.max_size": 667}
NETWORKS = {  # row -> (DetectorArch overrides, FeaturesConfig settings)
    "r101": ({}, {}),
    "moderate": (MODERATE_ARCH, MODERATE_RUN),
}
TARGET = 1.3  # ours >= 1.3x the per-image loop, judged on the r101 row


def write_models(root: str, arch_kwargs: dict) -> str:
    """Random weights for ``arch`` in the detector format (safetensors + manifest + vocabularies)."""
    from ssrp.features.config import DetectorArch
    from ssrp.features.models import ATTRIBUTES_VOCAB, NAME, OBJECTS_VOCAB, save_detector
    from ssrp.features.tiny import random_state_dict

    arch = DetectorArch(**arch_kwargs)
    out = os.path.join(root, NAME)
    save_detector(out, random_state_dict(arch), arch, name="bench-random", source={"kind": "random"}, conversion={})
    for name, n in ((OBJECTS_VOCAB, arch.num_classes - 1), (ATTRIBUTES_VOCAB, arch.num_attributes - 1)):
        with open(os.path.join(out, name), "w") as fh:
            fh.write("\n".join(f"w{i}" for i in range(n)))
    return root


def bench_config(models: str, settings: dict, overrides: dict | None = None):
    from ssrp.config import with_settings
    from ssrp.features.config import FeaturesConfig

    return with_settings(FeaturesConfig(models_dir=models, device="cpu"), {**settings, **(overrides or {})})


# --------------------------------------------------------------------------------------------
# The two sides.


class PerImageLoop:
    """The baseline: MILVLG ``extract_features.py`` (caffe mode) on ssrp's detector modules.

    Per image: read + decode, the Caffe blob, trunk and RPN, proposals (NMS over every pre-NMS box),
    ROIPool of all proposals, res5 on all of them at once, class and attribute softmax of every
    proposal, then ``save_roi_features``'s per-class NMS loop and the chosen rows. BatchNorm stays a
    separate op (``F.batch_norm``, detectron2's FrozenBatchNorm2d without gradients), memory contiguous.
    """

    def __init__(self, cfg):
        from dataclasses import replace

        from ssrp.features.models import load_detector

        self.cfg = replace(cfg, rpn=replace(cfg.rpn, early_stop_nms=False))
        self.loaded = load_detector(cfg.models_dir, device="cpu", verify=False)
        self.model = self.loaded.model
        unfused_batchnorm(self.model)

    def __call__(self, item) -> dict:
        import torch
        from torchvision.ops import roi_pool

        from ssrp.features.image import read_and_decode
        from ssrp.features.preprocess import image_blob
        from ssrp.features.proposals import image_proposals
        from ssrp.features.select import select_loop

        image = read_and_decode(item.image_id, item.path)
        blob, scale = image_blob(image.pixels, self.cfg.preprocess)
        model, cfg = self.model, self.cfg
        with torch.inference_mode():
            res4 = model.trunk(blob[None])
            logits, deltas = model.rpn(res4)
            props = image_proposals(logits[0], deltas[0], model.proposal_generator.caffe_anchors,
                                    tuple(blob.shape[1:]), scale, cfg.rpn, self.loaded.arch.feat_stride)
            rois = torch.cat([props.new_zeros(props.shape[0], 1), props], dim=1)
            res = cfg.roi.pooler_resolution
            pooled = roi_pool(res4, rois, (res, res), 1.0 / self.loaded.arch.feat_stride)
            feats = model.roi_heads.res5(pooled).mean(dim=(2, 3))
            predictor = model.roi_heads.box_predictor
            cls_logits = predictor.class_logits(feats)
            probs = torch.softmax(cls_logits, dim=1)
            attrs = torch.softmax(predictor.attribute_logits(feats, cls_logits), dim=1)
            s = cfg.select
            boxes = props / scale
            keep = select_loop(boxes, probs, s.nms_thresh, s.conf_thresh, s.min_boxes, s.max_boxes).keep
        return {"image_id": image.image_id, "boxes": boxes[keep].numpy(), "features": feats[keep].numpy(),
                "obj_conf": probs[keep, 1:].max(dim=1).values.numpy(), "obj_ids": probs[keep, 1:].argmax(1).numpy(),
                "attr_ids": attrs[keep, 1:].argmax(1).numpy()}


def _batch_norm_forward(self, x):
    import torch.nn.functional as F

    return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def unfused_batchnorm(model) -> None:
    """Every frozen BN of ``model`` as detectron2 runs it without gradients: one ``F.batch_norm`` op."""
    from ssrp.features.modeling import FrozenBatchNorm2d

    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.forward = types.MethodType(_batch_norm_forward, module)


def image_batches(items: list, batch_size: int, workers: int):
    """Decoded images in batches, read and decoded in ``workers`` processes (as the builder's local runner)."""
    import torch

    from ssrp.features.image import read_and_decode

    class Decode(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return read_and_decode(items[i].image_id, items[i].path)

    yield from torch.utils.data.DataLoader(Decode(), batch_size=batch_size, num_workers=workers,
                                           collate_fn=lambda b: b)


def ours_pass(ext, items: list) -> list:
    records = []
    for batch in image_batches(items, batch_size=8, workers=1):
        records += ext(batch)
    return records


def baseline_pass(loop: PerImageLoop, items: list) -> list:
    return [loop(item) for item in items]


# --------------------------------------------------------------------------------------------
# Checking that both sides give the same outputs.


def compare_outputs(records: list, base: list) -> dict:
    import numpy as np

    same_boxes, max_diff, min_cos, obj_agree, n = True, 0.0, 1.0, 0, 0
    for rec, b in zip(records, base, strict=True):
        assert rec.image_id == b["image_id"]
        same_boxes &= rec.boxes.shape == b["boxes"].shape and bool(np.allclose(rec.boxes, b["boxes"], rtol=0,
                                                                              atol=1e-3))
        ours = rec.features.astype(np.float32)
        theirs = b["features"].astype(np.float16).astype(np.float32)  # the corpus stores fp16
        if ours.shape == theirs.shape:
            scale = max(1e-12, float(np.abs(theirs).max()))
            max_diff = max(max_diff, float(np.abs(ours - theirs).max()) / scale)
            cos = (ours * theirs).sum(1) / np.maximum(1e-12, np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
            min_cos = min(min_cos, float(cos.min()))
            obj_agree += int((rec.obj_ids == b["obj_ids"]).sum())
            n += rec.obj_ids.shape[0]
    return {"same_boxes": same_boxes, "feature_max_rel_diff": max_diff, "feature_min_cosine": round(min_cos, 7),
            "object_label_agreement": round(obj_agree / max(1, n), 4),
            "outputs_match": same_boxes and max_diff < 1e-2 and min_cos > 0.9999}


# --------------------------------------------------------------------------------------------
# Rows.


def end_to_end_row(name: str, tmp: str, images: int, rounds: int) -> dict:
    import torch

    from ssrp.features.image import read_and_decode
    from ssrp.features.stage import Extractor
    from ssrp.pipeline.inputs import read_coco
    from ssrp.sample import SampleConfig, write_sample

    arch, settings = NETWORKS[name]
    models = write_models(os.path.join(tmp, f"models-{name}"), arch)
    coco = os.path.join(tmp, f"coco-{name}-{images}")
    write_sample(coco, SampleConfig(images=images, val_images=0, seed=1))
    items = read_coco(coco, "train").images
    cfg = bench_config(models, settings)
    ext = Extractor(cfg).load()
    loop = PerImageLoop(cfg)
    ext([read_and_decode(items[0].image_id, items[0].path)])  # warm-up
    loop(items[0])
    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    for r in range(rounds):  # A, B, A, B
        start = time.perf_counter()
        records = ours_pass(ext, items)
        times["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        base = baseline_pass(loop, items)
        times["baseline"].append(time.perf_counter() - start)
        print(f"  {name} round {r}: ours {times['ours'][-1]:.2f} s, baseline {times['baseline'][-1]:.2f} s, "
              f"ratio {times['baseline'][-1] / times['ours'][-1]:.3f}", flush=True)
    ratios = [b / o for o, b in zip(times["ours"], times["baseline"], strict=True)]
    n = len(items)
    return {
        "images": n, "rounds": rounds, "threads": torch.get_num_threads(),
        "network": {"arch": arch or "DetectorArch() (R101-C4)", **settings},
        "ours_img_per_s": round(n / statistics.median(times["ours"]), 4),
        "baseline_img_per_s": round(n / statistics.median(times["baseline"]), 4),
        "ours_s_per_image_best": round(min(times["ours"]) / n, 3),
        "baseline_s_per_image_best": round(min(times["baseline"]) / n, 3),
        "round_ratios": [round(x, 3) for x in ratios],
        "speedup_median": round(statistics.median(ratios), 3),
        "speedup_of_bests": round(min(times["baseline"]) / min(times["ours"]), 3),
        **compare_outputs(records, base),
    }


def selection_row(tmp: str, images: int) -> dict:
    import torch

    from ssrp.features.image import read_and_decode
    from ssrp.features.select import select_batch, select_loop
    from ssrp.features.stage import Extractor
    from ssrp.pipeline.inputs import read_coco
    from ssrp.sample import SampleConfig, write_sample

    arch, settings = NETWORKS["moderate"]
    models = write_models(os.path.join(tmp, "models-selection"), arch)
    coco = os.path.join(tmp, "coco-selection")
    write_sample(coco, SampleConfig(images=images, val_images=0, seed=1))
    items = read_coco(coco, "train").images
    ext = Extractor(bench_config(models, settings)).load()
    dets, _, _ = ext.engine.detect([read_and_decode(i.image_id, i.path) for i in items])
    boxes = [d.boxes for d in dets]
    probs = [d.class_probs for d in dets]
    select_batch(boxes[:1], probs[:1])  # warm-up
    times: dict[str, list[float]] = {"vectorised": [], "loop": []}
    for _ in range(2):
        start = time.perf_counter()
        fast = []
        for s in range(0, len(boxes), 8):  # the extractor's batches
            fast += select_batch(boxes[s : s + 8], probs[s : s + 8])
        times["vectorised"].append(time.perf_counter() - start)
        start = time.perf_counter()
        slow = [select_loop(b, p) for b, p in zip(boxes, probs, strict=True)]
        times["loop"].append(time.perf_counter() - start)
    same = all(torch.equal(a.keep, b.keep) and torch.equal(a.max_conf[a.keep], b.max_conf[b.keep])
               for a, b in zip(fast, slow, strict=True))
    n = len(items)
    return {"images": n, "vectorised_ms_per_image": round(1000 * min(times["vectorised"]) / n, 2),
            "loop_ms_per_image": round(1000 * min(times["loop"]) / n, 2),
            "speedup": round(min(times["loop"]) / min(times["vectorised"]), 1), "identical": same,
            "proposals_per_image": sum(b.shape[0] for b in boxes) / n}


def cpu_main(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    result: dict = {"mode": "cpu", "threads": args.threads, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="ssrp-bench-features-") as tmp:
        for row in rows:
            print(f"row {row}", flush=True)
            if row == "r101":
                result["rows"]["r101"] = end_to_end_row("r101", tmp, args.images, args.rounds)
            elif row == "moderate":
                result["rows"]["moderate_extra"] = end_to_end_row("moderate", tmp, 16, max(args.rounds, 2))
            elif row == "selection":
                result["rows"]["selection_extra"] = selection_row(tmp, 16)
            else:
                raise SystemExit(f"unknown row {row!r}; rows: r101, moderate, selection")
    met = {}
    if "r101" in result["rows"]:
        r = result["rows"]["r101"]
        met["end_to_end_r101_1.3x"] = r["speedup_median"] >= TARGET and r["outputs_match"]
    if "selection_extra" in result["rows"]:
        met["selection_20x"] = result["rows"]["selection_extra"]["speedup"] >= 20
    result["met"] = met
    return result


# --------------------------------------------------------------------------------------------
# GPU mode.


def gpu_main(args) -> dict:
    import numpy as np
    import torch

    from ssrp.features.config import DetectorArch, FeaturesConfig, RoIConfig
    from ssrp.features.engine import BUTDEngine, RoIJob
    from ssrp.features.image import DecodedImage
    from ssrp.features.modeling import build_detector
    from ssrp.features.models import LoadedDetector
    from ssrp.features.stage import Extractor
    from ssrp.features.tiny import TINY_ARCH, random_state_dict

    arch = TINY_ARCH if args.arch == "tiny" else DetectorArch()
    state = random_state_dict(arch)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = [DecodedImage(i, f"{i}.jpg", rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
              for i in range(args.images)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"mode": "gpu", "device": name, "images": len(images), "regions": 36, "batch": args.batch,
              "input": "640x480 -> 600x800", "arch": f"{args.arch}: {arch.blocks_per_stage}, "
              f"{arch.num_classes} classes, {arch.num_attributes} attributes", "decoding": "excluded (in memory)"}
    feats_by_precision = {}
    probe = None
    for precision in args.precisions.split(","):
        model = build_detector(arch, "meta")
        model.load_state_dict(state, strict=True, assign=True)
        loaded = LoadedDetector(model, arch, {"name": "random"}, [str(i) for i in range(arch.num_classes - 1)],
                                [str(i) for i in range(arch.num_attributes - 1)])
        cfg = FeaturesConfig(device=str(device), precision=precision, trunk_batch=8, roi=RoIConfig(chunk=args.chunk))
        ext = Extractor(cfg)
        ext._engine = BUTDEngine(cfg, loaded, device)
        ext(images[: args.batch])  # warm-up (cuDNN autotuning)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for s in range(0, len(images), args.batch):
            ext(images[s : s + args.batch])
        _sync(device)
        seconds = time.perf_counter() - start
        result[f"{precision}_img_per_s"] = round(len(images) / seconds, 1)
        if device.type == "cuda":
            result[f"{precision}_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        print(f"{precision}: {result[f'{precision}_img_per_s']} images/s", flush=True)  # kept if a later one fails
        engine = ext.engine
        with torch.inference_mode():
            prepared = [engine.prepare(img) for img in images[:4]]
            maps, rpn = engine.feature_maps(prepared)
            if probe is None:  # the first precision's proposals: every precision pools the very same boxes
                probe = [engine.proposals(p, r)[:36] for p, r in zip(prepared, rpn, strict=True)]
            jobs = [RoIJob(m, b) for m, b in zip(maps, probe, strict=True)]
            feats_by_precision[precision] = torch.cat([f[0] for f in engine.roi_features(jobs)]).float()
        del ext, engine, model, loaded
        if device.type == "cuda":
            torch.cuda.empty_cache()
    names = list(feats_by_precision)
    ref = feats_by_precision[names[0]]
    for precision in names[1:]:
        cos = torch.nn.functional.cosine_similarity(feats_by_precision[precision], ref, dim=1)
        result[f"cosine_{precision}_vs_{names[0]}_min"] = round(float(cos.min()), 5)
        result[f"cosine_{precision}_vs_{names[0]}_mean"] = round(float(cos.mean()), 6)
    if "fp16_img_per_s" in result:
        result["target_100_img_per_s_fp16"] = result["fp16_img_per_s"] >= 100
    return result


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="images (default 3 for the r101 row, 256 on GPU)")
    parser.add_argument("--rounds", type=int, default=2, help="CPU: alternations ours, baseline (default 2)")
    parser.add_argument("--rows", default="r101,moderate,selection", help="CPU rows to run (default all)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU (default 2)")
    parser.add_argument("--gpu", action="store_true", help="the GPU throughput/precision run (needs CUDA)")
    parser.add_argument("--batch", type=int, default=32, help="images per extractor call in GPU mode")
    parser.add_argument("--chunk", type=int, default=2400, help="RoIs per res5 call in GPU mode")
    parser.add_argument("--precisions", default="fp32,tf32,fp16", help="GPU mode: precisions to time, first = reference")
    parser.add_argument("--device", default="cuda", help="GPU mode device (cpu only for a dry run of the script)")
    parser.add_argument("--arch", default="r101", choices=("r101", "tiny"), help="GPU mode network (tiny: dry run)")
    args = parser.parse_args(argv)
    args.images = args.images or (256 if args.gpu else 3)
    result = gpu_main(args) if args.gpu else cpu_main(args)
    for key, value in result.items():
        if isinstance(value, dict) and key == "rows":
            for row, figures in value.items():
                print(f"[{row}]")
                for k, v in figures.items():
                    print(f"  {k:36s} {v}")
        else:
            print(f"{key:40s} {value}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
