"""ssrp views: the 14 visual views (paper Table 2) of every image into a corpus (a preset of ``ssrp build``).

    ssrp views --coco COCO --out CORPUS --models MODELS                 all 14 views, raw captions, index
    ssrp views --images DIR --out CORPUS --models MODELS --views raw,hflip,rot90
    ssrp views ... --set views.jitter_isotropic=True --set features.select.max_boxes=36

The text side (back-translation) is ``ssrp translate``; the whole corpus is ``ssrp build``.
"""

from __future__ import annotations

import argparse

from ssrp.pipeline.cli import add_build_args, add_input_args, config_from_args, run_from_args
from ssrp.pipeline.config import PRESETS


def register(sub) -> None:
    p = sub.add_parser("views", help="image views: raw, hflip and their RoI-level flips, rotations, jitters (14)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p, ("coco", "images"))
    add_build_args(p, beam=False)
    p.add_argument("--views", default=None,
                   help="comma-separated view names (default: all 14; see docs/views.md)")
    p.add_argument("--seed", type=int, default=None, help="base seed of the jitter draws (default 0)")
    p.set_defaults(func=_views)


def _views(args) -> int:
    own = {"views": tuple(args.views.split(","))} if args.views else {}
    if args.seed is not None:
        own["seed"] = args.seed
    return run_from_args(config_from_args(args, PRESETS["views"], {"views": own}), args)
