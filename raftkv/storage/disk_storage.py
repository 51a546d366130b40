"""The core's :class:`~raftkv.core.storage.Storage`, made durable by a WAL and snapshot files.

Rule: the disk is the truth and memory is a cache of it. Every mutating method
writes (and, where it says so, syncs) before it changes the in-memory state,
which :meth:`DiskStorage.open` rebuilds from the disk alone. Reads
(``entries``, ``term``, ``first_index``, ``last_index``, ``snapshot``) never
touch the disk and behave exactly like :class:`~raftkv.core.storage.MemoryStorage`,
errors included.

Layout: the WAL lives in ``{data_dir}/wal`` and snapshot files in
``{data_dir}/snap`` (:mod:`raftkv.storage.snapshot`).

Snapshots and the WAL
---------------------
Two indexes matter: the *snapshot* index (the newest snapshot file) and the
*compaction point* (the WAL's snapshot marker; entries at or below it are gone
from the log). Invariant: compaction point <= snapshot index -- :meth:`compact`
refuses to drop entries no snapshot holds -- so ``first_index()`` is the
compaction point + 1, which is the snapshot index + 1 right after
:meth:`apply_snapshot` and lower after ``create_snapshot(i)`` + ``compact(i - keep)``.

- :meth:`create_snapshot` saves the file durably; the log is unchanged. The
  entry at the snapshot's index is durable in the WAL with the same term, which
  is how recovery recognises the file as committed.
- :meth:`apply_snapshot` saves the file durably FIRST, then appends a WAL marker
  with ``keep_entries=False`` (and the hard state with ``commit`` raised to the
  snapshot index) and syncs: the marker is the commit point of the install.
- :meth:`compact` appends a marker with ``keep_entries=True``, syncs, and
  releases WAL segments that hold only compacted entries.

Recovery (:meth:`open`) replays the WAL, then takes the newest snapshot file
that is consistent with it: its index equals the marker's (same term), or its
entry is in the recovered log with the same term. A newer file that is neither
is an install interrupted before its marker was durable -- never acknowledged
-- and is deleted with a warning. If the recovered ``commit`` is below the
snapshot's index (possible only after a crash inside :meth:`apply_snapshot`),
it is raised to it: leaders send only committed snapshots. A damaged file raises
:class:`~raftkv.storage.CorruptSnapshotError`; a WAL compacted past every
snapshot file (files deleted or lost) raises :class:`~raftkv.storage.StorageError`
naming the directory. Nothing is dropped silently.

Membership (:class:`~raftkv.core.types.ConfState`) is persisted only inside
snapshots: :meth:`initial_state` returns the latest snapshot's, or the
bootstrap ``voters`` given to :meth:`open` when there is no snapshot; the core
re-derives later changes from the conf-change entries after the snapshot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from raftkv.core.errors import LogCompacted, LogUnavailable, bug
from raftkv.core.storage import limit_size
from raftkv.core.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMetadata,
    Term,
)
from raftkv.storage.errors import StorageError
from raftkv.storage.snapshot import DEFAULT_RETAIN, SnapshotStore, snapshot_name
from raftkv.storage.wal import DEFAULT_SEGMENT_BYTES, WAL, Recovered
from raftkv.storage.walrecords import SnapshotMarker

__all__ = ["DiskStorage", "WAL_DIR_NAME", "SNAP_DIR_NAME"]

logger = logging.getLogger(__name__)

WAL_DIR_NAME = "wal"
SNAP_DIR_NAME = "snap"


class DiskStorage:
    """A durable :class:`~raftkv.core.storage.Storage`. Create with :meth:`open`."""

    __slots__ = (
        "_wal",
        "_snapshots",
        "_hard_state",
        "_bootstrap_conf_state",
        "_snapshot",
        "_entries",
    )

    def __init__(
        self,
        wal: WAL,
        snapshots: SnapshotStore,
        hard_state: HardState,
        conf_state: ConfState,
        snapshot: Snapshot,
        marker: SnapshotMarker | None,
        entries: Sequence[Entry],
    ) -> None:
        """Private: use :meth:`DiskStorage.open`."""
        self._wal = wal
        self._snapshots = snapshots
        self._hard_state = hard_state
        self._bootstrap_conf_state = conf_state
        # Invariant: _snapshot.metadata.index >= _entries[0].index (see module docstring).
        self._snapshot = snapshot
        # As in MemoryStorage: _entries[0] is a dummy for the compaction point,
        # with the index and term of the last compacted entry (0/0 if none).
        # Invariant: _entries[i].index == _entries[0].index + i.
        base = Entry(term=0, index=0)
        if marker is not None:
            base = Entry(term=marker.term, index=marker.index)
        self._entries: list[Entry] = [base, *entries]

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        fsync: bool = True,
        voters: Sequence[NodeId] = (),
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        retain_snapshots: int = DEFAULT_RETAIN,
        preallocate: bool = True,
    ) -> DiskStorage:
        """Open (creating if needed) the storage in ``data_dir`` and recover it.

        Args:
            data_dir: the node's data directory (``wal/`` and ``snap/`` inside).
            fsync: sync writes. ``False`` is UNSAFE (tests/benchmarks only).
            voters: the bootstrap membership reported by :meth:`initial_state`
                while there is no snapshot.
            segment_bytes: WAL segment size.
            preallocate: preallocate WAL segments (faster syncs; see raftkv.storage.wal),
                when ``fsync`` is on: without syncs it saves nothing.
            retain_snapshots: how many snapshot files to keep (>= 1).

        Raises:
            CorruptLogError: the WAL is damaged before its tail.
            CorruptSnapshotError: a snapshot file is damaged.
            StorageError: the directory is in use by another process, or the
                WAL is compacted past every snapshot file.
        """
        wal, recovered = WAL.open(
            Path(data_dir) / WAL_DIR_NAME,
            fsync=fsync,
            segment_bytes=segment_bytes,
            preallocate=preallocate and fsync,
        )
        try:
            snapshots = SnapshotStore(
                Path(data_dir) / SNAP_DIR_NAME, fsync=fsync, retain=retain_snapshots
            )
            snapshot = _recover_snapshot(Path(data_dir), snapshots, recovered)
        except BaseException:
            wal.close()
            raise
        hard_state = recovered.hard_state
        if hard_state.commit < snapshot.metadata.index:
            # Only after a crash inside apply_snapshot: a leader sends only
            # committed snapshots, so its index is known committed.
            hard_state = dataclasses.replace(hard_state, commit=snapshot.metadata.index)
        return cls(
            wal,
            snapshots,
            hard_state,
            ConfState(voters=tuple(voters)),
            snapshot,
            recovered.snapshot,
            recovered.entries,
        )

    # -- Storage ---------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        if self._snapshot.is_empty():
            return self._hard_state, self._bootstrap_conf_state
        return self._hard_state, self._snapshot.metadata.conf_state

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

    def snapshot(self) -> Snapshot:
        return self._snapshot

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

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Save a state machine image taken at applied index ``index``, durably.

        The log is unchanged; call :meth:`compact` afterwards to drop a prefix.
        Retention deletes snapshot files beyond the newest ``retain_snapshots``.

        Returns:
            The new snapshot, now also :meth:`snapshot`.

        Raises:
            LogCompacted: ``index`` is not newer than the current snapshot.
            LogUnavailable: ``index`` is beyond the last index.
            StorageError: an I/O error (the previous snapshot stays current).
        """
        if index <= self._snapshot.metadata.index:
            raise LogCompacted(
                f"snapshot at {index} is not newer than the current one "
                f"({self._snapshot.metadata.index})"
            )
        if index > self.last_index():
            raise LogUnavailable(f"snapshot index {index} is beyond last index {self.last_index()}")
        metadata = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        snapshot = self.write_snapshot(metadata, data)
        self.adopt_snapshot(snapshot)
        return snapshot

    def write_snapshot(self, metadata: SnapshotMetadata, data: bytes) -> Snapshot:
        """Write a snapshot file durably without making it current: the half of
        :meth:`create_snapshot` that may run in another thread while this
        storage goes on being used (it touches only its own file), so the node's
        loop never waits for a large image to be written and synced. Then call
        :meth:`adopt_snapshot` on the storage's own thread.

        ``metadata`` must name an applied index and its term, read from this
        storage before the hand-off. Its file name cannot be another writer's:
        a snapshot the leader sends is installed only above the commit index,
        so above any index this node snapshots itself.

        Raises:
            StorageError: an I/O error (nothing changed).
        """
        snapshot = Snapshot(metadata=metadata, data=bytes(data))
        self._snapshots.save(snapshot, purge=False)
        return snapshot

    def adopt_snapshot(self, snapshot: Snapshot) -> bool:
        """Make a snapshot written by :meth:`write_snapshot` the current one, if it
        is still newer than the current one (a leader's may have been installed
        meanwhile); otherwise delete its file. Retention then purges old files.

        Returns:
            Whether it became current.
        """
        md = snapshot.metadata
        if md.index <= self._snapshot.metadata.index:
            path = self._snapshots.directory / snapshot_name(md.term, md.index)
            with contextlib.suppress(FileNotFoundError):
                self._snapshots.remove(path)
            return False
        self._snapshot = snapshot
        self._snapshots.purge()
        return True

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Install a snapshot sent by the leader: it replaces the whole log.

        Saves the snapshot file durably, then appends a WAL marker
        (``keep_entries=False``) and the hard state with ``commit`` raised to at
        least the snapshot index (the core commits a snapshot it restores; this
        keeps a crash before the next :meth:`save` from leaving the durable
        commit below the log's start), and syncs. Afterwards the log is empty
        with its dummy at the snapshot's index and term, as in etcd's
        ``MemoryStorage.ApplySnapshot``; term and vote are unchanged.

        Raises:
            LogCompacted: ``snapshot`` is not newer than the current one.
            StorageError: an I/O error; the storage is then unusable if it
                happened in the WAL.
        """
        md = snapshot.metadata
        if md.index <= self._snapshot.metadata.index:
            raise LogCompacted(
                f"snapshot at {md.index} is out of date (current {self._snapshot.metadata.index})"
            )
        self._snapshots.save(snapshot, purge=False)
        marker = SnapshotMarker(index=md.index, term=md.term, keep_entries=False)
        hard_state = self._hard_state
        if hard_state.commit < md.index:
            hard_state = dataclasses.replace(hard_state, commit=md.index)
        self._wal.append((), hard_state, snapshot=marker)
        self._wal.sync()
        self._hard_state = hard_state
        self._snapshot = snapshot
        self._entries = [Entry(term=md.term, index=md.index)]
        self._snapshots.purge()
        self._wal.release_before(md.index + 1)

    def compact(self, index: Index) -> None:
        """Log compaction: drop the entries up to ``index``, which a snapshot holds.

        Writes a snapshot marker (``keep_entries=True``) durably, drops those
        entries from memory, and deletes WAL segments that hold only such
        entries. Typically ``compact(snapshot index - entries kept for slow
        followers)`` after :meth:`create_snapshot`.

        Raises:
            LogCompacted: ``index`` is already compacted.
            LogUnavailable: ``index`` is beyond the last index.
            StorageError: ``index`` is beyond the current snapshot's index
                (those entries would be lost), or an I/O error.
        """
        offset = self._entries[0].index
        if index <= offset:
            raise LogCompacted(f"index {index} is compacted (first index {offset + 1})")
        if index > self.last_index():
            raise LogUnavailable(f"index {index} is beyond last index {self.last_index()}")
        if index > self._snapshot.metadata.index:
            raise StorageError(
                f"cannot compact up to {index}: the latest snapshot only covers "
                f"up to {self._snapshot.metadata.index}"
            )
        marker = SnapshotMarker(index=index, term=self.term(index), keep_entries=True)
        self._wal.append((), None, snapshot=marker)
        self._wal.sync()
        base = Entry(term=marker.term, index=marker.index)
        self._entries = [base, *self._entries[index - offset + 1 :]]
        self._wal.release_before(index + 1)

    @property
    def snapshot_store(self) -> SnapshotStore:
        return self._snapshots

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


def _recover_snapshot(data_dir: Path, store: SnapshotStore, recovered: Recovered) -> Snapshot:
    """The newest snapshot file consistent with the recovered WAL (module docstring)."""
    marker = recovered.snapshot
    m_index = marker.index if marker is not None else 0
    entries = recovered.entries  # Invariant (WAL): entries[i].index == m_index + 1 + i
    for f in reversed(store.files()):
        snapshot = store.load(f.path)
        md = snapshot.metadata
        if md.index < m_index:
            break
        if md.index == m_index:
            assert marker is not None
            if md.term != marker.term:
                raise StorageError(
                    f"data directory {data_dir}: snapshot {f.path} has term {md.term} but the "
                    f"WAL's snapshot marker at index {m_index} has term {marker.term}"
                )
            return snapshot
        offset = md.index - m_index - 1
        if offset < len(entries) and entries[offset].term == md.term:
            return snapshot
        # Saved by an apply_snapshot that crashed before its WAL marker was durable.
        logger.warning(
            "removing snapshot %s: the WAL does not reference it (an interrupted install)",
            f.path,
        )
        store.remove(f.path)
    if m_index > 0:
        raise StorageError(
            f"data directory {data_dir}: the WAL is compacted up to index {m_index} but no "
            f"snapshot file in {store.directory} covers it (snapshot files missing?)"
        )
    return Snapshot()
