"""Feature extraction benchmark: the batched extractor against the per-image MILVLG/Caffe way.

CPU mode (default), on the same random weights and the same JPEG files, in one run:

* ours: DataLoader decoding in a worker process, batches of 8, trunk per size group, RoIs of all
  images through res5 together, BN folded, channels_last, the vectorised selection;
* baseline: one image at a time (read, decode, detect), BN as a separate op, contiguous memory, the
  proposal NMS over all 6000 boxes, and the selection as Caffe's generate_tsv / MILVLG write it: one
  NMS call per class (1600 calls);
* selection alone: the vectorised selection against the per-class loop on the same detector outputs.

Each method runs in its own subprocess (so the peak RSS is its own) after one warm-up image. The
moderate configuration keeps the Caffe label space and proposal settings (1601 classes, 401
attributes, RPN 6000 -> 300, 36 boxes) and shrinks the network and the input so a run takes a couple
of minutes on 2 cores: ResNet (2, 2, 2, 2) blocks with widths 1/8 of R101 (256-d features), short
side 400 / long side 667.

GPU mode (``--gpu``; bench/gpu_features.sh): the full R101 configuration with random weights on
synthetic 640x480 images (600x800 after resizing), images/s at fp32, tf32 and fp16 for 36 regions,
and the cosine of fp16 to fp32 features of the same boxes.

Prints lines of figures, then one JSON object as the last line.

    python bench/features.py [--images 16] [--threads 2]
    python bench/features.py --gpu [--images 256]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODERATE_ARCH = dict(blocks_per_stage=(2, 2, 2, 2), stem_out_channels=16, res2_out_channels=32,
                     bottleneck_channels=8, rpn_hidden_channels=64)
MODERATE_RUN = {"preprocess.test_scale": 400, "preprocess.max_size": 667}


def write_models(root: str, arch_kwargs: dict) -> str:
    """Random weights for ``arch`` in the detector format (safetensors + manifest + vocabularies)."""
    from ssrp.features.config import DetectorArch
    from ssrp.features.models import save_detector
    from ssrp.features.tiny import random_state_dict

    arch = DetectorArch(**arch_kwargs)
    out = os.path.join(root, "detector")
    save_detector(out, random_state_dict(arch), arch, name="bench-random", source={"kind": "random"}, conversion={})
    for name, n in (("objects_vocab.txt", arch.num_classes - 1), ("attributes_vocab.txt", arch.num_attributes - 1)):
        with open(os.path.join(out, name), "w") as fh:
            fh.write("\n".join(f"w{i}" for i in range(n)))
    return root


def _config(models: str, overrides: dict):
    from ssrp.config import with_settings
    from ssrp.features.config import FeaturesConfig

    return with_settings(FeaturesConfig(models_dir=models, device="cpu"), {**MODERATE_RUN, **overrides})


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


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def phase_ours(models: str, items: list, threads: int) -> dict:
    import torch

    from ssrp.features.image import read_and_decode
    from ssrp.features.stage import Extractor

    torch.set_num_threads(threads)
    ext = Extractor(_config(models, {})).load()
    ext([read_and_decode(items[0].image_id, items[0].path)])  # warm-up
    start = time.perf_counter()
    n = 0
    for batch in image_batches(items, batch_size=8, workers=1):
        n += sum(1 for r in ext(batch) if hasattr(r, "features"))
    return {"seconds": time.perf_counter() - start, "records": n, "peak_rss_mb": _peak_mb()}


def phase_baseline(models: str, items: list, threads: int) -> dict:
    import torch

    from ssrp.features.image import read_and_decode
    from ssrp.features.stage import Extractor

    torch.set_num_threads(threads)
    cfg = _config(models, {"fold_bn": False, "channels_last": False, "select.method": "loop", "roi.chunk": 300,
                           "rpn.early_stop_nms": False})
    ext = Extractor(cfg).load()
    ext([read_and_decode(items[0].image_id, items[0].path)])
    start = time.perf_counter()
    n = 0
    for item in items:
        n += sum(1 for r in ext([read_and_decode(item.image_id, item.path)]) if hasattr(r, "features"))
    return {"seconds": time.perf_counter() - start, "records": n, "peak_rss_mb": _peak_mb()}


def phase_selection(models: str, items: list, threads: int) -> dict:
    import torch

    from ssrp.features.image import read_and_decode
    from ssrp.features.select import select_batch, select_loop
    from ssrp.features.stage import Extractor

    torch.set_num_threads(threads)
    ext = Extractor(_config(models, {})).load()
    dets, _, _ = ext.engine.detect([read_and_decode(i.image_id, i.path) for i in items])
    boxes = [d.boxes for d in dets]
    probs = [d.class_probs for d in dets]
    select_batch(boxes[:1], probs[:1])  # warm-up
    start = time.perf_counter()
    fast = []
    for s in range(0, len(boxes), 8):  # the extractor's batches
        fast += select_batch(boxes[s : s + 8], probs[s : s + 8])
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = [select_loop(b, p) for b, p in zip(boxes, probs, strict=True)]
    t_loop = time.perf_counter() - start
    same = all(torch.equal(a.keep, b.keep) and torch.equal(a.max_conf[a.keep], b.max_conf[b.keep])
               for a, b in zip(fast, slow, strict=True))
    return {"vectorised_s": t_fast, "loop_s": t_loop, "identical": same,
            "proposals_per_image": sum(b.shape[0] for b in boxes) / len(boxes)}


def _child(fn_name: str, args: tuple, queue) -> None:
    queue.put(globals()[fn_name](*args))


def run_isolated(fn_name: str, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn_name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def cpu_main(args) -> dict:
    from ssrp.pipeline.inputs import read_coco
    from ssrp.sample import SampleConfig, write_sample

    tmp = tempfile.mkdtemp(prefix="ssrp-bench-features-")
    models = write_models(os.path.join(tmp, "models"), MODERATE_ARCH)
    write_sample(os.path.join(tmp, "coco"), SampleConfig(images=args.images, val_images=0, seed=1))
    items = read_coco(os.path.join(tmp, "coco"), "train").images
    ours = run_isolated("phase_ours", models, items, args.threads)
    base = run_isolated("phase_baseline", models, items, args.threads)
    sel = run_isolated("phase_selection", models, items, args.threads)
    n = len(items)
    result = {
        "mode": "cpu",
        "images": n,
        "threads": args.threads,
        "config": {"arch": MODERATE_ARCH, "feature_dim": MODERATE_ARCH["res2_out_channels"] * 8, "classes": 1601,
                   "attributes": 401, "rpn": "6000 -> 300", "boxes": "36 fixed", **MODERATE_RUN,
                   "image_sizes": "COCO-like (640x480, 480x640, 640x427, ...)"},
        "ours_img_per_s": round(n / ours["seconds"], 3),
        "baseline_img_per_s": round(n / base["seconds"], 3),
        "end_to_end_speedup": round(base["seconds"] / ours["seconds"], 2),
        "selection_ms_per_image_vectorised": round(1000 * sel["vectorised_s"] / n, 2),
        "selection_ms_per_image_loop": round(1000 * sel["loop_s"] / n, 2),
        "selection_speedup": round(sel["loop_s"] / sel["vectorised_s"], 1),
        "selection_identical": sel["identical"],
        "proposals_per_image": sel["proposals_per_image"],
        "peak_rss_mb_ours": round(ours["peak_rss_mb"], 1),
        "peak_rss_mb_baseline": round(base["peak_rss_mb"], 1),
    }
    result["targets_met"] = {"selection_20x": result["selection_speedup"] >= 20,
                             "end_to_end_2x": result["end_to_end_speedup"] >= 2}
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
    parser.add_argument("--images", type=int, default=None, help="images (default 16 on CPU, 256 on GPU)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU (default 2)")
    parser.add_argument("--gpu", action="store_true", help="the GPU throughput/precision run (needs CUDA)")
    parser.add_argument("--batch", type=int, default=32, help="images per extractor call in GPU mode")
    parser.add_argument("--chunk", type=int, default=2400, help="RoIs per res5 call in GPU mode")
    parser.add_argument("--precisions", default="fp32,tf32,fp16", help="GPU mode: precisions to time, first = reference")
    parser.add_argument("--device", default="cuda", help="GPU mode device (cpu only for a dry run of the script)")
    parser.add_argument("--arch", default="r101", choices=("r101", "tiny"), help="GPU mode network (tiny: dry run)")
    args = parser.parse_args(argv)
    args.images = args.images or (256 if args.gpu else 16)
    result = gpu_main(args) if args.gpu else cpu_main(args)
    for key, value in result.items():
        if key != "config":
            print(f"{key:40s} {value}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
