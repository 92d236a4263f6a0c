"""ssrp features: BUTD region features of images into a corpus (a preset of ``ssrp build``); export; convert.

    ssrp features --coco COCO --out CORPUS --models MODELS      raw-view records, raw captions, index
    ssrp features --images DIR --out CORPUS --models MODELS     raw-view records of a folder
    ssrp features export CORPUS --tsv OUT.tsv --hdf5 OUT.h5     LXMERT TSV / HDF5 from a corpus
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


def register(sub) -> None:
    p = sub.add_parser("features", help="BUTD Faster R-CNN region features into a corpus (a build preset)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p, ("coco", "images"), required=False)
    add_build_args(p, beam=False, required=False)
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
