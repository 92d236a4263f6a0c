import json
import os

import pytest

from ssrp.fileutil import md5_file
from ssrp.models.hub import ChecksumError
from ssrp.parse import models
from ssrp.parse.backend import pipeline_kwargs
from ssrp.parse.config import ParseConfig
from ssrp.parse.models import (
    SOURCE,
    ParserPackageError,
    finish_fetch,
    read_manifest,
    verify_package,
)


def test_source_pins_stanza_1_15_0_files():
    dests = [f.dest for f in SOURCE.files]
    assert dests[0] == "resources.json" and len(SOURCE.files[0].sha256) == 64
    assert models.RESOURCES_COMMIT in SOURCE.files[0].url
    for f in SOURCE.files[1:]:
        assert f.url.startswith("https://huggingface.co/stanfordnlp/stanza-en/resolve/v1.15.0/models/")
        assert f.url.endswith(f.dest.removeprefix("en/")) and f.dest.removeprefix("en/") in models.MD5
    # every default processor and every dependency of the charlm models is fetched
    for processor, package in models.PROCESSORS.items():
        assert f"{processor}/{package}.pt" in models.MD5
    for dep in ("pretrain/conll17.pt", "forward_charlm/1billion.pt", "backward_charlm/1billion.pt"):
        assert dep in models.MD5
    assert SOURCE.post_fetch == "ssrp.parse.models:finish_fetch"


def fake_package(root, files: dict[str, bytes]) -> dict[str, str]:
    """A parser directory with these files and a resources.json listing their md5s."""
    resources = {"en": {"lang_name": "English"}}
    md5 = {}
    for rel, data in files.items():
        path = root / "en" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        md5[rel] = md5_file(str(path))
        processor, package = rel[:-3].split("/")
        resources["en"].setdefault(processor, {})[package] = {"md5": md5[rel]}
    (root / "resources.json").write_text(json.dumps(resources))
    return md5


def test_verify_package_checks_each_md5_and_sets_bad_files_aside(tmp_path):
    md5 = fake_package(tmp_path, {"pos/x.pt": b"pos", "depparse/x.pt": b"dep"})
    assert verify_package(str(tmp_path), md5) == md5
    (tmp_path / "en/depparse/x.pt").write_bytes(b"corrupted")
    with pytest.raises(ChecksumError, match="md5"):
        verify_package(str(tmp_path), md5)
    assert (tmp_path / "en/depparse/x.pt.bad").exists() and not (tmp_path / "en/depparse/x.pt").exists()
    with pytest.raises(ParserPackageError, match="missing"):
        verify_package(str(tmp_path), md5)


def test_fetched_package_is_described_for_the_same_loader(tmp_path, monkeypatch):
    files = {rel: rel.encode() for rel in models.MD5}
    md5 = fake_package(tmp_path, files)
    monkeypatch.setattr(models, "MD5", md5)
    finish_fetch(str(tmp_path))
    info = read_manifest(str(tmp_path))
    assert info.tokenizer == "stanza" and info.processors == models.PROCESSORS and not info.tiny
    kwargs = pipeline_kwargs(ParseConfig(parser_dir=str(tmp_path), device="cpu"), info)
    assert kwargs["download_method"] is None and kwargs["dir"] == str(tmp_path)
    assert kwargs["tokenize_pretokenized"] is False and kwargs["processors"]["mwt"] == "combined"
    forced = pipeline_kwargs(ParseConfig(parser_dir=str(tmp_path), tokenizer="pretokenized", device="cpu"), info)
    assert forced["tokenize_pretokenized"] is True and "mwt" not in forced["processors"]
    os.remove(tmp_path / "en" / "tokenize" / "combined_nocharlm.pt")
    with pytest.raises(ValueError, match="no Stanza tokenizer"):
        pipeline_kwargs(ParseConfig(parser_dir=str(tmp_path), tokenizer="stanza"), info)


def test_tiny_package_has_the_real_layout(tiny_models):
    parser_dir = os.path.join(tiny_models, "parse")
    info = read_manifest(parser_dir)
    assert info.tiny and info.tokenizer == "pretokenized"
    with open(os.path.join(parser_dir, "resources.json")) as fh:
        resources = json.load(fh)
    for processor in ("tokenize", "pos", "lemma", "depparse", "pretrain"):
        path = os.path.join(parser_dir, "en", processor, "tiny.pt")
        assert md5_file(path) == resources["en"][processor]["tiny"]["md5"]
    kwargs = pipeline_kwargs(ParseConfig(models_dir=tiny_models, device="cpu"), info)
    assert kwargs["tokenize_pretokenized"] is True and kwargs["download_method"] is None
    neural = pipeline_kwargs(ParseConfig(models_dir=tiny_models, tokenizer="stanza", device="cpu"), info)
    assert neural["tokenize_pretokenized"] is False and neural["processors"]["tokenize"] == "tiny"
    with open(os.path.join(tiny_models, "bert", "vocab.txt")) as fh:
        assert fh.readline() == "[PAD]\n"


def test_a_directory_without_a_package_is_explained(tmp_path):
    with pytest.raises(ParserPackageError, match="models fetch parse "):
        read_manifest(str(tmp_path))


def test_tiny_wordpiece_never_replaces_an_existing_vocab(tmp_path):
    from ssrp.parse.tiny import build_tiny_wordpiece

    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nreal\n")
    assert build_tiny_wordpiece(str(tmp_path))["written"] is False
    assert (tmp_path / "bert" / "vocab.txt").read_text().endswith("real\n")
    out = build_tiny_wordpiece(str(tmp_path / "other"), texts=["a dog", "a dog", "a cat"], vocab_size=200)
    assert out["written"] and out["vocab_size"] <= 200
