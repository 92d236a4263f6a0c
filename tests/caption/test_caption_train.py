"""Training on the planted-pattern set: the model learns to caption it, SCST raises its reward, runs resume."""

import os

import numpy as np
import pytest
import torch

from ssrp.caption.config import make_config
from ssrp.caption.data import BatchMaker, CaptionSet, epoch_batches, load_karpathy, select_split
from ssrp.caption.evaluate import decode_images, quick_cider
from ssrp.caption.features import FeatureStore
from ssrp.caption.model import UpDown
from ssrp.caption.scst import reward_scorer, scst_step, with_eos
from ssrp.caption.train import CHECKPOINT, load_model, train

BASE = ["features.parts=('butd',)", "progress=False", "device='cpu'"]


def _xe(planted, tmp_path_factory, epochs):
    out = str(tmp_path_factory.mktemp("xe") / "run")
    cfg = make_config("tiny", BASE + [f"xe.epochs={epochs}", "scst.epochs=0"])
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    summary = train(cfg, planted["karpathy"], planted["corpus"], out)
    torch.set_num_threads(old)
    return out, summary


@pytest.fixture(scope="module")
def xe_run(planted, tmp_path_factory):
    """The plain Up-Down trained with cross-entropy only on the 48 training images."""
    return _xe(planted, tmp_path_factory, 15)


@pytest.fixture(scope="module")
def early_xe_run(planted, tmp_path_factory):
    """The same after 5 epochs: it has learnt the caption templates, not yet all the colours and shapes."""
    return _xe(planted, tmp_path_factory, 5)


def _test_captions(model, store, planted):
    """Beam-search captions (beam 3) of the 16 held-out test images."""
    images = select_split(load_karpathy(planted["karpathy"]), "test")
    seqs = decode_images(model, store, [i.image_id for i in images], 16, 3, 16, torch.device("cpu"))
    return seqs, images


def test_the_model_learns_to_caption_held_out_images_of_the_planted_pattern(planted, xe_run):
    out, summary = xe_run
    model, vocab, cfg, inputs = load_model(os.path.join(out, CHECKPOINT), torch.device("cpu"))
    store = FeatureStore(inputs["cache"])
    seqs, images = _test_captions(model, store, planted)
    trained = quick_cider(seqs, images, vocab, 16)
    torch.manual_seed(0)
    untrained_model = UpDown(cfg.model, len(vocab), store.dim).eval()
    untrained = quick_cider(_test_captions(untrained_model, store, planted)[0], images, vocab, 16)
    assert trained > 2.0 and trained > untrained + 1.5, (trained, untrained)
    # most held-out captions name the planted object's colour and shape
    truth = {img["image_id"]: (img["colour"], img["shape"]) for img in planted["images"]}
    right = [set(truth[i.image_id]) <= set(vocab.decode(s)) for i, s in zip(images, seqs, strict=True)]
    assert np.mean(right) >= 0.6, np.mean(right)
    assert summary["epochs"] == 15 and [h["epoch"] for h in summary["history"]] == list(range(1, 16))


def _expected_reward(model, maker, scorer, index, samples=8):
    """Mean CIDEr-D of captions sampled from the model (no dropout), a fixed draw."""
    model.eval()
    batch = maker(index, with_captions=False)
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        seq, _ = model.decode(batch.att, batch.mask, 16, sample=True, per_image=samples, generator=g)
    refs = [maker.captions.references(int(i)) for i in index]
    hyps = [with_eos(s) for s in seq.numpy()]
    from ssrp.caption.scst import reward_references

    return float(scorer.scores(hyps, [reward_references(r) for r in refs], np.repeat(np.arange(len(index)), samples)).mean())


def test_scst_raises_the_cider_d_reward_it_optimises(planted, early_xe_run):
    out, _ = early_xe_run
    torch.manual_seed(0)
    model, vocab, cfg, inputs = load_model(os.path.join(out, CHECKPOINT), torch.device("cpu"))
    train_set = CaptionSet(select_split(load_karpathy(planted["karpathy"]), "train"), vocab, 16)
    maker = BatchMaker(train_set, FeatureStore(inputs["cache"]), 5, 0)
    scorer = reward_scorer([train_set.references(i) for i in range(len(train_set))], len(vocab))
    every = np.arange(len(train_set))
    before = _expected_reward(model, maker, scorer, every)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(16):
        for index in epoch_batches(len(train_set), 8, 0, epoch):
            batch = maker(index, epoch)
            res = scst_step(model, batch.att, batch.mask, [train_set.references(int(i)) for i in index], scorer, 5, 16)
            opt.zero_grad()
            res.loss.backward()
            opt.step()
    after = _expected_reward(model, maker, scorer, every)
    assert after > before + 0.2 and after > 1.25 * before, (before, after)


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_run(planted, tmp_path):
    cfg = make_config("tiny", BASE + ["xe.epochs=2", "scst.epochs=1", "model.dropout=0.3"])
    whole = train(cfg, planted["karpathy"], planted["corpus"], str(tmp_path / "a"))
    stopped = train(cfg, planted["karpathy"], planted["corpus"], str(tmp_path / "b"), stop_after=8)
    assert stopped == {"stopped_at_step": 8, "epoch": 1}
    resumed = train(cfg, planted["karpathy"], planted["corpus"], str(tmp_path / "b"), resume=True)
    assert resumed["steps"] == whole["steps"] == 18
    a = torch.load(str(tmp_path / "a" / CHECKPOINT), weights_only=True)["model"]
    b = torch.load(str(tmp_path / "b" / CHECKPOINT), weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["history"] == whole["history"]


def test_a_run_refuses_to_overwrite_or_to_resume_with_other_settings(planted, xe_run):
    out, _ = xe_run
    cfg = make_config("tiny", BASE + ["xe.epochs=15", "scst.epochs=0"])
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, planted["karpathy"], planted["corpus"], out)
    other = make_config("tiny", BASE + ["xe.epochs=15", "scst.epochs=0", "xe.lr=0.1"])
    with pytest.raises(ValueError, match=r"other settings \(xe.lr\)"):
        train(other, planted["karpathy"], planted["corpus"], out, resume=True)



def test_a_non_finite_loss_stops_training_before_the_weights_take_it(tmp_path):
    """Features holding a NaN (written as valid records) give a non-finite loss at the first step: the run stops
    there, naming the step and the images, and no checkpoint takes the weights in."""
    from caption_helpers import planted_set, write_corpus_of, write_karpathy

    from ssrp.train.steps import NonFiniteLossError

    images = planted_set(n_train=8, n_val=2, n_test=2)
    for img in images:
        img["features"][0, 0] = np.nan
    karpathy = write_karpathy(images, str(tmp_path / "dataset_coco.json"))
    corpus = write_corpus_of(images, str(tmp_path / "corpus"))
    out = tmp_path / "run"
    cfg = make_config("tiny", BASE + ["xe.epochs=1", "scst.epochs=0"])
    with pytest.raises(NonFiniteLossError, match=r"step 1 \(xe\): the loss is not finite .*images"):
        train(cfg, karpathy, corpus, str(out))
    assert not (out / CHECKPOINT).exists()


@pytest.mark.slow
def test_the_trainers_scst_phase_raises_the_reward_it_optimises(planted, tmp_path):
    """Through train() itself (its optimiser, clipping and batches): the greedy CIDEr-D reward on the training
    images, recorded each SCST epoch, ends above where the SCST phase started."""
    cfg = make_config("tiny", BASE + ["xe.epochs=6", "scst.epochs=10", "scst.lr=1e-3"])
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    summary = train(cfg, planted["karpathy"], planted["corpus"], str(tmp_path / "run"))
    torch.set_num_threads(old)
    rewards = [h["greedy_reward"] for h in summary["history"] if h["phase"] == "scst"]
    assert len(rewards) == 10 and np.mean(rewards[-3:]) > 1.3 * rewards[0], rewards
