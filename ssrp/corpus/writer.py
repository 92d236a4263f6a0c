"""The corpus writer: shards committed in two phases, the manifest written last.

Layout of a corpus directory::

    _plan.json                       config hash and shard counts, written when a build starts
    image/shard-00000-of-00004.lmdb  one LMDB file per shard (subdir=False)
    image/shard-00000-of-00004.lmdb.json   the shard's marker: records, sha256, counts
    text/...  index/...
    manifest.json                    written last; a reader trusts nothing without it

A shard is built on local disk, copied to a unique temporary name at the destination, then
renamed into place; its marker is written after the rename, so a marker means a complete shard.
A rerun skips a shard only when its marker is readable and the file still has the marker's size and
sha256 (a corrupt shard is rebuilt); a rerun with a different config or over different inputs is refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ssrp import __version__
from ssrp.config import canonical_json, config_hash, diff_keys
from ssrp.corpus.records import FORMAT_VERSION, KINDS, parse_key, stable_shard
from ssrp.corpus.shards import ShardInfo, ShardSpec, build_shard
from ssrp.fileutil import atomic_write_text, scratch_dir, sha256_and_size

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PLAN = "_plan.json"
DEADLETTERS = "deadletters.jsonl"
SUMMARY = "summary.json"
FORMAT_NAME = "ssrp-corpus"


class ConfigMismatchError(RuntimeError):
    """The destination holds (part of) a corpus built with another config."""


class Storage:
    """Where a corpus lives. This one is a local directory; the Beam pipeline adds others."""

    def __init__(self, root: str):
        self.root = root

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def exists(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def read_text(self, name: str) -> str:
        with open(self.path(name), encoding="utf-8") as fh:
            return fh.read()

    def write_text_atomic(self, name: str, text: str) -> None:
        atomic_write_text(self.path(name), text)

    def write_if_changed(self, name: str, text: str) -> None:
        """Write ``name`` unless it already holds ``text`` (a rerun of a complete corpus changes nothing)."""
        if not self.exists(name) or self.read_text(name) != text:
            self.write_text_atomic(name, text)

    def put_file(self, local_path: str, name: str) -> None:
        """Put a finished local file at ``name`` (a temporary name: the caller renames it into place).

        On the same file system it is hard-linked (no copy: the caller has fsynced it); elsewhere copied."""
        dest = self.path(name)
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        try:
            os.link(local_path, dest)
            return
        except OSError as err:  # another file system (EXDEV), or links not supported: copy
            logger.debug("copying %s to %s (%s)", local_path, dest, err)
        shutil.copyfile(local_path, dest)
        with open(dest, "rb+") as fh:
            os.fsync(fh.fileno())

    def rename(self, src: str, dst: str) -> None:
        os.replace(self.path(src), self.path(dst))

    def delete(self, name: str) -> None:
        if self.exists(name):
            os.remove(self.path(name))

    def size(self, name: str) -> int:
        return os.path.getsize(self.path(name))

    def sha256(self, name: str) -> str:
        return sha256_and_size(self.path(name))[0]

    def remove_orphans(self) -> int:
        removed = 0
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if ".tmp-" in name:
                    os.remove(os.path.join(dirpath, name))
                    removed += 1
        return removed


@dataclass(frozen=True)
class CorpusPlan:
    """What a build will write: shard counts per kind, the config and the models used, and a fingerprint of
    the inputs (``inputs``: recorded beside the config, compared on every rerun, not part of the config hash)."""

    num_shards: Mapping[str, int]
    config: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, n in self.num_shards.items():
            if kind not in KINDS:
                raise ValueError(f"unknown record kind {kind!r} in num_shards; expected {KINDS}")
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"num_shards[{kind!r}] must be a positive int, got {n!r}")

    @property
    def config_hash(self) -> str:
        return config_hash({"config": self.config, "num_shards": self.num_shards, "models": self.models})

    def specs(self) -> list[ShardSpec]:
        return [ShardSpec(kind, i, n) for kind, n in sorted(self.num_shards.items()) for i in range(n)]

    def to_json(self) -> dict:
        out = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config_hash": self.config_hash,
            "num_shards": dict(sorted(self.num_shards.items())),
            "config": json.loads(canonical_json(self.config)),
            "models": json.loads(canonical_json(self.models)),
        }
        if self.inputs:
            out["inputs"] = json.loads(canonical_json(self.inputs))
        return out


def marker_name(shard_name: str) -> str:
    return shard_name + ".json"


def report_name(shard_name: str) -> str:
    """Per-shard sidecar of the pipeline: inputs, written, dead letters of that shard's inputs."""
    return shard_name + ".report.json"


class CorpusWriter:
    """Commits shards of one plan into one destination; safe to rerun and resume."""

    def __init__(self, storage: Storage | str, plan: CorpusPlan):
        self.storage = Storage(storage) if isinstance(storage, str) else storage
        self.plan = plan
        self._checked: dict[str, ShardInfo] = {}  # shards whose bytes this writer has checked or written

    def open(self) -> None:
        """Refuse a destination built with another config or over other inputs; record the plan otherwise."""
        for name in (MANIFEST, PLAN):
            if self.storage.exists(name):
                old = self._read_json(name)
                self._check_same_config(old)
                self._check_same_inputs(old, name)
        if not self.storage.exists(PLAN):
            self.storage.write_text_atomic(PLAN, json.dumps(self.plan.to_json(), indent=1, sort_keys=True))

    def _read_json(self, name: str) -> dict:
        try:
            return json.loads(self.storage.read_text(name))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigMismatchError(f"{self.storage.path(name)} is unreadable ({err}); choose a new output") from err

    def _check_same_inputs(self, old: dict, name: str) -> None:
        """The inputs' identity (counts, annotation digests) must match; a moved input folder is fine."""
        before, now = old.get("inputs"), json.loads(canonical_json(self.plan.inputs))
        if not before or not now:
            return
        changed = [k for k in diff_keys(before, now) if not k.startswith("paths")]
        if changed:
            raise ConfigMismatchError(
                f"{self.storage.root} holds a corpus of other inputs than this run's (changed: {', '.join(changed)}; "
                f"see inputs in {self.storage.path(name)}). Write to a new output directory, or delete the old corpus."
            )
        if before.get("paths") != now.get("paths"):
            logger.warning("the inputs moved (%s -> %s) but their content is the same: resuming",
                           before.get("paths"), now.get("paths"))

    def _check_same_config(self, old: dict) -> None:
        if old.get("config_hash") != self.plan.config_hash:
            changed = diff_keys(
                {k: old.get(k) for k in ("config", "num_shards", "models")},
                {k: v for k, v in self.plan.to_json().items() if k in ("config", "num_shards", "models")},
            )
            raise ConfigMismatchError(
                f"{self.storage.root} was built with config {old.get('config_hash')}, this run has "
                f"{self.plan.config_hash} (changed: {', '.join(changed) or 'unknown'}). "
                "Write to a new output directory, or delete the old corpus first."
            )

    def committed(self, spec: ShardSpec, check: str = "sha256") -> ShardInfo | None:
        """The shard's info if it is committed and intact, else None (a corrupt shard is deleted, to be rebuilt).

        ``check``: "sha256" hashes the file against its marker (before a rerun skips it), "size" compares sizes
        only (shards this build wrote or already checked are never hashed twice by one writer).
        """
        if check not in ("sha256", "size"):
            raise ValueError(f"check must be sha256 or size, got {check!r}")
        name = marker_name(spec.name)
        if not self.storage.exists(name) or not self.storage.exists(spec.name):
            return None
        if spec.name in self._checked:
            return self._checked[spec.name]
        info, problem = self._read_marker(name)
        if info is not None:
            problem = self._shard_problem(spec, info, check)
        if problem:
            logger.warning("%s: %s; rebuilding it", self.storage.path(spec.name), problem)
            self.storage.delete(name)
            self.storage.delete(spec.name)
            return None
        if check == "sha256":
            self._checked[spec.name] = info
        return info

    def _read_marker(self, name: str) -> tuple[ShardInfo | None, str]:
        try:
            return ShardInfo.from_json(json.loads(self.storage.read_text(name))), ""
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as err:
            return None, f"unreadable marker {name} ({err})"

    def _shard_problem(self, spec: ShardSpec, info: ShardInfo, check: str) -> str:
        if info.name != spec.name:
            return f"its marker describes {info.name}"
        size = self.storage.size(spec.name)
        if size != info.bytes:
            return f"{size} bytes, its marker says {info.bytes} (truncated or replaced)"
        if check == "sha256" and self.storage.sha256(spec.name) != info.sha256:
            return "its sha256 does not match its marker (corrupted)"
        return ""

    def commit_shard(
        self, spec: ShardSpec, items: Iterable[tuple[str, bytes]], report: Mapping[str, Any] | None = None
    ) -> ShardInfo:
        """Build a shard locally, move it into place, then write its report and marker."""
        tmp_name, info = self.stage_shard(spec, items)
        self.promote_shard(spec, tmp_name, info, report)
        return info

    def stage_shard(self, spec: ShardSpec, items: Iterable[tuple[str, bytes]]) -> tuple[str, ShardInfo]:
        """Phase 1: build the shard on local disk and copy it to a unique temporary name."""
        workdir = scratch_dir("commit")
        try:
            local = os.path.join(workdir, "shard.lmdb")
            info = build_shard(items, spec, local)
            tmp_name = f"{spec.name}.tmp-{uuid.uuid4().hex}"
            self.storage.put_file(local, tmp_name)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return tmp_name, info

    def promote_shard(
        self, spec: ShardSpec, tmp_name: str, info: ShardInfo, report: Mapping[str, Any] | None = None
    ) -> None:
        """Phase 2 (after the commit barrier): rename into place, then the report, then the marker.

        Idempotent: a retried promotion whose temporary file is gone finds the shard in place.
        """
        if self.storage.exists(tmp_name):
            self.storage.rename(tmp_name, spec.name)
        elif not self.storage.exists(spec.name):
            raise RuntimeError(f"lost shard {spec.name}: neither {tmp_name} nor the shard exists")
        if report is not None:
            self.storage.write_text_atomic(report_name(spec.name), json.dumps(dict(report), sort_keys=True))
        self.storage.write_text_atomic(marker_name(spec.name), json.dumps(info.to_json(), sort_keys=True))
        self._checked[spec.name] = info
        logger.debug("committed %s: %d records", spec.name, info.records)

    def report(self, spec: ShardSpec) -> dict | None:
        name = report_name(spec.name)
        return json.loads(self.storage.read_text(name)) if self.storage.exists(name) else None

    def finalize(self, extra: Mapping[str, Any] | None = None) -> dict:
        """Write the manifest once every planned shard is committed."""
        infos = []
        missing = []
        for spec in self.plan.specs():
            info = self.committed(spec, check="size")
            if info is None:
                missing.append(spec.name)
            else:
                infos.append(info)
        if missing:
            raise RuntimeError(f"cannot finalize {self.storage.root}: shards not committed: {missing[:5]}")
        reports = [r for r in (self.report(spec) for spec in self.plan.specs()) if r is not None]
        extra = dict(extra or {})
        if reports:
            summary, dead = summarize_reports(reports)
            self.storage.write_if_changed(DEADLETTERS, "".join(json.dumps(d, sort_keys=True) + "\n" for d in dead))
            self.storage.write_if_changed(SUMMARY, json.dumps(summary, indent=1, sort_keys=True))
            extra["summary"] = summary
            splits = _split_counts(reports)
            if splits:
                extra["splits"] = splits
        manifest = build_manifest(self.plan, infos, extra)
        self.storage.write_if_changed(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        orphans = self.storage.remove_orphans()
        if orphans:
            logger.info("removed %d temporary files left by failed attempts", orphans)
        return manifest


def _split_counts(reports: list[Mapping[str, Any]]) -> dict[str, int]:
    """Images of the index per COCO split (the index shards' reports carry them)."""
    counts: dict[str, int] = {}
    for report in reports:
        for split, n in report.get("splits", {}).items():
            counts[split] = counts.get(split, 0) + n
    return dict(sorted(counts.items()))


def summarize_reports(reports: list[Mapping[str, Any]]) -> tuple[dict, list[dict]]:
    """Add up per-shard reports.

    A report is ``{"inputs": {"images": {"inputs": n, "written": m, "counters": {...}}, ...},
    "dead_letters": [DeadLetter as dict, ...]}``. Per input kind (``images``, ``captions``), the
    summary checks that inputs = written + dead letters; dead letters are grouped by stage and reason.
    A dead letter of stage ``index`` (in an index shard's report) is a record its shard wrote that the index
    cannot reach: it moves from written to dead, so "written" counts what a reader of the index sees.
    """
    summary: dict[str, dict] = {}

    def entry(kind: str) -> dict:
        return summary.setdefault(kind, {"inputs": 0, "written": 0, "dead_letters": 0, "by_reason": {}, "counters": {}})

    dead: list[dict] = []
    for report in reports:
        for kind, part in report.get("inputs", {}).items():
            agg = entry(kind)
            agg["inputs"] += part.get("inputs", 0)
            agg["written"] += part.get("written", 0)
            for name, value in part.get("counters", {}).items():
                agg["counters"][name] = agg["counters"].get(name, 0) + value
        for letter in report.get("dead_letters", []):
            dead.append(dict(letter))
            agg = entry("images" if letter["key"].startswith("image/") else "captions")
            agg["dead_letters"] += 1
            if letter["stage"] == "index":  # written by its shard, but unreachable from the index
                agg["written"] -= 1
            reason = f"{letter['stage']}:{letter['reason']}"
            agg["by_reason"][reason] = agg["by_reason"].get(reason, 0) + 1
    for agg in summary.values():
        agg["by_reason"] = dict(sorted(agg["by_reason"].items()))
        agg["counters"] = dict(sorted(agg["counters"].items()))
        agg["balanced"] = agg["inputs"] == agg["written"] + agg["dead_letters"]
    dead.sort(key=lambda d: (d["key"], d["stage"], d["reason"]))
    return dict(sorted(summary.items())), dead


def build_manifest(plan: CorpusPlan, infos: list[ShardInfo], extra: Mapping[str, Any]) -> dict:
    kinds: dict[str, dict] = {}
    for kind, n in sorted(plan.num_shards.items()):
        mine = sorted((i for i in infos if i.kind == kind), key=lambda i: i.shard_id)
        counts: dict[str, int] = {}
        for info in mine:
            for sub, c in info.counts.items():
                counts[sub] = counts.get(sub, 0) + c
        kinds[kind] = {
            "num_shards": n,
            "records": sum(i.records for i in mine),
            "counts": dict(sorted(counts.items())),
            "shards": [i.to_json() for i in mine],
        }
    manifest = plan.to_json()
    manifest.update({"created_by": f"ssrp {__version__}", "kinds": kinds})
    manifest.update(json.loads(canonical_json(dict(extra))))
    return manifest


def write_corpus(
    root: str,
    plan: CorpusPlan,
    records: Iterable[tuple[str, bytes]],
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Write a small corpus from encoded records in one call (tests, tools, small local runs).

    Records are grouped by shard in memory; large local builds use the pipeline's local runner,
    which streams per shard.
    """

    writer = CorpusWriter(root, plan)
    writer.open()
    groups: dict[tuple[str, int], list[tuple[str, bytes]]] = {}
    for key, value in records:
        kind = parse_key(key)[0]
        if kind not in plan.num_shards:
            raise ValueError(f"record {key!r} is of kind {kind!r}, which this plan has no shards for")
        groups.setdefault((kind, stable_shard(key, plan.num_shards[kind])), []).append((key, value))
    for spec in plan.specs():
        if writer.committed(spec) is None:
            writer.commit_shard(spec, groups.get((spec.kind, spec.shard_id), []))
    return writer.finalize(extra)
