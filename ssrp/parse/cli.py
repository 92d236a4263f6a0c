"""ssrp parse: Stanza parses, WordPiece alignment and tree distances of one sentence, or of a corpus's captions.

    ssrp parse --text "A man rides a horse on the beach." --models models
    ssrp parse --corpus corpus --out corpus-parsed --models models [--set parse.multi_sentence=virtual_root]

``--corpus`` is a preset of ``ssrp build`` (input: that corpus; stages: parse): image records are copied, every
text variant is parsed again, and the rules of the builder apply (dead letters, counts, resume).
"""

from __future__ import annotations

import argparse
import json

from ssrp.config import with_settings
from ssrp.deadletter import DeadLetter
from ssrp.parse.config import ParseConfig
from ssrp.parse.stage import Parser
from ssrp.pipeline.cli import add_build_args, config_from_args, run_from_args, stage_settings


def register(sub) -> None:
    p = sub.add_parser(
        "parse",
        help="parse captions: one sentence (--text), or a corpus's text records into a new corpus (--corpus)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="parse this sentence and print its parse, pieces and distance matrix")
    what.add_argument("--corpus", metavar="IN", help="corpus whose text records to parse (written to --out)")
    add_build_args(p, beam=False, required=False)
    p.add_argument("--json", action="store_true", help="with --text: print JSON")
    p.set_defaults(func=_parse)


def _parse(args) -> int:
    if args.text is not None:
        return _parse_text(_config(args), args.text, args.json)
    if not args.out or not args.models:
        raise ValueError("--corpus needs --out (the parsed copy is written to a new directory) and --models")
    return run_from_args(config_from_args(args, ("parse",)), args)


def _config(args) -> ParseConfig:
    """The parse settings of --text: --set parse.KEY=VALUE, typed."""
    models = args.models or "models"
    return with_settings(ParseConfig(models_dir=models, device=args.device), stage_settings(args.settings)["parse"])


def _parse_text(cfg, text: str, as_json: bool) -> int:
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
