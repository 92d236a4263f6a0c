"""Which fairseq checkpoints may be fully unpickled, and the one code path that does it.

The WMT19 checkpoints (2019) pickle an ``argparse.Namespace`` and need ``torch.load(...,
weights_only=False)``, which runs arbitrary code from the file. So a ``model.pt`` is unpickled only
when its sha256 is *trusted*, from one of three sources (docs/translate.md, "Trust model"):

1. ``PINNED_SHA256``: digests pinned in this code (none yet: fairseq publishes no checksums for
   the WMT19 archives; a maintainer pins them after a verified download).
2. ``trusted_sha256`` in the stage's config (``--trust-sha256`` on the command line): the user
   pins a digest explicitly, e.g. for a checkpoint of their own or to ship trust to Beam workers.
3. ``checksums.json`` beside the model directories (``ssrp.models.trust``), written by
   ``ssrp models fetch translate`` for model.pt files it unpacked, in the same call, from archives it
   downloaded itself over HTTPS from dl.fbaipublicfiles.com (trust on first download), or by
   ``build_tiny``, and signed under a per-user key. A ``checksums.json`` that came with a copied or shared
   directory does not verify under your key, so it proves nothing and is ignored (with a warning).

The unpickle itself happens inside :func:`full_unpickle_allowed`, which lets fairseq's own loader
(``checkpoint_utils.load_checkpoint_to_cpu``) use ``weights_only=False`` for exactly the verified
file, for the duration of one ``from_pretrained`` call; every other ``torch.load`` keeps torch's
default. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ssrp.fileutil import sha256_file
from ssrp.models.trust import CHECKSUMS_FILE, read_signed_checksums

logger = logging.getLogger(__name__)

# direction -> sha256 of the official single model's model.pt. None: not published by fairseq and
# not yet pinned here (see the module docstring and docs/translate.md).
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
        f"Fetch it with `ssrp models fetch translate`, or, if you built or verified this file yourself, "
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
