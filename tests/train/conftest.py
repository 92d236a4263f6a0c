import os

import pytest
from train_helpers import NUM_LABELS, build_corpus

from ssrp.train.bert import build_tiny_bert, read_vocab


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("models"))
    build_tiny_bert(root)
    return root


@pytest.fixture(scope="session")
def bert_dir(models_dir):
    return os.path.join(models_dir, "bert")


@pytest.fixture(scope="session")
def vocab(bert_dir):
    return read_vocab(bert_dir)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, vocab):
    """24 images x 2 captions; image views raw/hflip/rot90; caption variants raw/de/ru; all parsed."""
    return build_corpus(str(tmp_path_factory.mktemp("corpus") / "c"), vocab)


@pytest.fixture(scope="session")
def raw_corpus(tmp_path_factory, vocab):
    """Only the raw view and the raw variant."""
    return build_corpus(
        str(tmp_path_factory.mktemp("rawcorpus") / "c"), vocab, n_images=12, views=("raw",), variants=("raw",), seed=1
    )


@pytest.fixture(scope="session")
def tiny_overrides():
    return [f"model.num_object_labels={NUM_LABELS}"]
