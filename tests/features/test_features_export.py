"""Exports others can load: HDF5 with the bottom-up-attention-vqa/BAN names (adaptive and fixed layouts), npz per
image (bottom-up-attention.pytorch / MCAN keys), LXMERT TSV with COCO-2014 ids, and features of given boxes."""

import argparse
import json
import os

import h5py
import numpy as np
import pytest
from features_helpers import small_config

from ssrp.corpus import CorpusPlan, ImageRecord, IndexRecord, encode, write_corpus
from ssrp.features.boxes import features_of_boxes, image_id_of, read_boxes
from ssrp.features.engine import BUTDEngine
from ssrp.features.export import (
    coco2014_names,
    image_records,
    make_namer,
    read_lxmert_tsv,
    spatial_features,
    write_hdf5,
    write_npz,
)
from ssrp.features.stage import extract
from ssrp.features.tiny import TINY_ARCH

IDS = (9, 25, 30)
COUNTS = (3, 5, 0)  # boxes per image: varied, one without detections


def _record(image_id: int, n: int, rng: np.random.Generator, view: str = "raw", dim: int = 8) -> ImageRecord:
    xy = rng.uniform(0, 60, (n, 2))
    return ImageRecord(
        image_id=image_id, view=view, height=80, width=100,
        boxes=np.concatenate([xy, xy + rng.uniform(5, 20, (n, 2))], 1).astype(np.float32),
        features=rng.standard_normal((n, dim)).astype(np.float16),
        obj_ids=rng.integers(0, 20, n).astype(np.int32), obj_conf=rng.uniform(0, 1, n).astype(np.float32),
        attr_ids=rng.integers(0, 10, n).astype(np.int32), attr_conf=rng.uniform(0, 1, n).astype(np.float32),
        file_name=f"{image_id:012d}.jpg",
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = str(tmp_path_factory.mktemp("export") / "corpus")
    records = []
    for image_id, n in zip(IDS, COUNTS, strict=True):
        for view in ("raw", "hflip"):
            r = _record(image_id, n, rng, view)
            records.append((r.key, encode(r)))
        ix = IndexRecord(image_id, np.array([image_id * 10], np.int64), f"{image_id:012d}.jpg", 80, 100)
        records.append((ix.key, encode(ix)))
    write_corpus(root, CorpusPlan({"image": 2, "index": 1}), records)
    return root


@pytest.fixture(scope="module")
def records(corpus):
    return list(image_records(corpus, "raw"))


def _cli(argv):
    from ssrp.features import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["features", "export", *argv])
    return args.func(args)


# ------------------------------------------------------------------------------------------------
# HDF5


def test_adaptive_hdf5_has_the_butd_vqa_names_as_the_same_datasets(records, tmp_path):
    path = str(tmp_path / "f.h5")
    assert write_hdf5(records, path) == 3
    with h5py.File(path) as h5:
        assert h5["image_features"].id == h5["features"].id and h5["image_bb"].id == h5["boxes"].id  # hard links
        assert h5.attrs["num_boxes_fixed"] == -1 and h5.attrs["layout"] == "adaptive"
        img_id2idx = {int(i): k for k, i in enumerate(h5["image_ids"][:])}  # what the loaders' pickle holds
        for r in records:
            start, end = h5["pos_boxes"][img_id2idx[r.image_id]]  # BAN's adaptive loader
            assert end - start == r.num_boxes
            np.testing.assert_array_equal(h5["image_features"][start:end], r.features.astype(np.float32))
            np.testing.assert_array_equal(h5["image_bb"][start:end], r.boxes)
            np.testing.assert_array_equal(h5["spatial_features"][start:end],
                                          spatial_features(r.boxes, r.height, r.width))
            np.testing.assert_array_equal(h5["obj_ids"][start:end], r.obj_ids)
        assert [s.decode() for s in h5["image_names"][:]] == ["000000000009", "000000000025", "000000000030"]


def test_spatial_features_are_the_converter_formula():
    box = np.array([[10, 20, 50, 60]], np.float32)
    np.testing.assert_allclose(spatial_features(box, height=80, width=100),
                               [[0.1, 0.25, 0.5, 0.75, 0.4, 0.5]], rtol=1e-6)


def test_fixed_hdf5_is_the_36_box_layout_and_refuses_varied_counts(records, tmp_path):
    same = [r for r in records if r.num_boxes == 3] * 1 + [_record(40, 3, np.random.default_rng(1))]
    path = str(tmp_path / "fixed.h5")
    assert write_hdf5(same, path, layout="fixed") == 2
    with h5py.File(path) as h5:
        assert h5["image_features"].shape == (2, 3, 8) and h5["image_bb"].shape == (2, 3, 4)
        assert h5["spatial_features"].shape == (2, 3, 6) and h5.attrs["num_boxes_fixed"] == 3
        np.testing.assert_array_equal(h5["image_features"][0], same[0].features.astype(np.float32))
        assert h5["image_ids"][:].tolist() == [9, 40]
    with pytest.raises(ValueError, match="image 25 has 5 boxes, the first image 3"):
        write_hdf5(records, str(tmp_path / "bad.h5"), layout="fixed")
    assert not os.path.exists(tmp_path / "bad.h5")  # nothing half-written


def test_hdf5_streams_more_rows_than_one_block(tmp_path):
    rng = np.random.default_rng(2)
    many = [_record(i + 1, 36, rng, dim=4) for i in range(130)]  # 4680 rows > one 4096-row block
    path = str(tmp_path / "many.h5")
    write_hdf5(iter(many), path, feature_dtype="float16")
    with h5py.File(path) as h5:
        assert h5["features"].dtype == np.float16 and h5["features"].shape == (4680, 4)
        assert h5["pos_boxes"][-1].tolist() == [4644, 4680]
        np.testing.assert_array_equal(h5["features"][4644:], many[-1].features)


# ------------------------------------------------------------------------------------------------
# npz


def test_npz_per_image_with_bottom_up_attention_pytorch_keys_and_no_pickle(records, tmp_path):
    assert write_npz(records, str(tmp_path / "npz")) == 3
    assert sorted(os.listdir(tmp_path / "npz")) == ["000000000009.npz", "000000000025.npz", "000000000030.npz"]
    for r in records:
        with np.load(tmp_path / "npz" / f"{r.image_id:012d}.npz", allow_pickle=False) as f:
            assert {"x", "bbox", "num_bbox", "image_h", "image_w"} <= set(f.files)
            assert f["x"].dtype == np.float32 and f["x"].shape == (r.num_boxes, 8)
            np.testing.assert_array_equal(f["x"], r.features.astype(np.float32))
            np.testing.assert_array_equal(f["bbox"], r.boxes)
            assert (int(f["num_bbox"]), int(f["image_h"]), int(f["image_w"])) == (r.num_boxes, 80, 100)
            np.testing.assert_array_equal(f["objects_id"], r.obj_ids)


def test_npz_transposed_for_the_openvqa_vqa_loader(records, tmp_path):
    write_npz(records[:1], str(tmp_path / "t"), transpose=True)
    with np.load(tmp_path / "t" / "000000000009.npz") as f:
        frcn_feat_x = f["x"].transpose((1, 0))  # what OpenVQA/MCAN's VQA loader does
        np.testing.assert_array_equal(frcn_feat_x, records[0].features.astype(np.float32))


# ------------------------------------------------------------------------------------------------
# Image names


def _coco2014(root, with_annotations: bool):
    if with_annotations:
        os.makedirs(os.path.join(root, "annotations"))
        for split, ids in (("train", (9, 30)), ("val", (25,))):
            images = [{"id": i, "file_name": f"COCO_{split}2014_{i:012d}.jpg"} for i in ids]
            with open(os.path.join(root, "annotations", f"captions_{split}2014.json"), "w") as fh:
                json.dump({"images": images, "annotations": []}, fh)
    else:
        for split, ids in (("train", (9, 30)), ("val", (25,))):
            os.makedirs(os.path.join(root, f"{split}2014"))
            for i in ids:
                open(os.path.join(root, f"{split}2014", f"COCO_{split}2014_{i:012d}.jpg"), "wb").close()
    return str(root)


@pytest.mark.parametrize("with_annotations", [True, False])
def test_coco2014_names_from_annotations_or_folders(tmp_path, with_annotations):
    root = _coco2014(tmp_path / "coco2014", with_annotations)
    assert coco2014_names(root) == {9: "COCO_train2014_000000000009", 30: "COCO_train2014_000000000030",
                                    25: "COCO_val2014_000000000025"}


def test_tsv_with_coco2014_ids_for_lxmert(corpus, records, tmp_path):
    root = _coco2014(tmp_path / "coco2014", True)
    tsv = str(tmp_path / "f.tsv")
    assert _cli([corpus, "--tsv", tsv, "--names", "coco2014", "--coco2014", root]) == 0
    rows = read_lxmert_tsv(tsv)
    assert [r["img_id"] for r in rows] == ["COCO_train2014_000000000009", "COCO_val2014_000000000025",
                                           "COCO_train2014_000000000030"]
    np.testing.assert_array_equal(rows[1]["features"], records[1].features.astype(np.float32))
    namer = make_namer("coco2014", root)
    with pytest.raises(ValueError, match="image 77 .* is in neither train2014 nor val2014"):
        namer(_record(77, 1, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="--coco2014"):
        make_namer("coco2014")


def test_cli_format_out_and_view(corpus, tmp_path):
    out = str(tmp_path / "npz")
    assert _cli([corpus, "--format", "npz", "--out", out, "--view", "hflip", "--names", "id"]) == 0
    assert sorted(os.listdir(out)) == ["25.npz", "30.npz", "9.npz"]
    with pytest.raises(ValueError, match="give an output"):
        _cli([corpus])
    with pytest.raises(ValueError, match="no image records of view 'rot90'"):
        _cli([corpus, "--npz", out, "--view", "rot90"])


# ------------------------------------------------------------------------------------------------
# Features of given boxes


def test_given_boxes_reproduce_the_extractors_features_of_its_own_boxes(tiny_models, coco_files):
    """Feeding the extractor's selected boxes back gives its features, labels and attributes: the given-box path
    is the extraction path without proposals and selection."""
    cfg = small_config(tiny_models)
    records = extract(coco_files[:2], cfg)
    engine = BUTDEngine.load(cfg)
    from ssrp.features.image import decode_image

    prepared = []
    for path, rec in zip(coco_files[:2], records, strict=True):
        with open(path, "rb") as fh:
            prepared.append(engine.prepare(decode_image(rec.image_id, fh.read(), os.path.basename(path))))
    given = features_of_boxes(engine, prepared, [r.boxes for r in records])
    for got, want in zip(given, records, strict=True):
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_allclose(got.features.astype(np.float32), want.features.astype(np.float32),
                                   rtol=1e-2, atol=1e-3)
        np.testing.assert_array_equal(got.obj_ids, want.obj_ids)
        np.testing.assert_array_equal(got.attr_ids, want.attr_ids)
        np.testing.assert_allclose(got.obj_conf, want.obj_conf, rtol=1e-4, atol=1e-5)


def test_cli_given_boxes_to_npz_and_hdf5(tiny_models, coco_files, tmp_path):
    folder = os.path.dirname(coco_files[0])
    names = [os.path.basename(p) for p in coco_files[:2]]
    boxes = {names[0]: [[0, 0, 40, 30], [10, 12, 90, 70.5]], names[1]: [[5, 5, 25, 25]]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    npz, h5 = str(tmp_path / "npz"), str(tmp_path / "f.h5")
    assert _cli(["--images", folder, "--boxes", str(tmp_path / "boxes.json"), "--models", tiny_models,
                 "--device", "cpu", "--set", "features.preprocess.test_scale=160",
                 "--set", "features.preprocess.max_size=240", "--npz", npz, "--hdf5", h5, "--no-progress"]) == 0
    stem = names[0].rsplit(".", 1)[0]
    with np.load(os.path.join(npz, f"{stem}.npz")) as f:
        np.testing.assert_allclose(f["bbox"], boxes[names[0]])
        assert f["x"].shape == (2, TINY_ARCH.feature_dim) and int(f["num_bbox"]) == 2  # the tiny detector's res5
    with h5py.File(h5) as f:
        assert f["pos_boxes"][:].tolist() == [[0, 2], [2, 3]] and f["image_ids"][:].tolist() == [1, 2]


def test_boxes_files_are_checked_and_errors_name_the_image(tiny_models, coco_files, tmp_path):
    folder = os.path.dirname(coco_files[0])
    name = os.path.basename(coco_files[0])
    bad = tmp_path / "bad.json"
    for content, message in (
        ("[1, 2]", "expected a non-empty JSON object"),
        (json.dumps({name: [[0, 0, 10]]}), f"{name}: expected a non-empty list"),
        (json.dumps({name: [[10, 0, 5, 5]]}), f"{name}: box 0 .* is not a box"),
        ("{nope", "not a JSON file"),
    ):
        bad.write_text(content)
        with pytest.raises(ValueError, match=message):
            read_boxes(str(bad), folder)
    bad.write_text(json.dumps({name: [[0, 0, 5000, 10]]}))
    with pytest.raises(ValueError, match=f"{name}: box 0 .* is not inside the"):
        _cli(["--images", folder, "--boxes", str(bad), "--models", tiny_models, "--device", "cpu",
              "--npz", str(tmp_path / "o"), "--no-progress"])
    bad.write_text(json.dumps({"missing.jpg": [[0, 0, 5, 5]]}))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        _cli(["--images", folder, "--boxes", str(bad), "--models", tiny_models, "--device", "cpu",
              "--npz", str(tmp_path / "o"), "--no-progress"])


def test_image_ids_of_file_names():
    assert image_id_of("000000000009.jpg", 5) == 9
    assert image_id_of("val2014/COCO_val2014_000000000042.jpg", 5) == 42
    assert image_id_of("street.png", 5) == 5
