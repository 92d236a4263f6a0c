"""ssrp parse: Stanza parses, WordPiece alignment and tree distances, outside the Beam pipeline.

    ssrp parse --text "A man rides a horse on the beach." --models models
    ssrp parse --corpus corpus --out corpus-parsed --models models [--set multi_sentence=virtual_root]
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "parse",
        help="parse captions: a corpus's text records, or one sentence (--text)",
        description=__doc__,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="parse this sentence and print its parse, pieces and distance matrix")
    what.add_argument("--corpus", metavar="IN", help="corpus whose text records to parse (written to --out)")
    p.add_argument("--out", metavar="OUT", help="output corpus (with --corpus)")
    p.add_argument("--models", default="models", metavar="DIR", help="models directory (parser/, bert/vocab.txt)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's, auto)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a ParseConfig setting, e.g. --set max_tokens=36 (repeatable)")
    p.add_argument("--json", action="store_true", help="with --text: print JSON")
    p.set_defaults(func=_parse)


def _config(args):
    from ssrp.config import with_overrides
    from ssrp.parse.config import ParseConfig

    cfg = with_overrides(ParseConfig(models_dir=args.models), args.set)
    if args.device:
        cfg = with_overrides(cfg, [f"device={args.device}"])
    return cfg


def _parse(args) -> int:
    cfg = _config(args)
    if args.text is not None:
        return _parse_text(cfg, args.text, args.json)
    if not args.out:
        raise ValueError("--corpus needs --out: the parsed copy is written to a new directory")
    from ssrp.parse.rewrite import parse_corpus

    manifest = parse_corpus(args.corpus, args.out, cfg, progress=not args.quiet)
    summary = manifest.get("summary", {}).get("captions", {})
    print(f"{args.out}: {manifest['kinds'].get('text', {}).get('records', 0)} text records; "
          f"captions in {summary.get('inputs', 0)}, written {summary.get('written', 0)}, "
          f"dead {summary.get('dead_letters', 0)}")
    return 0


def _parse_text(cfg, text: str, as_json: bool) -> int:
    from ssrp.deadletter import DeadLetter
    from ssrp.parse.parser import Parser

    parser = Parser(cfg).load()
    rec = parser.parse_text(text)
    if isinstance(rec, DeadLetter):
        print(f"cannot parse: {rec.reason}: {rec.detail}")
        return 1
    pieces = parser.pieces(rec.input_ids)
    if as_json:
        print(json.dumps({
            "words": rec.words, "upos": rec.upos, "deprels": rec.deprels, "heads": rec.heads.tolist(),
            "pieces": pieces, "input_ids": rec.input_ids.tolist(), "piece_word": rec.piece_word.tolist(),
            "tree_dist": rec.tree_dist.tolist(), "meta": rec.meta,
        }, ensure_ascii=False))
        return 0
    print(format_parse(rec, pieces))
    return 0


def format_parse(rec, pieces: list[str]) -> str:
    """A CoNLL-like table of the words with their pieces, then the tree-distance matrix."""
    lines = [f"{'id':>3}  {'word':<16}{'upos':<7}{'head':>4}  {'deprel':<12}pieces"]
    for i, word in enumerate(rec.words):
        own = [p for p, w in zip(pieces, rec.piece_word, strict=True) if w == i]
        lines.append(f"{i + 1:>3}  {word:<16}{rec.upos[i]:<7}{int(rec.heads[i]):>4}  {rec.deprels[i]:<12}{' '.join(own)}")
    lines.append(f"tokens ({len(pieces)}): {' '.join(pieces)}")
    if rec.meta.get("parse"):
        lines.append(f"notes: {rec.meta['parse']}")
    lines.append("tree distances:")
    lines.append("     " + "".join(f"{j + 1:>4}" for j in range(len(rec.words))))
    for i, row in enumerate(rec.tree_dist):
        lines.append(f"{i + 1:>4} " + "".join(f"{int(d):>4}" for d in row))
    return "\n".join(lines)
