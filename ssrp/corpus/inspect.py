"""verify, stats and show: looking at a corpus from the outside."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import lmdb
import numpy as np

from ssrp.config import config_hash
from ssrp.corpus.reader import CorpusError, CorpusReader, load_manifest
from ssrp.corpus.records import IMAGE, INDEX, TEXT, RecordError, decode, parse_key, stable_shard, text_key
from ssrp.corpus.shards import acquire_shard, file_sha256, release_shard


@dataclass
class VerifyReport:
    root: str
    problems: list[str] = field(default_factory=list)
    shards_checked: int = 0
    records_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(root: str, deep: bool = True) -> VerifyReport:
    """Check the manifest's own sums and config hash, every shard's size and sha256, and (``deep``) every
    record's key, crc32 and schema and the per-view/variant counts; collect every problem found."""
    report = VerifyReport(root)
    try:
        manifest = load_manifest(root)
    except CorpusError as err:
        report.problems.append(str(err))
        return report
    report.problems += _manifest_problems(manifest)
    caption_ids: set[int] = set()
    index_caption_ids: set[int] = set()
    for kind, info in manifest.get("kinds", {}).items():
        shards = info.get("shards", [])
        if len(shards) != info.get("num_shards"):
            report.problems.append(f"{kind}: manifest lists {len(shards)} shards, expects {info.get('num_shards')}")
        for shard in shards:
            report.shards_checked += 1
            problems = _verify_shard(root, shard, kind, deep, caption_ids, index_caption_ids, report)
            report.problems += [f"{shard['name']}: {p}" for p in problems]
    missing = index_caption_ids - caption_ids
    if deep and TEXT in manifest.get("kinds", {}) and missing:
        report.problems.append(f"index: {len(missing)} caption ids have no text record, e.g. {sorted(missing)[:3]}")
    return report


def _manifest_problems(manifest: dict) -> list[str]:
    """The manifest against itself: its config hash against its config, each kind's totals against its shards."""
    problems = []
    expected = config_hash({k: manifest.get(k) for k in ("config", "num_shards", "models")})
    if manifest.get("config_hash") != expected:
        problems.append(f"manifest: config_hash {manifest.get('config_hash')} does not match its config ({expected})")
    for kind, info in manifest.get("kinds", {}).items():
        shards = info.get("shards", [])
        records = sum(s.get("records", 0) for s in shards)
        if info.get("records") != records:
            problems.append(f"{kind}: manifest says {info.get('records')} records, its shards hold {records}")
        counts: Counter[str] = Counter()
        for s in shards:
            counts.update(s.get("counts", {}))
        if dict(info.get("counts", {})) != dict(counts):
            problems.append(f"{kind}: manifest counts {info.get('counts')} differ from its shards' {dict(sorted(counts.items()))}")
    return problems


def _verify_shard(root, shard, kind, deep, caption_ids, index_caption_ids, report) -> list[str]:
    path = os.path.join(root, shard["name"])
    if not os.path.exists(path):
        return ["missing file"]
    digest, size = file_sha256(path)
    if size != shard["bytes"]:
        return [f"size {size} bytes, manifest says {shard['bytes']} (truncated or replaced)"]
    if digest != shard["sha256"]:
        return [f"sha256 {digest[:12]}… does not match the manifest's {shard['sha256'][:12]}… (corrupted)"]
    if not deep:
        return []
    problems: list[str] = []
    count = 0
    subtypes: Counter[str] = Counter()
    try:
        env = acquire_shard(path)
    except lmdb.Error as err:
        return [f"not a readable LMDB file: {err}"]
    try:
        with env.begin() as txn:
            for raw_key, value in txn.cursor():
                count += 1
                key = raw_key.decode("ascii", "replace")
                new = _verify_record(key, value, kind, shard, caption_ids, index_caption_ids)
                if not new:
                    subtypes[parse_key(key)[2] or kind] += 1
                problems += new
                if len(problems) > 20:
                    problems.append("too many problems; stopping this shard")
                    break
    finally:
        release_shard(path)
    report.records_checked += count
    if count != shard["records"]:
        problems.append(f"{count} records, manifest says {shard['records']}")
    elif dict(subtypes) != dict(shard.get("counts", {})):
        problems.append(f"records per view/variant {dict(sorted(subtypes.items()))}, manifest says {shard.get('counts')}")
    return problems


def _verify_record(key, value, kind, shard, caption_ids, index_caption_ids) -> list[str]:
    try:
        key_kind, ident, _ = parse_key(key)
        if key_kind != kind or stable_shard(key, shard["num_shards"]) != shard["shard_id"]:
            return [f"{key}: key does not belong in this shard"]
        record = decode(value, check_crc=True)
    except RecordError as err:
        return [f"{key}: {err}"]
    if record.key != key:
        return [f"{key}: record says its key is {record.key}"]
    if kind == TEXT:
        caption_ids.add(record.caption_id)
    elif kind == INDEX:
        index_caption_ids.update(int(c) for c in record.caption_ids)
    return []


def stats(root: str) -> dict:
    """Counts per kind, per image view and per text variant (from the manifest)."""
    manifest = load_manifest(root)
    kinds = manifest.get("kinds", {})
    images = kinds.get(INDEX, {}).get("records", 0)
    out = {
        "root": root,
        "config_hash": manifest.get("config_hash"),
        "records": {k: v.get("records", 0) for k, v in kinds.items()},
        "shards": {k: v.get("num_shards", 0) for k, v in kinds.items()},
        "images": images,
        "image_views": kinds.get(IMAGE, {}).get("counts", {}),
        "text_variants": kinds.get(TEXT, {}).get("counts", {}),
        "bytes": sum(s["bytes"] for v in kinds.values() for s in v.get("shards", [])),
    }
    if images:
        out["views_per_image"] = round(kinds.get(IMAGE, {}).get("records", 0) / images, 3)
    for name in ("summary", "models"):
        if name in manifest:
            out[name] = manifest[name]
    return out


def format_stats(s: dict) -> str:
    lines = [f"corpus {s['root']}  (config {s['config_hash']}, {s['bytes'] / 1e6:.1f} MB)"]
    for kind, n in s["records"].items():
        lines.append(f"  {kind:6s} {n:>10,d} records in {s['shards'][kind]} shards")
    if s["image_views"]:
        lines.append(f"  image views ({s.get('views_per_image', 0)} per image):")
        lines += [f"    {v:16s} {n:>10,d}" for v, n in s["image_views"].items()]
    if s["text_variants"]:
        lines.append("  text variants:")
        lines += [f"    {v:16s} {n:>10,d}" for v, n in s["text_variants"].items()]
    return "\n".join(lines)


def show(root: str, key: str) -> str:
    """A readable dump of one record: scalars, and shape, dtype and a summary of each array."""
    with CorpusReader(root) as reader:
        record = reader.get(key)
    lines = [key]
    for name, value in vars(record).items():
        if isinstance(value, np.ndarray):
            summary = f"{value.dtype}{list(value.shape)}"
            if value.size:
                v = value.astype(np.float64)
                summary += f" min {v.min():.4g} max {v.max():.4g} mean {v.mean():.4g}"
                if value.size <= 16:
                    summary += f" = {value.tolist()}"
            lines.append(f"  {name:12s} {summary}")
        else:
            lines.append(f"  {name:12s} {value!r}")
    if parse_key(key)[0] == INDEX:
        lines.append("  captions:")
        with CorpusReader(root) as reader:
            for cid in record.caption_ids:
                for variant in reader.variants():
                    k = text_key(int(cid), variant)
                    if k in reader:
                        lines.append(f"    {k}: {reader.get(k).text}")
    return "\n".join(lines)


__all__ = ["verify", "VerifyReport", "stats", "format_stats", "show", "IMAGE"]
