"""The Karpathy split file and the training batches.

``dataset_coco.json`` (Karpathy & Fei-Fei's split, as captioning code reads it)::

    {"images": [{"cocoid": 391895, "split": "test", "filepath": "val2014", "filename": "...jpg",
                 "sentences": [{"tokens": ["a", "man", ...], "raw": "A man ..."}, ...]}, ...]}

Splits are ``train`` (82,783 images), ``restval`` (30,504), ``val`` (5,000) and ``test`` (5,000);
``restval`` trains unless ``data.restval`` is off. Training batches are ``batch_size`` images, each with
``seq_per_img`` of its captions (drawn without replacement, with replacement only where the image has
fewer), in an order drawn from (seed, epoch), so a resumed run sees the batches the uninterrupted run would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ssrp.caption.features import FeatureStore
from ssrp.caption.vocab import Vocab

SPLITS = ("train", "restval", "val", "test")


class KarpathyError(ValueError):
    """A Karpathy split file that cannot be used: the message names the record and the reason."""


@dataclass(frozen=True)
class KarpathyImage:
    image_id: int  # the COCO id (``cocoid``)
    split: str
    tokens: tuple[tuple[str, ...], ...]  # each caption's tokens as the file gives them
    raw: tuple[str, ...]  # each caption's raw text (the tokens joined where the file has none)
    file_name: str = ""


def load_karpathy(path: str) -> list[KarpathyImage]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise KarpathyError(f"{path}: not JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise KarpathyError(f"{path}: expected an object with an 'images' list (Karpathy's dataset_coco.json)")
    images = [_image(entry, k, path) for k, entry in enumerate(data["images"])]
    seen: set[int] = set()
    for img in images:
        if img.image_id in seen:
            raise KarpathyError(f"{path}: image {img.image_id} appears twice")
        seen.add(img.image_id)
    return images


def _image(entry: object, k: int, path: str) -> KarpathyImage:
    where = f"{path}: images[{k}]"
    if not isinstance(entry, dict):
        raise KarpathyError(f"{where}: not an object")
    image_id = entry.get("cocoid", entry.get("id"))
    if not isinstance(image_id, int):
        raise KarpathyError(f"{where}: no integer 'cocoid'")
    where = f"{path}: image {image_id}"
    split = entry.get("split")
    if split not in SPLITS:
        raise KarpathyError(f"{where}: split {split!r} is not one of {SPLITS}")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise KarpathyError(f"{where}: no sentences")
    tokens, raw = [], []
    for j, s in enumerate(sentences):
        toks = s.get("tokens") if isinstance(s, dict) else None
        if not isinstance(toks, list) or not toks or not all(isinstance(t, str) and t for t in toks):
            raise KarpathyError(f"{where}: sentences[{j}] has no 'tokens' list of words")
        tokens.append(tuple(toks))
        raw.append(s.get("raw") or " ".join(toks))
    return KarpathyImage(image_id, split, tuple(tokens), tuple(raw), str(entry.get("filename", "")))


def select_split(images: Sequence[KarpathyImage], split: str, restval: bool = True) -> list[KarpathyImage]:
    """The images of a split; ``train`` includes ``restval`` when ``restval`` is on."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: use one of {SPLITS}")
    wanted = {split, "restval"} if split == "train" and restval else {split}
    return [img for img in images if img.split in wanted]


# ------------------------------------------------------------------------------------------------
# Encoded captions


class CaptionSet:
    """The encoded captions of a list of images: ``captions[i]`` is an int64 [n_i, max_length] array
    (0-padded) with ``lengths[i]`` words per caption."""

    def __init__(self, images: Sequence[KarpathyImage], vocab: Vocab, max_length: int):
        self.images = list(images)
        self.image_ids = np.array([img.image_id for img in self.images], dtype=np.int64)
        self.captions: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        for img in self.images:
            enc = [vocab.encode(t, max_length) for t in img.tokens]
            arr = np.zeros((len(enc), max_length), dtype=np.int64)
            for j, e in enumerate(enc):
                arr[j, : len(e)] = e
            self.captions.append(arr)
            self.lengths.append(np.array([len(e) for e in enc], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def references(self, index: int) -> list[np.ndarray]:
        """Every caption of image ``index`` as word ids (the CIDEr-D references)."""
        return [c[:n] for c, n in zip(self.captions[index], self.lengths[index], strict=True)]


@dataclass
class Batch:
    index: np.ndarray  # [B] positions in the CaptionSet
    image_ids: np.ndarray  # [B]
    att: Tensor  # float32 [B, N, D] attention features
    mask: Tensor  # bool [B, N] real objects
    captions: Tensor  # int64 [B * S, T] word ids, 0-padded, no <eos>; S = captions per image (0 when decoding)
    lengths: Tensor  # int64 [B * S] words per caption

    def to(self, device: torch.device) -> Batch:
        return Batch(self.index, self.image_ids, self.att.to(device, non_blocking=True),
                     self.mask.to(device, non_blocking=True), self.captions.to(device), self.lengths.to(device))


def draw_captions(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k of an image's n captions: without replacement when n >= k, else every one and the rest drawn."""
    if n >= k:
        return rng.permutation(n)[:k]
    return np.concatenate([rng.permutation(n), rng.integers(0, n, k - n)])


class BatchMaker:
    """Builds batches from positions in a CaptionSet: features from the store, drawn captions."""

    def __init__(self, captions: CaptionSet, store: FeatureStore, seq_per_img: int, seed: int):
        self.captions = captions
        self.store = store
        self.seq_per_img = seq_per_img
        self.seed = seed

    def __call__(self, index: Sequence[int], epoch: int = 0, with_captions: bool = True) -> Batch:
        index = np.asarray(index, dtype=np.int64)
        ids = self.captions.image_ids[index]
        att, mask = self.store.batch(ids)
        s = self.seq_per_img if with_captions else 0
        t = self.captions.captions[0].shape[1] if len(self.captions) else 1
        caps = np.zeros((len(index) * s, t), dtype=np.int64)
        lens = np.zeros(len(index) * s, dtype=np.int64)
        for b, i in enumerate(index if s else ()):
            rng = np.random.default_rng((self.seed, epoch, int(i)))
            pick = draw_captions(len(self.captions.lengths[i]), s, rng)
            caps[b * s : (b + 1) * s] = self.captions.captions[i][pick]
            lens[b * s : (b + 1) * s] = self.captions.lengths[i][pick]
        return Batch(index, ids, torch.from_numpy(att), torch.from_numpy(mask), torch.from_numpy(caps),
                     torch.from_numpy(lens))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch, 7919)).permutation(n)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, skip: int = 0) -> list[np.ndarray]:
    """The epoch's batches of positions (the last one may be smaller), less the first ``skip``."""
    order = epoch_order(n, seed, epoch)
    return [order[s : s + batch_size] for s in range(0, n, batch_size)][skip:]


class _BatchDataset(torch.utils.data.Dataset):
    def __init__(self, maker: BatchMaker, batches: list[np.ndarray], epoch: int):
        self.maker, self.batches, self.epoch = maker, batches, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> Batch:
        return self.maker(self.batches[k], self.epoch)


def iterate_batches(maker: BatchMaker, batches: list[np.ndarray], epoch: int, workers: int) -> Iterator[Batch]:
    """The batches in order, built in ``workers`` loader processes (0: here)."""
    if workers == 0:
        for b in batches:
            yield maker(b, epoch)
        return
    loader = torch.utils.data.DataLoader(_BatchDataset(maker, batches, epoch), batch_size=None, shuffle=False,
                                         num_workers=workers, persistent_workers=False)
    yield from loader
