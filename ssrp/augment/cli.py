"""ssrp augment views: the 14 visual views (paper Table 2) of every image into a corpus.

    ssrp augment views --coco COCO --out CORPUS --models MODELS                 all 14 views + index records
    ssrp augment views --images DIR --out CORPUS --models MODELS --views raw,hflip,rot90
    ssrp augment views ... --set views.jitter_isotropic=True --set select.max_boxes=36

The text side (back-translation) is `ssrp translate`.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("augment", help="augment the corpus: `views` for images (see its --help)")
    asub = p.add_subparsers(dest="augment_command", metavar="ACTION", required=True)
    register_views(asub)


def register_views(asub) -> argparse.ArgumentParser:
    """Add the `views` action (the image part of augmentation) to `ssrp augment`'s subparsers."""
    from ssrp.features.cli import add_input_args

    v = asub.add_parser("views", help="image views: raw, hflip and their RoI-level flips, rotations, jitters (14)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(v)
    v.add_argument("--views", default=None,
                   help="comma-separated view names (default: all 14; see docs/augment-views.md)")
    v.add_argument("--seed", type=int, default=0, help="base seed of the jitter draws (default 0)")
    v.set_defaults(func=_views)
    return v


def views_config(args):
    from ssrp.augment.views import ALL_VIEWS, ViewsConfig
    from ssrp.config import with_overrides
    from ssrp.features.cli import features_config

    views = tuple(args.views.split(",")) if args.views else ALL_VIEWS
    cfg = ViewsConfig(features=features_config(args), views=views, seed=args.seed)
    own = [o[len("views."):] for o in args.overrides if o.startswith("views.")]
    return with_overrides(cfg, own)


def _views(args) -> int:
    from ssrp.augment.views import ViewAugmenter
    from ssrp.config import to_dict
    from ssrp.features.cli import output_config, run_stage

    cfg = views_config(args)
    config = {"features": output_config(cfg.features),
              "views": {k: v for k, v in to_dict(cfg).items() if k != "features"}}
    return run_stage(args, ViewAugmenter(cfg), cfg.features, config, views=len(cfg.views))
