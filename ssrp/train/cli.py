"""ssrp train stage1|stage2: pretraining on a corpus (single process, or under torchrun for DDP).

ssrp train stage1 --variant cross --corpus CORPUS --out RUN1 --bert MODELS/bert
ssrp train stage2 --variant cross --corpus CORPUS --out RUN2 --init RUN1/checkpoint.pt
ssrp train stage1 --variant share --corpus CORPUS --out RUN --preset tiny --set optim.max_steps=20
torchrun --nproc_per_node 8 -m ssrp train stage1 --variant cross --corpus CORPUS --out RUN1 --bert MODELS/bert
"""

from __future__ import annotations

import argparse

from ssrp.train.config import make_config

_STAGES = {
    "stage1": "train the encoders on masked words/RoIs and image-text matching (Eq. 3, 4)",
    "stage2": "freeze the encoders, train the relationship probes (Eq. 5-7)",
}


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain SSRP: stage1 (encoders) or stage2 (relationship probes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = p.add_subparsers(dest="train_stage", metavar="STAGE", required=True)
    for stage, help_text in _STAGES.items():
        s = tsub.add_parser(stage, help=help_text, description=help_text)
        s.add_argument("--variant", required=True, choices=("share", "visual", "cross"), help="SSRP variant (Fig. 1)")
        s.add_argument("--corpus", required=True, metavar="DIR", help="corpus directory (ssrp build output)")
        s.add_argument("--out", required=True, metavar="DIR", help="run directory: checkpoint.pt, metrics.jsonl, tb/")
        s.add_argument("--bert", metavar="DIR", help="Hugging Face BERT directory initialising the text encoder")
        if stage == "stage2":
            s.add_argument("--init", metavar="CKPT", help="stage-1 checkpoint.pt whose encoder is frozen and probed")
        s.add_argument("--preset", default="paper", choices=("paper", "tiny"), help="paper settings or a CPU-sized run")
        s.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="A.B=V",
            help="override a setting, e.g. optim.lr=5e-5 or data.num_workers=8 (repeatable)",
        )
        s.add_argument("--val-corpus", metavar="DIR",
                       help="a held-out corpus (ssrp build --split val) validated during training: "
                            + ("loss, MLM and ITM accuracy" if stage == "stage1" else "UUAS and Spearman")
                            + "; the best model is kept as OUT/best.pt (--set best_metric=..., val_every=...)")
        s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
        s.set_defaults(func=_train)


def _train(args) -> int:
    import json

    import torch.distributed as dist

    from ssrp.train.loop import train

    cfg = make_config(args.train_stage, args.variant, args.preset, args.overrides)
    try:
        summary = train(
            cfg, args.corpus, args.out, bert=args.bert, init=getattr(args, "init", None), resume=args.resume,
            val_corpus=args.val_corpus,
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    print(json.dumps(summary, sort_keys=True, default=str))
    return 0
