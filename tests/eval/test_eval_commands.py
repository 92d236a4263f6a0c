import argparse
import json
import os

import h5py
import numpy as np
import pytest
import torch
from eval_helpers import HEIGHT, OBJECT_NAMES, VARIANTS, WIDTH
from PIL import Image

from ssrp.corpus import CorpusReader
from ssrp.eval.cli import register
from ssrp.eval.config import EvalConfig
from ssrp.eval.export import fused_vector
from ssrp.eval.figures import BLANK, grid_size
from ssrp.eval.inference import Pair, ProbeModel
from ssrp.eval.retrieval import (
    OBJ,
    OBJ_REL,
    enhance,
    image_features,
    obj_rel_vector,
    obj_vector,
    rank,
    recall_table,
    relation_weights,
)
from ssrp.eval.select import caption_pairs
from ssrp.train.checkpoint import state_digest


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssrp")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _png(path: str) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"), np.int64)


# ------------------------------------------------------------------------------------------------
# eval probe


def _reference_uuas(pred: np.ndarray, heads: np.ndarray, upos) -> tuple[int, int]:
    """Independent reference: Kruskal's MST over non-punctuation words against the gold arcs among them
    (with the synthetic trees, punctuation is always a leaf, so the gold tree minus it stays a tree)."""
    keep = [i for i, u in enumerate(upos) if u != "PUNCT"]
    gold = {tuple(sorted((i, int(h) - 1))) for i, h in enumerate(heads) if h and i in keep and h - 1 in keep}
    parent = {i: i for i in keep}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    edges = sorted((pred[i, j], i, j) for a, i in enumerate(keep) for j in keep[a + 1 :])
    tree = set()
    for _, i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
            tree.add((i, j))
    return len(tree & gold), len(gold)


def test_eval_probe_table_json_and_reference_uuas(runs, corpus, probe_model, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert cli(["eval", "probe", "--ckpt", runs["stage2"], "--corpus", corpus, "--json", str(out),
                "--no-progress"]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert list(result["variants"]) == ["raw", "de", "ru", "all"]
    for name in ("raw", "de", "ru", "all"):
        assert name in table
    with CorpusReader(corpus) as reader:
        pairs = caption_pairs(reader, reader.image_ids())
    assert result["variants"]["all"]["sentences"] == len(pairs) == 16 * 2 * 3
    # reference: UUAS per variant from the model's own R_w with an independent MST
    counts = {v: [0, 0] for v in VARIANTS}
    for o in probe_model.run(pairs):
        c, t = _reference_uuas(o.r_w, o.heads, o.upos)
        counts[o.pair.variant][0] += c
        counts[o.pair.variant][1] += t
    for v in VARIANTS:
        assert result["variants"][v]["edges"] == counts[v][1]
        assert result["variants"][v]["uuas"] == pytest.approx(counts[v][0] / counts[v][1])
        assert -1.0 <= result["variants"][v]["spearman"] <= 1.0
    stab = result["stability"]
    assert stab["R_v"]["groups"] == 16 and stab["R_w"]["groups"] == 16
    assert stab["R_v"]["matrix"]["same_pairs"] == 16 * 3  # three views: three pairs per image
    assert stab["R_w"]["projection"]["same_pairs"] == 16 * 3
    for rel in ("R_v", "R_w"):
        for rep in ("matrix", "projection"):
            assert -1.0 <= stab[rel][rep]["same"] <= 1.0
    assert "stability" in table


def test_probe_model_outputs_follow_the_corpus(probe_model, corpus):
    with CorpusReader(corpus) as reader:
        text = reader.text(100, "de")
        image = reader.image(1, "rot90")
    (o,) = probe_model([Pair(1, 100, "rot90", "de")])
    w, n, hidden = len(text.words), image.num_boxes, probe_model.hidden
    assert o.words == text.words and o.upos == text.upos
    assert o.r_w.shape == (w, w) and o.r_v.shape == (n, n) and o.objects.shape == (n, hidden)
    np.testing.assert_array_equal(o.gold, text.tree_dist)
    assert np.allclose(o.r_w, o.r_w.T, atol=1e-4) and np.allclose(np.diag(o.r_v), 0, atol=1e-4)
    assert o.f_align.shape == (hidden,)
    # batching does not change the result
    (alone,) = probe_model([Pair(1, 100, "rot90", "de")])
    together = probe_model([Pair(2, 200, "raw", "raw"), Pair(1, 100, "rot90", "de")])[1]
    np.testing.assert_allclose(alone.r_w, together.r_w, atol=1e-5)
    np.testing.assert_allclose(alone.objects, together.objects, atol=1e-5)


def test_stage1_checkpoint_is_refused_as_ckpt_and_a_foreign_stage1_is_detected(runs, corpus, tmp_path):
    with pytest.raises(ValueError, match="stage1 checkpoint"):
        ProbeModel(runs["stage1"], corpus, EvalConfig(progress=False)).load()
    foreign = torch.load(runs["stage1"], map_location="cpu", weights_only=True)
    key = next(k for k in foreign["model"] if k.startswith("encoder."))
    foreign["model"][key] = foreign["model"][key] + 1.0
    del foreign["digest"]
    foreign["digest"] = state_digest(foreign)  # a well-formed checkpoint of another stage-1 run
    path = str(tmp_path / "foreign.pt")
    torch.save(foreign, path)
    with pytest.raises(ValueError, match="encoder differs"):
        ProbeModel(runs["stage2"], corpus, EvalConfig(progress=False), stage1=path).load()


# ------------------------------------------------------------------------------------------------
# show


def test_show_renders_the_view_and_tree_figures(runs, corpus, tmp_path, capsys):
    out = tmp_path / "show"
    assert cli(["show", "--ckpt", runs["stage2"], "--corpus", corpus, "--image", "3", "--out", str(out),
                "--no-progress"]) == 0
    paths = capsys.readouterr().out.split()
    assert [os.path.basename(p) for p in paths] == ["image_3_relations.png", "caption_300_trees.png"]
    rel, trees = _png(paths[0]), _png(paths[1])
    assert rel.shape[1] > 1.2 * rel.shape[0]  # the corpus's 3 views side by side: one row of the grid
    assert trees.shape[0] > 1.5 * 150 * len(VARIANTS)  # one row per caption variant (150 dpi)
    for a in (rel, trees):
        assert len(np.unique(a.reshape(-1, 3), axis=0)) > 50  # not one colour: text, lines, heat-maps
    assert ((trees[..., 0] > 150) & (trees[..., 1] < 90) & (trees[..., 2] < 90)).sum() > 200  # red arcs


def test_show_draws_the_views_asked_for_in_their_order(runs, corpus, tmp_path, capsys):
    common = ["show", "--ckpt", runs["stage2"], "--corpus", corpus, "--image", "3", "--no-progress"]
    cli([*common, "--out", str(tmp_path / "one"), "--views", "rot90"])
    cli([*common, "--out", str(tmp_path / "all")])
    capsys.readouterr()
    one, every = _png(str(tmp_path / "one" / "image_3_relations.png")), _png(str(tmp_path / "all" /
                                                                                    "image_3_relations.png"))
    assert one.shape[1] < every.shape[1] / 2
    with pytest.raises(ValueError, match="image 3 has no view jitter0 .*raw, hflip, rot90"):
        cli([*common, "--out", str(tmp_path / "x"), "--views", "raw,jitter0"])


def test_show_draws_the_coco_image_when_given(runs, corpus, tmp_path, capsys):
    coco = tmp_path / "coco"
    (coco / "train2017").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(coco / "train2017" /
                                                                                   "000000000003.jpg")
    blank = tmp_path / "blank"
    photo = tmp_path / "photo"
    common = ["--ckpt", runs["stage2"], "--corpus", corpus, "--image", "3", "--no-progress"]
    cli(["show", *common, "--out", str(blank)])
    cli(["show", *common, "--out", str(photo), "--coco", str(coco)])
    capsys.readouterr()
    a = _png(str(blank / "image_3_relations.png"))
    b = _png(str(photo / "image_3_relations.png"))
    assert a.shape == b.shape
    diff = np.abs(a - b).sum(-1) > 0
    rows = np.flatnonzero(diff.any(1))
    assert diff.sum() > 10_000  # the photo replaces the blank canvas
    assert rows.max() < 0.6 * a.shape[0]  # in the images' row only: the heat-maps below do not change
    assert (a[: rows.max()] == BLANK).all(-1).sum() > 10_000


def test_the_corpus_vocabulary_names_the_regions(probe_model):
    assert probe_model.names.object(1) == OBJECT_NAMES[1]
    assert probe_model.names.labels([11], limit=12) == ["refrigerato\u2026"]


def test_show_rejects_unknown_images(runs, corpus, tmp_path):
    with pytest.raises(ValueError, match="not in the corpus"):
        cli(["show", "--ckpt", runs["stage2"], "--corpus", corpus, "--image", "999", "--out", str(tmp_path)])


# ------------------------------------------------------------------------------------------------
# retrieve


def test_every_image_retrieves_itself_first(probe_model):
    ids = probe_model.reader.image_ids()
    feats = list(image_features(probe_model, ids))
    assert [f.image_id for f in feats] == ids
    obj = np.stack([obj_vector(f.objects) for f in feats])
    rel = np.stack([obj_rel_vector(f.objects, f.r_v) for f in feats])
    for x in (obj, rel):
        np.testing.assert_array_equal(rank(x)[:, 0], np.arange(len(ids)))
    assert not np.allclose(obj, rel)  # the enhancement changes the features


def test_relation_enhancement_is_a_softmax_over_distances():
    r = np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 2.0], [3.0, 2.0, 0.0]])
    v = np.eye(3)
    a = relation_weights(r, temperature=1.0)
    expected = np.exp(-r) / np.exp(-r).sum(1, keepdims=True)
    np.testing.assert_allclose(a, expected)
    np.testing.assert_allclose(enhance(v, r, 1.0), expected)
    # default temperature: the median off-diagonal distance (2.0 here)
    np.testing.assert_allclose(relation_weights(r), np.exp(-r / 2) / np.exp(-r / 2).sum(1, keepdims=True))
    np.testing.assert_allclose(relation_weights(r * 10), relation_weights(r))  # scale-free


def test_recall_table_by_hand():
    # query 0 (label 1): results 1 (has 1), 2 (no); query 1 (label 2): results 2 (no), 0 (no); 2: no label
    order = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    tops = [1, 2, None]
    sets = [{1}, {1, 2}, {3}]
    t = recall_table(order, tops, sets, (1, 2))
    assert t["queries"] == 1  # query 1 has no relevant image besides itself; query 2 no label
    assert t["R@1"] == 1.0 and t["P@1"] == 1.0 and t["P@2"] == 0.5


def test_retrieve_writes_grid_and_table(runs, corpus, tmp_path, capsys):
    out = tmp_path / "ret"
    assert cli(["retrieve", "--ckpt", runs["stage2"], "--corpus", corpus, "--out", str(out), "--no-progress",
                "--set", "topk=3", "--set", "grid_queries=2"]) == 0
    printed = capsys.readouterr().out
    assert OBJ in printed and OBJ_REL in printed
    result = json.loads((out / "retrieval.json").read_text())
    assert result["images"] == 16 and set(result["recall"]) == {OBJ, OBJ_REL}
    for q in result["queries"]:
        for m in (OBJ, OBJ_REL):
            assert len(q[m]) == 3 and q["image_id"] not in q[m]
    grid = _png(str(out / "retrieval.png"))
    assert grid.shape[1::-1] == grid_size(3, 2, 2, EvalConfig().thumb_size)
    assert len(np.unique(grid.reshape(-1, 3), axis=0)) > 5


# ------------------------------------------------------------------------------------------------
# export


def test_export_layout(runs, corpus, probe_model, tmp_path, capsys):
    path = tmp_path / "feats.h5"
    assert cli(["export", "--ckpt", runs["stage2"], "--stage1", runs["stage1"], "--corpus", corpus,
                "--out", str(path), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"path": str(path), "images": 16, "pairs": 32, "f_align": True}
    cfg = probe_model.train_cfg
    hidden, proj, size = cfg.model.hidden, cfg.stage2.proj_dim, cfg.stage2.max_nodes
    reader = probe_model.reader
    with h5py.File(path, "r") as h5:
        assert h5.attrs["format"] == "ssrp-export/1" and h5.attrs["f_align_source"] == "g_align"
        assert h5.attrs["hidden"] == hidden and h5.attrs["variant"] == "cross"
        assert sorted(h5["images"], key=int) == [str(i) for i in reader.image_ids()]
        assert sorted(h5["pairs"], key=int) == [str(i) for i in reader.image_ids()]
        for image_id in reader.image_ids():
            g, p = h5["images"][str(image_id)], h5["pairs"][str(image_id)]
            rec = reader.image(image_id, "raw")
            n = rec.num_boxes
            assert g["objects"].shape == g["objects_rel"].shape == (n, hidden)
            assert g["r_v"].shape == (n, n)
            np.testing.assert_array_equal(g["boxes"][()], rec.boxes)
            np.testing.assert_array_equal(g["obj_ids"][()], rec.obj_ids)
            np.testing.assert_array_equal(p["caption_ids"][()], reader.index(image_id).caption_ids)
            c = len(p["caption_ids"])
            assert p["f_align"].shape == (c, hidden) and p["z_v"].shape == p["z_w"].shape == (c, proj)
            assert p["r_v_vec"].shape == p["r_w_vec"].shape == (c, size * (size - 1) // 2)
            assert p["fused"].shape == (c, hidden + proj)
            np.testing.assert_allclose(
                p["fused"][()], fused_vector(p["f_align"][()], p["z_v"][()], p["z_w"][()], 0.5), atol=1e-6)
        # the per-image features are the model's, averaged over the image's captions
        outs = probe_model([Pair(5, 500, "raw", "raw"), Pair(5, 501, "raw", "raw")])
        mean = np.mean([o.objects for o in outs], 0)
        np.testing.assert_allclose(h5["images"]["5"]["objects"][()], mean, atol=1e-5)
        np.testing.assert_allclose(h5["pairs"]["5"]["f_align"][1], outs[1].f_align, atol=1e-5)


def test_export_without_stage1_has_no_f_align(runs, corpus, tmp_path, capsys):
    path = tmp_path / "feats.h5"
    cli(["export", "--ckpt", runs["stage2"], "--corpus", corpus, "--out", str(path), "--max-images", "2",
         "--no-progress"])
    assert json.loads(capsys.readouterr().out)["f_align"] is False
    with h5py.File(path, "r") as h5:
        assert h5.attrs["f_align_source"] == "none" and h5.attrs["images"] == 2
        p = h5["pairs"]["1"]
        assert "f_align" not in p and p["fused"].shape == p["z_v"].shape


class _GoldModel:
    """The loaded model with R_w replaced by a monotone transform of the gold tree distances and R_v by a
    view-independent matrix: probe metrics of 1 and perfectly stable R_v."""

    def __init__(self, model: ProbeModel):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, pairs):
        outs = self.model(pairs)
        for o in outs:
            o.r_w = np.sqrt(o.gold) * 2.0
            n = o.r_v.shape[0]
            o.r_v = np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(np.float32) * o.pair.image_id
        return outs

    def run(self, pairs, desc="", total=None):
        pairs = list(pairs)
        for start in range(0, len(pairs), 8):
            yield from self(pairs[start : start + 8])


def test_evaluate_probe_on_gold_predictions(probe_model):
    from ssrp.eval.probe import evaluate_probe

    result = evaluate_probe(_GoldModel(probe_model), probe_model.reader.image_ids())
    for v in (*VARIANTS, "all"):
        assert result["variants"][v]["uuas"] == 1.0
        assert result["variants"][v]["spearman"] == pytest.approx(1.0)
    assert result["stability"]["R_v"]["matrix"]["same"] == pytest.approx(1.0)
