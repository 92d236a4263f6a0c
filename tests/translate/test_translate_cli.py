"""ssrp translate on a mini-COCO and on a text file with bad lines, through register(sub)."""

import argparse
import json

import pytest

pytest.importorskip("fairseq", reason="fairseq-fixed is not installed (make install)")

from ssrp.translate import cli as cli_translate  # noqa: E402

pytestmark = pytest.mark.usefixtures("bt_one_thread")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssrp")
    cli_translate.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def _lines(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_translate_a_coco_directory(bt_models, tmp_path, capsys):
    from ssrp.sample import SampleConfig, write_sample

    coco = tmp_path / "coco"
    write_sample(str(coco), SampleConfig(images=2, val_images=1, seed=0))
    out = tmp_path / "out" / "captions.jsonl"
    code = _run(["translate", "--coco", str(coco), "--models", bt_models, "--out", str(out), "--split", "train",
                 "--chunk", "4", "--set", "translate.length_ratio=100.0", "--pivots", "ru"])  # fmt: skip
    assert code == 0
    with open(coco / "annotations" / "captions_train2017.json") as fh:
        annotations = json.load(fh)["annotations"]
    records = _lines(out)
    raw = [r for r in records if r["variant"] == "raw"]
    assert [(r["caption_id"], r["image_id"], r["text"]) for r in raw] == [
        (a["id"], a["image_id"], a["caption"].strip()) for a in annotations
    ]
    summary = json.loads(capsys.readouterr().out)
    assert summary["captions"] == len(annotations) and summary["dead"] == {}
    assert summary["records"]["raw"] == len(raw)
    assert sum(summary["records"].values()) == len(records)
    for r in records:
        assert r["key"] == f"text/{r['caption_id']:012d}/{r['variant']}"
        assert (r["variant"] == "raw") == (r["pivot"] == "")


def test_translate_a_text_file_reports_bad_lines(bt_models, tmp_path, capsys):
    src = tmp_path / "captions.txt"
    src.write_bytes(b"A dog on the beach.\n\n\xff\xfe broken\nA cat\x07 here\nA red bus.\nnot reached\n")
    out = tmp_path / "t.jsonl"
    code = _run(["translate", "--captions", str(src), "--models", bt_models, "--out", str(out), "--limit", "5",
                 "--pivots", "de"])  # fmt: skip
    assert code == 0
    dead = _lines(str(out) + ".deadletter.jsonl")
    assert [(d["key"], d["reason"]) for d in dead] == [
        ("text/000000000002/raw", "empty_caption"),
        ("text/000000000003/raw", "invalid_utf8"),
        ("text/000000000004/raw", "control_characters"),
    ]
    assert [r["caption_id"] for r in _lines(out) if r["variant"] == "raw"] == [1, 5]
    assert json.loads(capsys.readouterr().out)["captions"] == 5


def test_untrusted_models_fail_with_the_digest_to_pin(bt_models, tmp_path, monkeypatch):
    from ssrp.translate.trust import UntrustedCheckpointError

    monkeypatch.setenv("SSRP_TRUST_KEY", str(tmp_path / "other.key"))
    src = tmp_path / "c.txt"
    src.write_text("A dog.\n")
    with pytest.raises(UntrustedCheckpointError, match="--trust-sha256 [0-9a-f]{64}"):
        _run(["translate", "--captions", str(src), "--models", bt_models, "--out", str(tmp_path / "o.jsonl")])
