import os

import pytest
import torch
from eval_helpers import NUM_LABELS, build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """16 images with views raw/hflip/rot90, 2 captions each with variants raw/de/ru, all parsed."""
    return build_corpus(str(tmp_path_factory.mktemp("evalcorpus") / "c"))


@pytest.fixture(scope="session")
def runs(tmp_path_factory, corpus):
    """A tiny SSRP-Cross trained for a few steps: stage 1, then stage 2 from it; their checkpoint paths."""
    from ssrp.train.config import make_config
    from ssrp.train.loop import train

    root = tmp_path_factory.mktemp("evalruns")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    overrides = [f"model.num_object_labels={NUM_LABELS}", "optim.max_steps=4"]
    run1, run2 = str(root / "run1"), str(root / "run2")
    train(make_config("stage1", "cross", "tiny", overrides), corpus, run1)
    train(make_config("stage2", "cross", "tiny", overrides), corpus, run2, init=os.path.join(run1, "checkpoint.pt"))
    torch.set_num_threads(old)
    return {"stage1": os.path.join(run1, "checkpoint.pt"), "stage2": os.path.join(run2, "checkpoint.pt")}


@pytest.fixture(scope="session")
def probe_model(runs, corpus):
    from ssrp.eval.config import EvalConfig
    from ssrp.eval.inference import ProbeModel

    return ProbeModel(runs["stage2"], corpus, EvalConfig(progress=False, batch_size=8), stage1=runs["stage1"]).load()
