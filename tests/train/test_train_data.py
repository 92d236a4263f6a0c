"""Datasets, collate and the bucketing sampler over a synthetic corpus."""

import dataclasses
import logging

import numpy as np
import pytest
from train_helpers import FEATURE_DIM, NUM_LABELS, build_corpus, make_text

from ssrp.corpus import CorpusReader
from ssrp.train.bert import bert_data_config
from ssrp.train.config import DataConfig, ModelConfig, Stage1Config
from ssrp.train.data import (
    BucketBatchSampler,
    Collate,
    DataError,
    Stage1Dataset,
    Stage2Dataset,
    build_loader,
    caption_lengths,
    fit_text,
    load_pairs,
    resolve_choices,
)


@pytest.fixture(scope="module")
def setup(corpus, bert_dir, vocab):
    data = bert_data_config(DataConfig(max_tokens=12, max_objects=6), bert_dir)
    model = ModelConfig(vocab_size=len(vocab), feature_dim=FEATURE_DIM, num_object_labels=NUM_LABELS)
    with CorpusReader(corpus) as reader:
        pairs = load_pairs(reader)
        views, variants = tuple(reader.views()), tuple(reader.variants())
    return corpus, pairs, views, variants, data, model


def test_pairs_and_lengths(setup):
    corpus, pairs, *_ = setup
    assert len(pairs) == 48 and set(pairs[:, 0]) == set(range(1, 25))
    with CorpusReader(corpus) as reader:
        lengths = caption_lengths(reader, pairs[:, 1], 36)
        assert lengths[0] == len(reader.text(int(pairs[0, 1])).input_ids)


def test_stage1_masking_and_mismatch(setup):
    corpus, pairs, views, variants, data, model = setup
    ds = Stage1Dataset(corpus, pairs, views, variants, data, model, seed=3, stage1=Stage1Config(mask_prob=0.3))
    samples = [ds[(i % len(pairs), i // len(pairs))] for i in range(400)]
    assert samples[5]["input_ids"].tolist() == ds[(5, 0)]["input_ids"].tolist()  # (seed, epoch, index) decide
    matched = np.array([s["matched"] for s in samples])
    assert 0.4 < matched.mean() < 0.6
    chosen = np.concatenate([s["mlm_labels"] >= 0 for s in samples])
    masked = np.concatenate([s["input_ids"] == data.mask_id for s in samples])
    assert 0.2 < chosen.mean() < 0.35
    assert not (masked & ~chosen).any()  # [MASK] only where a label is kept
    assert 0.7 < (masked & chosen).sum() / chosen.sum() < 0.9
    for s in samples:
        assert s["mlm_labels"][0] == -1 and s["mlm_labels"][-1] == -1  # never [CLS]/[SEP]
        sel = s["obj_labels"] >= 0
        zeroed = (s["features"] == 0).all(1) & ~(s["feat_targets"] == 0).all(1)
        assert not (zeroed & ~sel).any()
        assert len(s["features"]) <= data.max_objects and len(s["input_ids"]) <= data.max_tokens


def test_stage2_draws_two_different_views_and_variants(setup):
    corpus, pairs, views, variants, data, model = setup
    ds = Stage2Dataset(corpus, pairs, views, variants, data, model, seed=0)
    s = ds[(0, 0)]
    with CorpusReader(corpus) as reader:
        image_id, caption_id = (int(x) for x in pairs[0])
        texts = {v: fit_text(reader.text(caption_id, v), data.max_tokens) for v in variants}
        images = {v: reader.image(image_id, v).features[: data.max_objects] for v in views}
    va = [v for v, f in images.items() if np.array_equal(f, s["a"]["features"])]
    vb = [v for v, f in images.items() if np.array_equal(f, s["b"]["features"])]
    ta = [v for v, t in texts.items() if np.array_equal(t[0], s["a"]["input_ids"])]
    tb = [v for v, t in texts.items() if np.array_equal(t[0], s["b"]["input_ids"])]
    assert va and vb and set(va).isdisjoint(vb)
    assert ta and tb and set(ta).isdisjoint(tb)
    for name, variant in (("a", ta[0]), ("b", tb[0])):
        assert np.array_equal(s[name]["tree_dist"], texts[variant][2])
        assert np.array_equal(s[name]["piece_word"], texts[variant][1])


def test_collate_pads_and_stacks(setup):
    corpus, pairs, views, variants, data, model = setup
    ds = Stage2Dataset(corpus, pairs, views, variants, data, model, seed=0)
    batch = Collate("stage2", data.pad_id)([ds[(i, 0)] for i in range(3)])
    b, t = batch["input_ids"].shape
    assert b == 6 and batch["piece_word"].shape == (6, t)
    w = batch["tree_dist"].shape[1]
    lengths = batch["text_mask"].sum(1)
    for i in range(6):
        n = int(batch["piece_word"][i].max()) + 1
        assert (batch["tree_dist"][i, :n, :n] >= 0).all() and (batch["tree_dist"][i, n:, :] == -1).all()
        assert (batch["input_ids"][i, lengths[i] :] == data.pad_id).all()
        assert n <= w
    ds1 = Stage1Dataset(corpus, pairs, views, variants, data, model, seed=0, stage1=Stage1Config())
    b1 = Collate("stage1", data.pad_id)([ds1[(i, 0)] for i in range(4)])
    assert b1["mlm_labels"].shape == b1["input_ids"].shape and b1["obj_labels"].shape == b1["object_mask"].shape
    assert (b1["obj_labels"][~b1["object_mask"]] == -1).all()


def test_fit_text_keeps_sep_and_whole_words(vocab):
    rec = make_text(1, 1, "raw", vocab, np.random.default_rng(0), n_words=20)
    ids, pw, td = fit_text(rec, 10)
    assert len(ids) == 10 and ids[-1] == rec.input_ids[-1] and pw[-1] == -1
    words = int(pw.max()) + 1
    assert td.shape == (words, words) and np.array_equal(td, rec.tree_dist[:words, :words])


def test_unparsed_text_raises_naming_the_key(tmp_path, vocab, bert_dir):
    corpus = build_corpus(str(tmp_path / "c"), vocab, n_images=3, views=("raw",), variants=("raw",), unparsed=(200,))
    data = bert_data_config(DataConfig(), bert_dir)
    model = ModelConfig(vocab_size=len(vocab), feature_dim=FEATURE_DIM, num_object_labels=NUM_LABELS)
    with CorpusReader(corpus) as reader:
        pairs = load_pairs(reader)
    ds = Stage2Dataset(corpus, pairs, ("raw",), ("raw",), data, model, seed=0)
    index = int(np.flatnonzero(pairs[:, 1] == 200)[0])
    with pytest.raises(DataError, match="text/000000000200/raw.*not parsed"):
        ds[(index, 0)]


def test_missing_records_fall_back_to_the_next_pair(tmp_path, vocab, bert_dir, caplog):
    corpus = build_corpus(str(tmp_path / "c"), vocab, n_images=3, views=("raw",), variants=("raw",), missing=(200,))
    data = bert_data_config(DataConfig(), bert_dir)
    model = ModelConfig(vocab_size=len(vocab), feature_dim=FEATURE_DIM, num_object_labels=NUM_LABELS)
    with CorpusReader(corpus) as reader:
        pairs = load_pairs(reader)
        expected = fit_text(reader.text(201), data.max_tokens)[0]
    ds = Stage2Dataset(corpus, pairs, ("raw",), ("raw",), data, model, seed=0)
    index = int(np.flatnonzero(pairs[:, 1] == 200)[0])
    with caplog.at_level(logging.WARNING, logger="ssrp.train.data"):
        sample = ds[(index, 0)]
    assert np.array_equal(sample["a"]["input_ids"], expected)
    assert "text/000000000200/raw" in caplog.text and "missing" in caplog.text


def test_raw_only_corpus_is_handled_with_a_log_line(raw_corpus, caplog):
    with CorpusReader(raw_corpus) as reader, caplog.at_level(logging.WARNING, logger="ssrp.train.data"):
        views = resolve_choices("image views", (), reader.views(), "stage2")
        variants = resolve_choices("caption variants", ("raw", "de"), reader.variants(), "stage2")
    assert views == ("raw",) and variants == ("raw",)
    assert "only one image view (raw)" in caplog.text and "['de'] requested but not in the corpus" in caplog.text


def test_sampler_splits_global_batches_and_resumes():
    lengths = np.random.default_rng(0).integers(3, 30, 100)
    ranks = [BucketBatchSampler(lengths, 8, r, 2, seed=1, bucket_batches=3) for r in range(2)]
    single = BucketBatchSampler(lengths, 8, 0, 1, seed=1, bucket_batches=3)
    for s in (*ranks, single):
        s.set_epoch(2)
    joined = [a + b for a, b in zip(*[list(s) for s in ranks], strict=True)]
    assert joined == list(single) and len(joined) == 12
    single.set_epoch(2, start_batch=5)
    assert list(single) == joined[5:]
    flat = [i for batch in joined for i, _ in batch]
    assert len(set(flat)) == len(flat)
    spread = np.mean([np.ptp(lengths[[i for i, _ in b]]) for b in joined])
    plain = BucketBatchSampler(lengths, 8, 0, 1, seed=1, bucket_batches=0)
    plain.set_epoch(2)
    assert spread < np.mean([np.ptp(lengths[[i for i, _ in b]]) for b in plain])


def test_loader_workers_give_the_same_batches(setup):
    corpus, pairs, views, variants, data, model = setup
    ds = Stage1Dataset(
        corpus, pairs, views, variants, dataclasses.replace(data, num_workers=2), model, seed=0, stage1=Stage1Config()
    )
    batches = {}
    for workers in (0, 2):
        sampler = BucketBatchSampler(np.full(len(pairs), 5), 8, 0, 1, seed=0, bucket_batches=2)
        batches[workers] = list(build_loader(ds, sampler, Collate("stage1", data.pad_id), workers, pin=False))
    for a, b in zip(batches[0], batches[2], strict=True):
        for key in a:
            assert a[key] == b[key] if key == "keys" else (a[key] == b[key]).all(), key


def test_auto_workers_share_the_cores_between_ranks(monkeypatch):
    from ssrp.train.data import auto_workers

    assert auto_workers(cores=16, ranks_on_host=1) == 15 and auto_workers(cores=64, ranks_on_host=1) == 16
    assert auto_workers(cores=16, ranks_on_host=4) == 3 and auto_workers(cores=2, ranks_on_host=1) == 1
    assert auto_workers(cores=1, ranks_on_host=2) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun's
    assert auto_workers(cores=32) == 3
