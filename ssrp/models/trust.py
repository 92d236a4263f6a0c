"""Signed records of the files ssrp itself downloaded or wrote (``checksums.json``), under a per-user key.

Some model files have no published checksum (the fairseq WMT19 archives). ssrp trusts such a file only if
it downloaded the file itself, and remembers that by recording the file's sha256 in ``checksums.json``
beside it, signed with an HMAC-SHA256 under a per-user secret kept outside the models directory
(``$SSRP_TRUST_KEY``, or ``$XDG_DATA_HOME/ssrp/trust.key``, created 0600 on first use; the scheme of
Jupyter's trusted notebooks). A ``checksums.json`` that came with a copied or planted directory does not
verify under your key, so it proves nothing and is ignored (with a warning). See docs/install.md, "Trust".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets

from ssrp.fileutil import atomic_write_text

logger = logging.getLogger(__name__)

CHECKSUMS_FILE = "checksums.json"
KEY_ENV = "SSRP_TRUST_KEY"
_KEY_BYTES = 32


class TrustKeyError(RuntimeError):
    """The per-user trust key is unusable."""


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
        logger.info("created the trust key %s", path)
    with open(path, "rb") as fh:
        key = fh.read()
    if len(key) < _KEY_BYTES:
        raise TrustKeyError(f"trust key {path} is shorter than {_KEY_BYTES} bytes; delete it to recreate it")
    return key


def _mac(key: bytes, body: dict) -> str:
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def write_checksums(root: str, files: dict[str, dict], written_by: str) -> str:
    """Sign and write ``root/checksums.json``: ``files`` maps a path relative to root to
    ``{"sha256": ..., "source": ...}``. Only code that downloaded or wrote those very files calls this."""
    body = {"version": 1, "written_by": written_by, "files": files}
    signed = dict(body, mac=_mac(_read_key(create=True), body))
    path = os.path.join(root, CHECKSUMS_FILE)
    atomic_write_text(path, json.dumps(signed, indent=1, sort_keys=True))
    return path


def record_checksums(root: str, files: dict[str, dict], written_by: str) -> str:
    """Add ``files`` to the signed record of ``root`` (entries that verify under this user's key are kept)."""
    return write_checksums(root, {**_signed_entries(root), **files}, written_by)


def read_signed_checksums(root: str) -> dict[str, str]:
    """relative path -> sha256 from ``root/checksums.json``, or {} if it is missing or its
    signature does not verify under this user's key."""
    return {rel: entry["sha256"] for rel, entry in _signed_entries(root).items()}


def _signed_entries(root: str) -> dict[str, dict]:
    path = os.path.join(root, CHECKSUMS_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            signed = json.load(fh)
        body = {k: v for k, v in signed.items() if k != "mac"}
        key = _read_key(create=False)
        valid = key is not None and hmac.compare_digest(str(signed.get("mac", "")), _mac(key, body))
        files = dict(body.get("files", {}))
    except (OSError, ValueError, AttributeError, TypeError) as err:
        logger.warning("ignoring unreadable %s: %s", path, err)
        return {}
    if not valid:
        logger.warning(
            "ignoring %s: it was not written by ssrp under this user's key (%s)", path, key_path()
        )
        return {}
    return files


def trusted_digests(root: str) -> tuple[str, ...]:
    """The digests a signed checksums.json vouches for: a driver can put these into the config
    (``trusted_sha256``) so that workers without the key trust the same files."""
    return tuple(sorted(set(read_signed_checksums(root).values())))
