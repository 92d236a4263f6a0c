"""Image stage -> corpus, without Beam: the loop behind ``ssrp features`` and ``ssrp augment views``.

Decoding runs in DataLoader worker processes, the stage on the main process (the GPU), encoding
and spooling on a writer thread; shards are committed at the end and the manifest written last.
Dead letters go to ``OUT/_deadletters/<stage>.jsonl``, one JSON object a line.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ssrp.corpus import CorpusPlan, IndexRecord, Record
from ssrp.deadletter import DeadLetter
from ssrp.features.config import DecodeConfig
from ssrp.features.loader import ImageItem, image_batches
from ssrp.features.write import SpoolingCorpusWriter

logger = logging.getLogger(__name__)

_RECORD_BYTES = 36 * 2048 * 2 + 1024
_TARGET_SHARD_BYTES = 256 << 20


@dataclass
class RunSummary:
    images: int = 0
    records: int = 0
    dead_letters: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    written_ids: set[int] = field(default_factory=set)
    manifest: dict[str, Any] = field(default_factory=dict)


def auto_shards(n_images: int, views: int) -> int:
    return max(1, math.ceil(n_images * views * _RECORD_BYTES / _TARGET_SHARD_BYTES))


def build_image_corpus(out: str, items: Sequence[ImageItem], stage: Callable[[list], list], *,
                       decode: DecodeConfig, config: dict[str, Any], models: dict[str, Any],
                       index: Sequence[IndexRecord] = (), image_shards: int = 1, batch_size: int = 8,
                       workers: int = 2, progress: bool = True) -> RunSummary:
    """Run ``stage`` (an Extractor or ViewAugmenter, loaded) over ``items`` and write the corpus ``out``."""
    from tqdm import tqdm

    kinds = {"image": image_shards, **({"index": 1} if index else {})}
    plan = CorpusPlan(kinds, config=config, models=models)
    summary = RunSummary()
    done = _complete_manifest(out)
    if done is not None and done.get("config_hash") == plan.config_hash:
        logger.info("%s is already complete with this config; nothing to do", out)
        summary.manifest = done
        return summary
    writer = SpoolingCorpusWriter(out, plan)
    dead_path = os.path.join(out, "_deadletters", f"{getattr(stage, 'stage', 'image')}.jsonl")
    os.makedirs(os.path.dirname(dead_path), exist_ok=True)
    try:
        with open(dead_path, "w", encoding="utf-8") as dead_fh, tqdm(total=len(items), unit="img",
                                                                       disable=not progress) as bar:
            for batch in image_batches(items, decode, batch_size, workers):
                for result in stage(batch):
                    _route(result, writer, dead_fh, summary)
                summary.images += len(batch)
                bar.update(len(batch))
        kept_index = [r for r in index if r.image_id in summary.written_ids]  # no index entry without features
        writer.put(kept_index)
        summary.records += len(kept_index)
        summary.manifest = writer.close({"dead_letters": summary.dead_letters})
    except BaseException:
        writer.abort()
        raise
    return summary


def _complete_manifest(out: str) -> dict | None:
    import json

    path = os.path.join(out, "manifest.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _route(result: Record | list[Record] | DeadLetter, writer: SpoolingCorpusWriter, dead_fh,
           summary: RunSummary) -> None:
    if isinstance(result, DeadLetter):
        dead_fh.write(result.to_json() + "\n")
        summary.dead_letters += 1
        summary.by_reason[result.reason] = summary.by_reason.get(result.reason, 0) + 1
        return
    records = result if isinstance(result, list) else [result]
    writer.put(records)
    summary.records += len(records)
    summary.written_ids.update(r.image_id for r in records)
