"""Where the detector comes from: the official files (``ssrp models fetch detector``) and a tiny one.

Fetching downloads, on a user's machine, the Hugging Face copy of the BUTD weights
(``unc-nlp/frcnn-vg-finetuned``: airsplay's conversion of the Caffe model, the 36-box
"alternative pretrained model") and the Visual Genome vocabularies of the BUTD release
(``data/genome/1600-400-20``), checks their sha256, then converts the weights into
``detector.safetensors`` + ``manifest.json``. ``build_tiny`` writes a small random-weight detector
through the very same path: a checkpoint in the Hugging Face layout, small vocabularies, the same
conversion, the same loader.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch

from ssrp.features.config import DetectorArch
from ssrp.features.weights import ATTRIBUTES_VOCAB, DETECTOR_DIR, OBJECTS_VOCAB
from ssrp.models.hub import ModelSource, RemoteFile

logger = logging.getLogger(__name__)

HF_CHECKPOINT = "pytorch_model.bin"
_BUTD_RAW = "https://raw.githubusercontent.com/peteanderson80/bottom-up-attention/master/data/genome/1600-400-20"

DETECTOR_SOURCE = ModelSource(
    name=DETECTOR_DIR,
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
    post_fetch="ssrp.features.hub:convert_fetched",
    notes=(
        "The detectron2 pickle faster_rcnn_from_caffe_attr.pkl (https://nlp1.cs.unc.edu/models/) holds the same "
        "weights; convert it with `ssrp features convert --d2-pkl FILE --out MODELS/detector "
        "--allow-unverified-pickle` (no published checksum).",
    ),
)

TINY_ARCH = DetectorArch(
    blocks_per_stage=(1, 1, 1, 1), stem_out_channels=8, res2_out_channels=16, bottleneck_channels=4,
    rpn_hidden_channels=16, num_classes=21, num_attributes=11, cls_embed_dim=8, attr_hidden_dim=16,
)
TINY_OBJECTS = ("dog", "cat", "horse", "man", "woman", "bus", "car", "kite", "pizza", "umbrella", "boat", "bird",
                "train", "table", "tree", "grass", "sky", "water", "road", "building")
TINY_ATTRIBUTES = ("red", "blue", "green", "yellow", "white", "black", "brown", "orange", "large", "small")


def convert_fetched(model_dir: str, fetched: Sequence = ()) -> dict:
    """post-fetch step: the downloaded HF checkpoint (its sha256 pinned and checked) -> detector.safetensors +
    manifest.json."""
    from ssrp.features.convert import convert_checkpoint

    return convert_checkpoint(os.path.join(model_dir, HF_CHECKPOINT), "hf", model_dir)


def random_state_dict(arch: DetectorArch, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic random-weight state dict (ssrp conventions) for ``arch``; BN statistics random too."""
    from ssrp.features.modeling import BUTDDetector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BUTDDetector(arch)
        state = model.state_dict()
        gen = torch.Generator().manual_seed(seed + 1)
        for key, value in state.items():
            if key.endswith("norm.weight"):
                value.copy_(torch.rand(value.shape, generator=gen) * 0.5 + 0.75)
            elif key.endswith("norm.bias") or key.endswith("running_mean"):
                value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
            elif key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            elif key.startswith("proposal_generator.rpn_head.objectness_logits.bias"):
                value.copy_(torch.randn(value.shape, generator=gen))
    return {k: v.clone() for k, v in state.items()}


def build_tiny(models_dir: str, seed: int = 0) -> dict:
    """A small random-weight detector in models_dir/detector/, through the fetch format and converter."""
    from ssrp.features.convert import convert_checkpoint, to_published_layout

    out = os.path.join(models_dir, DETECTOR_DIR)
    os.makedirs(out, exist_ok=True)
    hf_state = to_published_layout(random_state_dict(TINY_ARCH, seed), TINY_ARCH, "hf")
    torch.save(hf_state, os.path.join(out, HF_CHECKPOINT))
    for name, words in ((OBJECTS_VOCAB, TINY_OBJECTS), (ATTRIBUTES_VOCAB, TINY_ATTRIBUTES)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
            fh.write("\n".join(words))
    return convert_checkpoint(os.path.join(out, HF_CHECKPOINT), "hf", out, name="butd-tiny-random")
