"""ssrp models fetch|tiny|random|list."""

from __future__ import annotations

import json

from ssrp.models.hub import build_tiny, fetch, source
from ssrp.models.registry import SOURCES


def register(sub) -> None:
    p = sub.add_parser("models", help="fetch official weights (checksummed) or build tiny offline models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    f = msub.add_parser("fetch", help="download official weights into DIR/NAME and check their sha256")
    f.add_argument("names", nargs="+", metavar="NAME", help="detector, translation, parser, bert, or all")
    f.add_argument("--to", required=True, metavar="DIR", help="models directory")
    f.add_argument("--trust-existing", action="append", default=[], metavar="PATH",
                   help="use this file already on disk although it has no published checksum and ssrp did not "
                        "download it (a file you fetched yourself); repeatable")
    f.set_defaults(func=_fetch)
    t = msub.add_parser("tiny", help="build small random-weight models in the real formats (offline)")
    t.add_argument("out", help="models directory to write")
    t.add_argument("--only", nargs="*", default=None, help="build only these")
    t.set_defaults(func=_tiny)
    r = msub.add_parser("random", help="random-weight models in the real formats at a chosen size (offline): "
                                       "--size full for speed and memory figures at the published sizes")
    r.add_argument("out", help="models directory to write")
    r.add_argument("--size", choices=("full", "tiny"), default="full",
                   help="full: the published architectures and vocabulary sizes (~5.3 GB); tiny: as `models tiny`")
    r.add_argument("--only", nargs="*", default=None, help="build only these (features, translate, parse, bert)")
    r.set_defaults(func=_random)
    ls = msub.add_parser("list", help="the models that can be fetched, with their files and checksums")
    ls.set_defaults(func=_list)


def _fetch(args) -> int:

    names = sorted(SOURCES) if args.names == ["all"] else args.names
    for name in names:
        print(f"{name}: {fetch(name, args.to, trust_existing=args.trust_existing)}")
    return 0


def _tiny(args) -> int:

    print(json.dumps(build_tiny(args.out, args.only), indent=1, default=str))
    return 0


def _random(args) -> int:
    from ssrp.models.fullsize import build_full_size  # imports torch, fairseq and stanza as each model is built

    built = build_full_size(args.out, args.only) if args.size == "full" else build_tiny(args.out, args.only)
    print(json.dumps(built, indent=1, default=str))
    return 0


def _list(args) -> int:

    for name in sorted(SOURCES):
        src = source(name)
        print(f"{name}: {src.description}")
        for f in src.files:
            pin = f"sha256={f.sha256}" if f.sha256 else f"md5={f.md5}" if f.md5 else "no published checksum"
            print(f"  {f.dest}  {f.url}  {pin}")
    return 0
