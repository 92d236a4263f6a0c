"""CIDEr-D (Vedantam et al. 2015) of token-id sequences, vectorised with numpy: the SCST reward, in-process.

The formula is coco-caption's (``pycocoevalcap.cider``, which is CIDEr-D: clipped tf-idf, a Gaussian
length penalty with sigma 6, times 10) and that of the ``ciderD`` scorer self-critical.pytorch rewards
with: for a candidate c and its references S,

    CIDEr-D(c, S) = 10 / |S| * sum_s mean_n [ sum_g min(g_n(c), g_n(s)) g_n(s) / (|g_n(c)| |g_n(s)|) ]
                    * exp(-(l(c) - l(s))^2 / (2 sigma^2))

with g_n the tf-idf vectors of the n-grams (n = 1..4), idf = log(#images) - log(max(1, df)), df the
number of images whose references contain the n-gram, and l the number of bigram occurrences
(coco-caption counts the length that way). The document frequencies come from a reference corpus: the
training split for the reward (self-critical's ``coco-train-idxs``), the scored references themselves
for ``corpus`` mode (coco-caption's).

Every n-gram is one int64 key (token ids + 1 in base vocab + 1), so counting, idf look-up and matching
candidate against reference n-grams are sorts, searches and bincounts over flat arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_BASE = 55108  # base**4 must fit in int64


@dataclass
class NGrams:
    """The distinct n-grams of each of M sequences: entries sorted by (row, key)."""

    row: np.ndarray  # int64 [E]
    key: np.ndarray  # int64 [E]
    order: np.ndarray  # int64 [E] n - 1
    count: np.ndarray  # float64 [E] term frequency
    length: np.ndarray  # float64 [M] bigram occurrences (coco-caption's length)


def ngrams(seqs: Sequence[Sequence[int]], base: int, n: int = 4) -> NGrams:
    if base > MAX_BASE:
        raise ValueError(f"CIDEr-D keys need a vocabulary below {MAX_BASE} tokens, got {base}")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    width = int(lengths.max()) if len(seqs) else 0
    tok = np.zeros((len(seqs), max(width, 1)), dtype=np.int64)
    for i, s in enumerate(seqs):
        tok[i, : len(s)] = np.asarray(s, dtype=np.int64) + 1
    pos = np.arange(tok.shape[1])
    rows, keys, orders = [], [], []
    key = np.zeros_like(tok)
    for k in range(n):
        key = key[:, :-1] * (base + 1) + tok[:, k:] if k else tok.copy()
        valid = pos[None, : key.shape[1]] + k < lengths[:, None]
        r, c = np.nonzero(valid)
        rows.append(r)
        keys.append(key[r, c])
        orders.append(np.full(len(r), k, dtype=np.int64))
    row, key_flat, order = np.concatenate(rows), np.concatenate(keys), np.concatenate(orders)
    return _distinct(row, key_flat, order, np.maximum(lengths - 1, 0).astype(np.float64))


def _distinct(row: np.ndarray, key: np.ndarray, order: np.ndarray, length: np.ndarray) -> NGrams:
    """Aggregate repeated (row, key) pairs into term frequencies."""
    idx = np.lexsort((key, row))
    row, key, order = row[idx], key[idx], order[idx]
    new = np.ones(len(row), dtype=bool)
    new[1:] = (row[1:] != row[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(new)
    count = np.diff(np.append(starts, len(row))).astype(np.float64)
    return NGrams(row[starts], key[starts], order[starts], count, length)


class DocumentFrequency:
    """df of every n-gram over a corpus of images (each image: its reference sequences), and log(#images)."""

    def __init__(self, references: Sequence[Sequence[Sequence[int]]], base: int, n: int = 4):
        flat = [r for refs in references for r in refs]
        image_of = np.repeat(np.arange(len(references)), [len(refs) for refs in references])
        g = ngrams(flat, base, n)
        per_image = np.unique(np.stack([image_of[g.row], g.key], 1), axis=0)  # each n-gram once per image
        self.keys, self.counts = np.unique(per_image[:, 1], return_counts=True)
        self.ref_len = float(np.log(float(len(references))))
        self.base, self.n = base, n

    def idf(self, keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.keys, keys).clip(max=max(len(self.keys) - 1, 0))
        found = (self.keys[pos] == keys) if len(self.keys) else np.zeros(len(keys), bool)
        df = np.where(found, self.counts[pos] if len(self.keys) else 0, 0)
        return self.ref_len - np.log(np.maximum(1.0, df))


class CiderD:
    def __init__(self, df: DocumentFrequency, sigma: float = 6.0):
        self.df = df
        self.sigma = sigma

    @classmethod
    def corpus(cls, references: Sequence[Sequence[Sequence[int]]], base: int, sigma: float = 6.0) -> CiderD:
        """Document frequencies from the scored references themselves (coco-caption's CIDEr)."""
        return cls(DocumentFrequency(references, base), sigma)

    def _vectors(self, g: NGrams, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """tf-idf value of each entry, and the norm of each (row, order)."""
        vec = g.count * self.df.idf(g.key)
        norm = np.sqrt(np.bincount(g.row * self.df.n + g.order, weights=vec**2, minlength=rows * self.df.n))
        return vec, norm.reshape(rows, self.df.n)

    def scores(self, hyps: Sequence[Sequence[int]], references: Sequence[Sequence[Sequence[int]]],
               image_of_hyp: Sequence[int] | None = None) -> np.ndarray:
        """CIDEr-D of each candidate against its image's references (``references[image_of_hyp[h]]``)."""
        n, base = self.df.n, self.df.base
        image_of_hyp = np.arange(len(hyps)) if image_of_hyp is None else np.asarray(image_of_hyp, np.int64)
        ref_counts = np.array([len(r) for r in references], dtype=np.int64)
        ref_first = np.concatenate([[0], np.cumsum(ref_counts)[:-1]]).astype(np.int64)
        h, r = ngrams(hyps, base, n), ngrams([s for refs in references for s in refs], base, n)
        vh, norm_h = self._vectors(h, len(hyps))
        vr, norm_r = self._vectors(r, int(ref_counts.sum()))
        # one (candidate, reference) pair per reference of the candidate's image
        ph = np.repeat(np.arange(len(hyps)), ref_counts[image_of_hyp])
        pr = ref_first[image_of_hyp][ph] + _ranks(ref_counts[image_of_hyp])
        num = self._overlap(h, vh, r, vr, ph, pr, len(hyps))
        denom = norm_h[ph] * norm_r[pr]
        val = np.where(denom > 0, num / np.where(denom > 0, denom, 1.0), num)
        val *= np.exp(-((h.length[ph] - r.length[pr]) ** 2) / (2 * self.sigma**2))[:, None]
        per_hyp = np.zeros((len(hyps), n))
        np.add.at(per_hyp, ph, val)
        return per_hyp.mean(1) / ref_counts[image_of_hyp] * 10.0

    def _overlap(self, h: NGrams, vh: np.ndarray, r: NGrams, vr: np.ndarray, ph: np.ndarray, pr: np.ndarray,
                 n_hyps: int) -> np.ndarray:
        """sum_g min(vh_g, vr_g) * vr_g per pair and order: [P, n]."""
        per_hyp = np.bincount(h.row, minlength=n_hyps)
        start = np.concatenate([[0], np.cumsum(per_hyp)[:-1]])
        counts = per_hyp[ph]
        pair = np.repeat(np.arange(len(ph)), counts)
        entry = start[ph][pair] + _ranks(counts)
        uk, kid = np.unique(np.concatenate([h.key, r.key]), return_inverse=True)
        width = max(len(uk), 1)
        ref_comb = r.row * width + kid[len(h.key) :]  # ascending: r is sorted by (row, key)
        query = pr[pair] * width + kid[: len(h.key)][entry]
        if len(ref_comb):
            pos = np.searchsorted(ref_comb, query).clip(max=len(ref_comb) - 1)
            v_ref = np.where(ref_comb[pos] == query, vr[pos], 0.0)
        else:
            v_ref = np.zeros(len(query))
        contrib = np.minimum(vh[entry], v_ref) * v_ref
        n = self.df.n
        return np.bincount(pair * n + h.order[entry], weights=contrib, minlength=len(ph) * n).reshape(len(ph), n)


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each count c, concatenated."""
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - offsets
