"""ssrp sample coco OUT --images N --seed S."""

from __future__ import annotations

from ssrp.sample import SampleConfig, write_sample


def register(sub) -> None:
    p = sub.add_parser("sample", help="write a small synthetic dataset in a real dataset's layout")
    ssub = p.add_subparsers(dest="sample_command", metavar="DATASET", required=True)
    c = ssub.add_parser("coco", help="a mini-COCO in the MSCOCO 2017 layout (JPEG images, five captions each)")
    c.add_argument("out", help="output directory")
    c.add_argument("--images", type=int, default=8, help="train2017 images (default 8)")
    c.add_argument("--val-images", type=int, default=None, help="val2017 images (default: images // 4, at least 1)")
    c.add_argument("--captions", type=int, default=5, help="captions per image (default 5, as in COCO)")
    c.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
    c.set_defaults(func=_coco)


def _coco(args) -> int:

    val = max(1, args.images // 4) if args.val_images is None else args.val_images
    cfg = SampleConfig(images=args.images, val_images=val, captions_per_image=args.captions, seed=args.seed)
    counts = write_sample(args.out, cfg)
    for split, c in counts.items():
        print(f"{split}2017: {c['images']} images, {c['captions']} captions")
    return 0
