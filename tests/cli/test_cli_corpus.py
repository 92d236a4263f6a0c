import json
import os
import subprocess
import sys

import pytest

from ssrp.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def corpus(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "tests", "corpus"))
    from corpus_helpers import PLAN, sample_records

    from ssrp.corpus import CorpusPlan, write_corpus

    root = str(tmp_path / "c")
    write_corpus(root, CorpusPlan(PLAN), sample_records(4))
    return root


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("sample", "models", "corpus"):
        assert command in out


def test_verify_stats_show(corpus, capsys):
    assert main(["corpus", "verify", corpus]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["corpus", "stats", corpus, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image_views"] == {"raw": 4, "rot90": 4}
    assert main(["corpus", "show", corpus, "image/000000000002/rot90"]) == 0
    assert "float16[36, 2048]" in capsys.readouterr().out
    assert main(["corpus", "show", corpus, "image/000000000099/raw"]) == 1


def test_verify_exit_code_and_shard_name_on_corruption(corpus):
    manifest = json.load(open(os.path.join(corpus, "manifest.json")))
    name = manifest["kinds"]["text"]["shards"][1]["name"]
    with open(os.path.join(corpus, name), "r+b") as fh:
        fh.seek(5000)
        byte = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([byte[0] ^ 1]))
    proc = subprocess.run([sys.executable, "-m", "ssrp", "corpus", "verify", corpus], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 1 and name in proc.stderr


def test_sample_command(tmp_path):
    assert main(["sample", "coco", str(tmp_path / "s"), "--images", "2", "--seed", "1"]) == 0
    assert os.path.exists(tmp_path / "s" / "annotations" / "captions_val2017.json")
