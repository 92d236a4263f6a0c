"""Downloading model files with sha256 checks (on a user's machine; never at test time)."""

from __future__ import annotations

import importlib
import logging
import os
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from ssrp.fileutil import sha256_file as sha256_of
from ssrp.models.registry import SOURCES, TINY_BUILDERS

logger = logging.getLogger(__name__)



class ChecksumError(RuntimeError):
    """A downloaded or local file whose sha256 is not the pinned one."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    dest: str  # path relative to the model directory
    sha256: str | None  # None: no published checksum; the computed one is recorded and printed
    unpack: bool = False  # a .tar.gz to unpack into dirname(dest)


@dataclass(frozen=True)
class ModelSource:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    post_fetch: str | None = None  # "module:function(model_dir)" run after download (e.g. a converter)
    notes: tuple[str, ...] = field(default_factory=tuple)


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def source(name: str) -> ModelSource:
    if name not in SOURCES:
        raise ValueError(f"unknown model {name!r}; known: {sorted(SOURCES)}")
    return _load(SOURCES[name])


def verify_file(path: str, expected: str | None) -> str:
    digest = sha256_of(path)
    if expected is not None and digest != expected:
        raise ChecksumError(f"{path}: sha256 {digest} does not match the pinned {expected}")
    return digest


def download(remote: RemoteFile, model_dir: str, progress: bool = True) -> str:
    """Download one file (resuming a .part file), check its sha256, unpack if asked."""
    dest = os.path.join(model_dir, remote.dest)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    if os.path.exists(dest):
        verify_file(dest, remote.sha256)
        logger.info("%s already present and verified", dest)
    else:
        _fetch_url(remote.url, dest, progress)
        try:
            digest = verify_file(dest, remote.sha256)
        except ChecksumError:
            os.replace(dest, dest + ".bad")
            raise
        if remote.sha256 is None:
            logger.warning("%s has no pinned checksum; its sha256 is %s (record it)", remote.url, digest)
    if remote.unpack:
        _unpack(dest, os.path.dirname(dest))
    return dest


def _fetch_url(url: str, dest: str, progress: bool) -> None:
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


def _unpack(archive: str, into: str) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")  # refuses absolute paths, links out of the tree
    logger.info("unpacked %s", archive)


def fetch(name: str, to_dir: str, progress: bool = True) -> str:
    """Fetch a model into ``to_dir/name`` and run its post-fetch step; returns the model dir."""
    src = source(name)
    model_dir = os.path.join(to_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    for remote in src.files:
        download(remote, model_dir, progress)
    if src.post_fetch:
        _load(src.post_fetch)(model_dir)
    return model_dir


def build_tiny(out_dir: str, only: list[str] | None = None) -> dict:
    """Build every registered tiny model (or those named) under out_dir; returns their manifests."""
    names = list(TINY_BUILDERS) if not only else only
    out = {}
    for name in names:
        if name not in TINY_BUILDERS:
            raise ValueError(f"no tiny builder for {name!r}; known: {list(TINY_BUILDERS)}")
        builder: Callable[[str], dict] = _load(TINY_BUILDERS[name])
        out[name] = builder(out_dir)
        logger.info("tiny %s model written under %s", name, out_dir)
    return out
