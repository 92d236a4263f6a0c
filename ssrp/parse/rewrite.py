"""``ssrp parse --corpus IN --out OUT``: a copy of a corpus with every text record (re-)parsed.

Image records are copied byte for byte. Text records are parsed shard by shard (every variant of a caption
lives in one text shard). The pipeline's rule for failures applies: a caption whose raw text cannot be
parsed is a dead letter and none of its variants is written; a paraphrase that cannot be parsed is dropped
and counted (``dropped:parse_failed:VARIANT``). Index records lose the dead captions; an image left with no
caption loses its index record (counted). Dead letters go to OUT/deadletters.jsonl through the shard
reports, so a rerun resumes where it stopped and still knows the dead captions of committed shards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from ssrp.config import config_identity, to_dict
from ssrp.corpus import (
    IMAGE,
    INDEX,
    TEXT,
    CorpusPlan,
    CorpusReader,
    CorpusWriter,
    IndexRecord,
    ShardSpec,
    decode,
    encode,
    parse_key,
    stable_shard,
)
from ssrp.deadletter import DeadLetter
from ssrp.fileutil import sha256_file
from ssrp.parse.config import ParseConfig
from ssrp.parse.models import read_manifest
from ssrp.parse.parser import Parser

logger = logging.getLogger(__name__)


def model_identity(cfg: ParseConfig) -> dict:
    """What identifies the parse models, independent of where they are stored (for manifests)."""
    info = read_manifest(cfg.resolved_parser_dir)
    return {
        "stanza_package": {k: v for k, v in info.to_json().items() if k != "format"},
        "resources_sha256": sha256_file(os.path.join(info.path, "resources.json")),
        "vocab_sha256": sha256_file(cfg.resolved_vocab_path),
    }


def _shards(reader: CorpusReader, kind: str) -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """(shard id, [(key, value)]) of every shard of a kind, empty shards included."""
    n = reader.num_shards(kind)
    current, items = 0, []
    for key in reader.keys(kind):
        sid = stable_shard(key, n)
        if sid < current:
            raise RuntimeError(f"{key} of shard {sid} came after shard {current}: keys are not in shard order")
        while sid != current:
            yield current, items
            current, items = current + 1, []
        items.append((key, reader.get_raw(key)))
    while current < n:
        yield current, items
        current, items = current + 1, []


def _parse_shard(parser: Parser, items: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], dict]:
    """Parse a text shard; returns its items and its report (captions in, written, dropped, dead letters)."""
    records = [decode(v) for _, v in items]
    parsed = parser(records)
    by_caption: dict[int, list] = {}
    for rec, out in zip(records, parsed, strict=True):
        by_caption.setdefault(rec.caption_id, []).append((rec, out))
    written: list[tuple[str, bytes]] = []
    dead: list[dict] = []
    dropped: dict[str, int] = {}
    for caption_id in sorted(by_caption):
        pairs = by_caption[caption_id]
        raw_dead = [o for r, o in pairs if r.variant == "raw" and isinstance(o, DeadLetter)]
        if raw_dead:
            dead.append(to_dict(raw_dead[0]))
            continue
        for rec, out in pairs:
            if isinstance(out, DeadLetter):
                name = f"dropped:parse_failed:{rec.variant}"
                dropped[name] = dropped.get(name, 0) + 1
            else:
                written.append((out.key, encode(out)))
    report = {
        "inputs": {"captions": {"inputs": len(by_caption), "written": len(by_caption) - len(dead), "counters": dropped}},
        "dead_letters": dead,
    }
    return written, report


def _dead_captions(writer: CorpusWriter, specs: list[ShardSpec]) -> set[int]:
    dead = set()
    for spec in specs:
        for letter in (writer.report(spec) or {}).get("dead_letters", []):
            dead.add(parse_key(letter["key"])[1])
    return dead


def _filter_index(items: list[tuple[str, bytes]], dead: set[int]) -> tuple[list[tuple[str, bytes]], int]:
    out, emptied = [], 0
    for key, value in items:
        rec: IndexRecord = decode(value)  # type: ignore[assignment]
        ids = np.asarray([c for c in rec.caption_ids if int(c) not in dead], dtype=np.int64)
        if len(ids) == len(rec.caption_ids):
            out.append((key, value))
        elif len(ids):
            out.append((key, encode(replace(rec, caption_ids=ids))))
        else:
            emptied += 1
    return out, emptied


def parse_corpus(in_root: str, out_root: str, cfg: ParseConfig, progress: bool = True) -> dict:
    """Write OUT: IN with every text record parsed. Returns the new manifest."""
    from tqdm import tqdm

    reader = CorpusReader(in_root)
    manifest = reader.manifest
    plan = CorpusPlan(
        num_shards={k: v["num_shards"] for k, v in manifest["kinds"].items()},
        config={**manifest.get("config", {}), "parse": config_identity(cfg)},
        models={**manifest.get("models", {}), "parse": model_identity(cfg)},
    )
    writer = CorpusWriter(out_root, plan)
    writer.open()
    specs = {kind: [s for s in plan.specs() if s.kind == kind] for kind in plan.num_shards}
    parser = None
    bar = tqdm(total=reader.count(TEXT), unit="text", desc="parse", disable=not progress)
    for sid, items in _shards(reader, TEXT) if TEXT in specs else ():
        spec = specs[TEXT][sid]
        if writer.committed(spec) is None:
            parser = parser or Parser(cfg).load()
            written, report = _parse_shard(parser, items)
            writer.commit_shard(spec, written, report)
        bar.update(len(items))
    bar.close()
    dead = _dead_captions(writer, specs.get(TEXT, []))
    emptied = 0
    for kind in (IMAGE, INDEX):
        for sid, items in _shards(reader, kind) if kind in specs else ():
            spec = specs[kind][sid]
            if kind == INDEX:
                items, n = _filter_index(items, dead)
                emptied += n
            if writer.committed(spec) is None:
                writer.commit_shard(spec, items)
    reader.close()
    logger.info("parsed corpus in %s: %d dead captions, %d images left without captions", out_root, len(dead), emptied)
    return writer.finalize({"parse": {"dead_captions": len(dead), "images_without_captions": emptied}})


__all__ = ["model_identity", "parse_corpus"]
