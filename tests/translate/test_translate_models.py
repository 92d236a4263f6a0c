"""The translation models: official source, tiny layout, the real loading path and the unpickle gate."""

import json
import logging
import os
import pickle
import shutil

import pytest

pytest.importorskip("fairseq", reason="fairseq-fixed is not installed (make install)")

import torch  # noqa: E402

from ssrp.fileutil import sha256_file  # noqa: E402
from ssrp.models.hub import UntrustedFileError  # noqa: E402
from ssrp.models.trust import CHECKSUMS_FILE, read_signed_checksums  # noqa: E402
from ssrp.translate import models as tm  # noqa: E402
from ssrp.translate import trust  # noqa: E402

pytestmark = pytest.mark.usefixtures("bt_one_thread")


def test_source_lists_the_four_official_single_models():
    src = tm.SOURCE
    assert src.name == "translate"
    assert sorted(f.dest.split("/")[0] for f in src.files) == ["de-en", "en-de", "en-ru", "ru-en"]
    for f in src.files:
        assert f.url.startswith("https://dl.fbaipublicfiles.com/fairseq/models/wmt19.")
        assert f.url.endswith(".single_model.tar.gz")
        assert not f.pinned  # fairseq publishes no checksums (docs/translate.md): trust on first download
    module, _, attr = src.post_fetch.partition(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is tm.finish_fetch


def test_tiny_models_have_the_official_layout(bt_models):
    root = os.path.join(bt_models, "translate")
    for name, d in tm.DIRECTIONS.items():
        for f in tm.required_files(d):
            assert os.path.getsize(os.path.join(root, name, f)) > 0
    de = os.path.join(root, "en-de")
    ru = os.path.join(root, "en-ru")
    with open(os.path.join(de, "dict.en.txt"), "rb") as a, open(os.path.join(de, "dict.de.txt"), "rb") as b:
        assert a.read() == b.read()  # joined dictionary, as in the official en-de archive
    with open(os.path.join(ru, "dict.en.txt"), "rb") as a, open(os.path.join(ru, "dict.ru.txt"), "rb") as b:
        assert a.read() != b.read()  # separate dictionaries, as in the official en-ru archive


def test_model_digests_are_the_same_for_every_user(bt_models, bt_translator):
    digests = tm.model_digests(bt_models)
    assert digests == {d: h.checkpoint_sha256 for d, h in bt_translator._hubs.items()}


def test_tiny_checkpoint_is_a_legacy_pickle_that_weights_only_refuses(bt_models):
    path = os.path.join(bt_models, "translate", "en-de", "model.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_load_hub_sets_moses_languages_per_direction(bt_translator):
    for name, d in tm.DIRECTIONS.items():
        hub = bt_translator._hubs[name]  # loaded by load_hub
        assert type(hub).__name__ == "GeneratorHubInterface"  # TransformerModel.from_pretrained's result
        assert hub.tokenizer.tok.lang == d.src and hub.tokenizer.detok.lang == d.tgt
        assert hub.task.cfg.source_lang == d.src and hub.task.cfg.target_lang == d.tgt
        assert not hub.training


def test_loading_leaves_torch_defaults_alone(bt_models):
    from fairseq import checkpoint_utils

    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    tm.load_hub(bt_models, "de-en")
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == before
    assert checkpoint_utils.torch is torch


def _copy_models(src: str, dst) -> str:
    shutil.copytree(src, dst)
    return str(dst)


def test_a_replaced_checkpoint_is_refused_until_pinned(bt_models, tmp_path):
    models = _copy_models(bt_models, tmp_path / "models")
    root = os.path.join(models, "translate")
    # de-en's weights fit en-de's architecture and dictionaries, so only the digest tells them apart
    shutil.copy(os.path.join(root, "de-en", "model.pt"), os.path.join(root, "en-de", "model.pt"))
    with pytest.raises(trust.UntrustedCheckpointError, match="differs from the digest recorded"):
        tm.load_hub(models, "en-de")
    digest = sha256_file(os.path.join(root, "en-de", "model.pt"))
    assert tm.load_hub(models, "en-de", trusted_sha256=(digest,)).checkpoint_sha256 == digest


def test_checksums_signed_under_another_key_prove_nothing(bt_models, tmp_path, monkeypatch):
    models = _copy_models(bt_models, tmp_path / "models")
    monkeypatch.setenv("SSRP_TRUST_KEY", str(tmp_path / "someone-elses.key"))
    with pytest.raises(trust.UntrustedCheckpointError, match="no trusted record"):
        tm.load_hub(models, "en-ru")


def test_edited_checksums_do_not_verify(bt_models, tmp_path):
    models = _copy_models(bt_models, tmp_path / "models")
    root = os.path.join(models, "translate")
    shutil.copy(os.path.join(root, "de-en", "model.pt"), os.path.join(root, "en-de", "model.pt"))
    path = os.path.join(root, CHECKSUMS_FILE)
    with open(path) as fh:
        signed = json.load(fh)
    signed["files"]["en-de/model.pt"]["sha256"] = sha256_file(os.path.join(root, "en-de", "model.pt"))
    with open(path, "w") as fh:
        json.dump(signed, fh)
    assert read_signed_checksums(root) == {}
    with pytest.raises(trust.UntrustedCheckpointError):
        tm.load_hub(models, "en-de")


def test_a_file_changed_after_hashing_is_not_unpickled(bt_models, tmp_path):
    models = _copy_models(bt_models, tmp_path / "models")
    root = os.path.join(models, "translate")
    verified = trust.verify_checkpoint(root, "ru-en/model.pt", "ru-en", ())
    shutil.copy(os.path.join(root, "en-ru", "model.pt"), os.path.join(root, "ru-en", "model.pt"))
    from fairseq import checkpoint_utils

    with trust.full_unpickle_allowed(verified), pytest.raises(trust.UntrustedCheckpointError, match="changed"):
        checkpoint_utils.load_checkpoint_to_cpu(verified.path)


def test_missing_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="ssrp models fetch translate"):
        tm.load_hub(str(tmp_path), "en-de")


def _archives(bt_models, root, swap_codes=False):
    """The four archives in the official layout (a top folder named like the archive), as verified files."""
    import tarfile

    from ssrp.models.hub import Fetched

    fetched = []
    for name, d in tm.DIRECTIONS.items():
        src = os.path.join(bt_models, "translate", name)
        if swap_codes and name == "en-ru":  # fairseq #2928: the en-de codes in the en-ru archive
            shutil.copytree(src, root / "swapped")
            shutil.copy(os.path.join(bt_models, "translate", "en-de", "bpecodes"), root / "swapped" / "bpecodes")
            src = str(root / "swapped")
        path = root / name / d.archive
        path.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path, "w:gz") as tar:
            tar.add(src, arcname=d.folder)
        fetched.append(Fetched(f"{name}/{d.archive}", str(path), sha256_file(str(path)), "downloaded"))
    return fetched


def test_finish_fetch_unpacks_verified_archives_and_signs_the_digests(bt_models, tmp_path):
    root = tmp_path / "models" / "translate"
    files = tm.finish_fetch(str(root), _archives(bt_models, root))
    for name, d in tm.DIRECTIONS.items():
        assert not os.path.exists(root / name / d.folder) and not [n for n in os.listdir(root / name) if n.startswith(".")]
        assert files[f"{name}/model.pt"]["sha256"] == sha256_file(str(root / name / "model.pt"))
    assert read_signed_checksums(str(root)) == {k: v["sha256"] for k, v in files.items()}
    assert tm.load_hub(str(tmp_path / "models"), "ru-en").checkpoint_sha256 == files["ru-en/model.pt"]["sha256"]


def test_finish_fetch_signs_nothing_without_a_verified_archive(bt_models, tmp_path):
    root = tmp_path / "translate"
    for name in tm.DIRECTIONS:  # model files in place, as if unpacked earlier by someone else
        shutil.copytree(os.path.join(bt_models, "translate", name), root / name)
    with pytest.raises(UntrustedFileError, match="not checked in this fetch"):
        tm.finish_fetch(str(root), [])
    assert read_signed_checksums(str(root)) == {}


def test_finish_fetch_rejects_russian_models_with_latin_only_codes(bt_models, tmp_path):
    root = tmp_path / "translate"
    with pytest.raises(ValueError, match="Cyrillic"):
        tm.finish_fetch(str(root), _archives(bt_models, root, swap_codes=True))


def test_models_fetch_flow_with_official_archive_layout(bt_models, tmp_path, monkeypatch):
    """`ssrp models fetch translate` end to end, with the download replaced by archives built from the
    tiny models in the official layout (a top folder named like the archive)."""
    import tarfile

    from ssrp.models import hub

    def fake_fetch_url(url, dest, progress):
        d = next(d for d in tm.DIRECTIONS.values() if url.endswith(d.archive))
        with tarfile.open(dest, "w:gz") as tar:
            tar.add(os.path.join(bt_models, "translate", d.name), arcname=d.folder)

    monkeypatch.setattr(hub, "_fetch_url", fake_fetch_url)
    monkeypatch.setattr(hub, "source", lambda name: tm.SOURCE)
    model_dir = hub.fetch("translate", str(tmp_path), progress=False)
    assert model_dir == str(tmp_path / "translate")
    signed = read_signed_checksums(model_dir)
    for name in tm.DIRECTIONS:
        assert signed[f"{name}/model.pt"] == sha256_file(os.path.join(bt_models, "translate", name, "model.pt"))
    assert tm.load_hub(str(tmp_path), "en-ru").checkpoint_sha256 == signed["en-ru/model.pt"]


def test_importing_fairseq_leaves_the_root_logger_alone():
    """``import fairseq`` configures the root logger (a stderr handler at DEBUG); only ssrp's CLI may."""
    import subprocess
    import sys

    code = ("import logging; from ssrp.translate.models import require_fairseq; require_fairseq(); "
            "import fairseq; root = logging.getLogger(); print(len(root.handlers), root.level)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", str(logging.WARNING)], out.stderr
