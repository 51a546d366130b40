"""The write-ahead log: append-only segment files of checksummed records.

Rule: every byte the WAL writes is appended, never rewritten in place, and every
record it reads back is verified. A damaged record is either provably a torn
tail (an unfinished, never-acknowledged write at the very end of the log), which
is truncated away with a warning, or it raises :class:`CorruptLogError` naming
the file and byte offset. Acknowledged data is never dropped silently.

The records and their format are :mod:`raftkv.storage.walrecords`; this module
holds the segment files, writing, and recovery.

Why the hard state lives in the WAL
-----------------------------------
A Ready usually carries both new entries and a new hard state (term, vote,
commit), and both must be durable before the messages that depend on them go
out. Keeping the hard state in a separate file (write a temp file, fsync, rename,
fsync the directory) would cost three or four syncs per Ready on top of the
log's. As records in the same append-only file, the whole Ready is one ``write``
and one ``fdatasync`` -- etcd's WAL does the same with its ``stateType`` record.
The price is that replay must read the log to find the latest hard state, which
it does anyway.

Writing
-------
:meth:`WAL.append` encodes every record of one Ready into one buffer and issues
one ``write``; :meth:`WAL.sync` issues one ``fdatasync``. Group commit -- one sync
per Ready, not per entry -- is the caller's job. An entry whose index is at or
below the last index written replaces that suffix (a follower overwriting a
conflicting tail): the new records are simply appended, and replay honours the
later ones.

Preallocation (``preallocate=True``, what a node with fsync on uses): the last
segment is kept :data:`PREALLOCATE_BYTES` (up to ``segment_bytes``) longer than
its records (``posix_fallocate``), and records are written into that space at
the end of the previous one. Appending then changes the file's size only once
per chunk, so ``fdatasync`` mostly flushes data without a journal commit for the
size (measured on ext4: 180 -> 125 µs per sync alone, 250 -> 160 µs with three
nodes syncing at once). Unwritten space reads as zeros, and type 0 is never
valid, so a zero-filled rest of the last segment simply ends its records. When a
segment is full its unused tail is cut off (and synced) before the next segment
is created, so only the last segment ever has one. If the file system cannot
preallocate, the WAL logs it once and appends as without preallocation.

When a segment reaches ``segment_bytes`` the next append starts a new one. The
new segment begins with a copy of the current hard state and snapshot marker, is
created under a ``.tmp`` name, synced, renamed into place, and the directory is
synced, so a segment either exists with its complete header or not at all. The
header copies make every segment self-sufficient: :meth:`WAL.release_before` may
delete any prefix of segments whose entries a snapshot covers without losing the
hard state or the snapshot marker that lived in them.

Recovery
--------
:meth:`WAL.open` replays the segments in ``seq`` order. In the *last* segment, a
record that is cut short, fails its checksum, or claims an impossible length, and
after which no valid record can be found anywhere in the rest of the file, is a
torn tail: the file is truncated at that record's first byte and synced (and
preallocated again). A zero-filled rest of the last segment is not damage: it is
space preallocated or never written, and ends the records. Anything
else -- a bad record followed by a valid one, any bad record in an earlier
segment, an unknown type or malformed payload behind a valid checksum, a gap in
the entries or in the segment numbers -- raises :class:`CorruptLogError`.

Known limits of the torn-tail rule: a torn write in which the disk persisted a
later sector of one Ready but not an earlier one is reported as corruption
rather than repaired (conservative: an operator decides); and a bit flip in the
very last record of the log is indistinguishable from a torn write, so that one
record is dropped. Both are inherent to checksum-only logs, etcd's included.

``fsync=False`` skips every ``fdatasync``/``fsync``. It is UNSAFE -- a power
failure can lose or tear any amount of acknowledged data -- and exists only for
tests and benchmarks.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from raftkv.core.errors import bug
from raftkv.core.types import Entry, HardState, Index
from raftkv.storage.errors import CorruptLogError, StorageError
from raftkv.storage.files import datasync, fsync_dir, pwrite_all
from raftkv.storage.walrecords import (
    RECORD_ENTRY,
    RECORD_HARD_STATE,
    RECORD_SNAPSHOT_MARKER,
    SnapshotMarker,
    _append_record,
    _BadRecord,
    _decode,
    _entry_payload,
    _hard_state_payload,
    _marker_payload,
    _records,
    _Replay,
    _valid_record_after,
    _zero_from,
)

__all__ = ["WAL", "Recovered", "DEFAULT_SEGMENT_BYTES", "segment_name", "sync_duplicate"]

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
PREALLOCATE_BYTES = 4 * 1024 * 1024
"""How far past its records the last segment is preallocated (``preallocate=True``)."""

_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_TMP_SUFFIX = ".tmp"
_LOCK_NAME = "LOCK"


def segment_name(seq: int, first_index: Index) -> str:
    """The file name of segment ``seq`` whose first entry is expected at ``first_index``."""
    return f"{seq:016x}-{first_index:016x}.wal"


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered:
    """What :meth:`WAL.open` read back."""

    hard_state: HardState
    """The last hard state written (``HardState()`` if none)."""
    snapshot: SnapshotMarker | None
    """The last snapshot marker written, if any."""
    entries: tuple[Entry, ...]
    """The log after the snapshot: contiguous, starting at ``snapshot.index + 1`` (or 1)."""
    torn_bytes: int = 0
    """Bytes of torn tail truncated from the last segment (0 if none; preallocated
    zeros after it are not counted)."""


# -- OS helpers --------------------------------------------------------------


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    # Highest index of any ENTRY record in this segment (0 if none); used by
    # release_before. Stale (later replaced) entries count too: conservative.
    max_entry_index: Index


# -- the WAL -------------------------------------------------------------------


class WAL:
    """An open write-ahead log. Create with :meth:`WAL.open`; not thread-safe.

    One process at a time: ``open`` takes an exclusive ``flock`` on ``LOCK`` in
    the directory.
    """

    __slots__ = (
        "_dir",
        "_fsync",
        "_segment_bytes",
        "_preallocate",
        "_allocated",
        "_lock_fd",
        "_segments",
        "_fd",
        "_size",
        "_header_size",
        "_dirty",
        "_writes",
        "_failed",
        "_hard_state",
        "_snapshot",
        "_last_index",
    )

    def __init__(
        self, directory: Path, *, fsync: bool, segment_bytes: int, preallocate: bool, lock_fd: int
    ) -> None:
        """Private: use :meth:`WAL.open`."""
        self._dir = directory
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._preallocate = preallocate  # turned off if the file system refuses
        self._allocated = 0  # the last segment's file size (>= _size once preallocated)
        self._lock_fd = lock_fd
        # Invariant: non-empty once open; seqs consecutive; the last is open as _fd.
        self._segments: list[_Segment] = []
        self._fd = -1
        self._size = 0  # bytes of records in the last segment: where the next one goes
        self._header_size = 0  # of those, bytes of the header copied in by rotation
        self._dirty = False  # written since the last sync
        self._writes = 0  # writes so far (appends, truncations): what a sync covers
        self._failed: BaseException | None = None  # an I/O error leaves the WAL unusable
        self._hard_state = HardState()
        self._snapshot: SnapshotMarker | None = None
        # Invariant: the index of the last entry of the log as replay would see it.
        self._last_index: Index = 0

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        preallocate: bool = False,
    ) -> tuple[WAL, Recovered]:
        """Open (creating if needed) the WAL in ``directory`` and replay it.

        Args:
            directory: the WAL directory; created if missing.
            fsync: sync writes to disk. ``False`` is UNSAFE (tests/benchmarks only).
            segment_bytes: start a new segment once the current one reaches this size.
            preallocate: keep the last segment preallocated past its records,
                so that a sync rarely records a new file size (see the module
                docstring). A node with fsync on does; the default keeps files
                at their records' size.

        Returns:
            The open WAL, positioned to append, and what was recovered.

        Raises:
            CorruptLogError: a record before the tail is damaged, or the log is
                inconsistent (see the module docstring).
            StorageError: another process holds the directory.
        """
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        path = Path(directory)
        if not path.is_dir():
            path.mkdir(parents=True)
            if fsync:
                fsync_dir(path.parent)
        lock_fd = os.open(path / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StorageError(f"WAL directory {path} is in use by another process") from None
        wal = cls(
            path,
            fsync=fsync,
            segment_bytes=segment_bytes,
            preallocate=preallocate,
            lock_fd=lock_fd,
        )
        try:
            recovered = wal._recover()
        except BaseException:
            wal.close()
            raise
        return wal, recovered

    def _recover(self) -> Recovered:
        for tmp in self._dir.glob(f"*.wal{_TMP_SUFFIX}"):
            logger.warning("removing unfinished segment %s", tmp)
            tmp.unlink()
        found: list[tuple[int, Path]] = []
        for child in self._dir.iterdir():
            match = _SEGMENT_RE.match(child.name)
            if match is not None:
                found.append((int(match.group(1), 16), child))
        found.sort()
        for (prev, _), (seq, seg_path) in itertools.pairwise(found):
            if seq != prev + 1:
                raise CorruptLogError(seg_path, 0, f"segment {prev + 1:016x} is missing")

        replay = _Replay(allow_hole=bool(found) and found[0][0] > 0)
        torn_bytes = 0
        for i, (seq, seg_path) in enumerate(found):
            is_last = i == len(found) - 1
            data = seg_path.read_bytes()
            end = len(data)  # of the records
            max_entry = 0
            try:
                for offset, rtype, payload in _records(data):
                    try:
                        record = _decode(rtype, payload)
                    except ValueError as exc:
                        raise CorruptLogError(seg_path, offset, str(exc)) from None
                    problem = replay.apply(record)
                    if problem is not None:
                        raise CorruptLogError(seg_path, offset, problem)
                    if isinstance(record, Entry):
                        max_entry = max(max_entry, record.index)
            except _BadRecord as bad:
                end = bad.offset
                if is_last and _zero_from(data, bad.offset):
                    pass  # preallocated or never written: the records end here
                else:
                    torn_bytes = self._torn_tail(seg_path, data, bad, is_last=is_last)
            self._segments.append(_Segment(seq=seq, path=seg_path, max_entry_index=max_entry))
            if is_last:
                self._size = end

        problem = replay.hole()
        if problem is not None:
            raise CorruptLogError(self._segments[0].path, 0, problem)
        self._hard_state = replay.hard_state
        self._snapshot = replay.snapshot
        self._last_index = replay.last_index()

        if self._segments:
            last = self._segments[-1]
            self._fd = os.open(last.path, os.O_WRONLY)
            self._allocated = os.fstat(self._fd).st_size
            if self._preallocate:
                self._reserve(self._fd, self._size)
            elif self._allocated > self._size:
                os.ftruncate(self._fd, self._size)  # a zero-filled tail
                self._allocated = self._size
                if self._fsync:
                    datasync(self._fd)
        else:
            self._create_segment(0, 1, b"")
        return Recovered(
            hard_state=replay.hard_state,
            snapshot=replay.snapshot,
            entries=tuple(replay.entries),
            torn_bytes=torn_bytes,
        )

    def _torn_tail(self, path: Path, data: bytes, bad: _BadRecord, *, is_last: bool) -> int:
        """Truncate the torn tail starting at ``bad``; its length in bytes (not
        counting zeros after it). Raises CorruptLogError if it is not one."""
        after = _valid_record_after(data, bad.offset + 1) if bad.maybe_torn else None
        if not (is_last and bad.maybe_torn and after is None):
            reason = bad.reason
            if after is not None:
                reason += f"; a valid record follows at offset {after}"
            elif not is_last:
                reason += " (not the last segment, so not a torn tail)"
            raise CorruptLogError(path, bad.offset, reason) from None
        # (Not counting the zeros of preallocated space after it.)
        torn_bytes = (len(data.rstrip(b"\0")) if self._preallocate else len(data)) - bad.offset
        self._truncate_torn(path, bad.offset, torn_bytes, bad.reason)
        return torn_bytes

    def _reserve(self, fd: int, end: int) -> None:
        """Have the last segment ``fd`` preallocated past ``end`` (the end of
        its records after the next write), if it is not already."""
        if not self._preallocate or end < self._allocated:
            return
        target = max(end, min(end + PREALLOCATE_BYTES, self._segment_bytes))
        if target <= self._allocated:
            return
        try:
            os.posix_fallocate(fd, self._allocated, target - self._allocated)
            self._allocated = target
        except OSError as exc:
            self._preallocate = False
            logger.warning(
                "cannot preallocate WAL segments in %s (%s); appending without", self._dir, exc
            )

    def _truncate_torn(self, path: Path, offset: int, torn_bytes: int, reason: str) -> None:
        logger.warning(
            "truncating torn tail of WAL segment %s at offset %d (%d bytes): %s",
            path,
            offset,
            torn_bytes,
            reason,
        )
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            if self._fsync:
                datasync(fd)
        finally:
            os.close(fd)

    def _create_segment(self, seq: int, first_index: Index, header: bytes | bytearray) -> None:
        """Create segment ``seq`` atomically with ``header`` in it and make it current."""
        final = self._dir / segment_name(seq, first_index)
        tmp = final.with_name(final.name + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pwrite_all(fd, header, 0)
            self._allocated = len(header)
            self._reserve(fd, len(header))
            if self._fsync:
                datasync(fd)
            os.rename(tmp, final)
            if self._fsync:
                fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        self._segments.append(_Segment(seq=seq, path=final, max_entry_index=0))
        self._fd = fd
        self._size = len(header)
        self._header_size = len(header)
        self._dirty = False

    def _rotate(self) -> None:
        if self._allocated > self._size:
            os.ftruncate(self._fd, self._size)  # only the last segment has a free tail
            self._dirty = True
            self._writes += 1
        if self._fsync and self._dirty:
            datasync(self._fd)
        os.close(self._fd)
        self._fd = -1
        header = bytearray()
        if not self._hard_state.is_empty():
            _append_record(header, RECORD_HARD_STATE, _hard_state_payload(self._hard_state))
        if self._snapshot is not None:
            copy = SnapshotMarker(index=self._snapshot.index, term=self._snapshot.term)
            _append_record(header, RECORD_SNAPSHOT_MARKER, _marker_payload(copy))
        self._create_segment(self._segments[-1].seq + 1, self._last_index + 1, header)

    # -- writing -------------------------------------------------------------

    def append(
        self,
        entries: Sequence[Entry],
        hard_state: HardState | None = None,
        *,
        snapshot: SnapshotMarker | None = None,
    ) -> None:
        """Write one Ready's records (marker, entries, hard state) with one ``write``.

        Not durable until :meth:`sync`. Entries at or below the snapshot index
        are skipped; an entry at or below the last index replaces that suffix.

        Raises:
            StorageError: the marker goes backwards, a record is too large, or
                an I/O error (this or an earlier one: the WAL is then unusable).
            AssertionError: ``entries`` would leave a gap (a caller bug).
        """
        self._check_usable()
        buf = bytearray()
        snap_index = self._snapshot.index if self._snapshot is not None else 0
        last = self._last_index
        if snapshot is not None:
            if snapshot.index < snap_index:
                raise StorageError(
                    f"snapshot marker {snapshot.index} is below the current one {snap_index}"
                )
            _append_record(buf, RECORD_SNAPSHOT_MARKER, _marker_payload(snapshot))
            if not snapshot.keep_entries or snapshot.index > last:
                last = snapshot.index
            snap_index = snapshot.index
        max_entry = 0
        for e in entries:
            if e.index <= snap_index:
                continue
            if e.index > last + 1:
                bug(f"WAL append leaves a gap: last index {last}, appending {e.index}")
            _append_record(buf, RECORD_ENTRY, _entry_payload(e))
            last = e.index
            max_entry = max(max_entry, e.index)
        if hard_state is not None:
            _append_record(buf, RECORD_HARD_STATE, _hard_state_payload(hard_state))
        if not buf:
            return
        try:
            if self._size >= self._segment_bytes and self._size > self._header_size:
                self._rotate()
            self._reserve(self._fd, self._size + len(buf))
            pwrite_all(self._fd, buf, self._size)
        except OSError as exc:
            self._fail(exc)
        self._size += len(buf)
        self._allocated = max(self._allocated, self._size)
        self._dirty = True
        self._writes += 1
        segment = self._segments[-1]
        segment.max_entry_index = max(segment.max_entry_index, max_entry)
        self._last_index = last
        if snapshot is not None:
            self._snapshot = snapshot
        if hard_state is not None:
            self._hard_state = hard_state

    def sync(self) -> None:
        """Make everything appended so far durable: one ``fdatasync``, none if nothing new.

        Raises:
            StorageError: the sync failed; the WAL is then unusable (after a
                failed fsync the kernel may have dropped the dirty pages, so
                retrying could falsely report success).
        """
        self._check_usable()
        if not self._dirty:
            return
        if self._fsync:
            try:
                datasync(self._fd)
            except OSError as exc:
                self._fail(exc)
        self._dirty = False

    @property
    def writes(self) -> int:
        """How many writes were made so far (a sync begun now covers them all)."""
        return self._writes

    def begin_sync(self) -> tuple[int, int] | None:
        """Start a sync to run on another thread while this one appends more.

        Returns:
            A duplicate of the open segment's file descriptor, for the other
            thread to :func:`~raftkv.storage.files.datasync` and then close,
            and the count of writes that sync covers, for :meth:`end_sync`;
            ``None`` if every write is durable already. (A segment rotated
            meanwhile was synced by the rotation; the duplicate stays valid
            after the rotation closes its original.)
        """
        self._check_usable()
        if not self._dirty:
            return None
        if not self._fsync:
            self._dirty = False
            return None
        try:
            fd = os.dup(self._fd)
        except OSError as exc:
            self._fail(exc)
        return fd, self._writes

    def end_sync(self, covered: int, error: OSError | None = None) -> None:
        """A sync from :meth:`begin_sync` ended: the first ``covered`` writes
        are durable.

        Raises:
            StorageError: the sync failed (``error``); the WAL is then unusable,
                as after a failed :meth:`sync`.
        """
        if error is not None:
            self._fail(error)
        if covered == self._writes:
            self._dirty = False

    def release_before(self, index: Index) -> int:
        """Delete the oldest segments whose entries are all below ``index``.

        Never deletes the last segment. ``index`` may not exceed the snapshot
        marker's index + 1: only entries a snapshot holds can be released.

        Returns:
            How many segments were deleted.
        """
        self._check_usable()
        snap_index = self._snapshot.index if self._snapshot is not None else 0
        if index > snap_index + 1:
            raise StorageError(
                f"cannot release entries below {index}: the snapshot marker only covers "
                f"up to {snap_index}"
            )
        released = 0
        while len(self._segments) > 1 and self._segments[0].max_entry_index < index:
            segment = self._segments.pop(0)
            segment.path.unlink()
            released += 1
            logger.info("released WAL segment %s", segment.path)
        if released and self._fsync:
            fsync_dir(self._dir)
        return released

    def close(self) -> None:
        """Close the files and the lock. Does not sync. Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- introspection -----------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def segment_paths(self) -> list[Path]:
        """The segment files, oldest first; the last is the one appended to."""
        return [s.path for s in self._segments]

    @property
    def last_index(self) -> Index:
        return self._last_index

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def snapshot(self) -> SnapshotMarker | None:
        return self._snapshot

    # -- internals -----------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise StorageError(f"WAL in {self._dir} is unusable after an I/O error") from (
                self._failed
            )
        if self._fd < 0:
            raise StorageError(f"WAL in {self._dir} is closed")

    def _fail(self, exc: OSError) -> NoReturn:
        self._failed = exc
        raise StorageError(f"WAL I/O error in {self._dir}: {exc}") from exc


def sync_duplicate(fd: int) -> None:
    """On the thread that runs a sync from :meth:`WAL.begin_sync`: ``datasync``
    the duplicate descriptor, then close it.

    Raises:
        OSError: the sync failed (hand it to :meth:`WAL.end_sync`).
    """
    try:
        datasync(fd)
    finally:
        os.close(fd)
