"""Fine-tuning data: task examples tokenised as LXMERT tokenises them, their images' RoIs, padded batches.

* ``Tokenizer``: BERT WordPiece over the run's ``vocab.txt`` (LXMERT: ``BertTokenizer(do_lower_case=True)``);
  a sentence's pieces are cut to ``max_tokens - 2`` and wrapped in [CLS] ... [SEP]. The words R_w is computed
  over are BERT's pre-tokenised words (whitespace and punctuation splits); a word's vector is the mean of its
  pieces, as in pretraining.
* ``TaskDataset``: one example per item: its tokens and one image (VQA, GQA) or two (NLVR2).
* ``TaskCollate``: pads to the batch maximum; NLVR2's pairs become two rows each (sentence repeated), as
  LXMERT's NLVR2Model pairs them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssrp.finetune.tasks import Example, load_split
from ssrp.parse.wordpiece import load_wordpiece
from ssrp.train.data import Collate

logger = logging.getLogger(__name__)


class Tokenizer:
    """WordPiece ids and each piece's word (-1 for [CLS]/[SEP]) of sentences, LXMERT's truncation."""

    def __init__(self, vocab_path: str, max_tokens: int, lowercase: bool = True):
        self.tokenizer = load_wordpiece(vocab_path, lowercase=lowercase)
        self.max_tokens = max_tokens
        self.cls = self.tokenizer.token_to_id("[CLS]")
        self.sep = self.tokenizer.token_to_id("[SEP]")
        self.pad = self.tokenizer.token_to_id("[PAD]")
        with open(vocab_path, encoding="utf-8") as fh:
            self.vocab_size = sum(1 for _ in fh)  # rows of vocab.txt = the embedding rows (duplicates included)

    def __call__(self, sentences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        keep = self.max_tokens - 2
        for enc in self.tokenizer.encode_batch([s.strip() for s in sentences], add_special_tokens=False):
            ids = [self.cls, *enc.ids[:keep], self.sep]
            words = [-1, *(w if w is not None else -1 for w in enc.word_ids[:keep]), -1]
            out.append((np.asarray(ids, np.int64), np.asarray(words, np.int64)))
        return out


def load_examples(task: str, data_dir: str, splits: tuple[str, ...] | list[str]) -> list[Example]:
    examples: list[Example] = []
    for split in splits:
        examples += load_split(task, data_dir, split)
    return examples


def keep_with_images(examples: list[Example], images, what: str) -> list[Example]:
    """The examples whose images the source has (LXMERT keeps only those, too); one warning for the rest."""
    missing = set(images.resolve({name for ex in examples for name in ex.images}))
    kept = [ex for ex in examples if not missing.intersection(ex.images)]
    if missing:
        logger.warning("%s: %d of %d examples dropped: %d image(s) not in %s (first: %r)", what,
                       len(examples) - len(kept), len(examples), len(missing), images.describe(), sorted(missing)[0])
    if not kept:
        raise ValueError(f"{what}: none of the {len(examples)} examples has its images in {images.describe()} "
                         f"(e.g. {sorted(missing)[0]!r}); build the features over the task's images")
    return kept


class TaskDataset(Dataset):
    """Items are ``(index, epoch)`` keys (or plain indices): the example's tokens, images and target."""

    def __init__(self, task: str, examples: list[Example], tokenizer: Tokenizer, images, answers: list[str] | None):
        self.task = task
        self.examples = examples
        self.tokens = tokenizer([ex.sent for ex in examples])
        self.images = images
        self.targets = _targets(examples, answers) if task != "nlvr2" else None

    def __len__(self) -> int:
        return len(self.examples)

    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids, _ in self.tokens], dtype=np.int64)

    def __getitem__(self, key) -> dict:
        index = key[0] if isinstance(key, tuple) else key
        ex = self.examples[index]
        ids, words = self.tokens[index]
        sample = {"index": index, "input_ids": ids, "piece_word": words,
                  "images": [self.images.get(name) for name in ex.images]}
        if ex.label is not None:
            sample["label"] = self.targets[index] if self.targets is not None else int(ex.label)
        return sample


def _targets(examples: list[Example], answers: list[str] | None) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Each labelled example's (answer indices, soft scores); answers outside the vocabulary are left out."""
    index = {a: i for i, a in enumerate(answers or [])}
    out = []
    for ex in examples:
        if ex.label is None:
            out.append(None)
            continue
        pairs = [(index[a], s) for a, s in ex.label.items() if a in index]
        out.append((np.array([p for p, _ in pairs], np.int64), np.array([s for _, s in pairs], np.float32)))
    return out


class TaskCollate:
    """Pads a list of samples into one batch (runs in the loader workers).

    Keys: ``index`` [B]; ``input_ids``, ``text_mask``, ``piece_word`` [R, T]; ``features`` [R, N, D],
    ``boxes`` [R, N, 4], ``object_mask`` [R, N], with R = B rows (VQA, GQA) or 2B (NLVR2: img0, img1 of
    each example, in that order); and, when every sample is labelled, ``target`` [B, A] soft scores (VQA,
    GQA) or ``label`` [B] (NLVR2).
    """

    def __init__(self, task: str, pad_id: int, num_answers: int):
        self.task = task
        self.pad_id = pad_id
        self.num_answers = num_answers

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [{"input_ids": s["input_ids"], **img} for s in samples for img in s["images"]]
        batch = Collate("stage2", self.pad_id).common(rows)
        t = batch["input_ids"].shape[1]
        words = np.full((len(rows), t), -1, np.int64)
        for r, sample in enumerate(s for s in samples for _ in s["images"]):
            words[r, : len(sample["piece_word"])] = sample["piece_word"]
        batch["piece_word"] = torch.from_numpy(words)
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        if all("label" in s for s in samples):
            if self.task == "nlvr2":
                batch["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.long)
            else:
                target = torch.zeros(len(samples), self.num_answers)
                for i, s in enumerate(samples):
                    idx, scores = s["label"]
                    target[i, torch.from_numpy(idx)] = torch.from_numpy(scores)
                batch["target"] = target
        return batch


def eval_batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[tuple[int, int]]]:
    """This rank's share of all n examples (every world-th), in order, in batches: evaluation's sampler."""
    mine = list(range(rank, n, world))
    return [[(i, 0) for i in mine[k : k + batch_size]] for k in range(0, len(mine), batch_size)]


def eval_loader(dataset: TaskDataset, collate: TaskCollate, batch_size: int, workers: int, rank: int = 0,
                world: int = 1) -> DataLoader:
    return DataLoader(dataset, batch_sampler=eval_batches(len(dataset), batch_size, rank, world),
                      collate_fn=collate, num_workers=workers)

