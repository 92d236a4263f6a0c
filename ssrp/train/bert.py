"""BERT initialisation of the text side (Sec. 4.1: "All models are initialized with BERT pretrained weights").

A BERT directory has the Hugging Face layout: ``config.json``, ``model.safetensors``, ``vocab.txt``.
``ssrp models fetch bert --to DIR`` downloads bert-base-uncased into ``DIR/bert/`` (pinned revision,
sha256-checked); ``build_tiny_bert(DIR)`` writes a small random BERT in the same layout. Both are read
by the same code, offline: ``bert_model_config`` adopts the checkpoint's vocabulary and position sizes,
``bert_data_config`` its special token ids, ``load_bert`` copies embeddings, the first
``model.text_layers`` layers, the MLM transform (and, for Cross, the pooler) and reports what it left.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from ssrp.models.hub import ModelSource, RemoteFile
from ssrp.train.config import DataConfig, ModelConfig

logger = logging.getLogger(__name__)

BERT_REPO = "google-bert/bert-base-uncased"
BERT_REVISION = "86b5e0934494bd15c9632b12f734a8a67f723594"
_BASE = f"https://huggingface.co/{BERT_REPO}/resolve/{BERT_REVISION}/"

# sha256 of the files at BERT_REVISION (the LFS object id of model.safetensors; the blob hashes of the
# small files), as pinned by several independent public projects; see docs/training.md.
SOURCE = ModelSource(
    name="bert",
    description=f"bert-base-uncased ({BERT_REPO} @ {BERT_REVISION[:8]}): initialises the text encoder",
    files=(
        RemoteFile(
            _BASE + "config.json", "config.json", "7160e1553ad2ca51d8c1cb066be533db31826e12d173824c1bb0cb1a4f187d20"
        ),
        RemoteFile(
            _BASE + "vocab.txt", "vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
        ),
        RemoteFile(
            _BASE + "model.safetensors",
            "model.safetensors",
            "68d45e234eb4a928074dfd868cead0219ab85354cc53d20e772753c6bb9169d3",
        ),
    ),
    notes=("Apache-2.0. 440,449,768 bytes of weights (110M parameters, float32).",),
)

_SPECIAL = re.compile(r"^\[[^\]]+\]$")


def _read_config(bert_dir: str) -> dict:
    path = os.path.join(bert_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: --bert must be a Hugging Face BERT directory (config.json, model.safetensors, "
            "vocab.txt); get one with `ssrp models fetch bert --to DIR` (then DIR/bert) or `ssrp models tiny DIR`"
        )
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_vocab(bert_dir: str) -> list[str]:
    path = os.path.join(bert_dir, "vocab.txt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: the BERT directory has no WordPiece vocabulary")
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def bert_model_config(model: ModelConfig, bert_dir: str) -> ModelConfig:
    """The model config with BERT's vocabulary/position/segment sizes; refuses mismatched shapes."""
    bert = _read_config(bert_dir)
    pairs = {
        "hidden": bert.get("hidden_size"),
        "heads": bert.get("num_attention_heads"),
        "intermediate": bert.get("intermediate_size"),
    }
    for name, value in pairs.items():
        if value != getattr(model, name):
            raise ValueError(
                f"BERT in {bert_dir} has {name}={value} but model.{name}={getattr(model, name)}: "
                f"pass --set model.{name}={value} (or a BERT of the model's size)"
            )
    if model.text_layers > bert.get("num_hidden_layers", 0):
        raise ValueError(
            f"model.text_layers={model.text_layers} but BERT in {bert_dir} has only "
            f"{bert.get('num_hidden_layers')} layers"
        )
    if bert.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"BERT in {bert_dir} uses hidden_act={bert.get('hidden_act')!r}; the encoder uses gelu")
    return dataclasses.replace(
        model,
        vocab_size=int(bert["vocab_size"]),
        max_positions=int(bert.get("max_position_embeddings", model.max_positions)),
        type_vocab_size=int(bert.get("type_vocab_size", model.type_vocab_size)),
        layer_norm_eps=float(bert.get("layer_norm_eps", model.layer_norm_eps)),
    )


def bert_data_config(data: DataConfig, bert_dir: str) -> DataConfig:
    """[PAD]/[MASK] ids and the first ordinary token id, read from the BERT vocab.txt."""
    vocab = read_vocab(bert_dir)
    ids = {tok: i for i, tok in enumerate(vocab)}
    for tok in ("[PAD]", "[MASK]", "[CLS]", "[SEP]"):
        if tok not in ids:
            raise ValueError(f"{bert_dir}/vocab.txt has no {tok} token")
    first_plain = next((i for i, tok in enumerate(vocab) if not _SPECIAL.match(tok)), len(vocab))
    return dataclasses.replace(data, pad_id=ids["[PAD]"], mask_id=ids["[MASK]"], random_token_min=first_plain)


@dataclass(frozen=True)
class BertLoadReport:
    mapped: tuple[str, ...]  # target parameter names set from BERT
    unmapped: tuple[str, ...]  # BERT tensors not used (higher layers, NSP head, ...)
    not_from_bert: tuple[str, ...]  # target parameters left at their random initialisation


def _normalise_key(key: str) -> str:
    key = key.removeprefix("bert.")
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "encoder.text_embeddings.word.weight",
    "embeddings.position_embeddings.weight": "encoder.text_embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "encoder.text_embeddings.segment.weight",
    "embeddings.LayerNorm.weight": "encoder.text_embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "encoder.text_embeddings.norm.bias",
}
_LAYER = {
    "attention.self.query": "self_attn.attn.qkv",  # rows [0, H) of the fused projection
    "attention.self.key": "self_attn.attn.qkv",  # rows [H, 2H)
    "attention.self.value": "self_attn.attn.qkv",  # rows [2H, 3H)
    "attention.output.dense": "self_attn.attn.out",
    "attention.output.LayerNorm": "self_attn.norm",
    "intermediate.dense": "ff.fc1",
    "output.dense": "ff.fc2",
    "output.LayerNorm": "ff.norm",
}
_QKV_PART = {"attention.self.query": 0, "attention.self.key": 1, "attention.self.value": 2}
_HEADS = {
    "cls.predictions.transform.dense.weight": "mlm_transform.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_transform.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_transform.norm.bias",
    "cls.predictions.bias": "mlm_bias",
    "cls.predictions.decoder.bias": "mlm_bias",
}
_POOLER = {"pooler.dense.weight": "align.dense.weight", "pooler.dense.bias": "align.dense.bias"}


def _target_name(key: str, text_layers: int, variant: str) -> tuple[str, int | None] | None:
    """The parameter a BERT tensor initialises, and which third of a fused q/k/v projection (or None)."""
    if key in _EMBEDDINGS:
        return _EMBEDDINGS[key], None
    if key in _HEADS:
        return _HEADS[key], None
    if key in _POOLER and variant == "cross":  # Cross: f_align = g_align(w_CLS) has BERT's pooler shape
        return _POOLER[key], None
    m = re.match(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m and int(m.group(1)) < text_layers and m.group(2) in _LAYER:
        return f"encoder.text_layers.{m.group(1)}.{_LAYER[m.group(2)]}.{m.group(3)}", _QKV_PART.get(m.group(2))
    return None


def load_bert(model: nn.Module, bert_dir: str, cfg: ModelConfig) -> BertLoadReport:
    """Copy BERT's weights into a Stage1Model (or anything with the same parameter names)."""
    from safetensors.torch import load_file

    path = os.path.join(bert_dir, "model.safetensors")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: the BERT directory has no model.safetensors")
    source = {_normalise_key(k): v for k, v in load_file(path).items()}
    params = dict(model.named_parameters())
    mapped, unmapped = [], []
    with torch.no_grad():
        for key, tensor in sorted(source.items()):
            found = _target_name(key, cfg.text_layers, cfg.variant)
            if found is None or found[0] not in params:
                unmapped.append(key)
                continue
            target, part = found
            dest = params[target] if part is None else params[target].chunk(3, 0)[part]
            if dest.shape != tensor.shape:
                raise ValueError(f"BERT tensor {key} has shape {tuple(tensor.shape)}, {target} has {tuple(dest.shape)}")
            dest.copy_(tensor.to(dest.dtype))
            mapped.append(target)
    mapped = sorted(set(mapped))
    rest = tuple(sorted(set(params) - set(mapped)))
    report = BertLoadReport(tuple(mapped), tuple(unmapped), rest)
    logger.info(
        "BERT %s: %d tensors loaded, %d BERT tensors unused (%s), %d parameters keep their random init",
        bert_dir,
        len(mapped),
        len(unmapped),
        _summarise(unmapped),
        len(rest),
    )
    return report


def _summarise(keys: list[str]) -> str:
    groups = sorted({re.sub(r"\.(weight|bias)$", "", re.sub(r"layer\.\d+\..*", "layer.N", k)) for k in keys})
    return ", ".join(groups[:8]) + (" ..." if len(groups) > 8 else "")


# ------------------------------------------------------------------------------------------------
# Tiny BERT for tests and the demo


TINY_WORDS = (
    "a an the of on in with and to at near by is are two three man woman people dog cat horse bird "
    "table plate pizza food street car bus train sign building sky water field grass tree snow beach "
    "sitting standing holding riding walking eating looking playing red white black blue green large small "
    "young old next front top down up over there his her their it its some"
).split()


def _default_vocab() -> list[str]:
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,'-")
    return [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *TINY_WORDS,
        *letters,
        *("##" + c for c in letters[:26]),
        "##s",
        "##ing",
        "##ed",
    ]


def build_tiny_bert(models_dir: str) -> dict:
    """A random 2-layer, 32-d BERT in the Hugging Face layout under ``models_dir/bert/``.

    Uses ``models_dir/bert/vocab.txt`` if it is already there (the text stage's tiny build writes a
    trained WordPiece vocabulary first); otherwise writes a small vocabulary of its own.
    """
    from transformers import BertConfig, BertForPreTraining

    out = os.path.join(models_dir, "bert")
    os.makedirs(out, exist_ok=True)
    vocab_path = os.path.join(out, "vocab.txt")
    if os.path.exists(vocab_path):
        vocab = read_vocab(out)
        vocab_source = "existing"
    else:
        vocab = _default_vocab()
        with open(vocab_path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(vocab) + "\n")
        vocab_source = "written"
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        pad_token_id=vocab.index("[PAD]") if "[PAD]" in vocab else 0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForPreTraining(config)
    model.save_pretrained(out, safe_serialization=True)
    return {
        "dir": out,
        "vocab": vocab_source,
        "vocab_size": len(vocab),
        "hidden": 32,
        "layers": 2,
        "files": sorted(os.listdir(out)),
    }
