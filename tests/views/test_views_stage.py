import argparse
import pickle

import numpy as np
import pytest
import torch
from features_helpers import small_config
from torchvision.ops import roi_pool

from ssrp.config import with_settings
from ssrp.corpus import CorpusReader, ImageRecord, encode, verify
from ssrp.deadletter import DeadLetter
from ssrp.features.engine import transform_grid
from ssrp.features.stage import Extractor
from ssrp.views.config import ALL_VIEWS, TABLE2, ViewsConfig, view_counts
from ssrp.views.stage import ViewAugmenter, jitter_boxes, jitter_factors, mirror_boxes


def test_the_14_views_and_their_names():
    assert len(ALL_VIEWS) == 14 and len(set(ALL_VIEWS)) == 14
    assert ALL_VIEWS[:7] == ("raw", "roi_hflip", "rot90", "rot180", "rot270", "jitter0", "jitter1")
    assert all(v == "hflip" or v.startswith("hflip_") for v in ALL_VIEWS[7:])
    assert sorted(v for names in TABLE2.values() for v in names) == sorted(ALL_VIEWS)


@pytest.mark.parametrize("n", [1, 7, 118_287])
def test_counts_follow_table_2(n):
    assert view_counts(n) == {"raw": n, "hflip": n, "roi_hflip": 2 * n, "rotate": 6 * n, "jitter": 4 * n}
    assert view_counts(n, ("raw", "rot90")) == {"raw": n, "hflip": 0, "roi_hflip": 0, "rotate": n, "jitter": 0}


def test_rotating_a_grid_four_times_is_identity_and_roi_hflip_is_the_mirror():
    grid = torch.randn(3, 5, 14, 14)
    once = transform_grid(grid, "rot90")
    assert torch.equal(transform_grid(transform_grid(transform_grid(once, "rot90"), "rot90"), "rot90"), grid)
    assert torch.equal(transform_grid(grid, "rot180"), transform_grid(once, "rot90"))
    assert torch.equal(transform_grid(grid, "rot270"), torch.rot90(grid, -1, dims=(2, 3)))
    assert torch.equal(once[0, 0], torch.from_numpy(np.rot90(grid[0, 0].numpy()).copy()))  # counter-clockwise
    assert torch.equal(transform_grid(grid, "hflip"), grid.flip(-1))
    assert torch.equal(transform_grid(transform_grid(grid, "hflip"), "hflip"), grid)


def test_roi_hflip_equals_pooling_the_mirrored_box_from_the_mirrored_map():
    fmap = torch.randn(1, 4, 12, 20)
    box = torch.tensor([[3.0, 2.0, 15.0, 9.0]])  # feature-cell units (spatial scale 1)
    mirrored = torch.from_numpy(mirror_boxes(box.numpy(), 20))
    pooled = roi_pool(fmap, [box], (7, 7), 1.0)
    from_flipped = roi_pool(fmap.flip(-1), [mirrored], (7, 7), 1.0)
    assert torch.equal(transform_grid(pooled, "hflip"), from_flipped)


def test_mirror_and_jitter_boxes():
    boxes = np.array([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 99.0, 49.0]], np.float32)
    assert mirror_boxes(boxes, 100).tolist() == [[69.0, 5.0, 89.0, 25.0], [0.0, 0.0, 99.0, 49.0]]
    assert np.array_equal(mirror_boxes(mirror_boxes(boxes, 100), 100), boxes)
    j = jitter_boxes(boxes, np.array([[1.2, 0.8], [1.2, 1.2]]), 100, 50)
    np.testing.assert_allclose(j[0], [8.0, 7.0, 32.0, 23.0])  # about the centre
    assert j[1].tolist() == [0.0, 0.0, 99.0, 49.0]  # clipped to the image


def test_jitter_factors_are_seeded_by_image_and_view():
    cfg = ViewsConfig()
    a = jitter_factors(cfg, 42, "jitter0", 36)
    assert a.shape == (36, 2) and (a >= 0.8).all() and (a <= 1.2).all()
    assert np.array_equal(a, jitter_factors(cfg, 42, "jitter0", 36))
    assert not np.array_equal(a, jitter_factors(cfg, 42, "jitter1", 36))
    assert not np.array_equal(a, jitter_factors(cfg, 43, "jitter0", 36))
    iso = jitter_factors(ViewsConfig(jitter_isotropic=True), 42, "jitter0", 5)
    assert np.array_equal(iso[:, 0], iso[:, 1])


def test_all_views_of_every_image(augmenter, images):
    out = augmenter(images)
    assert len(out) == len(images)
    for img, recs in zip(images, out, strict=True):
        assert [r.view for r in recs] == list(ALL_VIEWS)
        by = {r.view: r for r in recs}
        raw = by["raw"]
        n = raw.num_boxes
        assert all(r.num_boxes == n and r.image_id == img.image_id and isinstance(r, ImageRecord) for r in recs)
        for v in ("roi_hflip", "rot90", "rot180", "rot270"):  # same regions, transformed grids
            assert np.array_equal(by[v].boxes, raw.boxes) and not np.array_equal(by[v].features, raw.features)
        mirrored = mirror_boxes(raw.boxes, img.width)
        for v in ("hflip", "hflip_roi_hflip", "hflip_rot90", "hflip_rot180", "hflip_rot270"):
            assert np.array_equal(by[v].boxes, mirrored)  # region k is mirrored raw box k
        for prefix, base in (("", raw.boxes), ("hflip_", mirrored)):
            for v in ("jitter0", "jitter1"):
                rec = by[prefix + v]
                f = np.asarray(rec.view_params["scale"])
                assert f.shape == (n, 2) and (f >= 0.8).all() and (f <= 1.2).all()
                np.testing.assert_allclose(rec.boxes, jitter_boxes(base, f, img.width, img.height), rtol=0, atol=1e-4)
        assert by["hflip"].view_params["image_hflip"] is True and by["rot90"].view_params["grid_op"] == "rot90"


def test_raw_view_is_the_features_stage_record(augmenter, tiny_models, images):
    ext = Extractor(small_config(tiny_models)).load()
    raw = [recs[0] for recs in augmenter(images[:2])]
    for a, b in zip(raw, ext(images[:2]), strict=True):
        assert encode(a) == encode(b)


def test_a_view_computed_alone_equals_the_view_computed_with_others(augmenter, tiny_models, images):
    full = {r.view: r for r in augmenter(images[:2])[1]}
    for views in (("rot90",), ("hflip_jitter1",), ("hflip", "jitter0")):
        alone = ViewAugmenter(ViewsConfig(features=small_config(tiny_models), views=views)).load()
        recs = alone(images[:2])[1]
        assert [r.view for r in recs] == list(views)
        for r in recs:
            assert encode(r) == encode(full[r.view])


def test_reruns_give_identical_records(augmenter, images):
    first = [encode(r) for recs in augmenter(images[:2]) for r in recs]
    clone = pickle.loads(pickle.dumps(augmenter)).load()
    assert [encode(r) for recs in clone(images[:2]) for r in recs] == first


def test_bad_inputs_and_settings(augmenter, images):
    dead = DeadLetter("image/000000000009", "decode", "truncated_image")
    out = augmenter([dead, images[0]])
    assert out[0] is dead and len(out[1]) == 14
    with pytest.raises(ValueError, match="views"):
        ViewsConfig(views=("raw", "rot45"))
    with pytest.raises(ValueError, match="jitter_range"):
        ViewsConfig(jitter_range=(1.2, 0.8))
    cfg = with_settings(ViewsConfig(), {"views": ["raw", "hflip"], "features.select.max_boxes": 100,
                                        "features.select.min_boxes": 10})
    assert cfg.views == ("raw", "hflip") and cfg.features.select.max_boxes == 100


@pytest.mark.parametrize("n", [1, 3])
def test_cli_writes_every_view_and_the_counts_follow_table_2(tiny_models, coco_sample, tmp_path, n):
    from ssrp.views import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    out = str(tmp_path / "corpus")
    args = parser.parse_args([
        "views", "--coco", coco_sample, "--out", out, "--models", tiny_models, "--max-images", str(n),
        "--decode-workers", "0", "--set", "features.preprocess.test_scale=160",
        "--set", "features.preprocess.max_size=240", "--set", "features.rpn.post_nms_topk=60", "--set", "views.seed=3",
        "--no-progress",
    ])
    assert args.func(args) == 0
    assert verify(out).ok
    reader = CorpusReader(out)
    assert reader.views() == sorted(ALL_VIEWS) and reader.count("index") == n
    for col, count in view_counts(n).items():
        assert sum(reader.count("image", v) for v in TABLE2[col]) == count
    assert reader.manifest["config"]["views"]["seed"] == 3
