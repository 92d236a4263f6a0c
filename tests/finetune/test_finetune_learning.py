"""The head learns a planted signal: each image's answer is written into its RoI features only (finetune_helpers),
and the validation images are never trained on."""

import json
import os

import pytest
from finetune_helpers import COLOURS

from ssrp.finetune.config import make_config
from ssrp.finetune.loop import finetune

CHANCE = 100.0 / COLOURS  # the kinds are balanced: chance and the majority answer both score 25%


@pytest.mark.parametrize("features,floor", [("f_align", 3 * CHANCE), ("f_align+rv+rw", 2 * CHANCE)])
def test_held_out_accuracy_is_well_above_chance(tmp_path, inputs_for, features, floor):
    """VQA format, 144 training questions on 72 images, 48 questions on 24 held-out images. R_v and R_w carry no
    kind (distances cancel a code every region shares), so with them the head must also learn to ignore them."""
    cfg = make_config("vqa", "tiny", [f"head.features={features}", "optim.lr=3e-3", "optim.epochs=6"])
    out = str(tmp_path / "ft")
    finetune(cfg, inputs_for("vqa"), out)
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        last = [r for r in map(json.loads, fh) if "valid" in r][-1]  # the last epoch's: no selection on it
    assert last["valid"]["examples"] == 48
    assert last["valid"]["score"] >= floor, last
