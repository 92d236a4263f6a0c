"""The Stanza English package: where it comes from, how it is checked, and how a package directory is described.

A parser directory (``models_dir/parse``) has Stanza's own layout, so Stanza resolves every file itself::

    resources.json                      Stanza's model index (real: stanza-resources at a pinned commit)
    en/{processor}/{package}.pt         e.g. en/depparse/combined_charlm.pt, en/pretrain/conll17.pt
    ssrp-parser.json                    ssrp's description: language, processors -> packages, tokenizer mode

``ssrp models fetch parse`` downloads the default English models of Stanza 1.15.0 from the Hugging Face
repository ``stanfordnlp/stanza-en`` at tag ``v1.15.0``. Hugging Face publishes no sha256 for that tag that
could be found, but Stanza's ``resources.json`` lists an md5 per file: the resources file is pinned by sha256
(stanza-resources commit 9e22b99), and every model file is checked against the md5 it lists (and the same
md5s are pinned here) after download. The tiny package (``ssrp.parse.tiny``) writes the same layout.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ssrp.fileutil import md5_file, sha256_file
from ssrp.models.hub import ChecksumError, ModelSource, RemoteFile
from ssrp.models.manifest import read_manifest as read_json_manifest
from ssrp.models.manifest import write_manifest as write_json_manifest
from ssrp.parse.config import ParseConfig

logger = logging.getLogger(__name__)

NAME = "parse"  # the models folder and the `ssrp models fetch` name, like the stage
MANIFEST = "ssrp-parser.json"
MANIFEST_FORMAT = "ssrp-parser/1"
STANZA_VERSION = "1.15.0"
LANG = "en"

RESOURCES_COMMIT = "9e22b9943b68a0c83bf9187131992825c1a3c829"  # stanza-resources, 2026-08-18
RESOURCES_URL = f"https://raw.githubusercontent.com/stanfordnlp/stanza-resources/{RESOURCES_COMMIT}/resources_{STANZA_VERSION}.json"
RESOURCES_SHA256 = "924e0f381f4eb18351ba632adb1e808779ad0bd4ef94406f517f12b7eb7c1aa2"
MODEL_URL = f"https://huggingface.co/stanfordnlp/stanza-en/resolve/v{STANZA_VERSION}/models/{{path}}"

# Stanza 1.15.0's default English processors (resources_1.15.0.json, en.default_processors) and their
# dependencies, with the md5 that resources file lists for each.
PROCESSORS = {
    "tokenize": "combined_nocharlm",
    "mwt": "combined",
    "pos": "combined_charlm",
    "lemma": "combined_nocharlm",
    "depparse": "combined_charlm",
}
MD5 = {
    "tokenize/combined_nocharlm.pt": "249f1bb1c4aa1ee38b5690df8fc96937",
    "mwt/combined.pt": "6e49e64f630823cfcd8ab62ca59f42fc",
    "pos/combined_charlm.pt": "9de7bf3317248a3956c2b2f789b5fd1d",
    "lemma/combined_nocharlm.pt": "bf12291c16f7654787cf8cf09eedf665",
    "depparse/combined_charlm.pt": "fa261267dcc449374c589ce8436f0234",
    "pretrain/conll17.pt": "c339580492002fb1f759537dfbc57fb2",
    "forward_charlm/1billion.pt": "468b3377455fa0311565d46865f55afb",
    "backward_charlm/1billion.pt": "1405948b125b4264fd17509d1b6175ca",
}


class ParserPackageError(FileNotFoundError):
    """A parser directory that is missing, incomplete, or not described by an ssrp-parser.json."""


@dataclass(frozen=True)
class PackageInfo:
    """What ssrp-parser.json says about a parser directory."""

    path: str
    lang: str
    processors: dict[str, str]
    tokenizer: str  # "stanza" or "pretokenized": how this package tokenizes by default
    stanza_version: str
    tiny: bool = False
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "lang": self.lang,
            "processors": dict(self.processors),
            "tokenizer": self.tokenizer,
            "stanza_version": self.stanza_version,
            "tiny": self.tiny,
            **self.extra,
        }


def write_manifest(info: PackageInfo) -> str:
    return write_json_manifest(os.path.join(info.path, MANIFEST), info.to_json())


def read_manifest(parser_dir: str) -> PackageInfo:
    """Describe a parser directory; the same reader serves the real and the tiny package."""
    fix = (f"{parser_dir} is not a parser package. Run `ssrp models fetch parse --to DIR` (downloads Stanza's "
           "English models) or `ssrp models tiny DIR` (offline), then point models_dir at DIR")
    data = read_json_manifest(os.path.join(parser_dir, MANIFEST), MANIFEST_FORMAT, ParserPackageError, fix)
    if not os.path.isfile(os.path.join(parser_dir, "resources.json")):
        raise ParserPackageError(f"{parser_dir}/resources.json is missing: the package is incomplete")
    known = {"format", "lang", "processors", "tokenizer", "stanza_version", "tiny"}
    return PackageInfo(
        path=parser_dir,
        lang=data["lang"],
        processors=dict(data["processors"]),
        tokenizer=data["tokenizer"],
        stanza_version=data.get("stanza_version", ""),
        tiny=bool(data.get("tiny", False)),
        extra={k: v for k, v in data.items() if k not in known},
    )




def listed_md5(resources: dict, relpath: str, lang: str = LANG) -> str | None:
    """The md5 resources.json lists for ``processor/package.pt``."""
    processor, package = relpath[: -len(".pt")].split("/", 1)
    return resources.get(lang, {}).get(processor, {}).get(package, {}).get("md5")


def verify_package(parser_dir: str, expected: dict[str, str] | None = None) -> dict[str, str]:
    """Check every model file against its md5 in the directory's resources.json (and in ``expected``).

    A file that does not match is renamed to ``*.bad`` (so a rerun downloads it again) and ChecksumError
    is raised. Returns relpath -> md5.
    """
    with open(os.path.join(parser_dir, "resources.json"), encoding="utf-8") as fh:
        resources = json.load(fh)
    expected = MD5 if expected is None else expected
    out = {}
    for relpath, pinned in sorted(expected.items()):
        path = os.path.join(parser_dir, LANG, relpath)
        if not os.path.isfile(path):
            raise ParserPackageError(f"{path} is missing from the parser package")
        digest = md5_file(path)
        listed = listed_md5(resources, relpath)
        if digest != pinned or (listed is not None and digest != listed):
            os.replace(path, path + ".bad")
            raise ChecksumError(f"{path}: md5 {digest}, resources.json lists {listed}, ssrp pins {pinned}")
        out[relpath] = digest
    return out


def finish_fetch(model_dir: str, fetched: Sequence = ()) -> None:
    """post_fetch of the parser source: verify the md5s (each file was also checked against its pinned md5
    as it was fetched), then describe the package."""
    verify_package(model_dir)
    write_manifest(
        PackageInfo(
            path=model_dir,
            lang=LANG,
            processors=dict(PROCESSORS),
            tokenizer="stanza",
            stanza_version=STANZA_VERSION,
            extra={"resources_commit": RESOURCES_COMMIT, "source": "huggingface.co/stanfordnlp/stanza-en"},
        )
    )
    logger.info("parser package verified and described in %s", os.path.join(model_dir, MANIFEST))


def _model_file(relpath: str) -> RemoteFile:
    return RemoteFile(url=MODEL_URL.format(path=relpath), dest=f"{LANG}/{relpath}", sha256=None, md5=MD5[relpath])


SOURCE = ModelSource(
    name=NAME,
    description=f"Stanza {STANZA_VERSION} default English models (tokenize, mwt, pos, lemma, depparse; "
    "conll17 word vectors; 1billion character LMs), about 350 MB",
    files=(RemoteFile(url=RESOURCES_URL, dest="resources.json", sha256=RESOURCES_SHA256),)
    + tuple(_model_file(relpath) for relpath in MD5),
    post_fetch="ssrp.parse.models:finish_fetch",
    notes=(
        "Model files have no published sha256; each is checked against the md5 listed in the sha256-pinned "
        "resources.json after download (finish_fetch).",
    ),
)


def model_identity(cfg: ParseConfig) -> dict:
    """What identifies the parse models, independent of where they are stored (for manifests)."""
    info = read_manifest(cfg.resolved_parser_dir)
    return {
        "stanza_package": {k: v for k, v in info.to_json().items() if k != "format"},
        "resources_sha256": sha256_file(os.path.join(info.path, "resources.json")),
        "vocab_sha256": sha256_file(cfg.resolved_vocab_path),
    }
