"""The head learns a planted signal: each image's answer is written into its RoI features only (finetune_helpers),
and the validation images are never trained on."""

import json
import os
import statistics

import pytest
from finetune_helpers import COLOURS

from ssrp.finetune.config import make_config
from ssrp.finetune.loop import finetune

CHANCE = 100.0 / COLOURS  # the kinds are balanced: chance and the majority answer both score 25%


# A run can stall on two or three of the four kinds (seen for about one seed in three, before and after the
# encoder's speed-ups): f_align is judged on the median of three seeds. With R_v and R_w the head also has to
# learn to ignore them; that run is judged alone.
@pytest.mark.parametrize("features,lr,epochs,floor,seeds", [("f_align", 2e-3, 8, 3 * CHANCE, (9595, 1, 2)),
                                                             ("f_align+rv+rw", 3e-3, 6, 2 * CHANCE, (9595,))])
def test_held_out_accuracy_is_well_above_chance(tmp_path, inputs_for, features, lr, epochs, floor, seeds):
    """VQA format, 144 training questions on 72 images, 48 questions on 24 held-out images. R_v and R_w carry no
    kind (distances cancel a code every region shares), so with them the head must also learn to ignore them."""
    scores = []
    for seed in seeds:
        cfg = make_config("vqa", "tiny", [f"head.features={features}", f"optim.lr={lr}", f"optim.epochs={epochs}",
                                          f"seed={seed}"])
        out = str(tmp_path / f"ft{seed}")
        finetune(cfg, inputs_for("vqa"), out)
        with open(os.path.join(out, "metrics.jsonl")) as fh:
            last = [r for r in map(json.loads, fh) if "valid" in r][-1]  # the last epoch's: no selection on it
        assert last["valid"]["examples"] == 48
        scores.append(last["valid"]["score"])
    assert statistics.median(scores) >= floor, scores
