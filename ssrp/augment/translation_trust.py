"""Which fairseq checkpoints may be fully unpickled, and the one code path that does it.

The WMT19 checkpoints (2019) pickle an ``argparse.Namespace`` and need ``torch.load(...,
weights_only=False)``, which runs arbitrary code from the file. So a ``model.pt`` is unpickled only
when its sha256 is *trusted*, from one of three sources (docs/backtranslation.md, "Trust model"):

1. ``PINNED_SHA256``: digests pinned in this code (none yet: fairseq publishes no checksums for
   the WMT19 archives; a maintainer pins them after a verified download).
2. ``trusted_sha256`` in the stage's config (``--trust-sha256`` on the command line): the user
   pins a digest explicitly, e.g. for a checkpoint of their own or to ship trust to Beam workers.
3. ``checksums.json`` beside the model directories, written by ``ssrp models fetch translation``
   (after an HTTPS download from dl.fbaipublicfiles.com) or by ``build_tiny``, and signed with an
   HMAC-SHA256 under a per-user secret kept outside the models directory (``$SSRP_TRUST_KEY``, or
   ``$XDG_DATA_HOME/ssrp/trust.key``, created 0600 on first use; the scheme of Jupyter's trusted
   notebooks). A ``checksums.json`` that came with a copied or shared directory does not verify under
   your key, so it proves nothing and is ignored (with a warning).

The unpickle itself happens inside :func:`full_unpickle_allowed`, which lets fairseq's own loader
(``checkpoint_utils.load_checkpoint_to_cpu``) use ``weights_only=False`` for exactly the verified
file, for the duration of one ``from_pretrained`` call; every other ``torch.load`` keeps torch's
default. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ssrp.fileutil import sha256_file

logger = logging.getLogger(__name__)

CHECKSUMS_FILE = "checksums.json"
KEY_ENV = "SSRP_TRUST_KEY"
_KEY_BYTES = 32

# direction -> sha256 of the official single model's model.pt. None: not published by fairseq and
# not yet pinned here (see the module docstring and docs/backtranslation.md).
PINNED_SHA256: dict[str, str | None] = {"en-de": None, "de-en": None, "en-ru": None, "ru-en": None}

# Serialises the short window in which fairseq's module-level ``torch`` name is swapped (below).
_SWAP_LOCK = threading.Lock()


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint that needs a full unpickle but whose sha256 is not trusted."""


@dataclass(frozen=True)
class VerifiedFile:
    """A file whose sha256 was checked, with the stat fingerprint it had when it was hashed."""

    path: str
    sha256: str
    source: str  # pinned | config | checksums.json
    fingerprint: tuple[int, int, int, int]


def _fingerprint(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# --------------------------------------------------------------------------------------------
# The per-user key and signed checksums files.


def key_path() -> str:
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "ssrp", "trust.key")


def _read_key(create: bool) -> bytes | None:
    path = key_path()
    if not os.path.exists(path):
        if not create:
            return None
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return _read_key(create=False)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(_KEY_BYTES))
        logger.info("created the checkpoint trust key %s", path)
    with open(path, "rb") as fh:
        key = fh.read()
    if len(key) < _KEY_BYTES:
        raise UntrustedCheckpointError(f"trust key {path} is shorter than {_KEY_BYTES} bytes; delete it to recreate")
    return key


def _mac(key: bytes, body: dict) -> str:
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def write_checksums(root: str, files: dict[str, dict], written_by: str) -> str:
    """Sign and write ``root/checksums.json``: ``files`` maps a path relative to root to
    ``{"sha256": ..., "source": ...}``. Only the fetch step and build_tiny call this."""
    body = {"version": 1, "written_by": written_by, "files": files}
    signed = dict(body, mac=_mac(_read_key(create=True), body))
    path = os.path.join(root, CHECKSUMS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(signed, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return path


def read_signed_checksums(root: str) -> dict[str, str]:
    """relative path -> sha256 from ``root/checksums.json``, or {} if it is missing or its
    signature does not verify under this user's key."""
    path = os.path.join(root, CHECKSUMS_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            signed = json.load(fh)
        body = {k: v for k, v in signed.items() if k != "mac"}
        key = _read_key(create=False)
        valid = key is not None and hmac.compare_digest(str(signed.get("mac", "")), _mac(key, body))
    except (OSError, ValueError, AttributeError) as err:
        logger.warning("ignoring unreadable %s: %s", path, err)
        return {}
    if not valid:
        logger.warning(
            "ignoring %s: it was not written by `ssrp models fetch`/build_tiny under this user's key (%s)",
            path,
            key_path(),
        )
        return {}
    return {rel: entry["sha256"] for rel, entry in body.get("files", {}).items()}


def trusted_digests(root: str) -> tuple[str, ...]:
    """The digests a signed checksums.json vouches for: a driver can put these into the config
    (``trusted_sha256``) so that workers without the key trust the same files."""
    return tuple(sorted(set(read_signed_checksums(root).values())))


# --------------------------------------------------------------------------------------------
# The gate.


def verify_checkpoint(root: str, rel_path: str, direction: str, extra_trusted: tuple[str, ...]) -> VerifiedFile:
    """Hash ``root/rel_path`` and say why it is trusted, or raise UntrustedCheckpointError."""
    path = os.path.join(root, rel_path)
    fingerprint = _fingerprint(path)
    digest = sha256_file(path)
    if PINNED_SHA256.get(direction) == digest:
        return VerifiedFile(path, digest, "pinned", fingerprint)
    if digest in {d.lower() for d in extra_trusted}:
        return VerifiedFile(path, digest, "config", fingerprint)
    signed = read_signed_checksums(root)
    if signed.get(rel_path) == digest:
        return VerifiedFile(path, digest, CHECKSUMS_FILE, fingerprint)
    why = "it differs from the digest recorded at fetch time" if rel_path in signed else "no trusted record names it"
    raise UntrustedCheckpointError(
        f"{path} (sha256 {digest}) needs a full unpickle (legacy fairseq checkpoint) but is not trusted: {why}. "
        f"Fetch it with `ssrp models fetch translation`, or, if you built or verified this file yourself, "
        f"pin it with --trust-sha256 {digest} (config trusted_sha256)."
    )


@contextlib.contextmanager
def full_unpickle_allowed(verified: VerifiedFile) -> Iterator[None]:
    """Within this block, fairseq's checkpoint loader unpickles ``verified.path`` fully.

    Why: WMT19 checkpoints contain an argparse.Namespace, which torch's weights_only loader refuses
    (fairseq #5610). The file's sha256 was checked against a trusted value by verify_checkpoint; the
    file's stat fingerprint is re-checked at load time so that a file swapped after hashing is refused.
    Only the name ``torch`` inside ``fairseq.checkpoint_utils`` is replaced, by a proxy whose ``load``
    adds ``weights_only=False`` for that one path; any other file keeps torch's default.
    """
    from fairseq import checkpoint_utils

    target = os.path.realpath(verified.path)
    with _SWAP_LOCK:
        real_torch = checkpoint_utils.torch
        checkpoint_utils.torch = _GatedTorch(real_torch, target, verified)
        try:
            yield
        finally:
            checkpoint_utils.torch = real_torch


class _GatedTorch:
    """Stands in for the ``torch`` module inside fairseq.checkpoint_utils (see full_unpickle_allowed)."""

    def __init__(self, real_torch, target: str, verified: VerifiedFile):
        self._real = real_torch
        self._target = target
        self._verified = verified

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def load(self, f, *args, **kwargs):
        name = getattr(f, "name", f)
        if isinstance(name, str | os.PathLike) and os.path.realpath(name) == self._target:
            if _fingerprint(self._target) != self._verified.fingerprint:
                raise UntrustedCheckpointError(f"{self._target} changed after its sha256 was checked; refusing to load")
            # sha256 matched a trusted value (verify_checkpoint): a full unpickle is allowed here only.
            kwargs["weights_only"] = False
        return self._real.load(f, *args, **kwargs)
