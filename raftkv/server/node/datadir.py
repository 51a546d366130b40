"""A node's data dir: opening its storage, and ``members.json``.

The data dir holds the ``node_id`` file (:mod:`raftkv.server.identity`), the
WAL and snapshots (:mod:`raftkv.storage`) and ``members.json``.

Rule 1: the membership lives in the log and snapshots, never in storage's
bootstrap settings -- except for data dirs written before the founding
membership moved into the log, which :func:`open_storage` recognises and
reopens with the address book as their bootstrap voters.

Rule 2: ``members.json`` is the membership book's copy, rewritten whole and
atomically (:func:`~raftkv.storage.files.atomic_write`: fsync of the file and
of its directory) whenever the book changes -- a configuration change applied,
a leader's snapshot installed -- and read once, at start, after the local
snapshot was restored. It is what a restarted node knows of its peers'
addresses before it replays its log, and of removed ids older than its
snapshot's. An unreadable file is ignored with a warning: the snapshot and the
log still carry the membership.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from raftkv.core.types import EntryType, NodeId
from raftkv.replica.membership import MembershipBook
from raftkv.storage.disk_storage import DiskStorage
from raftkv.storage.files import atomic_write

__all__ = ["MEMBERS_FILE", "MembersFile", "is_empty", "open_storage"]

logger = logging.getLogger(__name__)

MEMBERS_FILE = "members.json"


def is_empty(storage: DiskStorage) -> bool:
    """No hard state, no entries, no snapshot: a data dir that never ran."""
    hard_state, _ = storage.initial_state()
    return hard_state.is_empty() and storage.last_index() == 0 and storage.snapshot().is_empty()


def open_storage(data_dir: Path, *, fsync: bool, members: Iterable[NodeId]) -> DiskStorage:
    """Open the WAL and snapshots in ``data_dir`` (Rule 1).

    Data dirs written before the founding membership moved into the log (no
    snapshot, and entry 1 exists but is not a configuration change) are
    reopened with ``members`` (the address book) as storage's bootstrap
    voters, as before. A joiner's log starts at a snapshot or at the founding
    entry, so it never looks like one.
    """
    storage = DiskStorage.open(data_dir, fsync=fsync)
    if is_empty(storage) or not storage.snapshot().is_empty():
        return storage
    if storage.first_index() != 1 or storage.last_index() == 0:
        return storage
    first = storage.entries(1, 2)
    if first and first[0].type is EntryType.CONF_CHANGE:
        return storage
    voters = tuple(sorted(members))
    logger.warning(
        "data dir predates log-based bootstrap: voters from the address book",
        extra={"fields": {"voters": ",".join(voters)}},
    )
    storage.close()
    return DiskStorage.open(data_dir, fsync=fsync, voters=voters)


class MembersFile:
    """``members.json`` in ``data_dir``, the copy of ``book`` (Rule 2).

    Args:
        data_dir: the node's data dir.
        book: the replica's membership book (read by :meth:`save`, filled by :meth:`load`).
        fsync: sync the file and the directory (False: tests and ``--no-fsync`` only).
    """

    __slots__ = ("path", "_book", "_fsync")

    def __init__(self, data_dir: Path, book: MembershipBook, *, fsync: bool) -> None:
        self.path = data_dir / MEMBERS_FILE
        self._book = book
        self._fsync = fsync

    def load(self, *, restored: bool) -> None:
        """Read the file into the address book and removed ids.

        Called at start, after the snapshot (if any, ``restored``) was restored:
        the file's address book replaces the one from ``--initial-cluster``,
        and a snapshot's entries are kept on top of it; the entries after the
        snapshot are applied again afterwards. Removed ids are merged.
        """
        path = self.path
        if not path.exists():
            return
        book = self._book
        try:
            obj = json.loads(path.read_text())
            members = book.parse_members(obj["members"])
            removed = book.parse_removed(obj.get("removed", {}))  # absent in older files
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("ignoring unreadable %s: %s", path, exc)
            return
        book.members = {**members, **book.members} if restored else members
        book.merge_removed(removed)

    def save(self) -> None:
        """Write the book as it is now.

        Raises:
            OSError: the write failed; the file is unchanged.
        """
        atomic_write(self.path, self._book.to_json(), fsync=self._fsync)
