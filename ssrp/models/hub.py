"""Downloading model files with checksum checks (on a user's machine; never at test time).

Trust rules (docs/install.md, "Trust"):

* a file with a pinned sha256 (or md5) is used only if it matches, whether it was downloaded now or found
  on disk;
* a file with no published checksum is trusted only if this user's ssrp downloaded it: in this call, or
  earlier, as recorded in the signed ``checksums.json`` (``ssrp.models.trust``: trust on first download).
  Such a file found on disk without that record is refused, unless the user names it with
  ``--trust-existing PATH``; a partial ``.part`` download of such a file is never resumed;
* a post-fetch step (unpacking, conversion, signing) only sees files verified in the same call.
"""

from __future__ import annotations

import importlib
import logging
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ssrp.fileutil import md5_file, require_dir_path
from ssrp.fileutil import sha256_file as sha256_of
from ssrp.models.registry import SOURCES, TINY_BUILDERS, canonical_name, model_folder
from ssrp.models.trust import read_signed_checksums, record_checksums

logger = logging.getLogger(__name__)


class ChecksumError(RuntimeError):
    """A downloaded or local file whose checksum is not the pinned one."""


class UntrustedFileError(ChecksumError):
    """A file with no published checksum that ssrp did not download itself."""


class FetchError(RuntimeError):
    """A download that failed (no network, HTTP error)."""


class UnsafeArchiveError(ValueError):
    """An archive with a member that would land outside its folder (absolute path, .., a link out)."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    dest: str  # path relative to the model directory
    sha256: str | None  # None: no published sha256 (then md5, or trust on first download)
    md5: str | None = None  # a pinned md5 where only that is published (Stanza's resources.json)

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.md5 is not None


@dataclass(frozen=True)
class Fetched:
    """A file this fetch checked, and why it is trusted."""

    rel: str  # path relative to the model directory
    path: str
    sha256: str
    trusted_by: str  # pinned | downloaded | recorded | named


@dataclass(frozen=True)
class ModelSource:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    post_fetch: str | None = None  # "module:function(model_dir, fetched)" run after download (e.g. a converter)
    notes: tuple[str, ...] = field(default_factory=tuple)


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def source(name: str) -> ModelSource:
    name = canonical_name(name)
    if name not in SOURCES:
        raise ValueError(f"unknown model {name!r}; known: {sorted(SOURCES)}")
    return _load(SOURCES[name])


def verify_file(path: str, expected: str | None, md5: str | None = None) -> str:
    """The file's sha256; ChecksumError if it differs from a pinned sha256 (or md5)."""
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        raise ChecksumError(f"{path}: sha256 {digest} does not match the pinned {expected}")
    if md5 is not None and md5_file(path) != md5:
        raise ChecksumError(f"{path}: md5 {md5_file(path)} does not match the pinned {md5}")
    return digest


def obtain(remote: RemoteFile, model_dir: str, trust_existing: Sequence[str] = (), progress: bool = True) -> Fetched:
    """Download one file, or check the copy on disk; returns it with the reason it is trusted."""
    dest = os.path.join(model_dir, remote.dest)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    if os.path.exists(dest):
        return _existing(remote, model_dir, dest, trust_existing)
    if not remote.pinned and os.path.exists(dest + ".part"):
        os.remove(dest + ".part")  # bytes this process did not download are never part of an unpinned file
    _fetch_url(remote.url, dest, progress)
    try:
        digest = verify_file(dest, remote.sha256, remote.md5)
    except ChecksumError:
        os.replace(dest, dest + ".bad")
        raise
    if remote.pinned:
        return Fetched(remote.dest, dest, digest, "pinned")
    logger.warning("%s has no published checksum; downloaded it, sha256 %s (recorded)", remote.url, digest)
    record_checksums(model_dir, {remote.dest: {"sha256": digest, "source": remote.url}}, "ssrp models fetch")
    return Fetched(remote.dest, dest, digest, "downloaded")


def _existing(remote: RemoteFile, model_dir: str, dest: str, trust_existing: Sequence[str]) -> Fetched:
    if remote.pinned:
        digest = verify_file(dest, remote.sha256, remote.md5)
        logger.info("%s already present and matches its pinned checksum", dest)
        return Fetched(remote.dest, dest, digest, "pinned")
    digest = sha256_of(dest)
    if read_signed_checksums(model_dir).get(remote.dest) == digest:
        logger.info("%s already present, as ssrp downloaded it (signed record)", dest)
        return Fetched(remote.dest, dest, digest, "recorded")
    if os.path.realpath(dest) in {os.path.realpath(p) for p in trust_existing}:
        logger.warning("%s: trusted because --trust-existing names it (sha256 %s; recorded)", dest, digest)
        record_checksums(model_dir, {remote.dest: {"sha256": digest, "source": "--trust-existing"}}, "ssrp models fetch")
        return Fetched(remote.dest, dest, digest, "named")
    raise UntrustedFileError(
        f"{dest} is already there, has no published checksum and was not downloaded by ssrp under this user's key, "
        f"so it is not used. Delete it to download it again, or, if you fetched it yourself from {remote.url}, "
        f"pass --trust-existing {dest}"
    )


def _fetch_url(url: str, dest: str, progress: bool) -> None:
    try:
        _download(url, dest, progress)
    except urllib.error.HTTPError as err:
        raise FetchError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(f"cannot download {url}: {reason} (is this machine online?)") from None


def _download(url: str, dest: str, progress: bool) -> None:
    from tqdm import tqdm

    part = dest + ".part"
    start = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - official model URLs only
        if start and response.status != 206:
            start = 0  # server ignored the range: start over
        total = int(response.headers.get("Content-Length", 0)) + start
        mode = "ab" if start else "wb"
        with open(part, mode) as fh, tqdm(
            total=total or None, initial=start, unit="B", unit_scale=True, desc=os.path.basename(dest), disable=not progress
        ) as bar:
            while block := response.read(1 << 20):
                fh.write(block)
                bar.update(len(block))
    os.replace(part, dest)


def safe_extract(archive: str, into: str) -> None:
    """Unpack a tar archive into ``into``; a member that would land outside it is an UnsafeArchiveError."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")  # refuses absolute paths, .. and links out of the tree
    except tarfile.FilterError as err:
        raise UnsafeArchiveError(f"{archive}: refusing to unpack: {err}") from None
    except tarfile.TarError as err:
        raise UnsafeArchiveError(f"{archive}: not a readable tar archive: {err}") from None
    logger.info("unpacked %s", archive)


def fetch(name: str, to_dir: str, progress: bool = True, trust_existing: Sequence[str] = ()) -> str:
    """Fetch a model into ``to_dir/name`` and run its post-fetch step on the files checked here; returns the
    model dir."""
    src = source(name)
    require_dir_path(to_dir, "--to")
    model_dir = model_folder(to_dir, src.name)
    os.makedirs(model_dir, exist_ok=True)
    fetched = [obtain(remote, model_dir, trust_existing, progress) for remote in src.files]
    if src.post_fetch:
        _load(src.post_fetch)(model_dir, fetched)
    return model_dir


def build_tiny(out_dir: str, only: list[str] | None = None) -> dict:
    """Build every registered tiny model (or those named) under out_dir; returns their manifests."""
    require_dir_path(out_dir, "the models directory")
    names = list(TINY_BUILDERS) if not only else [canonical_name(n) for n in only]
    out = {}
    for name in names:
        if name not in TINY_BUILDERS:
            raise ValueError(f"no tiny builder for {name!r}; known: {list(TINY_BUILDERS)}")
        builder: Callable[[str], dict] = _load(TINY_BUILDERS[name])
        out[name] = builder(out_dir)
        logger.info("tiny %s model written under %s", name, out_dir)
    return out
