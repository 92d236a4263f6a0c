"""Small file helpers shared by every stage."""

from __future__ import annotations

import hashlib


def sha256_and_size(path: str, chunk: int = 1 << 20) -> tuple[str, int]:
    """The sha256 hex digest of a file and its size, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def sha256_file(path: str) -> str:
    return sha256_and_size(path)[0]
