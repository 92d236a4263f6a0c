import argparse
import json

import numpy as np
import pytest

from ssrp.corpus import (
    ConfigMismatchError,
    CorpusPlan,
    CorpusReader,
    ImageRecord,
    IndexRecord,
    TextRecord,
    encode,
    write_corpus,
)
from ssrp.parse.cli import register


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-q", "--quiet", action="store_true")
    register(ap.add_subparsers())
    args = ap.parse_args(argv)
    return args.func(args)


def test_text_prints_the_parse_and_its_distances(tiny_models, capsys):
    assert run(["parse", "--text", "A dog's ball is red.", "--models", tiny_models, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "tree distances:" in out and "[CLS]" in out and "ball" in out
    assert run(["parse", "--text", "A dog's ball is red.", "--models", tiny_models, "--json"]) == 0
    parse = json.loads(capsys.readouterr().out)
    assert parse["words"] == ["A", "dog", "'s", "ball", "is", "red", "."]
    assert np.array(parse["tree_dist"]).shape == (7, 7) and parse["pieces"][0] == "[CLS]"
    assert run(["parse", "--text", "🙂", "--models", tiny_models]) == 1
    assert "no_words" in capsys.readouterr().out


CAPTIONS = {
    101: {"raw": "A man rides a horse on the beach.", "de": "A man is riding a horse at the beach.",
          "ru": "The man rides a horse along the beach."},
    102: {"raw": "", "de": "Nothing here.", "ru": "Empty."},  # dead: the raw caption cannot be parsed
    201: {"raw": "Two dogs sit on a bench.", "de": "😀😀", "ru": "Two dogs are sitting on a bench."},
    301: {"raw": "   ", "de": "A cat.", "ru": "A cat."},  # dead, and the image's only caption
}
IMAGES = {1: [101, 102], 2: [201], 3: [301]}


def image_record(image_id: int) -> ImageRecord:
    n = 3
    return ImageRecord(image_id=image_id, view="raw", height=10, width=10, boxes=np.zeros((n, 4), np.float32),
                       features=np.ones((n, 8), np.float16), obj_ids=np.zeros(n, np.int32),
                       obj_conf=np.ones(n, np.float32), attr_ids=np.zeros(n, np.int32), attr_conf=np.ones(n, np.float32))


@pytest.fixture
def corpus(tmp_path):
    items = []
    for image_id, caption_ids in IMAGES.items():
        items.append(image_record(image_id))
        items.append(IndexRecord(image_id=image_id, caption_ids=np.asarray(caption_ids, np.int64)))
        for cid in caption_ids:
            for variant, text in CAPTIONS[cid].items():
                items.append(TextRecord(caption_id=cid, image_id=image_id, variant=variant, text=text))
    root = str(tmp_path / "in")
    write_corpus(root, CorpusPlan({"image": 2, "text": 3, "index": 2}, config={"stage": "test"}),
                 [(r.key, encode(r)) for r in items])
    return root


def test_corpus_is_rewritten_with_parses(corpus, tiny_models, tmp_path):
    out = str(tmp_path / "out")
    argv = ["-q", "parse", "--corpus", corpus, "--out", out, "--models", tiny_models, "--device", "cpu",
            "--no-progress"]
    assert run(argv) == 0
    with CorpusReader(out) as reader, CorpusReader(corpus) as before:
        texts = dict(reader.items("text"))
        assert sorted(texts) == ["text/000000000101/de", "text/000000000101/raw", "text/000000000101/ru",
                                 "text/000000000201/raw", "text/000000000201/ru"]
        assert all(r.parsed and len(r.input_ids) <= 36 for r in texts.values())
        assert reader.index(1).caption_ids.tolist() == [101] and reader.index(2).caption_ids.tolist() == [201]
        assert "index/000000000003" not in reader
        for image_id in IMAGES:
            assert reader.get_raw(f"image/{image_id:012d}/raw") == before.get_raw(f"image/{image_id:012d}/raw")
        manifest = reader.manifest
    summary = manifest["summary"]["captions"]
    assert summary["inputs"] == 4 and summary["written"] == 2 and summary["dead_letters"] == 2 and summary["balanced"]
    assert summary["counters"] == {"dropped:parse_failed:de": 1, "text_records": 5}
    images = manifest["summary"]["images"]  # image 3 lost its only caption: unreachable from the index
    assert (images["inputs"], images["written"], images["by_reason"]) == (3, 2, {"index:no_caption_written": 1})
    assert manifest["config"]["source_corpus"] == {"stage": "test"}  # provenance of the input corpus
    with open(f"{out}/deadletters.jsonl") as fh:
        dead = [json.loads(line) for line in fh]
    assert [(d["key"], d["reason"]) for d in dead] == [("image/000000000003", "no_caption_written"),
                                                       ("text/000000000102/raw", "empty_text"),
                                                       ("text/000000000301/raw", "empty_text")]
    # a rerun finds every shard committed and ends with the same manifest; another config is refused
    assert run(argv) == 0
    with CorpusReader(out) as reader:
        assert reader.manifest == manifest
    with pytest.raises(ConfigMismatchError, match="max_tokens"):
        run(argv + ["--set", "parse.max_tokens=20"])


def test_config_identity_keeps_what_changes_the_parses():
    """A corpus records its parse config without the settings of where and how fast (``ParseConfig.RUNTIME``):
    the pipeline and ``ssrp parse`` both hash this."""
    from ssrp.config import config_identity
    from ssrp.parse.config import ParseConfig

    base = config_identity(ParseConfig())
    assert config_identity(ParseConfig(fast_decode=False, chunk_size=7, models_dir="elsewhere")) == base
    assert config_identity(ParseConfig(max_tokens=20)) != base  # the WordPiece cap changes the records

