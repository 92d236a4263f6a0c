"""ssrp translate: back-translate captions (En->De->En, En->Ru->En) without Beam.

    ssrp models tiny models/                      # or: ssrp models fetch translate --to models/
    ssrp translate --coco coco/ --models models/ --out out/captions.jsonl
    ssrp translate --captions my.txt --models models/ --out out.jsonl --set translate.forward_topk=20 --limit 100

Writes one JSON line per TextRecord (raw and paraphrases) to --out and one per dead letter to
OUT.deadletter.jsonl; prints the counts (records per variant, drops and dead letters by reason).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from tqdm import tqdm

from ssrp.config import with_settings
from ssrp.corpus.records import TextRecord
from ssrp.deadletter import is_dead
from ssrp.pipeline.cli import stage_settings
from ssrp.pipeline.inputs import captions_of, read_annotation_file, read_coco
from ssrp.translate.config import TranslateConfig
from ssrp.translate.stage import BackTranslator, count_outcomes


def register(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="paraphrase captions by back-translation through German and Russian (fairseq WMT19)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--coco", metavar="DIR", help="an MSCOCO 2017 directory (annotations/captions_*2017.json)")
    src.add_argument(
        "--captions", metavar="FILE", help="a COCO captions .json, a .jsonl of {caption_id, image_id, caption}, "
        "or a text file with one caption per line (caption_id = line number)"
    )  # fmt: skip
    p.add_argument("--split", choices=("train", "val", "trainval"), default="train",
                   help="COCO split(s) (default train)")
    p.add_argument("--models", required=True, metavar="DIR", help="models directory holding translate/")
    p.add_argument("--out", required=True, metavar="FILE", help="output .jsonl")
    p.add_argument("--pivots", nargs="+", default=None, metavar="LANG", help="pivot languages (default: de ru)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N captions")
    p.add_argument("--chunk", type=int, default=4096, metavar="N", help="captions per stage call (default 4096)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default 0)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--trust-sha256", action="append", default=[], metavar="HEX",
        help="allow this model.pt digest to be fully unpickled (a checkpoint you verified yourself); repeatable",
    )  # fmt: skip
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="translate.KEY=VALUE",
                   help="any TranslateConfig setting, e.g. --set translate.forward_topk=20")
    p.set_defaults(func=_translate)


def _config(args) -> TranslateConfig:
    cfg = with_settings(TranslateConfig(models_dir=args.models), stage_settings(args.settings)["translate"])
    changes: dict = {}
    if args.pivots:
        changes["pivots"] = tuple(args.pivots)
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.device:
        changes["device"] = args.device
    if args.trust_sha256:
        changes["trusted_sha256"] = cfg.trusted_sha256 + tuple(d.lower() for d in args.trust_sha256)
    return dataclasses.replace(cfg, **changes)


def _translate(args) -> int:
    if args.chunk < 1:
        raise ValueError(f"--chunk {args.chunk} must be >= 1")
    cfg = _config(args)
    items = read_captions(args)
    if args.limit is not None:
        items = items[: args.limit]
    translator = BackTranslator(cfg).load()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    outputs: list = []
    start = time.perf_counter()
    with (
        open(args.out, "w", encoding="utf-8") as out,
        open(args.out + ".deadletter.jsonl", "w", encoding="utf-8") as dead,
    ):
        with tqdm(total=len(items), unit="caption", desc="translate", file=sys.stderr) as bar:
            for i in range(0, len(items), args.chunk):
                for result in translator(items[i : i + args.chunk]):
                    if is_dead(result):
                        dead.write(result.to_json() + "\n")
                    else:
                        out.writelines(_record_json(r) + "\n" for r in result)
                    outputs.append(_summary_only(result))
                bar.update(min(args.chunk, len(items) - i))
    seconds = time.perf_counter() - start
    summary = count_outcomes(outputs)
    summary["seconds"] = round(seconds, 2)
    summary["captions_per_s"] = round(len(items) / seconds, 2) if seconds > 0 else None
    print(json.dumps(summary, indent=1))
    return 0


def _summary_only(result):
    """Keep what count_outcomes needs, not every record's text (a full COCO run has 1.8M records)."""
    if is_dead(result):
        return result
    raw = result[0]
    return [
        TextRecord(raw.caption_id, raw.image_id, r.variant, "", meta=r.meta if r.variant == "raw" else {})
        for r in result
    ]


def _record_json(record) -> str:
    return json.dumps(
        {
            "key": record.key,
            "caption_id": record.caption_id,
            "image_id": record.image_id,
            "variant": record.variant,
            "text": record.text,
            "pivot": record.pivot,
            "meta": record.meta,
        },
        ensure_ascii=False,
    )


# --------------------------------------------------------------------------------------------
# Inputs.


def read_captions(args) -> list[tuple[int, int, str | bytes]]:
    if args.coco:
        return [(c.caption_id, c.image_id, c.text) for c in read_coco(args.coco, args.split).captions]
    path = args.captions
    if path.endswith(".json"):
        doc, _ = read_annotation_file(path)
        return [(c.caption_id, c.image_id, c.text) for c in captions_of(doc["annotations"], known=None)[0]]
    if path.endswith(".jsonl"):
        return _jsonl(path)
    return _text_lines(path)


def _jsonl(path: str) -> list[tuple[int, int, str]]:
    items = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                items.append(
                    (row.get("caption_id", row.get("id")), row.get("image_id", 0), row.get("caption", row.get("text")))
                )
            except AttributeError:
                raise ValueError(f"{path}:{n}: expected a JSON object per line") from None
    return items


def _text_lines(path: str) -> list[tuple[int, int, bytes]]:
    """One caption per line, kept as bytes: the stage reports invalid UTF-8 per caption."""
    with open(path, "rb") as fh:
        return [(n, 0, line.rstrip(b"\r\n")) for n, line in enumerate(fh, 1)]
