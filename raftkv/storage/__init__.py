"""Durable storage for real nodes: WAL, snapshot files, and the core's Storage over them.

Rule: this package imports :mod:`raftkv.core` and nothing else of raftkv; it owns
every file a node writes for Raft (DESIGN.md "Dependency direction").
"""

from __future__ import annotations

from raftkv.storage.disk_storage import DiskStorage
from raftkv.storage.errors import CorruptLogError, CorruptSnapshotError, StorageError
from raftkv.storage.snapshot import SnapshotFile, SnapshotStore
from raftkv.storage.wal import WAL, Recovered
from raftkv.storage.walrecords import SnapshotMarker

__all__ = [
    "DiskStorage",
    "WAL",
    "Recovered",
    "SnapshotMarker",
    "SnapshotStore",
    "SnapshotFile",
    "StorageError",
    "CorruptLogError",
    "CorruptSnapshotError",
]
