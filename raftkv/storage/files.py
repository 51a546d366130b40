"""Small durable files: write a whole file so that a crash leaves either the old
content or the new, never a mix, and the new one survives a power loss.

Rule: every small file a node keeps beside its WAL (``members.json``,
``node_id``) is written with :func:`atomic_write`; the WAL and snapshot files
use the same primitives (:func:`datasync`, :func:`fsync_dir`).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

__all__ = ["atomic_write", "datasync", "fsync_dir", "pwrite_all", "write_all"]


def datasync(fd: int) -> None:
    """Make a file's data durable (fdatasync; F_FULLFSYNC on macOS, where fsync is not)."""
    if sys.platform == "darwin":
        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    else:
        os.fdatasync(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a created, renamed or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    """Write all of ``data`` to ``fd`` at ``offset`` (``os.pwrite`` may write less)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def atomic_write(path: Path, text: str, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``text`` atomically: write ``path.tmp``, sync it,
    rename it over ``path``, sync the directory. ``fsync=False`` skips the
    syncs (UNSAFE: tests and ``--no-fsync`` only).

    Raises:
        OSError: the write failed; ``path`` is unchanged.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, text.encode("utf-8"))
        if fsync:
            datasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)
