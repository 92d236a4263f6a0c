"""A tiny random-weight detector, written through the path the official weights take.

``build_tiny`` writes a checkpoint in the Hugging Face layout of the published BUTD weights, small
vocabularies, then runs the same converter and leaves the same files the loader reads
(``ssrp.features.models``).
"""

from __future__ import annotations

import logging
import os

import torch

from ssrp.features.config import DetectorArch
from ssrp.features.convert import convert_checkpoint, to_published_layout
from ssrp.features.modeling import BUTDDetector
from ssrp.features.models import ATTRIBUTES_VOCAB, HF_CHECKPOINT, OBJECTS_VOCAB, detector_dir

logger = logging.getLogger(__name__)

TINY_ARCH = DetectorArch(
    blocks_per_stage=(1, 1, 1, 1), stem_out_channels=8, res2_out_channels=16, bottleneck_channels=4,
    rpn_hidden_channels=16, num_classes=21, num_attributes=11, cls_embed_dim=8, attr_hidden_dim=16,
)
TINY_OBJECTS = ("dog", "cat", "horse", "man", "woman", "bus", "car", "kite", "pizza", "umbrella", "boat", "bird",
                "train", "table", "tree", "grass", "sky", "water", "road", "building")
TINY_ATTRIBUTES = ("red", "blue", "green", "yellow", "white", "black", "brown", "orange", "large", "small")


def random_state_dict(arch: DetectorArch, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic random-weight state dict (ssrp conventions) for ``arch``; BN statistics random too."""
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
    """A small random-weight detector in models_dir/features/, through the fetch format and converter."""
    out = detector_dir(models_dir)
    os.makedirs(out, exist_ok=True)
    hf_state = to_published_layout(random_state_dict(TINY_ARCH, seed), TINY_ARCH, "hf")
    torch.save(hf_state, os.path.join(out, HF_CHECKPOINT))
    for name, words in ((OBJECTS_VOCAB, TINY_OBJECTS), (ATTRIBUTES_VOCAB, TINY_ATTRIBUTES)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
            fh.write("\n".join(words))
    return convert_checkpoint(os.path.join(out, HF_CHECKPOINT), "hf", out, name="butd-tiny-random")
