"""ssrp features: BUTD region features of images into a corpus; export; convert checkpoints.

    ssrp features --coco COCO --out CORPUS --models MODELS      raw-view records + index records
    ssrp features --images DIR --out CORPUS --models MODELS     raw-view records of a folder
    ssrp features export CORPUS --tsv OUT.tsv --hdf5 OUT.h5     LXMERT TSV / HDF5 from a corpus
    ssrp features convert --hf pytorch_model.bin --out MODELS/detector
    ssrp features convert --d2-pkl faster_rcnn_from_caffe_attr.pkl --out MODELS/detector --allow-unverified-pickle
"""

from __future__ import annotations

import argparse
import json
import os
import shutil


def register(sub) -> None:
    p = sub.add_parser("features", help="BUTD Faster R-CNN region features into a corpus (no Beam)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--tsv", metavar="FILE", help="also export the raw view as an LXMERT TSV")
    p.add_argument("--hdf5", metavar="FILE", help="also export the raw view as HDF5")
    p.set_defaults(func=_extract)
    fsub = p.add_subparsers(dest="features_command", metavar="ACTION")
    e = fsub.add_parser("export", help="export a corpus's image records to LXMERT TSV and/or HDF5")
    e.add_argument("corpus")
    e.add_argument("--tsv", metavar="FILE")
    e.add_argument("--hdf5", metavar="FILE")
    e.add_argument("--view", default="raw", help="which view to export (default raw)")
    e.add_argument("--fp16", action="store_true", help="HDF5 features as float16 (default float32)")
    e.set_defaults(func=_export)
    c = fsub.add_parser("convert", help="convert a published BUTD checkpoint to detector.safetensors + manifest")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf", metavar="FILE", help="Hugging Face unc-nlp/frcnn-vg-finetuned pytorch_model.bin")
    src.add_argument("--d2-pkl", metavar="FILE", help="airsplay's detectron2 pickle faster_rcnn_from_caffe_attr.pkl")
    c.add_argument("--out", required=True, metavar="DIR", help="detector directory to write (e.g. MODELS/detector)")
    c.add_argument("--objects-vocab", metavar="FILE", help="objects_vocab.txt to copy next to the weights")
    c.add_argument("--attributes-vocab", metavar="FILE", help="attributes_vocab.txt to copy next to the weights")
    c.add_argument("--allow-unverified-pickle", action="store_true",
                   help="unpickle a legacy pickle whose sha256 is not pinned (only for files you trust)")
    c.set_defaults(func=_convert)


def add_input_args(p: argparse.ArgumentParser) -> None:
    """Inputs, output, models and run settings shared by `ssrp features` and `ssrp augment views`."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", metavar="DIR", help="a folder of images (ids: numeric file names, else order)")
    src.add_argument("--coco", metavar="DIR", help="an MSCOCO 2017 root (annotations/captions_*2017.json)")
    p.add_argument("--splits", default=None, help="COCO splits, comma separated (default: every captions file)")
    p.add_argument("--out", metavar="CORPUS", help="corpus directory to write")
    p.add_argument("--models", metavar="DIR", help="models directory holding detector/")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (by id)")
    p.add_argument("--batch-size", type=int, default=8, help="images per stage call (default 8)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2; 0: none)")
    p.add_argument("--shards", type=int, default=None, help="image shards (default: about 256 MB each)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", help="auto | fp32 | tf32 | fp16 | bf16")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a FeaturesConfig setting, e.g. --set select.max_boxes=100 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def features_config(args):
    from ssrp.config import with_overrides
    from ssrp.features.config import FeaturesConfig

    cfg = FeaturesConfig(models_dir=args.models, device=args.device, precision=args.precision)
    return with_overrides(cfg, [o for o in args.overrides if not o.startswith("views.")])


def output_config(cfg) -> dict:
    """The settings that decide the records' bytes (hashed into the corpus manifest)."""
    from ssrp.config import to_dict

    d = to_dict(cfg)
    for name in ("models_dir", "device", "trunk_batch", "verify_weights"):
        d.pop(name, None)
    d["roi"].pop("chunk", None)  # how many RoIs per res5 call: same bytes on CPU
    d["rpn"].pop("early_stop_nms", None)  # exact shortcut: same proposals
    d["select"].pop("method", None)  # vectorised and loop give identical selections
    return d


def resolve_inputs(args) -> tuple[list, list]:
    from ssrp.features.loader import list_coco, list_image_dir

    if not (args.out and args.models and (args.images or args.coco)):
        raise ValueError("need --images DIR or --coco DIR, --out CORPUS and --models DIR")
    if args.coco:
        items, index = list_coco(args.coco, args.splits.split(",") if args.splits else None)
    else:
        items, index = list_image_dir(args.images), []
    items = sorted(items, key=lambda i: i.image_id)[: args.limit]
    keep = {i.image_id for i in items}
    return items, [r for r in index if r.image_id in keep]


def run_stage(args, stage, cfg, config: dict, views: int) -> int:
    """Load ``stage``, run it over the inputs into args.out, print a summary."""
    from ssrp.features.run import auto_shards, build_image_corpus

    items, index = resolve_inputs(args)
    stage.load()
    summary = build_image_corpus(
        args.out, items, stage, decode=cfg.decode, config=config, models={"detector": stage.model_identity},
        index=index, image_shards=args.shards or auto_shards(len(items), views), batch_size=args.batch_size,
        workers=args.workers, progress=not args.no_progress,
    )
    print(f"{summary.images} images: {summary.records} records written, {summary.dead_letters} dead letters"
          + (f" {summary.by_reason}" if summary.by_reason else "") + f" -> {args.out}")
    return 0


def _extract(args) -> int:
    if getattr(args, "features_command", None):
        return 0
    from ssrp.features.extractor import Extractor

    cfg = features_config(args)
    code = run_stage(args, Extractor(cfg), cfg, output_config(cfg), views=1)
    if args.tsv or args.hdf5:
        _write_exports(args.out, args.tsv, args.hdf5, "raw", False)
    return code


def _write_exports(corpus: str, tsv: str | None, hdf5: str | None, view: str, fp16: bool) -> None:
    from ssrp.features.export import export_hdf5, export_lxmert_tsv

    if tsv:
        print(f"{export_lxmert_tsv(corpus, tsv, view)} rows -> {tsv}")
    if hdf5:
        print(f"{export_hdf5(corpus, hdf5, view, 'float16' if fp16 else 'float32')} images -> {hdf5}")


def _export(args) -> int:
    if not (args.tsv or args.hdf5):
        raise ValueError("give --tsv FILE and/or --hdf5 FILE")
    _write_exports(args.corpus, args.tsv, args.hdf5, args.view, args.fp16)
    return 0


def _convert(args) -> int:
    from ssrp.features.convert import convert_checkpoint

    path, layout = (args.hf, "hf") if args.hf else (args.d2_pkl, "d2")
    manifest = convert_checkpoint(path, layout, args.out, allow_unverified_pickle=args.allow_unverified_pickle)
    for src, name in ((args.objects_vocab, "objects_vocab.txt"), (args.attributes_vocab, "attributes_vocab.txt")):
        if src:
            shutil.copyfile(src, os.path.join(args.out, name))
    print(json.dumps({"weights_sha256": manifest["weights_sha256"], "conversion": manifest["conversion"]}, indent=1))
    return 0
