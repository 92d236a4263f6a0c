"""The caption vocabulary: the words of the training split seen at least ``min_count`` times.

Id 0 is ``<eos>``: the end of a caption, the start token fed at the first step, and padding (as in
self-critical.pytorch). Id 1 is ``<unk>``, which every other word becomes. Words follow by decreasing
count, ties in alphabetical order, so the same captions always give the same ids.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ssrp.fileutil import atomic_file

EOS, UNK = "<eos>", "<unk>"
EOS_ID, UNK_ID = 0, 1
FORMAT = "ssrp-caption-vocab/1"


class Vocab:
    def __init__(self, words: Sequence[str]):
        if tuple(words[:2]) != (EOS, UNK):
            raise ValueError(f"a caption vocabulary starts with {EOS!r}, {UNK!r}; got {list(words[:2])}")
        self.words = tuple(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("the vocabulary repeats a word")

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], min_count: int = 5) -> Vocab:
        counts = Counter(w for tokens in captions for w in tokens)
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in (EOS, UNK)),
                      key=lambda w: (-counts[w], w))
        return cls((EOS, UNK, *kept))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Sequence[str], max_length: int) -> np.ndarray:
        """int64 ids of the first ``max_length`` words (no ``<eos>``)."""
        return np.array([self.index.get(w, UNK_ID) for w in tokens[:max_length]], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first ``<eos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            out.append(self.words[i])
        return out

    def sentence(self, ids: Iterable[int]) -> str:
        return " ".join(self.decode(ids))

    def save(self, path: str) -> None:
        with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"format": FORMAT, "words": list(self.words)}, fh, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> Vocab:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not an ssrp caption vocabulary (format {FORMAT})")
        return cls(data["words"])
