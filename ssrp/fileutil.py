"""Small file helpers shared by every stage."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator


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


def md5_file(path: str, chunk: int = 1 << 20) -> str:
    """md5, where a publisher pins only that (Stanza's resources.json); never a security check on its own."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Scratch folders in TMPDIR, named after the process that made them so a later run can remove those of
# processes that died (a SIGKILLed build leaves its staging LMDBs behind).

_SCRATCH_PREFIX = "ssrp-"
_SCRATCH_KINDS = ("shard", "commit", "spool")


def scratch_dir(kind: str) -> str:
    """A new folder ``$TMPDIR/ssrp-<kind>-<pid>-<random>``; the caller removes it when done."""
    if kind not in _SCRATCH_KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}; known: {_SCRATCH_KINDS}")
    return tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{kind}-{os.getpid()}-")


def _owner_pid(name: str) -> int | None:
    parts = name.split("-")
    if len(parts) < 4 or parts[0] + "-" != _SCRATCH_PREFIX or parts[1] not in _SCRATCH_KINDS:
        return None
    return int(parts[2]) if parts[2].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_scratch(root: str | None = None) -> int:
    """Remove the scratch folders of processes that no longer run; returns how many were removed."""
    root = root or tempfile.gettempdir()
    removed = 0
    for name in os.listdir(root):
        pid = _owner_pid(name)
        path = os.path.join(root, name)
        if pid is not None and pid != os.getpid() and not _alive(pid) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[str]:
    """A unique temporary path beside ``path`` to write to; when the block ends without an error the file is
    fsynced and renamed over ``path`` (readers see the old file or the new one, never half of one). On an
    error the temporary file is removed and ``path`` is untouched."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic_file``)."""
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


# ---------------------------------------------------------------------------------------------
# One writer per output directory.

LOCK_FILE = ".lock"


class LockedError(RuntimeError):
    """Another process holds the output directory's lock."""


@contextlib.contextmanager
def exclusive_lock(directory: str, what: str = "build") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory/.lock`` for the block, or raise LockedError naming the holder.

    The kernel releases the lock when the holder exits, however it exits (SIGKILL too), so a stale lock
    file never blocks a rerun. The file records who holds it (pid, host, start time, command).
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{directory} is being written by another {what} ({_holder(fd)}); "
                              "wait for it to finish, or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300]}


def _holder(fd: int) -> str:
    try:
        who = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {who['pid']} on {who['host']} since {who['since']}: {who['command']}"
    except (ValueError, KeyError, OSError):
        return "a process that has not yet recorded itself"


def require_dir_path(path: str, what: str) -> None:
    """ValueError unless ``path`` is a directory or does not exist yet (an output folder to create)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{what} {path} is a file, not a directory: choose a folder for the output")


@contextlib.contextmanager
def silenced_output() -> Iterator[None]:
    """Inside the block, whatever is written to this process's stdout and stderr is dropped, at the file
    descriptor (C++ prints of fastBPE, Stanza's training scripts, Hydra's deprecation warnings alike). For
    third-party calls that only chatter; their exceptions still propagate, and print after the block."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
