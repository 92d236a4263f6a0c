"""ssrp caption train | eval | predict | split: Up-Down captioning on SSRP-Visual's refined object features.

    ssrp caption train   --karpathy dataset_coco.json --features CORPUS --ssrp RUN2/checkpoint.pt --out RUN
    ssrp caption train   --karpathy dataset_coco.json --features CORPUS --baseline --out RUN_BUTD
    ssrp caption eval    --run RUN --split test --json RUN/test_metrics.json
    ssrp caption predict --run RUN --split test --out captions_test.json
    ssrp caption split   --coco COCO_ROOT --out dataset_coco.json --val 5000 --test 5000

--features is an ssrp corpus (raw view), an HDF5 file (ssrp features export --hdf5) or a BUTD/LXMERT TSV;
--ssrp a stage-2 SSRP-Visual checkpoint whose refined objects and relations join the BUTD features
(--baseline: BUTD features alone). Settings: --preset tiny, --set xe.epochs=30 --set decode.beam_size=3 ...
(see docs/caption.md). --resume continues a run from its checkpoint.
"""

from __future__ import annotations

import argparse
import os


def register(sub) -> None:
    cap = sub.add_parser("caption", help="Up-Down image captioning on SSRP-Visual features (Table 5)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = cap.add_subparsers(dest="caption_command", metavar="WHAT", required=True)

    t = csub.add_parser("train", help="cross-entropy, then SCST (CIDEr-D reward, greedy baseline)")
    t.add_argument("--karpathy", required=True, metavar="JSON", help="Karpathy split file (dataset_coco.json)")
    t.add_argument("--features", required=True, metavar="SRC", help="corpus dir, .h5 (ssrp features export) or .tsv")
    arm = t.add_mutually_exclusive_group()
    arm.add_argument("--ssrp", metavar="CKPT", help="stage-2 SSRP-Visual checkpoint.pt (refined objects + relations)")
    arm.add_argument("--baseline", action="store_true", help="plain Up-Down on the BUTD features (features.parts=('butd',))")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory")
    t.add_argument("--preset", default="paper", choices=("paper", "tiny"), help="paper settings (default) or tiny")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, if any")
    _common(t)
    t.set_defaults(func=_train)

    e = csub.add_parser("eval", help="COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr, SPICE) on a split")
    _run_args(e)
    e.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    e.add_argument("--results", metavar="OUT", help="also write the decoded captions (results JSON)")
    e.set_defaults(func=_eval)

    p = csub.add_parser("predict", help="captions of a split as the COCO results JSON [{image_id, caption}]")
    _run_args(p)
    p.add_argument("--out", required=True, metavar="JSON", help="results file to write")
    p.set_defaults(func=_predict)

    s = csub.add_parser("split", help="a Karpathy-format split file from a COCO root's caption annotations")
    s.add_argument("--coco", required=True, metavar="COCO_ROOT")
    s.add_argument("--out", required=True, metavar="JSON")
    s.add_argument("--val", type=int, default=5000, help="validation images (default 5000)")
    s.add_argument("--test", type=int, default=5000, help="test images (default 5000)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_split)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A=V",
                   help="a setting, e.g. decode.beam_size=3 (repeatable; docs/caption.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="the run directory of `ssrp caption train`")
    p.add_argument("--ckpt", default="best", metavar="best|last|PATH",
                   help="best.pt (best validation CIDEr; default), last (checkpoint.pt) or a checkpoint path")
    p.add_argument("--split", default="test", choices=("test", "val", "train", "restval"), help="default test")
    p.add_argument("--karpathy", metavar="JSON", help="another split file (default: the run's)")
    p.add_argument("--features", metavar="SRC", help="the feature source of --karpathy's images (default: the run's)")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: the run's decode.beam_size; 1 = greedy)")
    p.add_argument("--max-images", type=int, default=0, help="only the first N images of the split")
    _common(p)


def _train(args) -> int:
    import dataclasses
    import json

    from ssrp.caption.config import make_config
    from ssrp.caption.train import train

    cfg = make_config(args.preset, list(args.overrides))
    if args.baseline:
        cfg = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, parts=("butd",)))
    cfg = _runtime(cfg, args)
    summary = train(cfg, args.karpathy, args.features, args.out, ssrp=args.ssrp, resume=args.resume)
    summary.pop("history", None)
    print(json.dumps(summary, sort_keys=True))
    return 0


def _runtime(cfg, args):
    import dataclasses

    changes = {}
    if args.device:
        changes["device"] = args.device
    if args.no_progress:
        changes["progress"] = False
    return dataclasses.replace(cfg, **changes)


def _decoded(args):
    """The decoded captions of the requested split, and its images."""
    import dataclasses

    from ssrp.caption.data import load_karpathy, select_split
    from ssrp.caption.evaluate import decode_images, results_json
    from ssrp.caption.features import FeatureStore, ensure_cache
    from ssrp.caption.train import BEST, CHECKPOINT, load_model
    from ssrp.config import with_overrides
    from ssrp.devices import resolve_device

    path = {"best": BEST, "last": CHECKPOINT}.get(args.ckpt)
    path = os.path.join(args.run, path) if path else args.ckpt
    device = resolve_device(args.device or "auto")
    model, vocab, cfg, inputs = load_model(path, device)
    cfg = _runtime(with_overrides(cfg, list(args.overrides)), args)
    images = select_split(load_karpathy(args.karpathy or inputs["karpathy"]), args.split)[: args.max_images or None]
    if not images:
        raise ValueError(f"no {args.split} images in {args.karpathy or inputs['karpathy']}")
    ids = [img.image_id for img in images]
    store = FeatureStore(inputs["cache"]) if os.path.exists(inputs["cache"]) else None
    if store is None or store.missing(ids) or args.features:
        cache = ensure_cache(cfg.features, args.features or inputs["features"], inputs["ssrp"], ids, args.run,
                             cfg.device, cfg.progress)
        store = FeatureStore(cache)
    beam = args.beam or cfg.decode.beam_size
    cfg = dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, beam_size=beam))
    seqs = decode_images(model, store, ids, cfg.data.max_length, beam, cfg.decode.batch_size, device, cfg.progress)
    return results_json(ids, seqs, vocab), images, cfg


def _eval(args) -> int:
    import json

    from ssrp.caption.evaluate import coco_metrics, format_metrics, write_results

    results, images, cfg = _decoded(args)
    metrics = coco_metrics(results, images, cfg.decode.spice)
    metrics.update(split=args.split, beam_size=cfg.decode.beam_size, parts=list(cfg.features.parts))
    print(format_metrics(metrics))
    for note in metrics.get("notes", []):
        print(note)
    if args.results:
        write_results(results, args.results)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=1)
    return 0


def _predict(args) -> int:
    from ssrp.caption.evaluate import write_results

    results, _, _ = _decoded(args)
    write_results(results, args.out)
    print(f"{len(results)} captions -> {args.out}")
    return 0


def _split(args) -> int:
    import json

    from ssrp.caption.split import make_split

    print(json.dumps(make_split(args.coco, args.out, args.val, args.test, args.seed), sort_keys=True))
    return 0
