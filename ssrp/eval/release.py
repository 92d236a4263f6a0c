"""``ssrp export hf``: a trained SSRP model as files others can load; ``ssrp.load(DIR)`` reads them back.

A release directory (docs/evaluation.md, "Models others can load")::

    config.json         SSRP-Cross (layout "lxmert"): a transformers LxmertConfig (model_type "lxmert") with an
                        extra "ssrp" block; Share and Visual (layout "ssrp"): {"architectures": ["SSRPEncoder"],
                        "ssrp": {...}}. The block holds the ssrp ModelConfig, the stage-2 settings, the input
                        settings (max tokens/objects, special token ids), where the weights came from, the corpus.
    model.safetensors   the encoder: LxmertModel's tensor names (``LxmertModel.from_pretrained(DIR)`` loads it),
                        or SSRPEncoder's own names (``ssrp.load(DIR)``)
    heads.safetensors   ``probes.*``: the stage-2 probes B_w, B_v and projection heads (Stage2Heads' names);
                        ``align.*``: the stage-1 g_align and matching classifier (AlignHead's names); either
                        may be absent
    vocab.txt           the BERT WordPiece vocabulary (with --vocab): ``BertTokenizer.from_pretrained(DIR)``
    README.md           the model card (ssrp.eval.card)

Every tensor is float32 (as trained), little-endian, in safetensors (no pickle). Nothing here imports
transformers: the files are what LxmertModel reads, and the tests load them with it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ssrp import __version__
from ssrp.config import from_dict, to_dict
from ssrp.corpus import load_manifest
from ssrp.eval.card import model_card, read_metrics
from ssrp.eval.inference import check_same_encoder
from ssrp.eval.lxmert import check_lxmert_compatible, from_lxmert, lxmert_config, to_lxmert
from ssrp.fileutil import atomic_file, atomic_write_text, require_dir_path, sha256_file
from ssrp.train.checkpoint import load_checkpoint, train_config_of
from ssrp.train.config import ModelConfig, Stage2Config, TrainConfig
from ssrp.train.heads import AlignHead, Stage2Heads, pool_words
from ssrp.train.model import SSRPEncoder

logger = logging.getLogger(__name__)

FORMAT = "ssrp-release/1"
CONFIG, WEIGHTS, HEADS, VOCAB, CARD = "config.json", "model.safetensors", "heads.safetensors", "vocab.txt", "README.md"
LAYOUTS = ("auto", "lxmert", "ssrp")
_SAFETENSORS_META = {"format": "pt"}  # transformers refuses safetensors files without it


class ReleaseError(ValueError):
    """A release directory that cannot be loaded: missing files, unknown format, weights that do not fit."""


@dataclass
class Parts:
    """What a release is made of: the encoder, the heads present, and the configs they were trained with."""

    cfg: TrainConfig
    encoder: dict[str, Tensor]
    probes: dict[str, Tensor] | None
    align: dict[str, Tensor] | None
    checkpoint: dict  # stage, step, path of the checkpoint the encoder came from
    stage1_cfg: TrainConfig | None = None  # the stage-1 run's config, when known


def _prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor] | None:
    part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    return part or None


def gather_parts(ckpt_path: str, stage1_path: str | None = None) -> Parts:
    """The encoder and heads of a stage-1 or stage-2 checkpoint; g_align from ``stage1_path`` when stage 2 lacks it
    (the stage-1 checkpoint must hold the very encoder the stage-2 run froze)."""
    ckpt = load_checkpoint(ckpt_path)
    cfg = train_config_of(ckpt)
    state = ckpt["model"]
    align, stage1_cfg = _prefixed(state, "align."), cfg if ckpt.get("stage") == "stage1" else None
    if stage1_path:
        s1 = load_checkpoint(stage1_path)
        if s1.get("stage") != "stage1":
            raise ValueError(f"--stage1 {stage1_path} is a {s1.get('stage')} checkpoint, not stage 1")
        check_same_encoder(s1["model"], state, stage1_path)
        align, stage1_cfg = align or _prefixed(s1["model"], "align."), train_config_of(s1)
    info = {"path": os.path.abspath(ckpt_path), "stage": ckpt.get("stage"), "step": ckpt.get("step"),
            "stage1": os.path.abspath(stage1_path) if stage1_path else None}
    if ckpt.get("corpora"):  # the corpora the model was trained on (ssrp.train.checkpoint.trained_corpora)
        info["trained_on"] = ckpt["corpora"]
    return Parts(cfg, _prefixed(state, "encoder.") or {}, _prefixed(state, "heads."), align, info, stage1_cfg)


def resolve_layout(layout: str, model: ModelConfig) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: use one of {LAYOUTS}")
    if layout == "auto":
        return "lxmert" if model.variant == "cross" else "ssrp"
    if layout == "lxmert":
        check_lxmert_compatible(model)
    return layout


def export_hf(ckpt_path: str, out_dir: str, *, stage1: str | None = None, corpus: str | None = None,
              metrics: tuple[str, ...] = (), vocab: str | None = None, layout: str = "auto") -> dict:
    """Write the release directory of a checkpoint; returns a summary (files, layout, heads)."""
    require_dir_path(out_dir, "--out")
    parts = gather_parts(ckpt_path, stage1)
    layout = resolve_layout(layout, parts.cfg.model)
    manifest = load_manifest(corpus) if corpus else None
    vocab_sha = _check_vocab(vocab, manifest)
    os.makedirs(out_dir, exist_ok=True)
    weights = _encoder_weights(parts, layout)
    _save(weights, os.path.join(out_dir, WEIGHTS))
    heads = {**_with_prefix(parts.probes, "probes."), **_with_prefix(parts.align, "align.")}
    _remove_stale(out_dir, HEADS, keep=bool(heads))
    if heads:
        _save(heads, os.path.join(out_dir, HEADS))
    _remove_stale(out_dir, VOCAB, keep=bool(vocab))
    if vocab:
        shutil.copyfile(vocab, os.path.join(out_dir, VOCAB))
    block = ssrp_block(parts, layout, manifest, corpus, vocab_sha)
    atomic_write_text(os.path.join(out_dir, CONFIG), json.dumps(_config_json(parts, layout, block), indent=2) + "\n")
    results = [read_metrics(path) for path in metrics]
    atomic_write_text(os.path.join(out_dir, CARD), model_card(block, parts.stage1_cfg, results))
    if layout == "lxmert" and parts.align is None:
        logger.warning("no g_align head (export a stage-1 checkpoint, or pass --stage1): LxmertModel's pooler is "
                       "not in the release, so transformers initialises it at random (pooled_output is meaningless)")
    return {"dir": out_dir, "layout": layout, "variant": parts.cfg.model.variant, "tensors": len(weights),
            "heads": block["heads"], "files": sorted(os.listdir(out_dir))}


def _with_prefix(state: dict[str, Tensor] | None, prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in (state or {}).items()}


def _remove_stale(out_dir: str, name: str, keep: bool) -> None:
    """A rerun into the same directory must not leave a file of an earlier export that this one does not have."""
    path = os.path.join(out_dir, name)
    if not keep and os.path.exists(path):
        os.remove(path)


def _encoder_weights(parts: Parts, layout: str) -> dict[str, Tensor]:
    if layout == "lxmert":
        return to_lxmert(parts.encoder, parts.cfg.model, parts.align)  # g_align's dense layer is the pooler
    return dict(parts.encoder)


def _save(state: dict[str, Tensor], path: str) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous().cpu()
               for k, v in sorted(state.items())}
    with atomic_file(path) as tmp:
        save_file(tensors, tmp, metadata=_SAFETENSORS_META)


def _check_vocab(vocab: str | None, manifest: dict | None) -> str | None:
    """The vocab file's sha256; refused when the corpus's parser recorded another vocabulary."""
    if not vocab:
        return None
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"--vocab {vocab}: no such file")
    digest = sha256_file(vocab)
    expected = ((manifest or {}).get("models", {}).get("parse") or {}).get("vocab_sha256")
    if expected and expected != digest:
        raise ValueError(f"--vocab {vocab} has sha256 {digest[:12]}, but the corpus was tokenised with a vocab.txt of "
                         f"sha256 {expected[:12]}: pass the BERT vocab.txt the corpus was built with")
    return digest


def corpus_identity(manifest: dict | None, path: str | None) -> dict | None:
    """What identifies the training corpus in a model card: its config hash, split, counts and model digests."""
    if manifest is None:
        return None
    kinds = manifest.get("kinds", {})
    config = manifest.get("config", {})
    return {
        "path": os.path.abspath(path) if path else None,
        "config_hash": manifest.get("config_hash"),
        "format_version": manifest.get("format_version"),
        "split": config.get("split"),
        "stages": config.get("stages"),
        "images": kinds.get("index", {}).get("records"),
        "image_views": kinds.get("image", {}).get("counts", {}),
        "text_variants": kinds.get("text", {}).get("counts", {}),
        "models": _model_digests(manifest.get("models", {})),
    }


def _model_digests(models: dict) -> dict:
    """The short identity of each model that built the corpus (names and digests, no vocabularies)."""
    out = {}
    for name, ident in models.items():
        if isinstance(ident, dict):
            out[name] = {k: v for k, v in ident.items() if not isinstance(v, (list, dict)) or k == "stanza_package"}
        else:
            out[name] = ident
    return out


def ssrp_block(parts: Parts, layout: str, manifest: dict | None, corpus: str | None, vocab_sha: str | None) -> dict:
    cfg = parts.cfg
    return {
        "format": FORMAT,
        "ssrp_version": __version__,
        "variant": cfg.model.variant,
        "layout": layout,
        "model": to_dict(cfg.model),
        "stage2": to_dict(cfg.stage2) if parts.probes else None,
        "inputs": {"max_tokens": cfg.data.max_tokens, "max_objects": cfg.data.max_objects,
                   "pad_id": cfg.data.pad_id, "mask_id": cfg.data.mask_id, "box_format": "x1/W, y1/H, x2/W, y2/H",
                   "feature_dim": cfg.model.feature_dim, "vocab_sha256": vocab_sha},
        "heads": [name for name, part in (("probes", parts.probes), ("align", parts.align)) if part],
        "source": parts.checkpoint,
        "training": {"stage": cfg.stage, "optim": to_dict(cfg.optim), "seed": cfg.seed, "precision": cfg.precision},
        "corpus": corpus_identity(manifest, corpus),
    }


def _config_json(parts: Parts, layout: str, block: dict) -> dict:
    if layout == "lxmert":
        return {"model_type": "lxmert", **lxmert_config(parts.cfg.model, parts.cfg.data.pad_id), "ssrp": block}
    return {"architectures": ["SSRPEncoder"], "ssrp": block}


# ------------------------------------------------------------------------------------------------
# Loading


class SSRPRelease(nn.Module):
    """A loaded release: ``encoder`` (SSRPEncoder), ``probes`` (Stage2Heads or None), ``align`` (AlignHead or None).

    ``encoder(input_ids, text_mask, features, boxes, object_mask) -> (W [B, L, H], V [B, M, H])``;
    ``relations(W, V, piece_word, object_mask)`` gives R_w (between words, a word being the mean of its
    WordPieces) and R_v (between objects) from the probes.
    """

    def __init__(self, model: ModelConfig, stage2: Stage2Config | None, has_align: bool, info: dict):
        super().__init__()
        self.config = model
        self.info = info
        self.encoder = SSRPEncoder(model)
        self.probes = Stage2Heads(model.hidden, stage2) if stage2 is not None else None
        self.align = AlignHead(model) if has_align else None

    def forward(self, input_ids: Tensor, text_mask: Tensor, features: Tensor, boxes: Tensor,
                object_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(input_ids, text_mask, features, boxes, object_mask)

    def relations(self, text: Tensor, objects: Tensor, piece_word: Tensor, object_mask: Tensor) -> dict[str, Tensor]:
        """R_w [B, W, W] and R_v [B, M, M] (squared probe distances; small = close) with their node masks."""
        if self.probes is None:
            raise ValueError("this release has no probes (it was exported from a stage-1 checkpoint)")
        words, word_mask = pool_words(text, piece_word, int(piece_word.max()) + 1 if piece_word.numel() else 0)
        return {"r_w": self.probes.text_probe(words), "word_mask": word_mask,
                "r_v": self.probes.visual_probe(objects), "object_mask": object_mask}


def read_release_config(path: str) -> dict:
    """The ``ssrp`` block of a release's config.json (ReleaseError when it is not a release)."""
    file = os.path.join(path, CONFIG)
    if not os.path.isfile(file):
        raise ReleaseError(f"{file} not found: not an ssrp release (write one with `ssrp export hf`)")
    try:
        with open(file, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ReleaseError(f"{file}: unreadable ({err})") from None
    block = config.get("ssrp") if isinstance(config, dict) else None
    if not isinstance(block, dict) or block.get("format") != FORMAT:
        found = block.get("format") if isinstance(block, dict) else None
        raise ReleaseError(f"{file}: no ssrp block of format {FORMAT} (found {found!r})")
    return block


def load(path: str, device: str | torch.device = "cpu") -> SSRPRelease:
    """Load a release directory written by ``ssrp export hf``: the encoder, and the probes and g_align when present."""
    from safetensors.torch import load_file

    block = read_release_config(path)
    model = from_dict(ModelConfig, block["model"])
    stage2 = from_dict(Stage2Config, block["stage2"]) if block.get("stage2") else None
    heads = _read(load_file, os.path.join(path, HEADS)) if block.get("heads") else {}
    release = SSRPRelease(model, stage2, bool(_prefixed(heads, "align.")), block)
    weights = _read(load_file, os.path.join(path, WEIGHTS))
    encoder = from_lxmert(weights, model)[0] if block.get("layout") == "lxmert" else weights
    _load_into(release.encoder, encoder, path, WEIGHTS)
    if release.probes is not None:
        _load_into(release.probes, _prefixed(heads, "probes.") or {}, path, HEADS)
    if release.align is not None:
        _load_into(release.align, _prefixed(heads, "align."), path, HEADS)
    return release.to(device).eval()


def _read(load_file, path: str) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise ReleaseError(f"{path} not found: the release is incomplete")
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise ReleaseError(f"{path}: not a readable safetensors file ({err})") from None


def _load_into(module: nn.Module, state: dict[str, Tensor], path: str, name: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ReleaseError(f"{os.path.join(path, name)} does not fit its config.json: {first}") from None
