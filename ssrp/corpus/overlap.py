"""Which images of a corpus a model was trained on: evaluation and validation warn when they are not held out.

A checkpoint records the corpora it was trained on (``ssrp.train.checkpoint.corpus_identity``: path, config
hash, input fingerprint, images per split); this compares them with the images about to be evaluated.
"""

from __future__ import annotations

import os

from ssrp.corpus.reader import CorpusReader, load_manifest


def training_overlap(trained_on: list[dict], reader: CorpusReader, image_ids: list[int]) -> str | None:
    """Why the images evaluated are not held out (a sentence), or None when none was in training.

    Exact when the training corpus is still at its recorded path, unchanged (the same config hash: image ids
    compared); otherwise (moved, deleted or rebuilt there) by split: an image of a split the corpus held."""
    if not trained_on:
        return "the checkpoint does not record its training corpus: it cannot be checked that these images are held out"
    wanted = set(image_ids)
    for corpus in trained_on:
        path = corpus.get("path", "")
        if _same_corpus(path, corpus):
            with CorpusReader(path) as trained:
                seen = wanted & set(trained.image_ids())
            if seen:
                return f"{len(seen)} of the {len(image_ids)} images evaluated are in the training corpus {path}"
            continue
        splits = {s for s, n in corpus.get("splits", {}).items() if s and n}
        hit = [i for i in image_ids if reader.index(i).split in splits]
        if hit:
            return (f"{len(hit)} of the {len(image_ids)} images evaluated belong to split(s) {sorted(splits)}, which the "
                    f"training corpus {path} held")
    return None


def _same_corpus(path: str, recorded: dict) -> bool:
    """Is the corpus a checkpoint recorded still at ``path``: not deleted, not rebuilt with other settings or
    over other inputs (same config hash, same input fingerprint)?"""
    if not path or not os.path.exists(os.path.join(path, "manifest.json")):
        return False
    try:
        manifest = load_manifest(path)
    except (OSError, ValueError):
        return False
    return (manifest.get("config_hash") == recorded.get("config_hash")
            and manifest.get("inputs", {}) == recorded.get("inputs", {}))
