"""Snapshot files: one checksummed file per snapshot, installed atomically.

Rule: a snapshot file either exists complete and verified, or does not exist.
It is written to a ``.tmp`` name, fsynced, renamed into place and the directory
fsynced, so a crash leaves the previous snapshots untouched and at worst a
``.tmp`` leftover, which is deleted (with a warning) the next time the store is
opened. A file with a snapshot name that fails verification raises
:class:`CorruptSnapshotError` naming it: it is never skipped in favour of an
older one, because the WAL may already have released the entries it holds.

File format
-----------
Files are named ``snap-{term:016x}-{index:016x}.snap`` (the term and index of
the last entry the snapshot covers) and hold::

    [magic: 8 bytes "RKVSNAP\\0"][version: u32 LE][crc: u32 LE]
    [meta_len: u32 LE][data_len: u64 LE][meta: meta_len bytes][data: data_len bytes]

``crc`` is ``zlib.crc32`` of everything after it (the body: both lengths, the
metadata and the data). ``meta`` is a msgpack map ``{"index", "term",
"conf_state": {"voters", "learners", "voters_outgoing", "learners_next",
"auto_leave"}}``; its index and term must match the file name. The file size
must be exactly what the lengths say.

Retention
---------
:meth:`SnapshotStore.save` deletes all but the newest ``retain`` snapshots
(default 2) once the new one is durable, unless told not to (a caller that
must first record the new snapshot elsewhere -- :class:`DiskStorage` writing its
WAL marker -- calls :meth:`SnapshotStore.purge` itself afterwards).

The store does not lock its directory; :class:`~raftkv.storage.DiskStorage`
owns it under the WAL's lock.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import msgpack

from raftkv.core.types import ConfState, Index, NodeId, Snapshot, SnapshotMetadata, Term
from raftkv.storage.errors import CorruptSnapshotError, StorageError
from raftkv.storage.files import datasync, fsync_dir, write_all

__all__ = [
    "SnapshotStore",
    "SnapshotFile",
    "snapshot_name",
    "SNAPSHOT_MAGIC",
    "SNAPSHOT_VERSION",
    "DEFAULT_RETAIN",
]

logger = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"RKVSNAP\x00"
SNAPSHOT_VERSION = 1
DEFAULT_RETAIN = 2

_PREFIX = struct.Struct("<8sII")  # magic, version, crc
_LENGTHS = struct.Struct("<IQ")  # meta_len, data_len (the start of the checksummed body)
_HEADER_SIZE = _PREFIX.size + _LENGTHS.size
_NAME_RE = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_TMP_SUFFIX = ".tmp"
_CONF_FIELDS = ("voters", "learners", "voters_outgoing", "learners_next")


def snapshot_name(term: Term, index: Index) -> str:
    """The file name of the snapshot covering the log up to ``index`` (of ``term``)."""
    return f"snap-{term:016x}-{index:016x}.snap"


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotFile:
    """A snapshot file found in the store, known by its name only (not yet verified)."""

    path: Path
    term: Term
    index: Index


# -- encoding ------------------------------------------------------------------


def _encode(snapshot: Snapshot) -> bytes:
    md = snapshot.metadata
    cs = md.conf_state
    conf: dict[str, object] = {f: list(getattr(cs, f)) for f in _CONF_FIELDS}
    conf["auto_leave"] = cs.auto_leave
    meta: bytes = msgpack.packb(
        {"index": md.index, "term": md.term, "conf_state": conf}, use_bin_type=True
    )
    data = bytes(snapshot.data)
    body = _LENGTHS.pack(len(meta), len(data)) + meta + data
    return _PREFIX.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, zlib.crc32(body)) + body


def _is_uint(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _node_ids(x: object) -> tuple[NodeId, ...]:
    if not isinstance(x, list) or not all(isinstance(n, str) for n in x):
        raise ValueError(f"malformed node id list {x!r:.80}")
    return tuple(NodeId(n) for n in x)


def _decode(raw: bytes) -> Snapshot:
    """Verify and decode a snapshot file's bytes. Raises ValueError saying what is wrong."""
    if len(raw) < _HEADER_SIZE:
        raise ValueError(f"file too short for a header ({len(raw)} of {_HEADER_SIZE} bytes)")
    magic, version, crc = _PREFIX.unpack_from(raw, 0)
    if magic != SNAPSHOT_MAGIC:
        raise ValueError(f"bad magic {magic!r}")
    if version != SNAPSHOT_VERSION:
        raise ValueError(f"unsupported version {version}")
    meta_len, data_len = _LENGTHS.unpack_from(raw, _PREFIX.size)
    expected = _HEADER_SIZE + meta_len + data_len
    if len(raw) != expected:
        raise ValueError(f"file is {len(raw)} bytes, header says {expected}")
    actual = zlib.crc32(memoryview(raw)[_PREFIX.size :])
    if actual != crc:
        raise ValueError(f"checksum mismatch (expected {crc:#010x}, got {actual:#010x})")
    meta_end = _HEADER_SIZE + meta_len
    try:
        meta: object = msgpack.unpackb(raw[_HEADER_SIZE:meta_end], raw=False, use_list=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"metadata is not a map: {meta!r:.80}")
    index, term, conf = meta.get("index"), meta.get("term"), meta.get("conf_state")
    if not (_is_uint(index) and _is_uint(term) and isinstance(conf, dict)):
        raise ValueError(f"malformed metadata {meta!r:.80}")
    if index == 0:
        raise ValueError("metadata index is 0 (an empty snapshot)")
    auto_leave = conf.get("auto_leave")
    if not isinstance(auto_leave, bool):
        raise ValueError(f"malformed conf_state {conf!r:.80}")
    voters, learners, outgoing, learners_next = (_node_ids(conf.get(f)) for f in _CONF_FIELDS)
    conf_state = ConfState(
        voters=voters,
        learners=learners,
        voters_outgoing=outgoing,
        learners_next=learners_next,
        auto_leave=auto_leave,
    )
    return Snapshot(
        metadata=SnapshotMetadata(index=index, term=term, conf_state=conf_state),
        data=raw[meta_end:],
    )


# -- the store -----------------------------------------------------------------


class SnapshotStore:
    """The snapshot files of one node, in one directory. Not thread-safe.

    Creating a store creates the directory if needed and deletes leftover
    ``.tmp`` files (interrupted saves).
    """

    __slots__ = ("_dir", "_fsync", "_retain")

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        retain: int = DEFAULT_RETAIN,
    ) -> None:
        """Open the store in ``directory``.

        Args:
            directory: where the snapshot files live; created if missing.
            fsync: sync writes. ``False`` is UNSAFE (tests/benchmarks only).
            retain: how many of the newest snapshots :meth:`purge` keeps (>= 1).

        Raises:
            ValueError: ``retain`` is below 1.
            StorageError: an I/O error creating or cleaning the directory.
        """
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain}")
        self._dir = Path(directory)
        self._fsync = fsync
        self._retain = retain
        try:
            if not self._dir.is_dir():
                self._dir.mkdir(parents=True)
                if fsync:
                    fsync_dir(self._dir.parent)
            for tmp in self._dir.glob(f"*.snap{_TMP_SUFFIX}"):
                logger.warning("removing unfinished snapshot file %s", tmp)
                tmp.unlink()
        except OSError as exc:
            raise StorageError(f"snapshot directory {self._dir}: {exc}") from exc

    @property
    def directory(self) -> Path:
        return self._dir

    def files(self) -> list[SnapshotFile]:
        """The snapshot files present, oldest (lowest index) first; not verified."""
        found: list[SnapshotFile] = []
        for child in self._dir.iterdir():
            match = _NAME_RE.match(child.name)
            if match is not None:
                term, index = int(match.group(1), 16), int(match.group(2), 16)
                found.append(SnapshotFile(path=child, term=term, index=index))
        found.sort(key=lambda f: (f.index, f.term))
        return found

    def save(self, snapshot: Snapshot, *, purge: bool = True) -> Path:
        """Write ``snapshot`` durably (tmp, fsync, rename, fsync dir), then purge old ones.

        Args:
            snapshot: a non-empty snapshot.
            purge: after the new file is durable, delete all but the newest
                ``retain`` snapshots.

        Returns:
            The path of the new file.

        Raises:
            ValueError: ``snapshot`` is empty.
            StorageError: an I/O error (the previous snapshots are intact).
        """
        md = snapshot.metadata
        if snapshot.is_empty():
            raise ValueError("cannot save an empty snapshot")
        final = self._dir / snapshot_name(md.term, md.index)
        tmp = final.with_name(final.name + _TMP_SUFFIX)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                write_all(fd, _encode(snapshot))
                if self._fsync:
                    datasync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            if self._fsync:
                fsync_dir(self._dir)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot save snapshot {final}: {exc}") from exc
        logger.info("saved snapshot %s (%d bytes of data)", final, len(snapshot.data))
        if purge:
            self.purge()
        return final

    def load(self, path: str | os.PathLike[str]) -> Snapshot:
        """Read and verify one snapshot file.

        Raises:
            CorruptSnapshotError: the file fails verification, or its metadata
                disagrees with its name.
            StorageError: it cannot be read.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read snapshot {path}: {exc}") from exc
        try:
            snapshot = _decode(raw)
        except ValueError as exc:
            raise CorruptSnapshotError(path, str(exc)) from None
        md = snapshot.metadata
        match = _NAME_RE.match(path.name)
        if match is not None and (int(match.group(1), 16), int(match.group(2), 16)) != (
            md.term,
            md.index,
        ):
            raise CorruptSnapshotError(
                path, f"metadata says term {md.term} index {md.index}, unlike the file name"
            )
        return snapshot

    def load_latest(self) -> Snapshot | None:
        """The newest snapshot, or None if there is none.

        Raises:
            CorruptSnapshotError: the newest file is damaged (older ones are not
                tried: see the module docstring).
        """
        files = self.files()
        return self.load(files[-1].path) if files else None

    def purge(self) -> int:
        """Delete all but the newest ``retain`` snapshots; return how many were deleted."""
        doomed = self.files()[: -self._retain]
        for f in doomed:
            self.remove(f.path, sync=False)
        if doomed and self._fsync:
            fsync_dir(self._dir)
        return len(doomed)

    def remove(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        """Delete one snapshot file (and sync the directory if ``sync``)."""
        Path(path).unlink()
        logger.info("removed snapshot %s", path)
        if sync and self._fsync:
            fsync_dir(self._dir)
