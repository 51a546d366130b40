"""Durable storage for real nodes: the write-ahead log and the core's Storage over it.

Rule: this package imports :mod:`raftkv.core` and nothing else of raftkv; it owns
every file a node writes for Raft (DESIGN.md "Dependency direction").
"""

from __future__ import annotations

from raftkv.storage.disk_storage import DiskStorage
from raftkv.storage.errors import CorruptLogError, StorageError
from raftkv.storage.wal import WAL, Recovered, SnapshotMarker

__all__ = [
    "DiskStorage",
    "WAL",
    "Recovered",
    "SnapshotMarker",
    "StorageError",
    "CorruptLogError",
]
