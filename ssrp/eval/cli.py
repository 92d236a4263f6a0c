"""ssrp eval probe | show | retrieve | export: what the probes learned, and features for downstream tasks.

    ssrp eval probe --ckpt RUN2/checkpoint.pt --corpus VAL_CORPUS --json probe.json
    ssrp show      --ckpt RUN2/checkpoint.pt --corpus CORPUS --image 42 --coco COCO --out figs/
    ssrp retrieve  --ckpt RUN2/checkpoint.pt --corpus VAL_CORPUS --coco COCO --out retrieval/
    ssrp export    --ckpt RUN2/checkpoint.pt --stage1 RUN1/checkpoint.pt --corpus CORPUS --out feats.h5
    ssrp export hf --ckpt RUN2/checkpoint.pt --stage1 RUN1/checkpoint.pt --corpus CORPUS --out release/

--ckpt is a stage-2 checkpoint (the frozen encoder and the probes); --stage1 adds the stage-1 g_align
head for f_align. Settings: --set batch_size=64 --set rel_temperature=0.5 ... (see docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import logging

from ssrp.config import with_overrides
from ssrp.eval.config import EvalConfig

logger = logging.getLogger(__name__)

EXPORT_HELP = """ssrp export [features]: relationship-aware features of a corpus's images and captions (one HDF5 file).
ssrp export hf: the model as files others load: safetensors + config.json (SSRP-Cross: transformers'
LxmertModel.from_pretrained(DIR) loads it; every variant: ssrp.load(DIR)), the probes, and a model card.

    ssrp export    --ckpt RUN2/checkpoint.pt --stage1 RUN1/checkpoint.pt --corpus CORPUS --out feats.h5
    ssrp export hf --ckpt RUN2/checkpoint.pt --stage1 RUN1/checkpoint.pt --corpus CORPUS --out release/ \\
        --vocab MODELS/bert/vocab.txt --metrics eval/probe.json --metrics eval/retrieval/retrieval.json
"""


def _common(p: argparse.ArgumentParser, select: bool = True, corpus_required: bool = True) -> None:
    p.add_argument("--ckpt", required=True, metavar="CKPT", help="stage-2 checkpoint.pt (encoder + probes)")
    p.add_argument("--corpus", required=corpus_required, metavar="DIR", help="corpus directory")
    p.add_argument("--stage1", metavar="CKPT", help="the stage-1 checkpoint.pt the stage-2 run started from "
                   "(its g_align head gives f_align)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per forward pass (default 32)")
    if select:
        p.add_argument("--split", default=None, choices=("train", "val", "trainval"),
                       help="only the corpus images of this COCO split (default: every image of the corpus)")
        p.add_argument("--max-images", type=int, default=None, help="only the first N selected images")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A=V",
                   help="an evaluation setting, e.g. rel_temperature=0.5 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate trained probes (UUAS, Spearman, stability)", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = ev.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    p = esub.add_parser("probe", help="UUAS and Spearman of R_w per caption variant; stability of R_v and R_w")
    _common(p)
    p.add_argument("--coco", metavar="COCO_ROOT", help="COCO root (for --split)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.set_defaults(func=_probe)

    s = sub.add_parser("show", help="Fig. 3 figures of one image: relation lines, R_v heat-maps, trees")
    _common(s, select=False)
    s.add_argument("--image", type=int, metavar="ID", help="image id (default: the corpus' first image)")
    s.add_argument("--caption", type=int, metavar="ID", help="caption id (default: the image's first)")
    s.add_argument("--coco", metavar="COCO_ROOT", help="COCO root with train2017/ val2017/ (else a blank canvas)")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory for the PNG files")
    s.add_argument("--views", metavar="V1,V2,...", help="the views to draw, in this order (default: all, 2 x 7 for "
                   "the 14 views); e.g. raw,hflip,rot90,jitter0")
    s.set_defaults(func=_show)

    r = sub.add_parser("retrieve", help="Fig. 4: image-to-image retrieval by Obj. and Obj.+Rel. features")
    _common(r)
    r.add_argument("--coco", metavar="COCO_ROOT", help="COCO root (images for the grid, and --split)")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory: retrieval.png, retrieval.json")
    r.set_defaults(func=_retrieve)

    x = sub.add_parser("export", help="relationship-aware features (HDF5), or the model for others to load (hf)",
                       description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("what", nargs="?", choices=("features", "hf"), default="features",
                   help="features (default): HDF5 of relationship-aware features; hf: the model as safetensors")
    _common(x, corpus_required=False)
    x.add_argument("--coco", metavar="COCO_ROOT", help="features: COCO root (for --split)")
    x.add_argument("--out", required=True, metavar="PATH", help="features: the HDF5 file; hf: the directory")
    x.add_argument("--layout", choices=("auto", "lxmert", "ssrp"), default="auto",
                   help="hf: tensor names of model.safetensors (auto: lxmert for SSRP-Cross, else ssrp)")
    x.add_argument("--vocab", metavar="VOCAB_TXT", help="hf: the BERT vocab.txt of the corpus, copied into the release")
    x.add_argument("--metrics", action="append", default=[], metavar="JSON",
                   help="hf: `ssrp eval probe --json` output or retrieval.json, for the model card (repeatable)")
    x.set_defaults(func=_export)


def _config(args):
    import dataclasses

    cfg = with_overrides(EvalConfig(), list(args.overrides))
    changes = {}
    if args.device:
        changes["device"] = args.device
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    if getattr(args, "max_images", None) is not None:
        changes["max_images"] = args.max_images
    if args.no_progress:
        changes["progress"] = False
    return dataclasses.replace(cfg, **changes)


def _model(args):
    from ssrp.eval.inference import ProbeModel

    return ProbeModel(args.ckpt, args.corpus, _config(args), stage1=args.stage1).load()


def _images(model, args) -> list[int]:
    from ssrp.eval.select import select_images

    ids = select_images(model.reader, args.split, args.coco, model.cfg.max_images)
    args.not_held_out = _warn_if_trained_on(model, ids)
    return ids


def _warn_if_trained_on(model, ids: list[int]) -> str | None:
    from ssrp.corpus.overlap import training_overlap

    leak = training_overlap(model.trained_on, model.reader, ids)
    if leak:
        logger.warning("NOT HELD OUT: %s; these figures measure training images, not generalisation. Build the "
                       "held-out corpus with `ssrp build --split val` and evaluate on it.", leak)
    return leak


def _probe(args) -> int:
    import json
    import os

    from ssrp.eval.probe import evaluate_probe, format_table

    model = _model(args)
    result = evaluate_probe(model, _images(model, args))
    result["not_held_out"] = args.not_held_out  # None when no image evaluated was seen in training
    print(format_table(result))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


def _show(args) -> int:
    from ssrp.eval.show import show_image

    model = _model(args)
    image = args.image if args.image is not None else model.reader.image_ids()[0]
    _warn_if_trained_on(model, [image])
    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else None
    for path in show_image(model, image, args.out, args.coco, args.caption, views):
        print(path)
    return 0


def _retrieve(args) -> int:
    from ssrp.eval.retrieval import format_recall, retrieve

    model = _model(args)
    result = retrieve(model, _images(model, args), args.out, args.coco)
    print(format_recall(result["recall"], model.cfg.recall_ks))
    print(result["grid"])
    return 0


def _export(args) -> int:
    import json

    from ssrp.eval.export import export
    from ssrp.eval.release import export_hf

    if args.what == "hf":
        summary = export_hf(args.ckpt, args.out, stage1=args.stage1, corpus=args.corpus, metrics=tuple(args.metrics),
                            vocab=args.vocab, layout=args.layout)
        print(json.dumps(summary, sort_keys=True))
        return 0
    if not args.corpus:
        raise ValueError("ssrp export features needs --corpus DIR")
    model = _model(args)
    print(json.dumps(export(model, _images(model, args), args.out), sort_keys=True))
    return 0
