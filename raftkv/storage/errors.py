"""Errors raised by durable storage.

Rule: anything that means "the bytes on disk cannot be trusted" raises
:class:`CorruptLogError` (a WAL record, naming the file and byte offset) or
:class:`CorruptSnapshotError` (a snapshot file, naming it); nothing in
:mod:`raftkv.storage` ever drops acknowledged data silently. Misuse of the API
(releasing segments no snapshot covers, using a closed log, a second process on
the same directory) raises :class:`StorageError`.
"""

from __future__ import annotations

import os

from raftkv.core.errors import RaftKVError


class StorageError(RaftKVError):
    """Root of the errors raised by :mod:`raftkv.storage`."""


class CorruptLogError(StorageError):
    """A WAL record that is damaged and is not a torn tail.

    Attributes:
        path: the segment file holding the bad record.
        offset: byte offset of the start of the bad record in ``path``.
        reason: what was wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, reason: str) -> None:
        self.path = os.fspath(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt WAL record in {self.path} at offset {offset}: {reason}")

    def __reduce__(self) -> tuple[type[CorruptLogError], tuple[str, int, str]]:
        return (type(self), (self.path, self.offset, self.reason))


class CorruptSnapshotError(StorageError):
    """A snapshot file that fails verification (it is never skipped silently).

    Attributes:
        path: the snapshot file.
        reason: what was wrong with it.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"corrupt snapshot file {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[CorruptSnapshotError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))
