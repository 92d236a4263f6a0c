"""WordPiece: loading a BERT vocab.txt, training one offline, and aligning pieces to parsed words.

The real vocabulary comes with the BERT weights (``models_dir/bert/vocab.txt``, bert-base-uncased).
Offline, ``train_wordpiece`` builds a BERT-format vocab.txt from captions: [PAD]=0, [UNK], [CLS], [SEP],
[MASK], the alphabet (``c`` and ``##c``), then merged pieces. It is a deterministic re-implementation of the
WordPiece trainer of the ``tokenizers`` library (BPE merges over words, ties broken by the pieces' text):
that trainer's output changes from run to run on ties, and a corpus must be byte-reproducible.
"""

from __future__ import annotations

import heapq
import logging
import os
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ssrp.fileutil import atomic_write_text

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PREFIX = "##"
# characters every trained vocabulary covers, so any ASCII word can be spelled
BASE_ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


class VocabError(ValueError):
    """A vocab.txt that is missing or lacks BERT's special tokens."""


def load_wordpiece(vocab_path: str, lowercase: bool = True):
    """A fast BERT WordPiece tokenizer (``tokenizers.BertWordPieceTokenizer``) over a local vocab.txt.

    ``lowercase=True`` also strips accents, as BERT uncased does.
    """
    from tokenizers import BertWordPieceTokenizer

    if not os.path.isfile(vocab_path):
        raise VocabError(
            f"no WordPiece vocabulary at {vocab_path}: run `ssrp models fetch bert --to DIR` "
            "(or `ssrp models tiny DIR` offline), or set vocab_path"
        )
    with open(vocab_path, encoding="utf-8") as fh:
        vocab = {line.rstrip("\n") for line in fh}
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
    if missing:
        raise VocabError(f"{vocab_path} lacks the special tokens {missing}: not a BERT vocab.txt")
    return BertWordPieceTokenizer(vocab_path, lowercase=lowercase, strip_accents=None, clean_text=True)


# ---------------------------------------------------------------------------------------------
# Aligning pieces to words.


@dataclass(frozen=True)
class Alignment:
    """WordPiece tokens of a sentence's first ``kept`` words, with [CLS] and [SEP]."""

    input_ids: np.ndarray  # int32 [T]
    piece_word: np.ndarray  # int32 [T], -1 for [CLS]/[SEP]
    kept: int  # words whose pieces all fit


def word_pieces(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Piece ids of every word of every sentence (one batched call). A word that yields no piece (only
    characters BERT's normaliser removes) gets [UNK], so every word has at least one piece."""
    unk = tokenizer.token_to_id("[UNK]")
    encodings = tokenizer.encode_batch([list(s) for s in sentences], is_pretokenized=True, add_special_tokens=False)
    out = []
    for words, enc in zip(sentences, encodings, strict=True):
        per_word: list[list[int]] = [[] for _ in words]
        for piece, word in zip(enc.ids, enc.word_ids, strict=True):
            per_word[word].append(piece)
        out.append([p or [unk] for p in per_word])
    return out


def align(pieces: Sequence[Sequence[int]], max_pieces: int, cls_id: int, sep_id: int) -> Alignment:
    """[CLS] + the pieces of the longest prefix of words that fits in ``max_pieces`` + [SEP].

    A word is kept whole or not at all; the first word that does not fit and every word after it are
    dropped (the caller restricts the tree to the kept words).
    """
    ids = [cls_id]
    owner = [-1]
    kept = 0
    for w, word in enumerate(pieces):
        if len(ids) - 1 + len(word) > max_pieces:
            break
        ids.extend(word)
        owner.extend([w] * len(word))
        kept += 1
    ids.append(sep_id)
    owner.append(-1)
    return Alignment(np.asarray(ids, np.int32), np.asarray(owner, np.int32), kept)


# ---------------------------------------------------------------------------------------------
# Training a vocabulary (deterministic).


def _words(texts: Iterable[str], lowercase: bool) -> Counter:
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    norm = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    pre = BertPreTokenizer()
    counts: Counter = Counter()
    for text in texts:
        counts.update(word for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    return counts


def _merged(a: str, b: str) -> str:
    return a + b[len(PREFIX) :]


class _Merger:
    """BPE over word types with incremental pair counts; ties go to the smallest (left, right) text.

    The heap holds (-count, pair) entries; an entry whose count is no longer the pair's count is stale and
    skipped, and every change of a count pushes a fresh entry.
    """

    def __init__(self, counts: Counter):
        self.words = [[w[0]] + [PREFIX + c for c in w[1:]] for w in counts]
        self.freq = list(counts.values())
        self.pairs: Counter = Counter()
        self.where: dict[tuple[str, str], set[int]] = {}
        for i, symbols in enumerate(self.words):
            self._count(i, symbols, +1)
        self.heap = [(-c, p) for p, c in self.pairs.items()]
        heapq.heapify(self.heap)

    def _count(self, i: int, symbols: list[str], sign: int) -> set[tuple[str, str]]:
        touched = set()
        for pair in zip(symbols, symbols[1:], strict=False):
            self.pairs[pair] += sign * self.freq[i]
            touched.add(pair)
            if sign > 0:
                self.where.setdefault(pair, set()).add(i)
        return touched

    def best(self, min_frequency: int) -> tuple[str, str] | None:
        while self.heap:
            neg, pair = self.heap[0]
            if -neg != self.pairs.get(pair, 0):
                heapq.heappop(self.heap)  # stale
                continue
            return pair if -neg >= min_frequency else None
        return None

    def merge(self, pair: tuple[str, str]) -> str:
        new = _merged(*pair)
        touched: set[tuple[str, str]] = set()
        for i in sorted(self.where.pop(pair, ())):
            symbols = self.words[i]
            touched |= self._count(i, symbols, -1)
            out, k = [], 0
            while k < len(symbols):
                if k + 1 < len(symbols) and (symbols[k], symbols[k + 1]) == pair:
                    out.append(new)
                    k += 2
                else:
                    out.append(symbols[k])
                    k += 1
            self.words[i] = out
            touched |= self._count(i, out, +1)
        self.pairs.pop(pair, None)
        for other in sorted(touched - {pair}):
            if self.pairs[other] > 0:
                heapq.heappush(self.heap, (-self.pairs[other], other))
        return new


def build_vocab(texts: Iterable[str], vocab_size: int, lowercase: bool = True, min_frequency: int = 2) -> list[str]:
    """The tokens of a WordPiece vocabulary learned from ``texts``, in vocab.txt order."""
    counts = _words(texts, lowercase)
    chars = sorted(set(BASE_ALPHABET) | {c for w in counts for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + [PREFIX + c for c in chars]
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the special tokens and alphabet ({len(vocab)})")
    seen = set(vocab)
    merger = _Merger(counts)
    while len(vocab) < vocab_size:
        pair = merger.best(min_frequency)
        if pair is None:
            break
        token = merger.merge(pair)
        if token not in seen:
            seen.add(token)
            vocab.append(token)
    return vocab


def train_wordpiece(
    texts: Iterable[str], out_dir: str, vocab_size: int = 8000, lowercase: bool = True, min_frequency: int = 2
) -> str:
    """Learn a WordPiece vocabulary from captions and write ``out_dir/vocab.txt`` (BERT format); returns its path.

    The same texts give a byte-identical file. Training stops early when no pair occurs
    ``min_frequency`` times, so a small corpus gives a smaller vocabulary than ``vocab_size``.
    """
    vocab = build_vocab(texts, vocab_size, lowercase, min_frequency)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "vocab.txt")
    atomic_write_text(path, "".join(token + "\n" for token in vocab))
    logger.info("wrote a %d-token WordPiece vocabulary to %s", len(vocab), path)
    return path
