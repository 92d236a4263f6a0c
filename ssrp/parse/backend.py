"""Running Stanza: one Pipeline per process, loaded offline from a parser directory, fed in bulk.

Both the real package and the tiny one are loaded by ``load_pipeline``: Stanza resolves every model file
from the directory's resources.json (``download_method=None``: no network), the processors come from
ssrp-parser.json. Tokenization is Stanza's neural tokenizer (+ MWT) or ssrp's rule-based ``pretokenize``
(``tokenize_pretokenized=True``, one sentence per caption).

Captions go to Stanza in bulk: pretokenized, as one Document with one sentence per caption; with Stanza's
tokenizer, through ``bulk_process`` (one Document per caption, sentences batched across Documents).
Results are copied out as plain tuples at once and the Documents dropped (Stanza's memory growth over
long runs comes from keeping them). The bulk call runs inside ``speedups.fast_stanza`` (``fast_decode``):
ssrp's exact fast paths for Stanza's tree decoder, id tensors and vocabulary lookups, and the garbage
collector paused, all put back when the call returns.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ssrp.devices import resolve_device
from ssrp.parse.columns import ColumnDocument, run_processors
from ssrp.parse.columns import supports as supports_columns
from ssrp.parse.config import ParseConfig
from ssrp.parse.models import PackageInfo, read_manifest
from ssrp.parse.speedups import fast_stanza
from ssrp.parse.text import pretokenize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sentence:
    """One sentence as Stanza parsed it; heads are 1-based within the sentence, 0 for its root."""

    words: tuple[str, ...]
    upos: tuple[str, ...]
    heads: tuple[int, ...]
    deprels: tuple[str, ...]


def tokenizer_mode(cfg: ParseConfig, info: PackageInfo) -> str:
    return info.tokenizer if cfg.tokenizer == "auto" else cfg.tokenizer


def pipeline_kwargs(cfg: ParseConfig, info: PackageInfo) -> dict:
    """Everything ``stanza.Pipeline`` is given (no network, explicit processors and batch sizes)."""
    pretokenized = tokenizer_mode(cfg, info) == "pretokenized"
    processors = dict(info.processors)
    if pretokenized:
        processors.pop("mwt", None)  # tokens are final: nothing to expand
    elif not os.path.isfile(os.path.join(info.path, info.lang, "tokenize", f"{processors.get('tokenize')}.pt")):
        raise ValueError(
            f"tokenizer='stanza' but the package at {info.path} has no Stanza tokenizer model; "
            "use tokenizer='auto' or 'pretokenized'"
        )
    return {
        "lang": info.lang,
        "dir": info.path,
        "processors": processors,
        "package": None,
        "download_method": None,
        "tokenize_pretokenized": pretokenized,
        "device": str(resolve_device(cfg.device)),
        "pos_batch_size": cfg.pos_batch_size,
        "pos_batch_maximum_tokens": cfg.depparse_batch_size,
        "depparse_batch_size": cfg.depparse_batch_size,
        "logging_level": cfg.stanza_log_level,
    }


def load_pipeline(cfg: ParseConfig):
    """The Stanza Pipeline for ``cfg``'s parser directory (real or tiny, same path)."""
    import stanza

    info = read_manifest(cfg.resolved_parser_dir)
    kwargs = pipeline_kwargs(cfg, info)
    logger.info("loading Stanza %s from %s on %s (tokenizer: %s)", stanza.__version__, info.path, kwargs["device"],
                "pretokenized" if kwargs["tokenize_pretokenized"] else "stanza")
    return stanza.Pipeline(**kwargs), kwargs["tokenize_pretokenized"]


def _sentence(sent) -> Sentence:
    words = sent.words
    return Sentence(
        words=tuple(w.text for w in words),
        upos=tuple(w.upos or "X" for w in words),
        heads=tuple(int(w.head or 0) for w in words),
        deprels=tuple(w.deprel or "dep" for w in words),
    )


def _columns_sentences(doc: ColumnDocument) -> list[list[Sentence]]:
    c = doc.columns
    out = []
    for start, end in zip(doc.bounds, doc.bounds[1:], strict=False):
        out.append([Sentence(
            words=tuple(c["text"][start:end]),
            upos=tuple(u or "X" for u in c["upos"][start:end]),
            heads=tuple(int(h or 0) for h in c["head"][start:end]),
            deprels=tuple(r or "dep" for r in c["deprel"][start:end]),
        )])
    return out


def parse_pretokenized(nlp, texts: list[str], columnar: bool = False) -> list[list[Sentence]]:
    """One sentence per caption: the captions' tokens as one Document (``columnar``: as one ColumnDocument,
    where the pipeline allows it)."""
    token_lists = [pretokenize(t) for t in texts]
    if columnar and supports_columns(nlp):
        return _columns_sentences(run_processors(nlp, token_lists))
    doc = nlp(token_lists)
    if len(doc.sentences) != len(texts):
        raise RuntimeError(f"Stanza returned {len(doc.sentences)} sentences for {len(texts)} pretokenized captions")
    return [[_sentence(s)] for s in doc.sentences]


def parse_raw(nlp, texts: list[str]) -> list[list[Sentence]]:
    """Stanza's tokenizer: one Document per caption, possibly several sentences each."""
    import stanza

    docs = nlp.bulk_process([stanza.Document([], text=t) for t in texts])
    return [[_sentence(s) for s in doc.sentences] for doc in docs]


def parse_texts(nlp, pretokenized: bool, texts: list[str], fast_decode: bool = True) -> list[list[Sentence]]:
    if not texts:
        return []
    with fast_stanza(fast_decode):
        return parse_pretokenized(nlp, texts, fast_decode) if pretokenized else parse_raw(nlp, texts)
