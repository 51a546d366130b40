"""The core's :class:`~raftkv.core.storage.Storage`, made durable by a WAL.

Rule: the WAL is the truth and memory is a cache of it. :meth:`DiskStorage.save`
writes to the WAL before it changes the in-memory log, and the in-memory log is
rebuilt from the WAL alone on :meth:`DiskStorage.open`. Reads (``entries``,
``term``, ``first_index``, ``last_index``) never touch the disk and behave
exactly like :class:`~raftkv.core.storage.MemoryStorage`, errors included.

The WAL lives in ``{data_dir}/wal``; snapshot files will live beside it.
Membership (:class:`~raftkv.core.types.ConfState`) is not persisted yet: it is
the ``voters`` given to :meth:`DiskStorage.open`, until snapshots record it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

from raftkv.core.errors import LogCompacted, LogUnavailable, bug
from raftkv.core.storage import limit_size
from raftkv.core.types import ConfState, Entry, HardState, Index, NodeId, Term
from raftkv.storage.wal import DEFAULT_SEGMENT_BYTES, WAL, SnapshotMarker

__all__ = ["DiskStorage", "WAL_DIR_NAME"]

WAL_DIR_NAME = "wal"


class DiskStorage:
    """A durable :class:`~raftkv.core.storage.Storage`. Create with :meth:`open`."""

    __slots__ = ("_wal", "_hard_state", "_conf_state", "_entries")

    def __init__(
        self,
        wal: WAL,
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: SnapshotMarker | None,
        entries: Sequence[Entry],
    ) -> None:
        """Private: use :meth:`DiskStorage.open`."""
        self._wal = wal
        self._hard_state = hard_state
        self._conf_state = conf_state
        # As in MemoryStorage: _entries[0] is a dummy for the compaction point,
        # with the index and term of the last entry a snapshot holds (0/0 if none).
        # Invariant: _entries[i].index == _entries[0].index + i.
        base = Entry(term=0, index=0)
        if snapshot is not None:
            base = Entry(term=snapshot.term, index=snapshot.index)
        self._entries: list[Entry] = [base, *entries]

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        fsync: bool = True,
        voters: Sequence[NodeId] = (),
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> DiskStorage:
        """Open (creating if needed) the storage in ``data_dir`` and recover it.

        Args:
            data_dir: the node's data directory; the WAL is ``data_dir/wal``.
            fsync: sync writes. ``False`` is UNSAFE (tests/benchmarks only).
            voters: the bootstrap membership reported by :meth:`initial_state`.
            segment_bytes: WAL segment size.

        Raises:
            CorruptLogError: the WAL is damaged before its tail.
            StorageError: the directory is in use by another process.
        """
        wal, recovered = WAL.open(
            Path(data_dir) / WAL_DIR_NAME, fsync=fsync, segment_bytes=segment_bytes
        )
        return cls(
            wal,
            recovered.hard_state,
            ConfState(voters=tuple(voters)),
            recovered.snapshot,
            recovered.entries,
        )

    # -- Storage ---------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf_state

    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise LogCompacted(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"index {hi - 1} is beyond last index {self.last_index()}")
        return limit_size(self._entries[lo - offset : hi - offset], max_size)

    def term(self, index: Index) -> Term:
        offset = self._entries[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._entries):
            raise LogUnavailable(f"index {index} is beyond last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> Index:
        return self._entries[0].index + 1

    def last_index(self) -> Index:
        return self._entries[0].index + len(self._entries) - 1

    # -- driver side -------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def wal(self) -> WAL:
        return self._wal

    def save(
        self,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        """Persist one Ready: append ``entries`` (replacing any suffix they overlap)
        and record ``hard_state``; make both durable if ``sync`` (``Ready.must_sync``).

        One ``write`` and at most one ``fdatasync``, whatever the number of entries.

        Raises:
            StorageError: an I/O error; the storage is then unusable.
            AssertionError: ``entries`` would leave a gap (a caller bug).
        """
        offset = self._entries[0].index
        if entries and entries[0].index <= offset:
            # At or below the compaction point: committed and identical; skip.
            entries = [e for e in entries if e.index > offset]
        if entries:
            first = entries[0].index
            if first > self.last_index() + 1:
                bug(f"append leaves a gap: last index {self.last_index()}, appending {first}")
            for prev, e in itertools.pairwise(entries):
                if e.index != prev.index + 1:
                    bug(f"entries not contiguous: {prev.index} then {e.index}")
        self._wal.append(entries, hard_state)
        if entries:
            del self._entries[entries[0].index - offset :]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state
        if sync:
            self._wal.sync()

    def compact(self, index: Index) -> None:
        """Log compaction hook: entries up to ``index`` are now held by a snapshot.

        Writes a snapshot marker (durably), drops those entries from memory, and
        deletes WAL segments that hold only such entries. The caller must have
        made the snapshot itself durable first, and ``index`` should be applied.

        Raises:
            LogCompacted: ``index`` is already compacted.
            LogUnavailable: ``index`` is beyond the last index.
        """
        offset = self._entries[0].index
        if index <= offset:
            raise LogCompacted(f"index {index} is compacted (first index {offset + 1})")
        if index > self.last_index():
            raise LogUnavailable(f"index {index} is beyond last index {self.last_index()}")
        marker = SnapshotMarker(index=index, term=self.term(index), keep_entries=True)
        self._wal.append((), None, snapshot=marker)
        self._wal.sync()
        base = Entry(term=marker.term, index=marker.index)
        self._entries = [base, *self._entries[index - offset + 1 :]]
        self._wal.release_before(index + 1)

    def close(self) -> None:
        """Close the WAL (without syncing: sync with ``save(..., sync=True)``)."""
        self._wal.close()

    def __enter__(self) -> DiskStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def all_entries(self) -> list[Entry]:
        """Every stored entry after the compaction point (for checkers and tests)."""
        return self._entries[1:]
