"""Random-weight models at the published sizes, in the published formats: ``ssrp models random --size full DIR``.

For measuring speed and memory at the real size where the real weights cannot be had (offline machines, CI,
a lent GPU with no network). Each model is written through the same files and loaded by the same loader as the
weights ``ssrp models fetch`` downloads, exactly as the tiny ones are (``ssrp models tiny``); only the sizes
differ. Their outputs are noise: never build a corpus for training with them (their manifests say
``random_full_size``).

* features: BUTD Faster R-CNN R101-C4 at full width (``DetectorArch()``: 1601 classes, 401 attributes, 2048-d
  features), written as the Hugging Face ``pytorch_model.bin`` of the published weights and converted by the
  same converter (``ssrp.features.convert``);
* translate: the WMT19 transformer-big architecture (d 1024, 6+6 layers, 16 heads, encoder FFN 8192, decoder
  FFN 4096) with the published dictionary sizes (en-de/de-en joined 42,024; en 31,640 / ru 31,232), as legacy
  fairseq checkpoints (``ssrp.translate.tiny.FULL_ARCH``);
* parse: a Stanza English package with the default package's processors, dependencies and model sizes (Stanza
  1.15's trainer defaults: charlm 1024, tagger 200, parser 400 hidden; 100-d word vectors), trained for a
  couple of steps (``ssrp.parse.tiny.build_full_size_parser``);
* bert: bert-base-uncased's configuration (12 layers, 768 hidden, 30,522 WordPiece entries).

Disk (measured): 0.45 GB (features: the published file and the converted one), 4.2 GB (translate: four
1.1 GB checkpoints), 0.28 GB (parse), 0.42 GB (bert). Built in about 3.5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import importlib
import logging
import os

from ssrp.features.config import DetectorArch
from ssrp.features.convert import convert_checkpoint, to_published_layout
from ssrp.features.models import ATTRIBUTES_VOCAB, HF_CHECKPOINT, OBJECTS_VOCAB, detector_dir
from ssrp.features.tiny import TINY_ATTRIBUTES, TINY_OBJECTS, random_state_dict
from ssrp.fileutil import require_dir_path
from ssrp.models.registry import FULL_SIZE_BUILDERS, canonical_name
from ssrp.parse.tiny import build_full_size_parser, build_tiny_wordpiece
from ssrp.train.bert import _default_vocab, read_vocab
from ssrp.translate.tiny import FULL_ARCH, FULL_DICT_SIZES, build_tiny

logger = logging.getLogger(__name__)

BERT_BASE_VOCAB = 30522  # bert-base-uncased's vocab.txt
PUBLISHED_OBJECTS, PUBLISHED_ATTRIBUTES = 1600, 400  # Visual Genome 1600-400-20


def build_full_size(models_dir: str, only: list[str] | None = None) -> dict:
    """Build every full-size random model (or those named) under models_dir; returns their descriptions."""
    require_dir_path(models_dir, "the models directory")
    names = list(FULL_SIZE_BUILDERS) if not only else [canonical_name(n) for n in only]
    out = {}
    for name in names:
        if name not in FULL_SIZE_BUILDERS:
            raise ValueError(f"no full-size builder for {name!r}; known: {list(FULL_SIZE_BUILDERS)}")
        module, _, function = FULL_SIZE_BUILDERS[name].partition(":")
        out[name] = getattr(importlib.import_module(module), function)(models_dir)
        logger.info("full-size random %s model written under %s", name, models_dir)
    return out


def build_features(models_dir: str, seed: int = 0) -> dict:
    """BUTD R101-C4 at full width with random weights, through the published file and the converter."""
    import torch

    arch = DetectorArch()
    out = detector_dir(models_dir)
    os.makedirs(out, exist_ok=True)
    torch.save(to_published_layout(random_state_dict(arch, seed), arch, "hf"), os.path.join(out, HF_CHECKPOINT))
    vocabularies = ((OBJECTS_VOCAB, TINY_OBJECTS, PUBLISHED_OBJECTS), (ATTRIBUTES_VOCAB, TINY_ATTRIBUTES,
                                                                      PUBLISHED_ATTRIBUTES))
    for name, words, size in vocabularies:
        with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
            fh.write("\n".join(_padded(list(words), size, "vg")))
    return convert_checkpoint(os.path.join(out, HF_CHECKPOINT), "hf", out, name="butd-r101-random_full_size")


def build_translate(models_dir: str) -> dict:
    return build_tiny(models_dir, arch=FULL_ARCH, dict_sizes=FULL_DICT_SIZES, source="random_full_size")


def build_parse(models_dir: str) -> dict:
    return {"parse": build_full_size_parser(models_dir), "wordpiece": build_tiny_wordpiece(models_dir)}


def build_bert(models_dir: str, seed: int = 0) -> dict:
    """bert-base-uncased's configuration with random weights (Hugging Face layout); the vocabulary is the
    WordPiece one already in bert/vocab.txt (the parse build's) or the tiny BERT's, padded to 30,522."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    out = os.path.join(models_dir, "bert")
    os.makedirs(out, exist_ok=True)
    vocab_path = os.path.join(out, "vocab.txt")
    vocab = read_vocab(out) if os.path.exists(vocab_path) else _default_vocab()
    vocab = _padded(vocab, BERT_BASE_VOCAB, "[unused", "]")
    with open(vocab_path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(vocab) + "\n")
    config = BertConfig(vocab_size=len(vocab), pad_token_id=vocab.index("[PAD]"))  # the defaults are BERT-base's
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForPreTraining(config)
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    return {"dir": out, "vocab_size": len(vocab), "hidden": config.hidden_size, "layers": config.num_hidden_layers,
            "parameters": params, "random_full_size": True}


def _padded(words: list[str], size: int, prefix: str, suffix: str = "") -> list[str]:
    """``words`` then ``prefix{i}{suffix}`` fillers up to ``size`` entries (the real files' lengths)."""
    if len(words) > size:
        raise ValueError(f"{len(words)} entries do not fit in {size}")
    return words + [f"{prefix}{i}{suffix}" for i in range(size - len(words))]
