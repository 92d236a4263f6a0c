"""The corpus format: the one contract between the pipeline that writes and the trainer that reads.

Spec: docs/corpus-format.md. Public API:

* records: ``ImageRecord``, ``TextRecord``, ``IndexRecord``, ``encode``, ``decode``, key helpers;
* writing: ``CorpusPlan``, ``CorpusWriter`` (two-phase commit), ``write_corpus``;
* reading: ``CorpusReader``; checking: ``verify``, ``stats``, ``show``.
"""

from ssrp.corpus.inspect import VerifyReport, format_stats, show, stats, verify
from ssrp.corpus.reader import CorpusError, CorpusReader, load_manifest
from ssrp.corpus.records import (
    FORMAT_VERSION,
    IMAGE,
    INDEX,
    KINDS,
    TEXT,
    ImageRecord,
    IndexRecord,
    Record,
    RecordError,
    TextRecord,
    decode,
    encode,
    image_key,
    index_key,
    parse_key,
    stable_shard,
    text_key,
)
from ssrp.corpus.shards import DuplicateKeyError, ShardInfo, ShardSpec, build_shard
from ssrp.corpus.writer import ConfigMismatchError, CorpusPlan, CorpusWriter, Storage, write_corpus

__all__ = [
    "FORMAT_VERSION", "IMAGE", "INDEX", "KINDS", "TEXT",
    "ImageRecord", "IndexRecord", "Record", "RecordError", "TextRecord",
    "decode", "encode", "image_key", "index_key", "parse_key", "stable_shard", "text_key",
    "DuplicateKeyError", "ShardInfo", "ShardSpec", "build_shard",
    "ConfigMismatchError", "CorpusPlan", "CorpusWriter", "Storage", "write_corpus",
    "CorpusError", "CorpusReader", "load_manifest",
    "VerifyReport", "format_stats", "show", "stats", "verify",
]
