import argparse
import os
import pickle
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from features_helpers import small_config

from ssrp.config import with_settings
from ssrp.corpus import CorpusReader, ImageRecord, decode, encode, verify
from ssrp.deadletter import DeadLetter
from ssrp.features.config import DetectorArch, FeaturesConfig, PreprocessConfig, RoIConfig, RPNConfig, SelectConfig
from ssrp.features.preprocess import resized_size
from ssrp.features.stage import Extractor, extract


def _same(a: ImageRecord, b: ImageRecord) -> None:
    assert a.key == b.key and a.view_params == b.view_params
    for name in ("boxes", "features", "obj_ids", "obj_conf", "attr_ids", "attr_conf"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_records_follow_the_corpus_schema_and_the_caffe_rules(extractor, images):
    recs = extractor(images)
    for img, rec in zip(images, recs, strict=True):
        assert isinstance(rec, ImageRecord) and rec.view == "raw" and rec.key == f"image/{img.image_id:012d}/raw"
        assert (rec.height, rec.width) == (img.height, img.width)
        assert rec.num_boxes == 36 and rec.features.shape == (36, 128) and rec.features.dtype == np.float16
        scale = rec.view_params["im_scale"]
        rh, rw = resized_size(img.height, img.width, scale)  # Caffe clips in the resized image, then / scale
        assert (rec.boxes[:, 0::2] <= (rw - 1) / scale + 1e-4).all()
        assert (rec.boxes[:, 1::2] <= (rh - 1) / scale + 1e-4).all()
        assert (rec.boxes >= 0).all() and (rec.boxes[:, 2:] >= rec.boxes[:, :2]).all()
        conf = np.asarray(rec.view_params["max_conf"])
        assert (conf[:-1] >= conf[1:]).all()  # sorted by max_conf
        assert (rec.obj_ids >= 0).all() and (rec.obj_ids < 20).all() and (rec.attr_ids < 10).all()
        assert decode(encode(rec)).key == rec.key


def test_a_batch_gives_the_same_records_as_one_image_at_a_time(extractor, images):
    together = extractor(images)
    for img, rec in zip(images, together, strict=True):
        _same(extractor([img])[0], rec)
    _same(extractor(images[::-1])[0], together[-1])  # order within a batch does not matter either


def test_roi_chunk_size_does_not_change_results(tiny_models, extractor, images):
    other = Extractor(small_config(tiny_models, roi=RoIConfig(chunk=37))).load()
    for a, b in zip(extractor(images), other(images), strict=True):
        _same(a, b)


def test_batched_trunk_groups_images_by_size_and_agrees_to_rounding(tiny_models, extractor, images):
    grouped = Extractor(small_config(tiny_models, trunk_batch=4)).load()
    engine = grouped.engine
    prepared = [engine.prepare(img) for img in images]
    maps, _ = engine.feature_maps(prepared)
    single = [extractor.engine.feature_maps([p])[0][0] for p in prepared]
    for m, s in zip(maps, single, strict=True):  # images 1 and 2 share a trunk call; no padding anywhere
        assert m.shape == s.shape
        torch.testing.assert_close(m, s, rtol=1e-5, atol=1e-5)


def test_loop_selection_gives_the_same_records(tiny_models, extractor, images):
    loop = Extractor(small_config(tiny_models, select=SelectConfig(method="loop"))).load()
    for a, b in zip(extractor(images[:2]), loop(images[:2]), strict=True):
        _same(a, b)


def test_folded_batchnorm_and_memory_format_agree_with_the_plain_model(tiny_models, extractor, images):
    from ssrp.features.engine import RoIJob

    plain = Extractor(small_config(tiny_models, fold_bn=False, channels_last=False)).load()
    outs = []
    for ext in (extractor, plain):
        engine = ext.engine
        prepared = [engine.prepare(images[0])]
        (fmap,), _ = engine.feature_maps(prepared)
        boxes = torch.tensor([[0.0, 0.0, 100.0, 80.0], [30.0, 20.0, 150.0, 140.0]])
        outs.append((fmap.contiguous(), engine.roi_features([RoIJob(fmap, boxes)])[0][0]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-4)


def test_adaptive_10_100_setting(tiny_models, images):
    cfg = small_config(tiny_models, select=SelectConfig(min_boxes=10, max_boxes=60))
    rec = Extractor(cfg).load()([images[0]])[0]
    above = sum(c >= 0.2 for c in rec.view_params["max_conf"])
    assert rec.num_boxes == min(max(above, 10), 60)


def test_extract_accepts_paths_bytes_and_arrays(tiny_models, coco_files, extractor):
    with open(coco_files[0], "rb") as fh:
        data = fh.read()
    out = extract([coco_files[0], data, np.zeros((40, 50, 3), np.uint8)], extractor=extractor)
    assert out[0].image_id == 1 and out[0].file_name == os.path.basename(coco_files[0])
    _same(out[0], replace(out[1], image_id=1, file_name=out[0].file_name))
    assert out[2].image_id == 2 and out[2].num_boxes > 0


def test_the_stage_is_picklable_and_reruns_are_identical(extractor, images):
    # Beam ships stages to workers by pickling them: round-trip the object built here (no file is read)
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone.cfg == extractor.cfg and clone._engine is None
    assert encode(clone.load()(images[:1])[0]) == encode(extractor(images[:1])[0])


def test_dead_letters_pass_through_in_place(extractor, images):
    dead = DeadLetter("image/000000000099", "decode", "not_an_image")
    out = extractor([images[0], dead, images[1]])
    assert out[1] is dead and isinstance(out[0], ImageRecord) and isinstance(out[2], ImageRecord)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="precision"):
        FeaturesConfig(precision="fp8")
    with pytest.raises(ValueError, match="exceeds"):
        FeaturesConfig(select=SelectConfig(max_boxes=100), rpn=RPNConfig(post_nms_topk=50))
    with pytest.raises(ValueError, match="min_boxes"):
        SelectConfig(min_boxes=40, max_boxes=36)
    with pytest.raises(ValueError, match="ROIPool"):
        RoIConfig(pooler_type="ROIAlignV2")
    cfg = with_settings(FeaturesConfig(), {"select.max_boxes": 100, "select.min_boxes": 10, "rpn.nms_thresh": 0.6})
    assert (cfg.select.min_boxes, cfg.select.max_boxes, cfg.rpn.nms_thresh) == (10, 100, 0.6)
    with pytest.raises(ValueError, match="unknown setting"):
        with_settings(FeaturesConfig(), {"selct.max_boxes": 1})


def _parser():
    from ssrp.features import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_a_corpus_that_verifies_and_exports(tiny_models, coco_sample, tmp_path):
    out, tsv, h5 = str(tmp_path / "corpus"), str(tmp_path / "f.tsv"), str(tmp_path / "f.h5")
    args = _parser().parse_args([
        "features", "--coco", coco_sample, "--split", "trainval", "--out", out, "--models", tiny_models,
        "--decode-workers", "1",
        "--set", "features.preprocess.test_scale=160", "--set", "features.preprocess.max_size=240",
        "--set", "features.rpn.post_nms_topk=60",
        "--tsv", tsv, "--hdf5", h5, "--no-progress",
    ])
    assert args.func(args) == 0
    report = verify(out)
    assert report.ok, report.problems
    reader = CorpusReader(out)
    assert reader.views() == ["raw"] and reader.count("image") == 4 and reader.count("index") == 4
    index = reader.index(1)
    assert index.caption_ids.tolist() == [101, 102, 103, 104, 105] and index.file_name == "000000000001.jpg"
    rec = reader.image(1, "raw")
    assert reader.manifest["models"]["features"]["weights_sha256"]
    assert reader.manifest["models"]["features"]["objects_vocab"][:2] == ["dog", "cat"]  # names for the figures
    from ssrp.features.export import read_lxmert_tsv

    rows = read_lxmert_tsv(tsv)
    assert [r["img_id"] for r in rows] == ["000000000001", "000000000002", "000000000003", "000000000004"]
    np.testing.assert_array_equal(rows[0]["boxes"], rec.boxes)
    np.testing.assert_array_equal(rows[0]["features"], rec.features.astype(np.float32))
    assert rows[0]["objects_id"].dtype == np.int64 and rows[0]["num_boxes"] == 36
    with h5py.File(h5) as f:
        assert f.attrs["num_boxes_fixed"] == 36 and f["pos_boxes"][0].tolist() == [0, 36]
        np.testing.assert_array_equal(f["features"][:36], rec.features.astype(np.float32))
        np.testing.assert_allclose(f["spatial_features"][0, 4], (rec.boxes[0, 2] - rec.boxes[0, 0]) / rec.width,
                                   rtol=1e-6)


def test_cli_images_folder_and_dead_letters(tiny_models, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(folder / "5.jpg")
    (folder / "6.jpg").write_bytes(b"garbage")
    out = str(tmp_path / "c")
    args = _parser().parse_args(["features", "--images", str(folder), "--out", out, "--models", tiny_models,
                                 "--decode-workers", "0", "--set", "features.preprocess.test_scale=160", "--set",
                                 "features.preprocess.max_size=240", "--set", "features.rpn.post_nms_topk=60",
                                 "--no-progress"])
    assert args.func(args) == 0
    assert verify(out).ok and CorpusReader(out).count("image") == 1
    dead = open(os.path.join(out, "deadletters.jsonl")).read()
    assert '"reason": "not_an_image"' in dead and "image/000000000006" in dead


@pytest.mark.slow
def test_the_full_r101_configuration_runs_one_small_image():
    from ssrp.features.engine import BUTDEngine
    from ssrp.features.modeling import BUTDDetector
    from ssrp.features.models import LoadedDetector

    arch = DetectorArch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BUTDDetector(arch).eval().requires_grad_(False)
    loaded = LoadedDetector(model, arch, {"name": "r101-random"}, [f"o{i}" for i in range(1600)],
                            [f"a{i}" for i in range(400)])
    cfg = FeaturesConfig(device="cpu", preprocess=PreprocessConfig(test_scale=96, max_size=128),
                         rpn=RPNConfig(pre_nms_topk=200, post_nms_topk=12),
                         select=SelectConfig(min_boxes=4, max_boxes=8))
    ext = Extractor(cfg)
    ext._engine = BUTDEngine(cfg, loaded, torch.device("cpu"))
    from features_helpers import scene

    from ssrp.features.image import DecodedImage

    rec = ext([DecodedImage(3, "x.jpg", scene(120, 90))])[0]
    assert isinstance(rec, ImageRecord) and rec.features.shape[1] == 2048 and 4 <= rec.num_boxes <= 8
    assert np.isfinite(rec.features.astype(np.float32)).all()
    assert rec.obj_ids.max() < 1600 and rec.attr_ids.max() < 400


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_maps_pool_like_their_float32_upcast(tiny_models, images, dtype):
    """roi_pool needs the map in the boxes' float32 (found on an H100: an fp16 map and fp32 boxes were
    refused); a half-precision map pools to its float32 map's result, cast to the half type."""
    engine = Extractor(small_config(tiny_models)).load().engine
    (fmap,), _ = engine.feature_maps([engine.prepare(images[0])])
    boxes = torch.tensor([[0.0, 0.0, 100.0, 80.0], [30.5, 20.25, 150.0, 140.0]])
    half = engine._pool(fmap.to(dtype), boxes)
    assert half.dtype == dtype
    assert torch.equal(half, engine._pool(fmap, boxes).to(dtype))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_precisions_agree_with_the_cpu_on_the_same_boxes(tiny_models, images):
    from ssrp.features.engine import RoIJob

    boxes = torch.tensor([[0.0, 0.0, 100.0, 80.0], [30.0, 20.0, 150.0, 140.0], [5.0, 50.0, 60.0, 150.0]])
    feats = {}
    for name, overrides in {"cpu": {}, "fp32": {"device": "cuda", "precision": "fp32"},
                            "fp16": {"device": "cuda", "precision": "fp16"}}.items():
        engine = Extractor(small_config(tiny_models, **overrides)).load().engine
        (fmap,), _ = engine.feature_maps([engine.prepare(images[0])])
        feats[name] = engine.roi_features([RoIJob(fmap, boxes.to(fmap.device))])[0][0].float().cpu()
    torch.testing.assert_close(feats["fp32"], feats["cpu"], rtol=1e-3, atol=1e-3)
    assert torch.nn.functional.cosine_similarity(feats["fp16"], feats["fp32"], dim=1).min() > 0.99


def test_rerunning_a_complete_corpus_does_nothing_and_another_config_is_refused(tiny_models, coco_sample, tmp_path):
    from ssrp.corpus import ConfigMismatchError

    out = str(tmp_path / "c")
    base = ["features", "--coco", coco_sample, "--out", out, "--models", tiny_models, "--decode-workers", "0",
            "--max-images", "1", "--set", "features.preprocess.test_scale=160", "--set",
            "features.preprocess.max_size=240", "--set", "features.rpn.post_nms_topk=60", "--no-progress"]
    args = _parser().parse_args(base)
    assert args.func(args) == 0
    before = os.path.getmtime(os.path.join(out, "manifest.json"))
    assert args.func(args) == 0
    assert os.path.getmtime(os.path.join(out, "manifest.json")) == before
    other = _parser().parse_args(base + ["--set", "features.select.conf_thresh=0.3"])
    with pytest.raises(ConfigMismatchError):
        other.func(other)
