"""Settings of the parse stage. Paper settings are the defaults; docs/parse.md explains the others."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from ssrp.models.registry import model_folder

TOKENIZERS = ("auto", "stanza", "pretokenized")
MULTI_SENTENCE = ("attach", "virtual_root", "reject")


@dataclass(frozen=True)
class ParseConfig:
    # settings of where and how fast, not of what: left out of a corpus's config (ssrp.config.config_identity)
    RUNTIME: ClassVar[frozenset[str]] = frozenset(
        {"models_dir", "parser_dir", "vocab_path", "device", "chunk_size", "pos_batch_size", "depparse_batch_size",
         "fast_decode"}
    )
    # where `ssrp models fetch parse` / `ssrp models tiny` put the models
    models_dir: str = "models"
    # the Stanza package directory; "" means models_dir/parse
    parser_dir: str = ""
    # BERT-format vocab.txt of the WordPiece tokenizer; "" means models_dir/bert/vocab.txt
    vocab_path: str = ""
    # BERT uncased: lowercase and strip accents before WordPiece (paper: BERT-base uncased initialisation)
    lowercase: bool = True
    # tokens per caption including [CLS] and [SEP] (paper Sec. 4.1: 36)
    max_tokens: int = 36
    # "auto": what the package's ssrp-parser.json says (real package: Stanza's tokenizer; tiny: pretokenized);
    # "pretokenized": ssrp's rule-based tokenizer, one sentence per caption; "stanza": Stanza's neural tokenizer
    tokenizer: str = "auto"
    # a caption Stanza splits into several sentences: "attach" later roots to the first root as parataxis,
    # keep the trees under a "virtual_root", or "reject" the caption (dead letter)
    multi_sentence: str = "attach"
    # "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"
    device: str = "auto"
    # captions per Stanza call (one Document of this many sentences)
    chunk_size: int = 2048
    # Stanza batch sizes: POS in sentences, depparse in words
    pos_batch_size: int = 3000
    depparse_batch_size: int = 5000
    # screening before Stanza runs: longer captions go to the dead letters
    max_words: int = 128
    max_chars: int = 1000
    # share of Latin-script letters below which a caption is "not_english"
    min_latin_fraction: float = 0.5
    # drop emoji, symbols and invisible format characters before parsing (the text field keeps them)
    strip_symbols: bool = True
    # level of Stanza's own logger while it loads and runs
    stanza_log_level: str = "WARN"
    # run Stanza's bulk call with ssrp's exact fast paths (ssrp/parse/speedups.py: the single-root tree
    # decoder of ssrp/parse/mst.py, padded id tensors, vocabulary lookups, the garbage collector paused for
    # the call); the same parses, tested for equality; False: stock Stanza throughout
    fast_decode: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens < 3:
            raise ValueError(f"max_tokens must be at least 3 ([CLS], one piece, [SEP]), got {self.max_tokens}")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.multi_sentence not in MULTI_SENTENCE:
            raise ValueError(f"multi_sentence must be one of {MULTI_SENTENCE}, got {self.multi_sentence!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for name in ("chunk_size", "pos_batch_size", "depparse_batch_size", "max_words", "max_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.min_latin_fraction <= 1.0:
            raise ValueError(f"min_latin_fraction must lie in 0..1, got {self.min_latin_fraction}")

    @property
    def resolved_parser_dir(self) -> str:
        return self.parser_dir or model_folder(self.models_dir, "parse")

    @property
    def resolved_vocab_path(self) -> str:
        return self.vocab_path or os.path.join(self.models_dir, "bert", "vocab.txt")

    @property
    def max_pieces(self) -> int:
        """WordPiece tokens available to words: max_tokens minus [CLS] and [SEP]."""
        return self.max_tokens - 2
