import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from ssrp.features import convert as conv
from ssrp.features.config import DetectorArch
from ssrp.features.models import WeightsError, load_detector
from ssrp.features.tiny import TINY_ARCH, random_state_dict

P = "roi_heads.box_predictor"


@pytest.fixture(scope="module")
def ours():
    state = random_state_dict(TINY_ARCH, seed=5)
    # plant recognisable rows: background row 0, "no attribute" row 0
    state[f"{P}.cls_score.bias"][0] = 123.0
    state[f"{P}.cls_embedding.weight"][0] = 7.0
    state[f"{P}.attr_score.bias"][0] = -77.0
    return state


def _assert_same(got: dict, want: dict):
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k].float(), rtol=1e-6, atol=1e-6, msg=k)


@pytest.mark.parametrize("anchors, rpn", [("detectron2", "single"), ("caffe", "single"), ("none", "caffe2")])
def test_hf_layout_converts_back_exactly(ours, anchors, rpn):
    published = conv.to_published_layout(ours, TINY_ARCH, "hf", anchors=anchors, rpn_logits=rpn)
    assert f"{P}.cls_score.bias" in published and published[f"{P}.cls_score.bias"][-1] == 123.0  # bg last
    assert published[f"{P}.attr_score.bias"][-1] == -77.0
    assert any(k.endswith("num_batches_tracked") for k in published) and f"{P}.bbox_pred.weight" in published
    got, arch, report = conv.convert_state_dict(published, "hf")
    assert arch == TINY_ARCH
    _assert_same(got, ours)
    assert got[f"{P}.cls_score.bias"][0] == 123.0 and got[f"{P}.attr_score.bias"][0] == -77.0
    assert report["anchors"]["identity"] is (anchors == "caffe")
    assert report["dropped"]["bbox_pred"] == 2 and report["dropped"]["num_batches_tracked"] > 0
    assert ("fg - bg" in report["rpn_objectness"]) is (rpn == "caffe2")


def test_anchor_permutation_from_detectron2_size_major_table():
    perm, info = conv.anchor_permutation(None, DetectorArch(), "d2")
    # Caffe row j = (ratio j // 4, scale j % 4); detectron2 row = size * 3 + ratio
    assert perm == [(j % 4) * 3 + j // 4 for j in range(12)]
    assert info["source_centre"] == [0.0, 0.0] and not info["identity"]


def test_unknown_missing_and_misshaped_keys_fail(ours):
    published = conv.to_published_layout(ours, TINY_ARCH, "hf")
    extra = dict(published, **{"roi_heads.mask_head.weight": torch.zeros(3)})
    with pytest.raises(WeightsError, match="1 unexpected"):
        conv.save_detector("/nonexistent", conv.convert_state_dict(extra, "hf")[0], TINY_ARCH, name="x",
                           source={}, conversion={})
    missing = {k: v for k, v in published.items() if k != "backbone.res3.0.conv2.weight"}
    with pytest.raises(WeightsError, match="1 missing"):
        conv.save_detector("/nonexistent", conv.convert_state_dict(missing, "hf", TINY_ARCH)[0], TINY_ARCH,
                           name="x", source={}, conversion={})
    wrong = dict(published, **{f"{P}.fc_attr.bias": torch.zeros(5)})
    with pytest.raises(WeightsError, match="wrong shapes"):
        conv.save_detector("/nonexistent", conv.convert_state_dict(wrong, "hf")[0], TINY_ARCH, name="x",
                           source={}, conversion={})
    bad_rpn = dict(published, **{"proposal_generator.rpn_head.objectness_logits.weight": torch.zeros(5, 16, 1, 1)})
    with pytest.raises(conv.ConversionError, match="channels"):
        conv.convert_state_dict(bad_rpn, "hf")


def _write_vocab(d: str, arch: DetectorArch) -> None:
    with open(os.path.join(d, "objects_vocab.txt"), "w") as fh:
        fh.write("\n".join(f"obj{i},alias" for i in range(arch.num_classes - 1)))
    with open(os.path.join(d, "attributes_vocab.txt"), "w") as fh:
        fh.write("\n".join(f"attr{i}" for i in range(arch.num_attributes - 1)))


def test_hf_checkpoint_file_to_loaded_detector(ours, tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save(conv.to_published_layout(ours, TINY_ARCH, "hf"), path)
    manifest = conv.convert_checkpoint(str(path), "hf", str(tmp_path))
    _write_vocab(str(tmp_path), TINY_ARCH)
    assert manifest["source"]["layout"] == "hf" and len(manifest["weights_sha256"]) == 64
    on_disk = json.load(open(tmp_path / "manifest.json"))
    assert on_disk["conversion"]["class_order"].startswith("background moved")
    loaded = load_detector(str(tmp_path))
    _assert_same(loaded.model.state_dict(), ours)
    assert loaded.objects[3] == "obj3" and len(loaded.attributes) == 10


def _d2_pickle(state: dict, path) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, fh)


def test_detectron2_pickle_needs_a_pinned_sha_or_the_flag(ours, tmp_path, monkeypatch):
    path = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    _d2_pickle(conv.to_published_layout(ours, TINY_ARCH, "d2", anchors="none"), path)
    with pytest.raises(conv.ConversionError, match="not pinned"):
        conv.read_d2_pickle(str(path))
    state, digest = conv.read_d2_pickle(str(path), allow_unverified_pickle=True)
    monkeypatch.setitem(conv.PINNED_PICKLES, "faster_rcnn_from_caffe_attr.pkl", digest)
    pinned, _ = conv.read_d2_pickle(str(path))
    assert set(pinned) == set(state)
    got, _, report = conv.convert_state_dict(pinned, "d2")
    _assert_same(got, ours)
    assert report["anchors"]["source_table"].startswith("not stored")


def test_pickles_holding_anything_but_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"x": np.zeros(2)}, "hook": shutil.rmtree}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        conv.read_d2_pickle(str(path), allow_unverified_pickle=True)


def test_loader_rejects_a_replaced_weights_file_and_wrong_vocab(tiny_models, tmp_path):
    d = tmp_path / "features"
    shutil.copytree(os.path.join(tiny_models, "features"), d)
    with open(d / "objects_vocab.txt", "a") as fh:
        fh.write("\nextra")
    with pytest.raises(WeightsError, match="vocabularies"):
        load_detector(str(tmp_path))
    with open(d / "detector.safetensors", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    with pytest.raises(WeightsError, match="sha256"):
        load_detector(str(tmp_path))


def test_tiny_build_goes_through_the_published_format(tiny_models):
    d = os.path.join(tiny_models, "features")
    assert sorted(os.listdir(d)) == ["attributes_vocab.txt", "detector.safetensors", "manifest.json",
                                     "objects_vocab.txt", "pytorch_model.bin"]
    manifest = json.load(open(os.path.join(d, "manifest.json")))
    assert manifest["name"] == "butd-tiny-random" and manifest["source"]["layout"] == "hf"
    assert manifest["conversion"]["anchors"]["identity"] is False  # detectron2-ordered RPN, permuted back


def test_the_fetch_source_pins_official_files():
    from ssrp.features.models import SOURCE

    names = {f.dest: f for f in SOURCE.files}
    assert set(names) == {"pytorch_model.bin", "objects_vocab.txt", "attributes_vocab.txt"}
    assert names["pytorch_model.bin"].url.startswith("https://huggingface.co/unc-nlp/frcnn-vg-finetuned/")
    assert "peteanderson80/bottom-up-attention" in names["objects_vocab.txt"].url
    assert all(f.sha256 and len(f.sha256) == 64 for f in SOURCE.files)
    assert SOURCE.post_fetch == "ssrp.features.convert:convert_fetched"
