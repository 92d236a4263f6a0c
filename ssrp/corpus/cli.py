"""ssrp corpus verify|stats|show."""

from __future__ import annotations

import json
import sys

from ssrp.corpus import format_stats, show, stats, verify


def register(sub) -> None:
    p = sub.add_parser("corpus", help="verify, count and show the records of a corpus")
    csub = p.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    v = csub.add_parser("verify", help="checksums, counts and schema of every record; exit 1 on any problem")
    v.add_argument("dir")
    v.add_argument("--quick", action="store_true", help="checksums and sizes only, no record decoding")
    v.set_defaults(func=_verify)
    s = csub.add_parser("stats", help="records per kind, per image view and per text variant")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_stats)
    sh = csub.add_parser("show", help="print one record, e.g. image/000000000042/raw")
    sh.add_argument("dir")
    sh.add_argument("key")
    sh.set_defaults(func=_show)


def _verify(args) -> int:

    report = verify(args.dir, deep=not args.quick)
    for problem in report.problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"{'OK' if report.ok else 'FAILED'}: {report.shards_checked} shards, {report.records_checked} records checked")
    return 0 if report.ok else 1


def _stats(args) -> int:

    result = stats(args.dir)
    print(json.dumps(result, indent=1) if args.json else format_stats(result))
    return 0


def _show(args) -> int:

    try:
        print(show(args.dir, args.key))
    except KeyError:
        print(f"no record {args.key!r} in {args.dir}", file=sys.stderr)
        return 1
    return 0
