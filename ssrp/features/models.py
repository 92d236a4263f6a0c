"""The detector: where it comes from, its on-disk format and its loader (loading never touches the network).

``ssrp models fetch features`` downloads, on a user's machine, the Hugging Face copy of the BUTD weights
(``unc-nlp/frcnn-vg-finetuned``: airsplay's conversion of the Caffe model, the 36-box "alternative
pretrained model") and the Visual Genome vocabularies of the BUTD release (``data/genome/1600-400-20``),
checks their sha256, then converts the weights (ssrp.features.convert) into this layout of
``MODELS/features/``::

    detector.safetensors     the state dict of ssrp.features.modeling.BUTDDetector (Caffe conventions)
    manifest.json            format, DetectorArch, source file + sha256, what the converter did,
                             the safetensors sha256, the vocabulary file names
    objects_vocab.txt        one object class per line (class i + 1 of the 1601-way classifier);
    attributes_vocab.txt     one attribute per line; "a,b" lines list synonyms, the first is the name

The tiny random-weight detector of ``ssrp models tiny`` (ssrp.features.tiny) takes the same path; both
are loaded by ``load_detector``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from ssrp.features.config import DetectorArch
from ssrp.features.modeling import BUTDDetector, build_detector
from ssrp.features.proposals import caffe_anchor_table
from ssrp.fileutil import atomic_file, sha256_file
from ssrp.models.hub import ModelSource, RemoteFile
from ssrp.models.manifest import read_manifest as read_json_manifest
from ssrp.models.manifest import write_manifest as write_json_manifest
from ssrp.models.registry import model_folder

logger = logging.getLogger(__name__)

NAME = "features"  # the models folder and the `ssrp models fetch` name, like the stage
WEIGHTS_FILE = "detector.safetensors"
MANIFEST_FILE = "manifest.json"
OBJECTS_VOCAB = "objects_vocab.txt"
ATTRIBUTES_VOCAB = "attributes_vocab.txt"
MANIFEST_FORMAT = "ssrp-butd-detector"
MANIFEST_VERSION = 1


HF_CHECKPOINT = "pytorch_model.bin"
_BUTD_RAW = "https://raw.githubusercontent.com/peteanderson80/bottom-up-attention/master/data/genome/1600-400-20"

SOURCE = ModelSource(
    name=NAME,
    description="BUTD Faster R-CNN R101-C4 on Visual Genome (1600 objects, 400 attributes), converted to safetensors",
    files=(
        # sha256 as published in the Git LFS pointer of a byte-identical copy of this file (same path,
        # 262,398,754 bytes; huggingface.co/spaces/WwYc/explain-LXMERT, commit cd7ade2).
        RemoteFile("https://huggingface.co/unc-nlp/frcnn-vg-finetuned/resolve/main/pytorch_model.bin",
                   HF_CHECKPOINT, "d3bf8ad74828a244a95d85e17a842cc0ac75419a53e4e81ee68386f192bb24c5"),
        # sha256 of the files at peteanderson80/bottom-up-attention commit 514e561 (the last commit).
        RemoteFile(f"{_BUTD_RAW}/{OBJECTS_VOCAB}", OBJECTS_VOCAB,
                   "d985096938db111f585a311ff0a2ee9092fbc325c3a619ac9622e57e5389722f"),
        RemoteFile(f"{_BUTD_RAW}/{ATTRIBUTES_VOCAB}", ATTRIBUTES_VOCAB,
                   "19981b5a288f284c576545a21de78634f1a78c26b6949f7acf12b924739fdc66"),
    ),
    post_fetch="ssrp.features.convert:convert_fetched",
    notes=(
        "The detectron2 pickle faster_rcnn_from_caffe_attr.pkl (https://nlp1.cs.unc.edu/models/) holds the same "
        "weights; convert it with `ssrp features convert --d2-pkl FILE --out MODELS/features "
        "--allow-unverified-pickle` (no published checksum).",
    ),
)

class WeightsError(RuntimeError):
    """A detector directory that cannot be loaded: missing files, wrong keys or shapes, bad checksum."""


@dataclass
class LoadedDetector:
    model: BUTDDetector
    arch: DetectorArch
    manifest: dict[str, Any]
    objects: list[str]
    attributes: list[str]

    @property
    def identity(self) -> dict[str, Any]:
        """What a corpus manifest records about the model that made it."""
        return {"name": self.manifest.get("name", "detector"), "weights_sha256": self.manifest.get("weights_sha256"),
                "source": self.manifest.get("source", {})}


def detector_dir(models_dir: str) -> str:
    """``models_dir/features`` (or models_dir itself when it already is a detector directory)."""
    if os.path.exists(os.path.join(models_dir, MANIFEST_FILE)):
        return models_dir
    return model_folder(models_dir, NAME)


def expected_shapes(arch: DetectorArch) -> dict[str, tuple[int, ...]]:
    """Every key of the detector's state dict and its shape (built on the meta device: no memory)."""
    model = build_detector(arch, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state: dict[str, torch.Tensor], arch: DetectorArch, what: str) -> None:
    """Raise WeightsError naming every missing or unexpected key and every wrong shape."""
    expected = expected_shapes(arch)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} != {expected[k]}" for k in sorted(set(state) & set(expected))
             if tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{what} does not match the detector architecture: "
            f"{len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected {unexpected[:8]}, "
            f"{len(wrong)} wrong shapes {wrong[:8]}"
        )


def save_detector(out_dir: str, state: dict[str, torch.Tensor], arch: DetectorArch, *, name: str,
                  source: dict[str, Any], conversion: dict[str, Any]) -> dict:
    """Write detector.safetensors and manifest.json (after checking every key and shape)."""
    from safetensors.torch import save_file

    check_state_dict(state, arch, "the converted state dict")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, WEIGHTS_FILE)
    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in sorted(state.items())}, tmp)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "name": name,
        "arch": arch.to_json(),
        "source": source,
        "conversion": conversion,
        "weights": WEIGHTS_FILE,
        "weights_sha256": sha256_file(path),
        "vocab": {"objects": OBJECTS_VOCAB, "attributes": ATTRIBUTES_VOCAB},
        "conventions": {"background_class": 0, "no_attribute": 0, "anchor_order": "caffe ratio-major",
                        "rpn_objectness": "one logit per anchor (sigmoid = Caffe fg softmax)"},
    }
    write_json_manifest(os.path.join(out_dir, MANIFEST_FILE), manifest)
    logger.info("wrote %s (%s)", path, manifest["weights_sha256"][:12])
    return manifest


def detector_identity(model_dir: str) -> dict[str, Any]:
    """What a corpus records about its detector (no model is loaded): the name, the weights' sha256, and the
    object and attribute vocabularies (names and file sha256), so that its regions' ids can be named."""
    manifest = read_manifest(model_dir)
    vocab = manifest.get("vocab", {})
    identity: dict[str, Any] = {"name": manifest.get("name"), "weights_sha256": manifest.get("weights_sha256")}
    for kind, default in (("objects", OBJECTS_VOCAB), ("attributes", ATTRIBUTES_VOCAB)):
        path = os.path.join(model_dir, vocab.get(kind, default))
        identity[f"{kind}_vocab"] = read_vocab(path)
        identity[f"{kind}_vocab_sha256"] = sha256_file(path)
    return identity


def read_manifest(model_dir: str) -> dict:
    fix = ("run `ssrp models fetch features --to MODELS` or `ssrp models tiny MODELS`, or convert a checkpoint with "
           "`ssrp features convert`")
    return read_json_manifest(os.path.join(model_dir, MANIFEST_FILE), MANIFEST_FORMAT, WeightsError, fix,
                              MANIFEST_VERSION)


def read_vocab(path: str) -> list[str]:
    """One entry per line; synonyms after a comma are dropped ("gray,grey" -> "gray")."""
    if not os.path.exists(path):
        raise WeightsError(f"{path}: vocabulary file missing")
    with open(path, encoding="utf-8") as fh:
        return [line.split(",")[0].strip() for line in fh.read().splitlines() if line.strip()]


def load_detector(models_dir: str, device: torch.device | str = "cpu", verify: bool = True) -> LoadedDetector:
    """Load MODELS/features: manifest -> architecture -> strict state dict -> vocabularies."""
    from safetensors.torch import load_file

    model_dir = detector_dir(models_dir)
    manifest = read_manifest(model_dir)
    arch = DetectorArch.from_json(manifest["arch"])
    path = os.path.join(model_dir, manifest.get("weights", WEIGHTS_FILE))
    if not os.path.exists(path):
        raise WeightsError(f"{path}: weights file missing")
    if verify and sha256_file(path) != manifest.get("weights_sha256"):
        raise WeightsError(f"{path}: sha256 does not match manifest.json (corrupted or replaced); reconvert it")
    state = load_file(path, device=str(device))
    check_state_dict(state, arch, path)
    _check_anchors(state["proposal_generator.caffe_anchors"], arch, path)
    model = build_detector(arch, device="meta")
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device).eval().requires_grad_(False)
    vocab = manifest.get("vocab", {})
    objects = read_vocab(os.path.join(model_dir, vocab.get("objects", OBJECTS_VOCAB)))
    attributes = read_vocab(os.path.join(model_dir, vocab.get("attributes", ATTRIBUTES_VOCAB)))
    if len(objects) != arch.num_classes - 1 or len(attributes) != arch.num_attributes - 1:
        raise WeightsError(
            f"{model_dir}: {len(objects)} objects / {len(attributes)} attributes in the vocabularies, "
            f"the model predicts {arch.num_classes - 1} / {arch.num_attributes - 1}"
        )
    return LoadedDetector(model, arch, manifest, objects, attributes)


def _check_anchors(stored: torch.Tensor, arch: DetectorArch, path: str) -> None:
    table = torch.as_tensor(caffe_anchor_table(arch.anchor_base_size, arch.anchor_ratios, arch.anchor_scales),
                            dtype=torch.float32)
    if not torch.equal(stored.cpu().float(), table):
        raise WeightsError(f"{path}: stored anchor table differs from the one its manifest's arch generates")
