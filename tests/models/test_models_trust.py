"""Nothing untrusted runs: a planted model archive is refused, only files verified in the same call are
unpacked and signed, failed downloads and unsafe archives are one line (issue 14, points 1 and 9)."""

import os
import shutil
import tarfile
import urllib.error

import pytest
import torch

from ssrp.cli import main
from ssrp.models import hub
from ssrp.models.trust import read_signed_checksums
from ssrp.translate import models as tm
from ssrp.translate.trust import UntrustedCheckpointError


class _RunsCode:
    """Unpickling this runs a shell command (what a planted legacy checkpoint can do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def offline(monkeypatch):
    def no_network(url, dest, progress):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(hub, "_download", no_network)


def _pack(tiny, models, direction, model_pt=None, extra_member=None):
    """An archive in the official layout at the place `ssrp models fetch` downloads it to."""
    d = tm.DIRECTIONS[direction]
    staging = os.path.join(models, ".staging", d.name, d.folder)
    shutil.copytree(os.path.join(tiny, d.name), staging)
    if model_pt is not None:
        torch.save(model_pt, os.path.join(staging, "model.pt"))
    dest = os.path.join(models, "translate", d.name, d.archive)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(staging, arcname=d.folder)
        if extra_member:
            tar.add(os.path.join(staging, "bpecodes"), arcname=extra_member)
    shutil.rmtree(os.path.join(models, ".staging"))
    return dest


def _one_line(capsys):
    """The error line: one, the last, no traceback (log lines of the run may come before it)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1 and err[-1] == errors[0] and not any("Traceback" in line for line in err), err
    return errors[0]


def test_a_planted_archive_runs_nothing(tiny_translation, tmp_path, offline, capsys):
    models, marker = str(tmp_path / "models"), tmp_path / "pwned"
    for name in tm.DIRECTIONS:
        payload = {"args": _RunsCode(marker), "model": {}} if name == "en-de" else None
        _pack(tiny_translation, models, name, model_pt=payload)
    assert main(["models", "fetch", "translate", "--to", models]) == 2
    line = _one_line(capsys)
    assert "was not downloaded by ssrp" in line and "--trust-existing" in line
    assert read_signed_checksums(os.path.join(models, "translate")) == {}  # nothing was signed
    # a model.pt planted where the loader looks is refused before it is unpickled
    shutil.copytree(os.path.join(tiny_translation, "en-de"), os.path.join(models, "translate", "en-de"),
                    dirs_exist_ok=True)
    torch.save({"args": _RunsCode(marker), "model": {}}, os.path.join(models, "translate", "en-de", "model.pt"))
    with pytest.raises(UntrustedCheckpointError, match="no trusted record names it"):
        tm.load_hub(models, "en-de")
    captions = tmp_path / "captions.txt"
    captions.write_text("A man riding a horse.\n")
    assert main(["translate", "--captions", str(captions), "--models", models, "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "not trusted" in _one_line(capsys)
    assert not marker.exists()


def test_archives_named_by_the_user_are_unpacked_and_signed_then_remembered(tiny_translation, tmp_path, offline):
    models = str(tmp_path / "models")
    archives = [_pack(tiny_translation, models, name) for name in tm.DIRECTIONS]
    args = ["models", "fetch", "translate", "--to", models]
    assert main([*args, *[a for path in archives for a in ("--trust-existing", path)]]) == 0
    signed = read_signed_checksums(os.path.join(models, "translate"))
    assert len(signed) == 8  # 4 archives and the 4 model.pt unpacked from them
    assert tm.load_hub(models, "ru-en").checkpoint_sha256 == signed["ru-en/model.pt"]
    assert main(args) == 0  # recorded: a rerun needs no flag, and no network


def test_a_partial_download_of_an_unpinned_file_is_never_resumed(tiny_translation, tmp_path, monkeypatch):
    d = tm.DIRECTIONS["en-de"]
    model_dir = str(tmp_path / "translate")
    dest = os.path.join(model_dir, d.name, d.archive)
    os.makedirs(os.path.dirname(dest))
    with open(dest + ".part", "wb") as fh:
        fh.write(b"planted prefix")
    seen = []

    def download(url, path, progress):
        seen.append(os.path.exists(path + ".part"))
        _pack(tiny_translation, str(tmp_path), "en-de")

    monkeypatch.setattr(hub, "_download", download)
    fetched = hub.obtain(tm.SOURCE.files[0], model_dir, progress=False)
    assert seen == [False] and fetched.trusted_by == "downloaded"
    assert read_signed_checksums(model_dir)[fetched.rel] == fetched.sha256


def test_an_archive_member_escaping_its_folder_is_refused(tiny_translation, tmp_path, capsys):
    models = str(tmp_path / "models")
    archives = [_pack(tiny_translation, models, name, extra_member="../../../escaped" if name == "en-de" else None)
                for name in tm.DIRECTIONS]
    argv = ["models", "fetch", "translate", "--to", models]
    assert main([*argv, *[a for path in archives for a in ("--trust-existing", path)]]) == 2
    assert "refusing to unpack" in _one_line(capsys)
    assert not any("escaped" in name for _, _, names in os.walk(tmp_path) for name in names)


def test_fetch_without_network_is_one_line(tmp_path, offline, capsys):
    assert main(["models", "fetch", "bert", "--to", str(tmp_path)]) == 2
    assert "cannot download https://huggingface.co/" in _one_line(capsys)


def test_models_into_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["models", "tiny", str(target)]) == 2
    assert "is a file, not a directory" in _one_line(capsys)
    assert main(["models", "fetch", "bert", "--to", str(target)]) == 2
    assert "is a file, not a directory" in _one_line(capsys)
