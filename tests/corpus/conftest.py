import pytest
from corpus_helpers import PLAN, sample_records

from ssrp.corpus import CorpusPlan, write_corpus


@pytest.fixture
def records():
    return sample_records()


@pytest.fixture
def corpus(tmp_path, records):
    root = str(tmp_path / "corpus")
    write_corpus(root, CorpusPlan(PLAN, config={"stage": "test"}), records)
    return root
