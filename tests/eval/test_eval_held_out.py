"""Evaluation knows which images a model was trained on (issue 17, part 1)."""

import json

import pytest
from eval_helpers import build_corpus

from ssrp.cli import main
from ssrp.corpus import CorpusReader
from ssrp.corpus.overlap import training_overlap
from ssrp.eval.select import select_images
from ssrp.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Other images (ids 501-508), all of the val split."""
    return build_corpus(str(tmp_path_factory.mktemp("heldout") / "c"), n_images=8, first_id=501, split="val", seed=5)


def _probe(capsys, runs, corpus, tmp_path):
    out = str(tmp_path / "probe.json")
    assert main(["eval", "probe", "--ckpt", runs["stage2"], "--corpus", corpus, "--json", out, "--no-progress"]) == 0
    return json.load(open(out)), capsys.readouterr().err


def test_a_checkpoint_records_the_corpora_it_was_trained_on(runs, corpus):
    corpora = load_checkpoint(runs["stage2"])["corpora"]  # stage 1 and stage 2 used the same corpus: one entry
    assert len(corpora) == 1 and corpora[0]["config_hash"] == CorpusReader(corpus).manifest["config_hash"]
    assert corpora[0]["splits"] == {"train": 16}


def test_evaluating_training_images_warns_loudly(runs, corpus, capsys, tmp_path):
    result, err = _probe(capsys, runs, corpus, tmp_path)
    assert "NOT HELD OUT: 16 of the 16 images evaluated are in the training corpus" in err
    assert result["not_held_out"].startswith("16 of the 16 images")


def test_a_held_out_corpus_evaluates_quietly(runs, held_out, capsys, tmp_path):
    result, err = _probe(capsys, runs, held_out, tmp_path)
    assert "NOT HELD OUT" not in err and result["not_held_out"] is None


def test_without_the_training_corpus_the_splits_tell(held_out, corpus, tmp_path):
    gone = [{"path": str(tmp_path / "moved-away"), "splits": {"train": 16}}]
    with CorpusReader(held_out) as reader:
        assert training_overlap(gone, reader, reader.image_ids()) is None  # val images, trained on train
    with CorpusReader(corpus) as reader:
        assert "belong to split(s) ['train']" in training_overlap(gone, reader, reader.image_ids())
        assert "does not record its training corpus" in training_overlap([], reader, reader.image_ids())


def test_split_selection_reads_the_records(tmp_path):
    mixed = build_corpus(str(tmp_path / "mixed"), n_images=6, split="mixed")
    with CorpusReader(mixed) as reader:
        assert select_images(reader, "val") == [2, 4, 6] and select_images(reader, "train") == [1, 3, 5]
        assert select_images(reader, "trainval") == select_images(reader) == [1, 2, 3, 4, 5, 6]
    old = build_corpus(str(tmp_path / "old"), n_images=2, split="")  # records without a split (format 1)
    with CorpusReader(old) as reader, pytest.raises(ValueError, match="needs --coco COCO_ROOT"):
        select_images(reader, "val")


def test_a_corpus_rebuilt_at_the_recorded_path_falls_back_to_the_splits(held_out):
    """The recorded path now holds another corpus (other config hash): its images say nothing of training."""
    with CorpusReader(held_out) as reader:
        here = {"path": held_out, "config_hash": reader.manifest["config_hash"], "inputs": reader.manifest.get("inputs", {}),
                "splits": {"train": 16}}
        assert "8 of the 8 images evaluated are in the training corpus" in training_overlap([here], reader, reader.image_ids())
        rebuilt = {**here, "config_hash": "another build"}
        assert training_overlap([rebuilt], reader, reader.image_ids()) is None  # val images; training held train
