"""Every stage at its real model size (random weights), on CPU or one GPU: rates, peak memory, FLOPs, a projection.

The models are built by ``ssrp models random --size full`` (ssrp.models.fullsize: the published architectures and
vocabulary sizes, written in the published formats and read by the same loaders as the real weights). Each phase
runs in its own process (its peak RSS is its own) through the objects a build runs (``BuildStages``):

  features    the raw view (BUTD R101-C4, 36 regions): img/s per precision, FLOPs/image, fraction of peak
  views       the 14 views of Table 2: the same
  translate   back-translation through German and Russian at the published search settings (forward leg:
              sampling top-k 10; return leg: beam 5): captions/s and round trips/s
  parse       Stanza at the default package's size: sentences/s
  train       the trainer at paper size (BERT-base text side): stage 1 and stage 2 samples/s (bench/train.py)
  build       a short end-to-end build (local runner, every stage, shard commits overlapped): s/image, bytes
              per record

Random weights never choose the end-of-sentence token, so every translation would run to its length limit
(1.5 x source + 10 tokens by default, then 1.5 x that on the return leg). ``--length-limit A,B`` sets the limit
to about a real translation's length (default 1.0,2: source length + 2); the beam widths are the published ones.
The detector's random class scores make the selection keep its minimum of boxes, which changes no compute
before the selection (every proposal goes through res5 and the heads).

    python bench/full_size.py --models DIR [--device cpu|cuda] [--phases features,views,...]
    python bench/full_size.py --tiny --device cpu --images 2 --captions 8     # dry run (tests/bench)

Prints one line per phase, then one JSON object (the last line) with every figure, the device and a projection
to full COCO (118,287 images, 591,753 captions).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COCO_IMAGES, COCO_CAPTIONS = 118_287, 591_753
PHASES = ("features", "views", "translate", "parse", "train", "build")
# dense peak FLOP/s (no sparsity) from NVIDIA's datasheets: fp32 (CUDA cores), tf32 and bf16 (tensor cores)
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM (H100 80GB HBM3)
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
}


def peak_tflops(device_name: str) -> dict | None:
    for key, peaks in PEAK_TFLOPS.items():  # the longer names first: "H100 PCIe" before "H100"
        if all(part in device_name for part in key.split()):
            return peaks
    return None


# --------------------------------------------------------------------------------------------
# Phases (each in a child process).


def _build_config(args: dict, out: str, stages: tuple[str, ...], **kw):
    from ssrp.pipeline.config import BuildConfig

    a, b = args["length_limit"]
    return BuildConfig(input=args["coco"], out=out, models=args["models"], split="train", stages=stages,
                       device=args["device"], translate={"max_len_a": a, "max_len_b": b}, **kw)


def _peaks(device: str) -> dict:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        import torch

        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def phase_images(args: dict, stages: tuple[str, ...]) -> dict:
    """img/s of the image stage at each precision (decoding excluded, timed apart), FLOPs per image."""
    from torch.utils.flop_counter import FlopCounterMode

    from ssrp.pipeline.inputs import read_coco
    from ssrp.pipeline.stages import BuildStages

    items = read_coco(args["coco"], "train", max_images=args["images"]).images
    result: dict = {"images": len(items), "batch": args["image_batch"]}
    peaks = peak_tflops(args["device_name"])
    for precision in args["precisions"]:
        cfg = _build_config(args, tempfile.mkdtemp(), stages, image_batch=args["image_batch"],
                            features={"precision": precision})
        st = BuildStages(cfg)
        start = time.perf_counter()
        st.load(captions=False)
        row: dict = {"load_s": round(time.perf_counter() - start, 2)}
        start = time.perf_counter()
        decoded = [st.read_and_decode(i) for i in items]
        row["decode_s_per_image"] = round((time.perf_counter() - start) / len(items), 4)
        batch = args["image_batch"]
        st.run_images(decoded[:batch])  # warm-up (cuDNN autotuning, allocator)
        _sync(args["device"])
        start = time.perf_counter()
        records = 0
        for s in range(0, len(decoded), batch):
            records += sum(len(r) for r in st.run_images(decoded[s : s + batch]) if isinstance(r, list))
        _sync(args["device"])
        seconds = time.perf_counter() - start
        row.update(img_per_s=round(len(decoded) / seconds, 3), s_per_image=round(seconds / len(decoded), 4),
                   records_per_image=round(records / len(decoded), 2))
        if "flops_per_image" not in result:
            counter = FlopCounterMode(display=False)
            with counter:
                st.run_images(decoded[:1])
            result["flops_per_image"] = counter.get_total_flops()
        achieved = row["img_per_s"] * result["flops_per_image"]
        row["achieved_tflops"] = round(achieved / 1e12, 4)
        if peaks and precision in peaks:
            row["fraction_of_peak"] = round(achieved / (peaks[precision] * 1e12), 4)
        row.update(_peaks(args["device"]))
        result[precision] = row
        print(f"  {stages[-1]} {precision}: {row['img_per_s']} img/s", flush=True)
        del st
        if args["device"].startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return result


def phase_features(args: dict) -> dict:
    return phase_images(args, ("features",))


def phase_views(args: dict) -> dict:
    return phase_images(args, ("features", "views"))


def _captions(args: dict):
    from ssrp.pipeline.inputs import read_coco

    return read_coco(args["coco"], "train").captions[: args["captions"]]


def _caption_rate(args: dict, stages: tuple[str, ...]) -> tuple[dict, list]:
    from ssrp.pipeline.stages import BuildStages, CaptionResult

    caps = _captions(args)
    st = BuildStages(_build_config(args, tempfile.mkdtemp(), stages, caption_batch=args["caption_batch"]))
    start = time.perf_counter()
    st.load(images=False)
    row: dict = {"captions": len(caps), "load_s": round(time.perf_counter() - start, 2)}
    st.captions(caps[: min(8, len(caps))])  # warm-up
    _sync(args["device"])
    start = time.perf_counter()
    out = []
    for s in range(0, len(caps), args["caption_batch"]):
        out += st.captions(caps[s : s + args["caption_batch"]])
    _sync(args["device"])
    seconds = time.perf_counter() - start
    row["captions_per_s"] = round(len(caps) / seconds, 3)
    row["records"] = sum(len(r.records) for r in out if isinstance(r, CaptionResult))
    return row, out


def phase_translate(args: dict) -> dict:
    row, _ = _caption_rate(args, ("features", "translate"))
    row["round_trips_per_s"] = round(row["captions_per_s"] * 2, 3)  # through German and Russian
    row["search"] = "forward: sampling top-k 10, 1 sample; back: beam 5"
    row["length_limit"] = list(args["length_limit"])
    row.update(_peaks(args["device"]))
    print(f"  translate: {row['captions_per_s']} captions/s", flush=True)
    return row


def phase_parse(args: dict) -> dict:
    row, _ = _caption_rate(args, ("features", "parse"))
    row["sentences_per_s"] = row.pop("captions_per_s")  # one sentence per raw caption here
    row.update(_peaks(args["device"]))
    print(f"  parse: {row['sentences_per_s']} sentences/s", flush=True)
    return row


def phase_train(args: dict) -> dict:
    """Stage-1 and stage-2 trainer samples/s at paper size (bench/train.py's measurement)."""
    import torch

    from bench.train import loader_vs_trainer

    size = "tiny" if args["tiny"] else "paper"
    cuda = args["device"].startswith("cuda")
    if not cuda:
        torch.set_num_threads(args["threads"])
    # the paper's batches on a GPU (stage 1: 128, stage 2: 512 pairs); small ones on CPU; a token run when tiny
    plan = ({"stage1": (128, 20), "stage2": (512, 10)} if cuda else {"stage1": (8, 2), "stage2": (32, 2)})
    images = 1024 if cuda else 48
    if args["tiny"]:
        plan, images = {"stage1": (4, 1), "stage2": (8, 1)}, 8
    result = {}
    for stage, (batch, steps) in plan.items():
        row = loader_vs_trainer(size, args["workers"], steps=steps, stage=stage, batch=batch,
                                device="cuda" if cuda else "cpu", images=images)
        result[stage] = {**row, **_peaks(args["device"])}
        print(f"  train {stage}: {row['trainer_samples_per_s']} samples/s", flush=True)
    return result


def phase_build(args: dict) -> dict:
    """A short build of the whole corpus (local runner: the detector on the main thread, shard commits in the
    background); s/image end to end and the bytes of each record kind."""
    from ssrp.pipeline.config import PRESETS
    from ssrp.pipeline.local import run_local

    out = os.path.join(tempfile.mkdtemp(), "corpus")
    cfg = _build_config(args, out, PRESETS["corpus"], max_images=args["build_images"], image_batch=args["image_batch"],
                        caption_batch=args["caption_batch"], num_shards={"image": 2, "text": 2})
    start = time.perf_counter()
    manifest = run_local(cfg, progress=False)
    seconds = time.perf_counter() - start
    kinds = manifest["kinds"]
    size = {k: sum(s["bytes"] for s in v["shards"]) if all("bytes" in s for s in v["shards"]) else None
            for k, v in kinds.items()}
    if any(v is None for v in size.values()):
        size = {k: sum(os.path.getsize(os.path.join(out, s["name"])) for s in v["shards"]) for k, v in kinds.items()}
    row = {"images": args["build_images"], "seconds": round(seconds, 1),
           "s_per_image": round(seconds / args["build_images"], 3),
           "records": {k: v["records"] for k, v in kinds.items()},
           "bytes_per_record": {k: round(size[k] / max(1, v["records"])) for k, v in kinds.items()},
           "balanced": all(s.get("balanced", True) for s in manifest.get("summary", {}).values())}
    row.update(_peaks(args["device"]))
    print(f"  build: {row['s_per_image']} s/image end to end", flush=True)
    return row


def _child(name: str, args: dict, queue) -> None:
    try:
        import torch

        if not args["device"].startswith("cuda"):
            torch.set_num_threads(args["threads"])
        queue.put(globals()[f"phase_{name}"](args))
    except BaseException as err:  # noqa: BLE001 - a failing phase is reported, the others still run
        queue.put({"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]})


def _in_process(name: str, args: dict) -> dict:
    """A phase in this process (dry runs: no interpreter start per phase; peak memory is then cumulative)."""
    import queue

    box: queue.Queue = queue.Queue()
    _child(name, args, box)
    return box.get()


def run_phase(name: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


# --------------------------------------------------------------------------------------------
# The projection to full COCO.


def projection(phases: dict) -> dict:
    """Hours for full COCO from the measured rates (one device), and the disk of each record kind."""
    out: dict = {"images": COCO_IMAGES, "captions": COCO_CAPTIONS}
    hours = {}
    views = phases.get("views", {})
    best = max((v["img_per_s"] for v in views.values() if isinstance(v, dict) and "img_per_s" in v), default=None)
    if best:
        hours["features_and_14_views"] = COCO_IMAGES / best / 3600
    if "captions_per_s" in phases.get("translate", {}):
        hours["translate"] = COCO_CAPTIONS / phases["translate"]["captions_per_s"] / 3600
    if "sentences_per_s" in phases.get("parse", {}):  # the caption and its two paraphrases
        hours["parse"] = 3 * COCO_CAPTIONS / phases["parse"]["sentences_per_s"] / 3600
    out["hours"] = {k: round(v, 2) for k, v in hours.items()}
    if len(hours) == 3:
        out["corpus_hours"] = round(sum(hours.values()), 2)
    per_record = phases.get("build", {}).get("bytes_per_record", {})
    if per_record:
        out["disk_gb"] = {"image": round(COCO_IMAGES * 14 * per_record.get("image", 0) / 1e9, 1),
                          "text": round(COCO_CAPTIONS * 3 * per_record.get("text", 0) / 1e9, 1),
                          "index": round(COCO_IMAGES * per_record.get("index", 0) / 1e9, 2)}
    return out


# --------------------------------------------------------------------------------------------


# the models each phase loads (the parse build also writes bert/vocab.txt, which the parse stage reads)
NEEDS = {"features": ("features",), "views": ("features",), "translate": ("translate",), "parse": ("parse",),
         "train": (), "build": ("features", "translate", "parse")}


def prepare_models(models: str, phases: list[str], tiny: bool) -> None:
    """Build the models the phases need that the folder does not hold yet (a marker per model)."""
    from ssrp.models.fullsize import build_full_size
    from ssrp.models.hub import build_tiny

    for name in dict.fromkeys(n for phase in phases for n in NEEDS[phase]):
        marker = os.path.join(models, f".complete-{'tiny' if tiny else 'full'}-{name}")
        if os.path.exists(marker):
            continue
        start = time.perf_counter()
        (build_tiny if tiny else build_full_size)(models, [name])
        open(marker, "w").close()
        print(f"{name}: {'tiny' if tiny else 'full-size'} model built in {time.perf_counter() - start:.0f} s",
              flush=True)


def prepare(args, phases: list[str]) -> tuple[str, str]:
    """The models the phases need (built if missing) and a mini-COCO of COCO-sized images (640x480 and the like)."""
    from ssrp.sample import SampleConfig, write_sample

    work = args.work or tempfile.mkdtemp(prefix="ssrp-full-size-")
    models = args.models or os.path.join(work, "models")
    prepare_models(models, phases, args.tiny)
    coco = os.path.join(work, "coco")
    n = max(args.images, args.build_images, -(-args.captions // 5))
    if not os.path.exists(os.path.join(coco, "annotations")):
        write_sample(coco, SampleConfig(images=n, val_images=0, seed=3))
    return models, coco


def combine(paths: list[str]) -> int:
    """One JSON from several runs' (the checks of bench/gpu_all.sh): every phase, the devices, the projection."""
    merged: dict = {"devices": [], "phases": {}}
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            run = json.load(fh)
        merged["devices"] = sorted({*merged["devices"], run["device"]})
        merged["phases"].update(run["phases"])
    merged["projection"] = projection(merged["phases"])
    print(json.dumps(merged, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="full-size models folder (built there if it holds none; default: a temp dir)")
    p.add_argument("--work", help="folder for the sample images and temporary corpora (default: a temp dir)")
    p.add_argument("--tiny", action="store_true", help="the tiny models instead (a dry run of the script)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {','.join(PHASES)}")
    p.add_argument("--precisions", default=None, help="image stage precisions (default: fp32 on CPU, "
                                                      "fp32,tf32,bf16 on CUDA)")
    p.add_argument("--images", type=int, default=None, help="images for the image phases (default 4 CPU, 256 CUDA)")
    p.add_argument("--build-images", type=int, default=None, help="images of the build phase (default 2 CPU, 64 CUDA)")
    p.add_argument("--captions", type=int, default=None, help="captions for translate/parse (default 24 CPU, 2000 CUDA)")
    p.add_argument("--image-batch", type=int, default=None, help="images per image-stage call (default 2 CPU, 32 CUDA)")
    p.add_argument("--caption-batch", type=int, default=256)
    p.add_argument("--length-limit", default="1.0,2", help="translation length limit A,B: A x source + B tokens")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--prepare-only", action="store_true", help="build the models the phases need, then stop")
    p.add_argument("--in-process", action="store_true", help="run the phases in this process (dry runs)")
    p.add_argument("--combine", nargs="+", metavar="JSON", help="merge earlier runs' JSON files (their phases) and "
                                                                "print the projection; runs nothing")
    p.add_argument("--workers", type=int, default=None, help="train phase loader workers (default 2 CPU, 8 CUDA)")
    args = p.parse_args(argv)
    if args.combine:
        return combine(args.combine)
    cuda = args.device.startswith("cuda")
    defaults = {"images": (4, 256), "build_images": (2, 64), "captions": (24, 2000), "image_batch": (2, 32),
                "workers": (0 if args.tiny else 2, 8)}
    for name, (cpu_value, cuda_value) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, cuda_value if cuda else cpu_value)
    phases = [x for x in args.phases.split(",") if x]
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda but no CUDA device is visible")
        device_name = torch.cuda.get_device_name(0)
    else:
        device_name = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    models, coco = prepare(args, phases)
    if args.prepare_only:
        return 0
    shared = {"models": models, "coco": coco, "device": args.device, "device_name": device_name, "tiny": args.tiny,
              "precisions": (args.precisions or ("fp32,tf32,bf16" if cuda else "fp32")).split(","),
              "images": args.images, "build_images": args.build_images, "captions": args.captions,
              "image_batch": args.image_batch, "caption_batch": args.caption_batch, "threads": args.threads,
              "workers": args.workers, "length_limit": tuple(float(x) for x in args.length_limit.split(","))}
    shared["length_limit"] = (shared["length_limit"][0], int(shared["length_limit"][1]))
    result: dict = {"device": device_name, "models": "tiny" if args.tiny else "full size, random weights",
                    "threads": None if cuda else args.threads, "phases": {}}
    for name in phases:
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        result["phases"][name] = run_phase(name, shared) if not args.in_process else _in_process(name, shared)
        result["phases"][name]["phase_s"] = round(time.perf_counter() - start, 1)
        if "error" in result["phases"][name]:
            print(f"  {name} failed: {result['phases'][name]['error']}", flush=True)
        print(json.dumps({name: result["phases"][name]}, sort_keys=True), flush=True)  # kept if a later one dies
    result["projection"] = projection(result["phases"])
    print(json.dumps(result, sort_keys=True))
    return 1 if any("error" in v for v in result["phases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
