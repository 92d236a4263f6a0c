import os

import pytest
import torch
from caption_helpers import NUM_LABELS, planted_set, write_corpus_of, write_karpathy


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """The planted-pattern set: its images, a Karpathy split file and an ssrp corpus of them."""
    root = tmp_path_factory.mktemp("caption")
    images = planted_set()
    return {"images": images, "karpathy": write_karpathy(images, str(root / "dataset_coco.json")),
            "corpus": write_corpus_of(images, str(root / "corpus"))}


@pytest.fixture(scope="session")
def ssrp_visual(tmp_path_factory, planted):
    """A tiny SSRP-Visual pretrained for a few steps on the planted corpus: its stage-2 checkpoint."""
    from ssrp.train.config import make_config
    from ssrp.train.loop import train

    root = tmp_path_factory.mktemp("ssrpruns")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    overrides = [f"model.num_object_labels={NUM_LABELS}", "optim.max_steps=2", "progress=False", "tensorboard=False"]
    run1, run2 = str(root / "run1"), str(root / "run2")
    train(make_config("stage1", "visual", "tiny", overrides), planted["corpus"], run1)
    train(make_config("stage2", "visual", "tiny", overrides), planted["corpus"], run2,
          init=os.path.join(run1, "checkpoint.pt"))
    torch.set_num_threads(old)
    return os.path.join(run2, "checkpoint.pt")
