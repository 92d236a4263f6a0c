"""Training data over corpus shards: image-caption pairs, augmented views, masking, length bucketing.

* ``load_pairs(reader)``: every (image_id, caption_id) of the corpus' index records.
* ``Stage1Dataset``: one (image view, caption variant) per pair, masked words and RoIs
  (80% [MASK]/zeroed, 10% random, 10% kept), and a mismatched caption with probability 0.5.
* ``Stage2Dataset``: two different image views and two different caption variants per pair, unmasked,
  with each variant's word-level tree distances.
* ``BucketBatchSampler``: global batches of similar caption lengths, sliced per rank; yields
  ``(index, epoch)`` keys so each sample's randomness depends only on (seed, epoch, index), never on
  the worker, the rank split or the resume point.
* ``Collate``: pads to the batch maximum and stacks into tensors (runs in the loader workers); ``keys`` lists
  each sample's record keys, so a failing batch can be named.

The corpus reader opens its LMDB shards lazily in each worker process.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssrp.corpus import INDEX, CorpusReader, TextRecord, image_key, text_key
from ssrp.corpus.records import decode_header
from ssrp.train.config import DataConfig, ModelConfig, Stage1Config

logger = logging.getLogger(__name__)

RAW = "raw"
_IMAGE_ARRAYS = ("features", "boxes", "obj_ids")  # what a training sample takes from an image record


class DataError(ValueError):
    """The corpus cannot feed the trainer (unparsed texts, wrong feature size, unknown ids...)."""


def load_pairs(reader: CorpusReader) -> np.ndarray:
    """[P, 2] int64 (image_id, caption_id), sorted; from the corpus' index records."""
    rows = [(rec.image_id, int(cid)) for _, rec in reader.items(INDEX) for cid in rec.caption_ids]
    if not rows:
        raise DataError(f"{reader.root}: the corpus has no index records with captions")
    return np.array(sorted(rows), dtype=np.int64)


def caption_lengths(reader: CorpusReader, caption_ids: np.ndarray, max_tokens: int) -> np.ndarray:
    """Token count of each caption's raw variant, read from record headers only (no array decode)."""
    out = np.empty(len(caption_ids), dtype=np.int32)
    for i, cid in enumerate(caption_ids):
        try:
            header, _ = decode_header(reader.get_raw(text_key(int(cid), RAW)))
            shape = next(d[2] for d in header["arrays"] if d[0] == "input_ids")
            out[i] = min(int(shape[0]), max_tokens)
        except KeyError:
            out[i] = max_tokens
    return out


def corpus_feature_dim(reader: CorpusReader) -> int:
    for key in reader.keys("image"):
        return int(reader.get(key).features.shape[1])
    raise DataError(f"{reader.root}: the corpus has no image records")


def resolve_choices(what: str, configured: Sequence[str], available: Sequence[str], stage: str) -> tuple[str, ...]:
    """The views (or variants) to draw from, with one clear log line about what the corpus offers."""
    if not available:
        raise DataError(f"the corpus has no {what}")
    missing = [v for v in configured if v not in available]
    if missing:
        logger.warning(
            "%s %s requested but not in the corpus (it has %s); ignoring them", what, missing, list(available)
        )
    chosen = tuple(v for v in configured if v in available) if configured else tuple(available)
    if not chosen:
        raise DataError(f"none of the requested {what} {list(configured)} is in the corpus (it has {list(available)})")
    if len(chosen) == 1 and stage == "stage2":
        logger.warning(
            "only one %s (%s) in this corpus: both stage-2 views of a pair use it, so the %s contrastive term "
            "compares identical inputs; build the corpus with augmentations for the paper's setting",
            what[:-1],
            chosen[0],
            "visual" if what == "image views" else "text",
        )
    else:
        logger.info("%s: drawing from %s", what, list(chosen))
    return chosen


def fit_text(rec: TextRecord, max_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, piece_word and tree_dist cut to max_tokens (the final [SEP] kept, cut words dropped)."""
    if not rec.parsed or len(rec.input_ids) == 0:
        raise DataError(
            f"{rec.key}: text record is not parsed (no words or input_ids); training needs parsed texts: "
            "run the parse stage on this corpus first"
        )
    ids = np.asarray(rec.input_ids, dtype=np.int64)
    pw = np.asarray(rec.piece_word, dtype=np.int64)
    if len(ids) > max_tokens:
        ids = np.concatenate([ids[: max_tokens - 1], ids[-1:]])
        pw = np.concatenate([pw[: max_tokens - 1], [-1]])
    words = int(pw.max()) + 1 if (pw >= 0).any() else 0
    return ids, pw, np.asarray(rec.tree_dist[:words, :words])


class CorpusRecords:
    """One image view or one caption variant of the corpus as the model takes it, checked against the model's
    sizes (training datasets and evaluation both read through it)."""

    def __init__(self, corpus: str, data: DataConfig, model: ModelConfig):
        self.reader = CorpusReader(corpus, check_crc=data.check_crc)  # shards open lazily, in whichever process reads
        self.data = data
        self.vocab_size = model.vocab_size
        self.num_labels = model.num_object_labels
        self.feature_dim = model.feature_dim

    def image(self, image_id: int, view: str) -> dict[str, np.ndarray]:
        """Features, boxes (normalised by the view's size) and labels of one view, copied out of the shard."""
        key = image_key(image_id, view)
        try:
            fields, arrays = self.reader.get_arrays(key, _IMAGE_ARRAYS)
        except KeyError:
            if view == RAW:
                raise
            key = image_key(image_id, RAW)
            fields, arrays = self.reader.get_arrays(key, _IMAGE_ARRAYS)
        features, boxes = arrays["features"], arrays["boxes"]
        n = min(len(boxes), self.data.max_objects)
        if features.shape != (len(boxes), self.feature_dim):
            raise DataError(
                f"{key}: features are {features.shape[1]}-d but model.feature_dim={self.feature_dim}; "
                f"pass --set model.feature_dim={features.shape[1]}"
            )
        labels = arrays["obj_ids"][:n].astype(np.int64)
        if n and labels.max() >= self.num_labels:
            raise DataError(f"{key}: object label {labels.max()} >= model.num_object_labels={self.num_labels}")
        if n == 0:  # no detections: one neutral object, never a training target
            return {
                "features": np.zeros((1, self.feature_dim), np.float16),
                "boxes": np.array([[0, 0, 1, 1]], np.float32),
                "obj_ids": np.full(1, -1, np.int64),
            }
        width, height = fields["width"], fields["height"]
        scale = np.array([width, height, width, height], dtype=np.float32)
        return {
            "features": features[:n].copy(),
            "boxes": np.clip(boxes[:n] / scale, 0.0, 1.0),
            "obj_ids": labels,
        }

    def text(self, caption_id: int, variant: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            rec = self.reader.text(caption_id, variant)
        except KeyError:
            if variant == RAW:
                raise
            rec = self.reader.text(caption_id, RAW)
        ids, pw, td = fit_text(rec, self.data.max_tokens)
        if ids.max() >= self.vocab_size:
            raise DataError(f"{rec.key}: token id {ids.max()} >= model.vocab_size={self.vocab_size} (wrong vocab?)")
        return ids, pw, td



class PairDataset(CorpusRecords, Dataset, ABC):
    """Image-caption pairs; subclasses say how a stage samples views and variants of a pair (``sample``)."""

    def __init__(
        self,
        corpus: str,
        pairs: np.ndarray,
        views: tuple[str, ...],
        variants: tuple[str, ...],
        data: DataConfig,
        model: ModelConfig,
        seed: int,
    ):
        super().__init__(corpus, data, model)
        self.pairs = pairs
        self.views = views
        self.variants = variants
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def __getitem__(self, key: tuple[int, int]) -> dict:
        """The sample of pair ``index`` in ``epoch``; a pair whose records are missing from the corpus
        (e.g. dead-lettered upstream) is replaced by the next pair, with a warning."""
        index, epoch = key
        for attempt in range(8):
            i = (index + attempt) % len(self.pairs)
            try:
                return self.sample(i, epoch)
            except KeyError as err:
                logger.warning(
                    "pair %d (image %d, caption %d): record %s missing from the corpus; using pair %d",
                    i,
                    self.pairs[i, 0],
                    self.pairs[i, 1],
                    err,
                    (i + 1) % len(self.pairs),
                )
        raise DataError(f"8 consecutive pairs from index {index} have records missing from the corpus")

    @abstractmethod
    def sample(self, index: int, epoch: int) -> dict:
        """One training sample of pair ``index`` in ``epoch``."""

class Stage1Dataset(PairDataset):
    """Masked (image view, caption variant) pairs with 50% mismatched captions (Eq. 3, 4)."""

    def __init__(self, *args, stage1: Stage1Config, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage1 = stage1

    def sample(self, index: int, epoch: int) -> dict[str, np.ndarray]:
        rng = self.rng(index, epoch)
        image_id, caption_id = (int(x) for x in self.pairs[index])
        view = self.views[rng.integers(len(self.views))]
        variant = self.variants[rng.integers(len(self.variants))]
        matched = 1.0
        if rng.random() < self.stage1.mismatch_prob:
            other = self._other_caption(rng, image_id)
            if other is not None:
                caption_id, matched = other, 0.0
        sample = self._mask_text(rng, self.text(caption_id, variant)[0])
        sample.update(self._mask_objects(rng, self.image(image_id, view)))
        sample["matched"] = np.float32(matched)
        sample["key"] = f"{image_key(image_id, view)}+{text_key(caption_id, variant)}"
        return sample

    def _other_caption(self, rng: np.random.Generator, image_id: int) -> int | None:
        for _ in range(16):
            j = int(rng.integers(len(self.pairs)))
            if self.pairs[j, 0] != image_id:
                return int(self.pairs[j, 1])
        return None

    def _mask_text(self, rng: np.random.Generator, ids: np.ndarray) -> dict[str, np.ndarray]:
        special = np.zeros(len(ids), bool)
        special[0] = special[-1] = True  # [CLS], [SEP]
        chosen = (rng.random(len(ids)) < self.stage1.mask_prob) & ~special
        labels = np.where(chosen, ids, -1)
        r = rng.random(len(ids))
        randoms = rng.integers(
            self.data.random_token_min, max(self.vocab_size, self.data.random_token_min + 1), len(ids)
        )
        ids = np.where(chosen & (r < 0.8), self.data.mask_id, ids)
        ids = np.where(chosen & (r >= 0.8) & (r < 0.9), randoms, ids)
        return {"input_ids": ids, "mlm_labels": labels}

    def _mask_objects(self, rng: np.random.Generator, img: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats, n = img["features"], len(img["features"])
        chosen = (rng.random(n) < self.stage1.mask_prob) & (img["obj_ids"] >= 0)
        r = rng.random(n)
        swap = rng.integers(n, size=n)
        masked = np.where((chosen & (r < 0.8))[:, None], np.float16(0), feats)
        masked = np.where((chosen & (r >= 0.8) & (r < 0.9))[:, None], feats[swap], masked)
        return {
            "features": masked,
            "feat_targets": feats,
            "boxes": img["boxes"],
            "obj_labels": np.where(chosen, img["obj_ids"], -1),
        }


class Stage2Dataset(PairDataset):
    """Two different image views and two different caption variants per pair (Sec. 3.3.2)."""

    def sample(self, index: int, epoch: int) -> dict:
        rng = self.rng(index, epoch)
        image_id, caption_id = (int(x) for x in self.pairs[index])
        views = _two(rng, self.views)
        variants = _two(rng, self.variants)
        out: dict = {"key": " ".join(f"{image_key(image_id, v)}+{text_key(caption_id, t)}"
                                     for v, t in zip(views, variants, strict=True))}
        for name, view, variant in zip(("a", "b"), views, variants, strict=True):
            ids, pw, td = self.text(caption_id, variant)
            img = self.image(image_id, view)
            out[name] = {
                "input_ids": ids,
                "piece_word": pw,
                "tree_dist": td,
                "features": img["features"],
                "boxes": img["boxes"],
            }
        return out


def _two(rng: np.random.Generator, choices: tuple[str, ...]) -> tuple[str, str]:
    if len(choices) == 1:
        return choices[0], choices[0]
    i = int(rng.integers(len(choices)))
    j = (i + 1 + int(rng.integers(len(choices) - 1))) % len(choices)  # uniform over the others
    return choices[i], choices[j]


# ------------------------------------------------------------------------------------------------
# Collate


def _pad(arrays: list[np.ndarray], length: int, fill: float, dtype: np.dtype) -> np.ndarray:
    shape = (len(arrays), length, *arrays[0].shape[1:])
    out = np.zeros(shape, dtype=dtype) if fill == 0 else np.full(shape, fill, dtype=dtype)  # zeros: lazily paged
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def _pad_square(arrays: list[np.ndarray], size: int) -> np.ndarray:
    out = np.full((len(arrays), size, size), -1, dtype=np.int16)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out


def _keys(samples: list[dict]) -> dict[str, list[str]]:
    """``keys``: the samples' record keys, to name a batch that fails (when the samples carry them)."""
    return {"keys": [s["key"] for s in samples]} if all("key" in s for s in samples) else {}


class Collate:
    """Pads a list of samples to the batch maximum and stacks them into tensors."""

    def __init__(self, stage: str, pad_id: int):
        self.stage = stage
        self.pad_id = pad_id

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        if self.stage == "stage1":
            return self.stage1(samples)
        views = [s["a"] for s in samples] + [s["b"] for s in samples]
        batch = self.common(views)
        batch.update(_keys(samples))
        pw = [v["piece_word"] for v in views]
        batch["piece_word"] = torch.from_numpy(_pad(pw, batch["input_ids"].shape[1], -1, np.int64))
        words = max(1, max(v["tree_dist"].shape[0] for v in views))
        batch["tree_dist"] = torch.from_numpy(_pad_square([v["tree_dist"] for v in views], words))
        return batch

    def common(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        t = max(len(s["input_ids"]) for s in samples)
        n = max(len(s["features"]) for s in samples)
        ids = _pad([s["input_ids"] for s in samples], t, self.pad_id, np.int64)
        lengths_t = np.array([len(s["input_ids"]) for s in samples])
        lengths_n = np.array([len(s["features"]) for s in samples])
        return {
            "input_ids": torch.from_numpy(ids),
            "text_mask": torch.from_numpy(np.arange(t)[None] < lengths_t[:, None]),
            "features": torch.from_numpy(_pad([s["features"] for s in samples], n, 0, np.float16)),
            "boxes": torch.from_numpy(_pad([s["boxes"] for s in samples], n, 0, np.float32)),
            "object_mask": torch.from_numpy(np.arange(n)[None] < lengths_n[:, None]),
        }

    def stage1(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.common(samples)
        t, n = batch["input_ids"].shape[1], batch["features"].shape[1]
        batch["mlm_labels"] = torch.from_numpy(_pad([s["mlm_labels"] for s in samples], t, -1, np.int64))
        batch["obj_labels"] = torch.from_numpy(_pad([s["obj_labels"] for s in samples], n, -1, np.int64))
        batch["feat_targets"] = torch.from_numpy(_pad([s["feat_targets"] for s in samples], n, 0, np.float16))
        batch["matched"] = torch.tensor([float(s["matched"]) for s in samples])
        batch.update(_keys(samples))
        return batch


# ------------------------------------------------------------------------------------------------
# Sampling


class BucketBatchSampler:
    """Global batches of similar lengths, the same on every rank; each rank takes its slice.

    Per epoch: shuffle all pairs, cut into buckets of ``bucket_batches`` global batches, sort each
    bucket by caption length, cut into global batches (the last incomplete one dropped), shuffle the
    batches. Rank r gets items [r*b, (r+1)*b) of every global batch, b = global batch / world size.
    """

    def __init__(self, lengths: np.ndarray, global_batch: int, rank: int, world: int, seed: int, bucket_batches: int):
        if len(lengths) < global_batch:
            raise DataError(
                f"the corpus has {len(lengths)} image-caption pairs, fewer than one batch of {global_batch}"
            )
        self.lengths = lengths
        self.global_batch = global_batch
        self.rank, self.world = rank, world
        self.seed = seed
        self.bucket_batches = bucket_batches
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    @property
    def batches_per_epoch(self) -> int:
        return len(self.lengths) // self.global_batch

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 7])
        order = rng.permutation(len(self.lengths))
        if self.bucket_batches:
            size = self.global_batch * self.bucket_batches
            buckets = [order[i : i + size] for i in range(0, len(order), size)]
            order = np.concatenate([b[np.argsort(-self.lengths[b], kind="stable")] for b in buckets])
        n = self.batches_per_epoch
        batches = [order[i * self.global_batch : (i + 1) * self.global_batch] for i in range(n)]
        return [batches[i] for i in rng.permutation(n)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per = self.global_batch // self.world
        for batch in self.global_batches(self.epoch)[self.start :]:
            yield [(int(i), self.epoch) for i in batch[self.rank * per : (self.rank + 1) * per]]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


def auto_workers(cores: int | None = None, ranks_on_host: int | None = None, cap: int = 16) -> int:
    """Loader workers for ``data.num_workers=-1``: this rank's share of the host's cores, less one for the
    rank's own process, at most ``cap`` (stage 2 on an H100 consumed ~9.5k pairs/s; 8 workers gave ~5.8k)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if ranks_on_host is None:
        ranks_on_host = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(cap, cores // max(1, ranks_on_host) - 1))


def build_loader(
    dataset: Dataset, sampler: BucketBatchSampler, collate: Collate, workers: int, pin: bool
) -> DataLoader:
    """A DataLoader with its own generator: creating iterators never consumes the global torch RNG."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
