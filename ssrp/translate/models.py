"""The fairseq WMT19 translation models: where they come from, how they are laid out, how they load.

Layout (the same for the official models and the tiny ones)::

    MODELS/translate/checksums.json         signed sha256 of each model.pt (ssrp.translate.trust)
    MODELS/translate/en-de/model.pt         fairseq checkpoint (legacy pickle with argparse args)
    MODELS/translate/en-de/dict.en.txt      source / target dictionaries (joined for en-de, de-en)
    MODELS/translate/en-de/dict.de.txt
    MODELS/translate/en-de/bpecodes         fastBPE codes
    ... de-en, en-ru, ru-en alike

``ssrp models fetch translate --to MODELS`` downloads the four official single models
(``transformer.wmt19.*.single_model`` in fairseq's hub list); ``build_tiny(MODELS)`` writes four tiny
random-weight models in the same files. Both load through ``TransformerModel.from_pretrained`` on the
local directory (never ``torch.hub``), with the Moses languages of the direction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ssrp.fileutil import sha256_file, silenced_output
from ssrp.models.hub import Fetched, ModelSource, RemoteFile, UntrustedFileError, safe_extract
from ssrp.models.registry import model_folder
from ssrp.models.trust import CHECKSUMS_FILE, record_checksums
from ssrp.translate import trust

logger = logging.getLogger(__name__)

NAME = "translate"  # the models folder and the `ssrp models fetch` name, like the stage
BASE_URL = "https://dl.fbaipublicfiles.com/fairseq/models/"


@dataclass(frozen=True)
class Direction:
    name: str  # "en-de"
    src: str
    tgt: str
    archive: str  # file name under BASE_URL

    @property
    def folder(self) -> str:
        """The folder the official archive unpacks to."""
        return self.archive.removesuffix(".tar.gz")


DIRECTIONS: dict[str, Direction] = {
    d.name: d
    for d in (
        Direction("en-de", "en", "de", "wmt19.en-de.joined-dict.single_model.tar.gz"),
        Direction("de-en", "de", "en", "wmt19.de-en.joined-dict.single_model.tar.gz"),
        Direction("en-ru", "en", "ru", "wmt19.en-ru.single_model.tar.gz"),
        Direction("ru-en", "ru", "en", "wmt19.ru-en.single_model.tar.gz"),
    )
}

# fairseq publishes no checksums for these archives (searched: fairseq README/hub list, issues): sha256=None,
# so an archive is trusted only when ssrp downloaded it (ssrp.models.hub: trust on first download), and the
# post-fetch step signs the digest of each model.pt it unpacked from such an archive in the same call.
SOURCE = ModelSource(
    name=NAME,
    description="fairseq WMT19 single models en-de, de-en, en-ru, ru-en (Ng et al. 2019) for back-translation",
    files=tuple(
        RemoteFile(url=BASE_URL + d.archive, dest=f"{d.name}/{d.archive}", sha256=None) for d in DIRECTIONS.values()
    ),
    post_fetch="ssrp.translate.models:finish_fetch",
    notes=(
        "No sha256 is published for the archives: ssrp trusts an archive it downloaded itself (recorded in a signed "
        "checksums.json) and signs each model.pt it unpacks from one (docs/translate.md, 'Trust model').",
        "The archives (about 1 GB each) may be deleted after the fetch; a refetch downloads them again.",
    ),
)


def translation_dir(models_dir: str) -> str:
    """``models_dir/translate`` (accepts the translate folder itself as well)."""
    nested = model_folder(models_dir, NAME)
    if not os.path.isdir(nested) and all(os.path.isdir(os.path.join(models_dir, d)) for d in DIRECTIONS):
        return models_dir
    return nested


def required_files(direction: Direction) -> tuple[str, ...]:
    return ("model.pt", f"dict.{direction.src}.txt", f"dict.{direction.tgt}.txt", "bpecodes")


def check_layout(root: str, direction: Direction) -> str:
    """The direction's folder, or FileNotFoundError naming the missing files and the fix."""
    folder = os.path.join(root, direction.name)
    missing = [f for f in required_files(direction) if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(
            f"translation model {direction.name} in {folder} lacks {', '.join(missing)}; run "
            f"`ssrp models fetch translate --to DIR` (or `ssrp models tiny DIR` for the tiny test models)"
        )
    return folder


# --------------------------------------------------------------------------------------------
# After the download.


def finish_fetch(model_dir: str, fetched: Sequence[Fetched]) -> dict:
    """Post-fetch step: unpack each direction's archive, verified in this very call (downloaded now, or
    matching ssrp's own signed record of an earlier download, or named by --trust-existing), into a fresh
    folder; move its files into ``<direction>/``; check them; sign the sha256 of every model.pt so unpacked.
    A model.pt that did not come out of such an archive is never signed."""
    archives = {f.rel: f for f in fetched}
    files = {}
    for d in DIRECTIONS.values():
        archive = archives.get(f"{d.name}/{d.archive}")
        if archive is None:
            raise UntrustedFileError(f"{d.name}: its archive was not checked in this fetch; nothing is signed")
        folder = os.path.join(model_dir, d.name)
        _install_archive(archive.path, folder, d)
        _check_bpecodes_language(folder, d)
        digest = sha256_file(os.path.join(folder, "model.pt"))
        files[f"{d.name}/model.pt"] = {"sha256": digest, "source": BASE_URL + d.archive, "archive_sha256": archive.sha256}
        logger.info("%s/model.pt sha256 %s", d.name, digest)
    record_checksums(model_dir, files, written_by="ssrp models fetch translate")
    return files


def _install_archive(archive: str, folder: str, d: Direction) -> None:
    """Unpack into a fresh scratch folder, then move the direction's files into place (replacing any)."""
    scratch = tempfile.mkdtemp(prefix=".unpack-", dir=folder)
    try:
        safe_extract(archive, scratch)
        unpacked = os.path.join(scratch, d.folder)
        source = unpacked if os.path.isdir(unpacked) else scratch
        missing = [f for f in required_files(d) if not os.path.isfile(os.path.join(source, f))]
        if missing:
            raise FileNotFoundError(f"{archive} lacks {', '.join(missing)}: not a WMT19 {d.name} model archive")
        for name in os.listdir(source):
            os.replace(os.path.join(source, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_bpecodes_language(folder: str, d: Direction) -> None:
    """fairseq #2928/#3510: an en-ru archive once shipped the en-de codes. Russian codes contain Cyrillic."""
    if "ru" not in (d.src, d.tgt):
        return
    with open(os.path.join(folder, "bpecodes"), encoding="utf-8") as fh:
        head = fh.read(1 << 20)
    if not any("\u0400" <= ch <= "\u04ff" for ch in head):
        raise ValueError(
            f"{folder}/bpecodes has no Cyrillic merges: the archive has the wrong BPE codes (fairseq #2928)"
        )


# --------------------------------------------------------------------------------------------
# Loading.


def model_digests(models_dir: str) -> dict[str, str]:
    """direction -> sha256 of its model.pt as recorded in checksums.json, for a corpus manifest's model
    identity (the same on every machine: the signature, which is per user, is left out). Not a trust
    check: loading verifies the files themselves."""
    import json

    path = os.path.join(translation_dir(models_dir), CHECKSUMS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        files = json.load(fh).get("files", {})
    return {rel.split("/")[0]: entry["sha256"] for rel, entry in sorted(files.items())}


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """The root logger's handlers and level as they were before the block (only the CLI configures logging)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def require_fairseq() -> None:
    """Import fairseq (once per process, without its import-time deprecation warnings, and undoing the
    root-logger configuration ``import fairseq`` performs: a stderr handler at DEBUG); ModuleNotFoundError
    with the install hint when fairseq or fastBPE is missing."""
    try:
        with warnings.catch_warnings(), _root_logging_kept():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script, used by fairseq at import
            warnings.simplefilter("ignore", UserWarning)
            import fairseq  # noqa: F401
            import fairseq.models.transformer  # noqa: F401
            import fairseq.sequence_generator  # noqa: F401
            import fastBPE  # noqa: F401
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"back-translation needs fairseq-fixed and fastBPE ({err}); install them with `make install`, i.e. "
            "pip install --no-deps --no-build-isolation fairseq-fixed==0.12.3.1 && "
            "pip install --no-build-isolation fastBPE"
        ) from err


def load_hub(models_dir: str, direction: str, *, trusted_sha256: tuple[str, ...] = (), **overrides):
    """The fairseq hub interface (GeneratorHubInterface) of one direction, on CPU, in eval mode.

    The checkpoint is fully unpickled only after its sha256 is trusted (ssrp.translate.trust).
    ``overrides`` go to ``from_pretrained`` (e.g. ``batch_size``, ``max_tokens``).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown translation direction {direction!r}; known: {sorted(DIRECTIONS)}")
    d = DIRECTIONS[direction]
    root = translation_dir(models_dir)
    folder = check_layout(root, d)
    verified = trust.verify_checkpoint(root, f"{d.name}/model.pt", d.name, trusted_sha256)
    logger.info("loading %s (sha256 %s, trusted by %s)", folder, verified.sha256[:12], verified.source)
    require_fairseq()
    from fairseq.models.transformer import TransformerModel

    with trust.full_unpickle_allowed(verified), silenced_output():  # fastBPE's and Hydra's chatter
        hub = TransformerModel.from_pretrained(
            folder,
            checkpoint_file="model.pt",
            data_name_or_path=".",
            tokenizer="moses",
            bpe="fastbpe",
            source_lang=d.src,
            target_lang=d.tgt,
            **overrides,
        )
    hub.eval()
    hub.checkpoint_sha256 = verified.sha256
    return hub
