"""The Karpathy split file, the vocabulary, the batches."""

import json
import re

import numpy as np
import pytest

from ssrp.caption.data import (
    CaptionSet,
    KarpathyError,
    draw_captions,
    epoch_batches,
    load_karpathy,
    select_split,
)
from ssrp.caption.split import karpathy_tokens, make_split
from ssrp.caption.vocab import EOS_ID, UNK_ID, Vocab


def _write(tmp_path, images):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"images": images}))
    return str(path)


def _img(cocoid, split="train", sentences=(("a", "dog"),)):
    return {"cocoid": cocoid, "split": split, "sentences": [{"tokens": list(s)} for s in sentences]}


def test_vocabulary_keeps_words_seen_at_least_min_count_times_in_count_order():
    caps = [["a", "dog"]] * 5 + [["a", "cat"]] * 4 + [["the", "dog", "runs"]] * 2
    vocab = Vocab.build(caps, min_count=5)
    assert vocab.words == ("<eos>", "<unk>", "a", "dog")  # a: 9, dog: 7; cat: 4 < 5
    assert Vocab.build(caps, min_count=4).words[2:] == ("a", "dog", "cat")
    assert vocab.encode(["a", "cat", "dog"], 16).tolist() == [2, UNK_ID, 3]
    assert vocab.encode(["a"] * 20, 16).tolist() == [2] * 16  # captions cut to max_length words
    assert vocab.decode([2, 3, EOS_ID, 2]) == ["a", "dog"]


def test_vocabulary_round_trips_through_its_json(tmp_path):
    vocab = Vocab.build([["b", "a", "b"]], 1)
    vocab.save(str(tmp_path / "v.json"))
    assert Vocab.load(str(tmp_path / "v.json")).words == vocab.words == ("<eos>", "<unk>", "b", "a")


def test_karpathy_file_is_read_and_split_with_restval_in_training(tmp_path):
    path = _write(tmp_path, [_img(1), _img(2, "restval"), _img(3, "val"), _img(4, "test")])
    images = load_karpathy(path)
    assert [i.image_id for i in select_split(images, "train")] == [1, 2]
    assert [i.image_id for i in select_split(images, "train", restval=False)] == [1]
    assert [i.image_id for i in select_split(images, "test")] == [4]
    assert images[0].raw == ("a dog",)  # the tokens joined where there is no raw sentence


@pytest.mark.parametrize(
    "images, message",
    [
        ([_img(1), {"cocoid": 7, "split": "train", "sentences": [{"raw": "x"}]}], "image 7: sentences[0] has no 'tokens'"),
        ([_img(1, "dev")], "image 1: split 'dev'"),
        ([_img(1), _img(1)], "image 1 appears twice"),
        ([{"split": "train"}], "images[0]: no integer 'cocoid'"),
        ([_img(3, sentences=())], "image 3: no sentences"),
    ],
)
def test_bad_karpathy_records_are_named_in_the_error(tmp_path, images, message):
    with pytest.raises(KarpathyError, match=re.escape(message)):
        load_karpathy(_write(tmp_path, images))


def test_caption_set_encodes_every_caption_cut_and_padded():
    images = load_karpathy_like([[("a", "dog", "x"), ("a",)]])
    vocab = Vocab.build([["a", "dog"]], 1)
    cs = CaptionSet(images, vocab, max_length=2)
    assert cs.captions[0].tolist() == [[2, 3], [2, 0]]
    assert cs.lengths[0].tolist() == [2, 1]
    assert [r.tolist() for r in cs.references(0)] == [[2, 3], [2]]


def load_karpathy_like(per_image):
    from ssrp.caption.data import KarpathyImage

    return [KarpathyImage(i, "train", tuple(caps), tuple(" ".join(c) for c in caps)) for i, caps in enumerate(per_image)]


def test_captions_are_drawn_without_replacement_when_there_are_enough():
    rng = np.random.default_rng(0)
    many = draw_captions(7, 5, rng)
    assert len(set(many.tolist())) == 5 and many.max() < 7
    few = draw_captions(3, 5, rng)
    assert len(few) == 5 and set(few.tolist()) == {0, 1, 2}


def test_epoch_batches_cover_the_epoch_and_a_resumed_epoch_continues_the_same_order():
    full = epoch_batches(23, 5, seed=3, epoch=2)
    assert sorted(np.concatenate(full).tolist()) == list(range(23))
    assert [b.tolist() for b in epoch_batches(23, 5, seed=3, epoch=2, skip=2)] == [b.tolist() for b in full[2:]]
    assert epoch_batches(23, 5, seed=3, epoch=3)[0].tolist() != full[0].tolist()


def test_split_file_from_coco_annotations(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    images = [{"id": i, "file_name": f"{i}.jpg"} for i in range(1, 7)]
    anns = [{"id": 10 * i + k, "image_id": i, "caption": f"A Dog, number {i}!"} for i in range(1, 7) for k in range(2)]
    (ann / "captions_train2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    out = tmp_path / "split.json"
    summary = make_split(str(tmp_path), str(out), val=1, test=2, seed=0)
    assert summary == {"path": str(out), "images": 6, "train": 3, "val": 1, "test": 2}
    loaded = load_karpathy(str(out))
    assert sorted(i.split for i in loaded).count("test") == 2
    assert loaded[0].tokens[0] == ("a", "dog", "number", "1") and loaded[0].raw[0] == "A Dog, number 1!"
    assert karpathy_tokens("  Two cats; one dog.") == ["two", "cats", "one", "dog"]
