"""ssrp finetune | predict | score: NLVR2, VQA and GQA with SSRP's relationship-aware features (Tables 3, 4).

ssrp finetune vqa --data DATA/vqa --corpus COCO_CORPUS --bert MODELS/bert \\
    --stage1 RUN1/checkpoint.pt --stage2 RUN2/checkpoint.pt --out FT [--features f_align+rv+rw]
ssrp finetune nlvr2 --data DATA/nlvr2 --tsv train_obj36.tsv --tsv valid_obj36.tsv ... --out FT
torchrun --nproc_per_node 4 -m ssrp finetune gqa ...                 # DDP, one process per GPU
ssrp predict --run FT --split test                                   # FT/test_predict.json (submission file)
ssrp score vqa --data DATA/vqa --split minival --pred FT/minival_predict.json
ssrp finetune sample vqa --corpus CORPUS --out DATA/vqa              # a tiny synthetic task set (demo, tests)

Defaults are LXMERT's fine-tuning settings per task (docs/finetune.md); --preset tiny for CPU-sized runs.
"""

from __future__ import annotations

import argparse
import json

_TASKS = {
    "vqa": "VQA v2: answer classification over the answer vocabulary (soft scores, BCE)",
    "gqa": "GQA: answer classification over the answer vocabulary",
    "nlvr2": "NLVR2: is the statement true of the image pair?",
}


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a pretrained SSRP on VQA, GQA or NLVR2", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="finetune_task", metavar="TASK", required=True)
    for task, help_text in _TASKS.items():
        t = tsub.add_parser(task, help=help_text, description=help_text)
        _train_args(t)
        t.set_defaults(func=_finetune, task=task)
    s = tsub.add_parser("sample", help="write a tiny synthetic task set over a corpus's images (LXMERT's formats)")
    s.add_argument("task", choices=tuple(_TASKS))
    s.add_argument("--corpus", required=True, metavar="DIR", help="corpus whose raw image records are asked about")
    s.add_argument("--out", required=True, metavar="DIR", help="task directory to write")
    s.add_argument("--per-image", type=int, default=6, help="questions (NLVR2: pairs) per image (default 6)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_sample)

    pr = sub.add_parser("predict", help="submission file of a fine-tuned model on one split (and its score)")
    pr.add_argument("--run", required=True, metavar="RUN|CKPT", help="fine-tuning run directory (its best.pt) or a checkpoint")
    pr.add_argument("--split", required=True, help="split to predict, e.g. test, minival, testdev, submit, valid")
    pr.add_argument("--out", metavar="FILE", help="submission file (default RUN/<split>_predict.json|csv)")
    pr.add_argument("--data", metavar="DIR", help="task directory (default: the run's)")
    _image_args(pr, required=False)
    pr.add_argument("--bert", metavar="DIR", help="BERT directory with vocab.txt (default: the run's)")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    pr.add_argument("--batch-size", type=int, default=None, help="examples per forward pass")
    pr.set_defaults(func=_predict)

    sc = sub.add_parser("score", help="official metrics of a submission file on a labelled split")
    sc.add_argument("task", choices=tuple(_TASKS))
    sc.add_argument("--data", required=True, metavar="DIR", help="task directory")
    sc.add_argument("--split", required=True, help="labelled split, e.g. minival, testdev, valid")
    sc.add_argument("--pred", required=True, metavar="FILE", help="submission file (JSON for VQA/GQA, CSV for NLVR2)")
    sc.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    sc.set_defaults(func=_score)


def _image_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--corpus", metavar="DIR", help="ssrp corpus over the task's images (its raw view)")
    g.add_argument("--tsv", action="append", metavar="FILE", help="LXMERT obj36 TSV file (repeatable)")


def _train_args(t: argparse.ArgumentParser) -> None:
    t.add_argument("--data", required=True, metavar="DIR", help="task directory: <split>.json, trainval_ans2label.json")
    _image_args(t, required=True)
    t.add_argument("--bert", required=True, metavar="DIR", help="the BERT directory of pretraining (its vocab.txt)")
    t.add_argument("--stage1", metavar="CKPT", help="stage-1 checkpoint.pt (encoder, g_align)")
    t.add_argument("--stage2", metavar="CKPT", help="stage-2 checkpoint.pt started from --stage1 (probes)")
    t.add_argument("--out", required=True, metavar="DIR", help="run directory: checkpoint.pt, best.pt, metrics.jsonl")
    t.add_argument("--features", choices=("f_align", "f_align+rv", "f_align+rw", "f_align+rv+rw"),
                   help="feature set (Table 3's columns; default f_align+rv+rw)")
    t.add_argument("--train", metavar="SPLITS", help="training splits, comma separated (default: LXMERT's)")
    t.add_argument("--valid", metavar="SPLIT", help="validation split ('' for none; default: LXMERT's)")
    t.add_argument("--preset", default="paper", choices=("paper", "tiny"), help="LXMERT's settings or a CPU-sized run")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=V",
                   help="override a setting, e.g. optim.lr=1e-5 or head.fusion=projection (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")


def _finetune(args) -> int:
    import torch.distributed as dist

    from ssrp.finetune.config import make_config
    from ssrp.finetune.loop import Inputs, finetune

    overrides = list(args.overrides)
    if args.features:
        overrides.insert(0, f"head.features={args.features}")
    if args.train:
        overrides.insert(0, f"data.train={tuple(s for s in args.train.split(',') if s)!r}")
    if args.valid is not None:
        overrides.insert(0, f"data.valid={args.valid!r}")
    cfg = make_config(args.task, args.preset, overrides)
    inputs = Inputs(data=args.data, bert=args.bert, stage1=args.stage1, stage2=args.stage2, corpus=args.corpus,
                    tsv=tuple(args.tsv or ()))
    try:
        summary = finetune(cfg, inputs, args.out, resume=args.resume)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    print(json.dumps(summary, sort_keys=True, default=str))
    return 0


def _sample(args) -> int:
    from ssrp.finetune.sample import write_task_sample

    print(json.dumps(write_task_sample(args.task, args.corpus, args.out, per_image=args.per_image, seed=args.seed),
                     sort_keys=True))
    return 0


def _predict(args) -> int:
    from ssrp.finetune.predict import predict_split

    summary = predict_split(args.run, args.split, out=args.out, data=args.data, corpus=args.corpus, tsv=args.tsv,
                            bert=args.bert, device=args.device, batch_size=args.batch_size)
    print(json.dumps(summary, sort_keys=True))
    return 0


def _score(args) -> int:
    import os

    from ssrp.finetune.predict import score_file

    result = score_file(args.task, args.data, args.split, args.pred)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1, sort_keys=True)
    print(json.dumps(result, sort_keys=True))
    return 0
