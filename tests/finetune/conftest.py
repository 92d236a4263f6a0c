import os

import pytest
import torch
from finetune_helpers import build_planted_corpus, pretrain

from ssrp.finetune.sample import write_task_sample
from ssrp.train.bert import build_tiny_bert, read_vocab


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ftmodels"))
    build_tiny_bert(root)
    return os.path.join(root, "bert")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, bert_dir):
    """120 images with planted kinds (raw view only), two parsed captions each."""
    return build_planted_corpus(str(tmp_path_factory.mktemp("ftcorpus") / "c"), read_vocab(bert_dir))


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, corpus, bert_dir):
    """A tiny SSRP-Cross: stage 1 from the tiny BERT, stage 2 from it (3 steps each)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain(corpus, bert_dir, str(tmp_path_factory.mktemp("ftpretrain")))
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tasks(tmp_path_factory, corpus):
    """The synthetic VQA, GQA and NLVR2 sets over the planted corpus: 72 training images (VQA: 36 in train, 36
    in nominival), 24 validation and 24 test images, two questions (NLVR2: pairs) per image."""
    root = tmp_path_factory.mktemp("fttasks")
    return {task: write_task_sample(task, corpus, str(root / task), per_image=2)["out"]
            for task in ("vqa", "gqa", "nlvr2")}


@pytest.fixture
def inputs_for(bert_dir, corpus, pretrained, tasks):
    from ssrp.finetune.loop import Inputs

    def make(task: str, **changes) -> Inputs:
        base = dict(data=tasks[task], bert=bert_dir, stage1=pretrained["stage1"], stage2=pretrained["stage2"],
                    corpus=corpus)
        return Inputs(**{**base, **changes})

    return make
