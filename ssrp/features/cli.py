"""ssrp features: BUTD region features of images into a corpus (a preset of ``ssrp build``); export; convert.

    ssrp features --coco COCO --out CORPUS --models MODELS      raw-view records, raw captions, index
    ssrp features --images DIR --out CORPUS --models MODELS     raw-view records of a folder
    ssrp features export CORPUS --tsv OUT.tsv --hdf5 OUT.h5 --npz DIR       LXMERT TSV / HDF5 / npz of a corpus
    ssrp features export CORPUS --format npz --out DIR                      the same, one format
    ssrp features export --images DIR --boxes boxes.json --models MODELS --npz OUT   features of given boxes
    ssrp features convert --hf pytorch_model.bin --out MODELS/features
    ssrp features convert --d2-pkl faster_rcnn_from_caffe_attr.pkl --out MODELS/features --allow-unverified-pickle

A corpus written by ``ssrp features`` is the one ``ssrp build --preset features`` writes (same builder, same
shards, resumable); ``--set features.KEY=VALUE`` sets any FeaturesConfig field.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

from ssrp.pipeline.cli import add_build_args, add_input_args, config_from_args, run_from_args
from ssrp.pipeline.config import PRESETS

EXPORT_DOC = """Export image records to the formats downstream code reads (docs/features.md):

    ssrp features export CORPUS --tsv feats.tsv --names coco2014 --coco2014 COCO2014   LXMERT, with its image ids
    ssrp features export CORPUS --hdf5 feats.h5                    bottom-up-attention-vqa / BAN (adaptive)
    ssrp features export CORPUS --hdf5 feats36.h5 --hdf5-layout fixed     [images, 36, 2048] arrays
    ssrp features export CORPUS --npz feats/                       bottom-up-attention.pytorch / MCAN, per image
    ssrp features export --images DIR --boxes boxes.json --models MODELS --npz feats/
                                                                   the detector's features of given boxes
"""


def register(sub) -> None:
    p = sub.add_parser("features", help="BUTD Faster R-CNN region features into a corpus (a build preset)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p, ("coco", "images"), required=False)
    add_build_args(p, beam=False, required=False)
    p.add_argument("--tsv", metavar="FILE", help="also export the raw view as an LXMERT TSV")
    p.add_argument("--hdf5", metavar="FILE", help="also export the raw view as HDF5")
    p.set_defaults(func=_extract)
    fsub = p.add_subparsers(dest="features_command", metavar="ACTION")
    e = fsub.add_parser("export", help="a corpus's image records, or features of given boxes, as TSV/HDF5/npz",
                        description=EXPORT_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("corpus", nargs="?", help="the corpus to export (or --images and --boxes)")
    e.add_argument("--tsv", metavar="FILE", help="LXMERT TSV (airsplay/lxmert load_obj_tsv)")
    e.add_argument("--hdf5", metavar="FILE", help="HDF5 (bottom-up-attention-vqa / BAN names; see --hdf5-layout)")
    e.add_argument("--npz", metavar="DIR", help="one npz per image (bottom-up-attention.pytorch / MCAN keys)")
    e.add_argument("--format", choices=("tsv", "hdf5", "npz"), help="one format, written to --out")
    e.add_argument("--out", metavar="PATH", help="with --format: the file (tsv, hdf5) or folder (npz)")
    e.add_argument("--view", default="raw", help="which view of the corpus to export (default raw)")
    e.add_argument("--fp16", action="store_true", help="HDF5 features as float16 (default float32)")
    e.add_argument("--hdf5-layout", choices=("adaptive", "fixed"), default="adaptive",
                   help="adaptive: flat arrays + pos_boxes (default); fixed: [images, N, D] (every image N boxes)")
    e.add_argument("--npz-transpose", action="store_true",
                   help="npz x as [D, N] (OpenVQA/MCAN VQA loaders transpose it back) instead of [N, D]")
    e.add_argument("--names", choices=("file", "id", "coco2014"), default="file",
                   help="image names: file stem (default), decimal id, or COCO_train2014_000000000009 (--coco2014)")
    e.add_argument("--coco2014", metavar="DIR", help="COCO 2014 root (annotations or train2014/ val2014/) for "
                   "--names coco2014: which 2014 split each image was in")
    e.add_argument("--images", metavar="DIR", help="features of given boxes: the images folder")
    e.add_argument("--boxes", metavar="FILE", help='features of given boxes: JSON {"IMAGE": [[x1, y1, x2, y2], ...]}')
    e.add_argument("--models", metavar="DIR", help="features of given boxes: the models folder (holds features/)")
    e.add_argument("--device", default="auto", help="features of given boxes: auto, cpu, cuda, cuda:N")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="features.KEY=VALUE",
                   help="features of given boxes: a FeaturesConfig setting (repeatable)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=_export)
    c = fsub.add_parser("convert", help="convert a published BUTD checkpoint to detector.safetensors + manifest")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf", metavar="FILE", help="Hugging Face unc-nlp/frcnn-vg-finetuned pytorch_model.bin")
    src.add_argument("--d2-pkl", metavar="FILE", help="airsplay's detectron2 pickle faster_rcnn_from_caffe_attr.pkl")
    c.add_argument("--out", required=True, metavar="DIR", help="detector directory to write (e.g. MODELS/features)")
    c.add_argument("--objects-vocab", metavar="FILE", help="objects_vocab.txt to copy next to the weights")
    c.add_argument("--attributes-vocab", metavar="FILE", help="attributes_vocab.txt to copy next to the weights")
    c.add_argument("--allow-unverified-pickle", action="store_true",
                   help="unpickle a legacy pickle whose sha256 is not pinned (only for files you trust)")
    c.set_defaults(func=_convert)


def _extract(args) -> int:
    if not ((args.coco or args.images) and args.out and args.models):
        raise ValueError("give --coco DIR or --images DIR, --out CORPUS and --models DIR (or an action: export, convert)")
    code = run_from_args(config_from_args(args, PRESETS["features"]), args)
    if args.tsv or args.hdf5:
        _write_exports(args.out, args.tsv, args.hdf5, "raw", False)
    return code


def _write_exports(corpus: str, tsv: str | None, hdf5: str | None, view: str, fp16: bool) -> None:
    from ssrp.features.export import export_hdf5, export_lxmert_tsv

    if tsv:
        print(f"{export_lxmert_tsv(corpus, tsv, view)} rows -> {tsv}")
    if hdf5:
        print(f"{export_hdf5(corpus, hdf5, view, 'float16' if fp16 else 'float32')} images -> {hdf5}")


def _targets(args) -> list[tuple[str, str]]:
    """(format, path) of every output asked for."""
    targets = [(fmt, path) for fmt, path in (("tsv", args.tsv), ("hdf5", args.hdf5), ("npz", args.npz)) if path]
    if args.format or args.out:
        if not (args.format and args.out):
            raise ValueError("--format and --out go together")
        targets.append((args.format, args.out))
    if not targets:
        raise ValueError("give an output: --tsv FILE, --hdf5 FILE, --npz DIR, or --format FMT --out PATH")
    return targets


def _export(args) -> int:
    from ssrp.features.export import make_namer, write

    targets = _targets(args)
    name = make_namer(args.names, args.coco2014)
    options = {"name": name, "view": args.view, "feature_dtype": "float16" if args.fp16 else "float32",
               "hdf5_layout": args.hdf5_layout, "npz_transpose": args.npz_transpose}
    records = _record_source(args)
    if args.boxes and len(targets) > 1:  # the detector runs once, not once per format
        kept = list(records())
        records = lambda: iter(kept)  # noqa: E731
    for fmt, path in targets:
        count = write(records(), fmt, path, **options)
        print(f"{count} images -> {path} ({fmt})")
    return 0


def _record_source(args):
    """A function giving a fresh iterator of the records to export (one pass per output format)."""
    from ssrp.features.export import image_records

    if args.boxes or args.images:
        if args.corpus:
            raise ValueError("give a CORPUS or --images with --boxes, not both")
        return _given_boxes(args)
    if not args.corpus:
        raise ValueError("give the CORPUS to export, or --images DIR --boxes FILE --models DIR")
    return lambda: image_records(args.corpus, args.view)


def _given_boxes(args):
    from ssrp.config import with_overrides
    from ssrp.features.boxes import given_box_records, read_boxes
    from ssrp.features.config import FeaturesConfig
    from ssrp.features.engine import BUTDEngine

    if not (args.images and args.boxes and args.models):
        raise ValueError("features of given boxes need --images DIR, --boxes FILE and --models DIR")
    overrides = [o.removeprefix("features.") for o in args.overrides]
    cfg = with_overrides(FeaturesConfig(models_dir=args.models, device=args.device), overrides)
    items = read_boxes(args.boxes, args.images)
    engine = BUTDEngine.load(cfg)
    return lambda: given_box_records(items, cfg, engine=engine, progress=not args.no_progress)


def _convert(args) -> int:
    from ssrp.features.convert import convert_checkpoint

    path, layout = (args.hf, "hf") if args.hf else (args.d2_pkl, "d2")
    manifest = convert_checkpoint(path, layout, args.out, allow_unverified_pickle=args.allow_unverified_pickle)
    for src, name in ((args.objects_vocab, "objects_vocab.txt"), (args.attributes_vocab, "attributes_vocab.txt")):
        if src:
            shutil.copyfile(src, os.path.join(args.out, name))
    print(json.dumps({"weights_sha256": manifest["weights_sha256"], "conversion": manifest["conversion"]}, indent=1))
    return 0
