"""Training never takes in corrupt data, never saves a non-finite model, and its checkpoints check
themselves (issue 14, points 2, 7, 10)."""

import json
import os

import numpy as np
import pytest
import torch
from train_helpers import NUM_LABELS, build_corpus, make_image

from ssrp.cli import main
from ssrp.corpus import CorpusPlan, CorpusReader, RecordError, encode, write_corpus
from ssrp.train.checkpoint import CheckpointError, load_checkpoint
from ssrp.train.config import make_config
from ssrp.train.loop import train
from ssrp.train.steps import NonFiniteLossError


def _cfg(stage="stage1", *extra):
    return make_config(stage, "cross", "tiny", [f"model.num_object_labels={NUM_LABELS}", "optim.max_steps=3", *extra])


def _with_nan_features(tmp_path, vocab, image_id=5):
    """A corpus whose image record of one image holds a NaN feature, written as valid records (crc intact)."""
    root = build_corpus(str(tmp_path / "c"), vocab, n_images=8, views=("raw",), variants=("raw",))
    with CorpusReader(root) as reader:
        records = [(k, encode(r)) for kind in ("image", "text", "index") for k, r in reader.items(kind)]
        plan = CorpusPlan(reader.manifest["num_shards"], config={"nan": image_id})
    rec = make_image(image_id, "raw", np.random.default_rng(0))
    feats = rec.features.copy()
    feats[0, 0] = np.nan
    bad = rec.__class__(**{**rec.__dict__, "features": feats})
    records = [(k, encode(bad) if k == bad.key else v) for k, v in records]
    out = str(tmp_path / "nan")
    write_corpus(out, plan, records)
    return out


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_records(tmp_path, vocab, bert_dir):
    corpus = _with_nan_features(tmp_path, vocab)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step \d+: the loss is not finite .*image/000000000005/raw\+text/"
                       ) as err:
        train(_cfg("stage1", "optim.batch_size=8", "ckpt_every=1"), corpus, str(out), bert=bert_dir)
    bad_step = int(str(err.value).split()[1].rstrip(":"))
    if bad_step > 1:  # the steps before the bad one were saved, and only they
        ckpt = load_checkpoint(str(out / "checkpoint.pt"))
        assert ckpt["step"] == bad_step - 1
        assert all(bool(torch.isfinite(t).all()) for t in ckpt["model"].values() if t.is_floating_point())
    else:
        assert not (out / "checkpoint.pt").exists()


def _flip_feature_byte(corpus):
    reader = CorpusReader(corpus)
    key = next(reader.keys("image"))
    value = reader.get_raw(key)
    path = os.path.join(corpus, reader._shard_for(key))
    data = open(path, "rb").read()
    where = data.find(value) + len(value) - 100
    with open(path, "r+b") as fh:
        fh.seek(where)
        b = fh.read(1)
        fh.seek(where)
        fh.write(bytes([b[0] ^ 0x7F]))
    return key, os.path.basename(path)


def test_a_corrupt_byte_in_a_shard_stops_training_with_the_shard_and_record(tmp_path, vocab, bert_dir):
    corpus = build_corpus(str(tmp_path / "c"), vocab, n_images=8, views=("raw",), variants=("raw",))
    key, shard = _flip_feature_byte(corpus)
    with pytest.raises(RecordError, match=f"{shard}: record {key}: .*crc32"):
        train(_cfg("stage1", "optim.batch_size=8", "optim.epochs=1", "optim.max_steps=0"), corpus,
              str(tmp_path / "run"), bert=bert_dir)


def test_a_truncated_shard_stops_training_with_one_line(tmp_path, vocab, bert_dir, capsys):
    corpus = build_corpus(str(tmp_path / "c"), vocab, n_images=8, views=("raw",), variants=("raw",))
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    shard = manifest["kinds"]["image"]["shards"][0]["name"]
    with open(os.path.join(corpus, shard), "r+b") as fh:
        fh.truncate(4096)
    argv = ["train", "stage1", "--variant", "cross", "--corpus", corpus, "--out", str(tmp_path / "run"),
            "--bert", bert_dir, "--preset", "tiny", "--set", f"model.num_object_labels={NUM_LABELS}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ssrp train: error: ") and shard in err[-1] and "truncated" in err[-1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, corpus, bert_dir):
    out = tmp_path_factory.mktemp("ckpt")
    return train(_cfg(), corpus, str(out), bert=bert_dir)["checkpoint"]


def test_a_checkpoint_carries_a_digest_that_catches_a_flipped_byte(checkpoint, tmp_path):
    assert load_checkpoint(checkpoint)["step"] == 3
    data = bytearray(open(checkpoint, "rb").read())
    state = torch.load(checkpoint, weights_only=True)
    weight = state["model"]["encoder.text_embeddings.word.weight"].numpy().tobytes()
    where = bytes(data).find(weight[:64]) + 40  # inside a weight tensor: torch.load itself notices nothing
    data[where] ^= 0x10
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    torch.load(str(bad), weights_only=True)  # loads silently...
    with pytest.raises(CheckpointError, match="bad.pt: its contents do not match its digest"):
        load_checkpoint(str(bad))  # ...but not through ssrp


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint\n", b"PK\x03\x04truncated"])
def test_an_unreadable_checkpoint_is_one_line(tmp_path, corpus, content, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt: not a readable checkpoint"):
        load_checkpoint(str(bad))
    argv = ["train", "stage2", "--variant", "cross", "--corpus", corpus, "--out", str(tmp_path / "s2"),
            "--init", str(bad), "--preset", "tiny"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt: not a readable checkpoint" in err[0], err


def test_a_model_with_a_non_finite_weight_is_never_saved(tmp_path, corpus, bert_dir):
    from ssrp.train.checkpoint import Position, save_checkpoint
    from ssrp.train.distributed import DistInfo
    from ssrp.train.steps import build_run, resolve_config

    cfg = resolve_config(_cfg(), corpus, bert_dir, None)
    run = build_run(cfg, DistInfo(device=torch.device("cpu")), total_steps=3, bert=bert_dir)
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(run, path, Position(1))
    with torch.no_grad():
        run.model.encoder.text_embeddings.word.weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="not finite"):
        save_checkpoint(run, path, Position(2))
    assert load_checkpoint(path)["step"] == 1  # the last good checkpoint is kept


def test_a_resumed_run_logs_each_step_once(tmp_path, corpus, bert_dir):
    cfg = _cfg("stage1", "optim.max_steps=6", "ckpt_every=2")
    out = str(tmp_path / "run")
    train(cfg, corpus, out, bert=bert_dir, stop_after=5)  # killed after step 5, checkpoint at step 4
    train(cfg, corpus, out, bert=bert_dir, resume=True)
    steps = [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_an_output_that_is_a_file_is_one_line(tmp_path, corpus, bert_dir, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    argv = ["train", "stage1", "--variant", "cross", "--corpus", corpus, "--out", str(target), "--bert", bert_dir,
            "--preset", "tiny"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a directory" in err[0], err


def test_stage1_without_bert_warns(tmp_path, corpus, caplog):
    with caplog.at_level("WARNING", logger="ssrp.train.loop"):
        train(_cfg("stage1", "optim.max_steps=1"), corpus, str(tmp_path / "run"))
    assert any("stage 1 without --bert" in r.getMessage() for r in caplog.records)


def test_a_bert_of_another_vocabulary_is_refused_naming_both_digests(tmp_path, corpus, bert_dir):
    import shutil

    from ssrp.fileutil import sha256_file

    other = tmp_path / "corpus"
    shutil.copytree(corpus, other)
    manifest = json.load(open(other / "manifest.json"))
    manifest["models"] = {"parse": {"vocab_sha256": "ab" * 32}}  # the corpus was tokenised with another vocab
    json.dump(manifest, open(other / "manifest.json", "w"))
    with pytest.raises(ValueError, match=f"sha256 {sha256_file(os.path.join(bert_dir, 'vocab.txt'))}.*sha256 {'ab' * 32}"):
        train(_cfg(), str(other), str(tmp_path / "run"), bert=bert_dir)


@pytest.mark.parametrize("module", ["finetune", "caption"])
def test_finetune_and_caption_checkpoints_carry_a_checked_digest(tmp_path, module, caplog):
    """A fine-tuning or captioning checkpoint with one changed weight is refused by name; the older format
    (no digest) is still read, with a warning."""
    import torch

    from ssrp.train.checkpoint import CheckpointError

    if module == "finetune":
        from ssrp.finetune import checkpoint as ft

        save, load, fmt, old = ft.save, ft.load, ft.FORMAT, ft._OLD_FORMATS[0]
    else:
        from ssrp.caption import train as cap

        def save(state, path):  # what the caption trainer writes: its format, then the state
            cap.write_digested_checkpoint({"format": cap.CKPT_FORMAT, **state}, path)

        load, fmt, old = cap.load_caption_checkpoint, cap.CKPT_FORMAT, cap._OLD_FORMATS[0]
    path = str(tmp_path / "ckpt.pt")
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7}
    save(state, path)
    back = load(path)
    assert back["format"] == fmt and torch.equal(back["model"]["w"], state["model"]["w"]) and "digest" not in back
    raw = torch.load(path, weights_only=True)
    raw["model"]["w"][1, 2] += 1  # one weight changed after writing, digest kept
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=f"{path}: its contents do not match its digest"):
        load(path)
    torch.save({"format": old, **state}, path)
    with caplog.at_level("WARNING"):
        assert load(path)["step"] == 7
    assert "without a digest" in caplog.text  # the older format: read, with a warning
