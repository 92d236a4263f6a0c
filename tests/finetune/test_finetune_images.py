"""Image features from a corpus and from LXMERT TSVs: the same arrays, the same image names."""

import dataclasses

import numpy as np
import pytest
from finetune_helpers import planted_image
from train_helpers import FEATURE_DIM

from ssrp.corpus import CorpusPlan, CorpusReader, encode, write_corpus
from ssrp.features.export import export_lxmert_tsv
from ssrp.finetune.images import CorpusImages, ImageDataError, TsvImages, numeric_id
from ssrp.train.config import ModelConfig

MODEL = ModelConfig(hidden=32, heads=2, intermediate=64, feature_dim=FEATURE_DIM, num_object_labels=20)


def test_numeric_ids():
    assert numeric_id("COCO_train2014_000000458752") == 458752
    assert numeric_id("COCO_test2015_000000000001") == 1
    assert numeric_id("000000458752") == 458752 and numeric_id("2354786") == 2354786
    assert numeric_id("dev-850-0-img0") is None


def test_corpus_images_match_numbers_and_file_names(corpus):
    images = CorpusImages(corpus, 36, MODEL)
    missing = images.resolve(["COCO_val2014_000000000003", "17", "000000000005", "nope-img0"])
    assert missing == ["nope-img0"]
    assert images.index == {"COCO_val2014_000000000003": 3, "17": 17, "000000000005": 5}
    with CorpusReader(corpus) as reader:
        rec = reader.image(3)
    got = images.get("COCO_val2014_000000000003")
    np.testing.assert_array_equal(got["features"], rec.features)
    np.testing.assert_allclose(got["boxes"], np.clip(rec.boxes / [320, 240, 320, 240], 0, 1), rtol=1e-6)


def _folder_corpus(root: str, names: list[str]) -> tuple[str, list]:
    """What ``ssrp features --images`` writes for a folder whose file names are not all numbers: ids by position."""
    rng = np.random.default_rng(0)
    records = [dataclasses.replace(planted_image(i, 0, rng), file_name=n) for i, n in enumerate(names)]
    write_corpus(root, CorpusPlan({"image": 1}), [(r.key, encode(r)) for r in records])
    return root, records


def test_corpus_images_by_file_name(tmp_path):
    """NLVR2's names are matched to the records' file names."""
    root, records = _folder_corpus(str(tmp_path / "c"), ["dev-1-0-img0.png", "dev-1-0-img1.png", "dev-2-0-img0.png"])
    images = CorpusImages(root, 36, MODEL)
    assert images.resolve(["dev-2-0-img0", "dev-1-0-img1", "dev-9-0-img0"]) == ["dev-9-0-img0"]
    assert images.index == {"dev-2-0-img0": 2, "dev-1-0-img1": 1}
    np.testing.assert_array_equal(images.get("dev-2-0-img0")["features"], records[2].features)


def test_numbers_are_not_positions(tmp_path):
    """A GQA folder holds 2354786.jpg and n161313.jpg: ids are positions, so "1" is not the image with id 1."""
    root, _ = _folder_corpus(str(tmp_path / "c"), ["1.jpg", "2354786.jpg", "5.jpg", "n161313.jpg"])
    images = CorpusImages(root, 36, MODEL)
    assert images.resolve(["1", "5", "n161313", "3"]) == ["3"]
    assert images.index == {"1": 0, "5": 2, "n161313": 3}


def test_tsv_gives_the_corpus_arrays(tmp_path, corpus):
    tsv = str(tmp_path / "obj.tsv")
    export_lxmert_tsv(corpus, tsv)
    from_tsv = TsvImages([tsv], 4, FEATURE_DIM)
    from_corpus = CorpusImages(corpus, 4, MODEL)
    names = [f"COCO_train2014_{i:012d}" for i in (1, 2, 40)] + ["000000000009"]
    assert from_tsv.resolve(names) == [] and from_corpus.resolve(names) == []
    for name in names:
        a, b = from_tsv.get(name), from_corpus.get(name)
        np.testing.assert_array_equal(a["features"], b["features"])  # float16 in the corpus, float32 in the TSV
        np.testing.assert_allclose(a["boxes"], b["boxes"], rtol=1e-6)
        assert len(a["features"]) <= 4


def test_bad_tsv_row_is_named(tmp_path, corpus):
    tsv = tmp_path / "obj.tsv"
    export_lxmert_tsv(corpus, str(tsv))
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join([lines[0], "000000000099\t1\t2\tbroken"]) + "\n")
    images = TsvImages([str(tsv)], 36, FEATURE_DIM)
    assert images.resolve(["99"]) == []
    with pytest.raises(ImageDataError, match="obj.tsv row '000000000099': 4 fields"):
        images.get("99")
    wrong_dim = TsvImages([str(tsv)], 36, FEATURE_DIM + 1)
    wrong_dim.resolve(["1"])
    with pytest.raises(ImageDataError, match="features are 16-d but the model takes 17-d"):
        wrong_dim.get("1")
