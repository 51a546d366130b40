"""The WAL's records: their framing and payloads, scanning a segment's bytes,
and the rules for replaying records into a log.

Rule: a record read back is either verified (length, checksum, type, a
well-formed payload) or reported as bad with its offset and whether it may be a
torn tail; what to do about a bad record is :class:`~raftkv.storage.wal.WAL`'s
decision. The files themselves (segments, preallocation, rotation, recovery)
are :mod:`raftkv.storage.wal`.

File format
-----------
A WAL is a directory of segment files named ``{seq:016x}-{first_index:016x}.wal``:
``seq`` counts up from 0 with no gaps; ``first_index`` is the index the next
entry was expected to have when the segment was created (informational).
A segment is a sequence of records::

    [length: u32 LE][crc: u32 LE][type: u8][payload: length bytes]

``crc`` is ``zlib.crc32(type byte + payload)``. (crc32c, which etcd uses and
which has hardware support, is not in the standard library; CRC-32 detects the
same classes of error, only more slowly.) ``length`` is the payload length, at
most :data:`MAX_RECORD_BYTES`. Type 0 is never valid, so zero-filled space is
never mistaken for a record. Payloads are msgpack arrays:

=================  ======================================  ============================
type               payload                                 meaning on replay
=================  ======================================  ============================
1 ENTRY            ``[term, index, entry_type, data]``     drop entries >= index, append
2 HARD_STATE       ``[term, vote or nil, commit]``         the last one wins
3 SNAPSHOT_MARKER  ``[index, term, keep_entries]``         entries <= index are in a
                                                           snapshot; later entries stay
                                                           iff ``keep_entries``
=================  ======================================  ============================
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from raftkv.core.types import Entry, EntryType, HardState, Index, NodeId, Term
from raftkv.storage.errors import StorageError

__all__ = [
    "SnapshotMarker",
    "RECORD_ENTRY",
    "RECORD_HARD_STATE",
    "RECORD_SNAPSHOT_MARKER",
    "HEADER_SIZE",
    "MAX_RECORD_BYTES",
]

RECORD_ENTRY = 1
RECORD_HARD_STATE = 2
RECORD_SNAPSHOT_MARKER = 3
_RECORD_TYPES = frozenset({RECORD_ENTRY, RECORD_HARD_STATE, RECORD_SNAPSHOT_MARKER})
_TYPE_CRC = {t: zlib.crc32(bytes((t,))) for t in _RECORD_TYPES}
_TYPE_BYTE_RE = re.compile(b"[" + bytes(sorted(_RECORD_TYPES)) + b"]")

_HEADER = struct.Struct("<IIB")
HEADER_SIZE = _HEADER.size
"""Bytes before each payload: length, crc, type."""
MAX_RECORD_BYTES = 64 * 1024 * 1024
"""Largest payload accepted; a larger length field on disk is corruption."""

_ENTRY_TYPES = {t.value: t for t in EntryType}


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMarker:
    """Entries up to ``index`` (whose term is ``term``) are held by a snapshot.

    ``keep_entries=True`` is log compaction: entries after ``index`` stay.
    ``keep_entries=False`` is installing a snapshot received from a leader: the
    log is replaced by the snapshot, so every entry written before the marker
    goes. Making this explicit (rather than comparing terms on replay) keeps
    replay correct even after the segments holding entry ``index`` were released.
    """

    index: Index
    term: Term
    keep_entries: bool = True


# -- encoding ----------------------------------------------------------------


def _append_record(buf: bytearray, rtype: int, payload: bytes) -> None:
    if len(payload) > MAX_RECORD_BYTES:
        raise StorageError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    buf += _HEADER.pack(len(payload), zlib.crc32(payload, _TYPE_CRC[rtype]), rtype)
    buf += payload


def _pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _entry_payload(e: Entry) -> bytes:
    return _pack([e.term, e.index, e.type.value, bytes(e.data)])


def _hard_state_payload(hs: HardState) -> bytes:
    return _pack([hs.term, hs.vote, hs.commit])


def _marker_payload(m: SnapshotMarker) -> bytes:
    return _pack([m.index, m.term, m.keep_entries])


# -- decoding (payload already checksummed; malformed means corrupt) ---------


def _is_uint(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _decode(rtype: int, payload: bytes) -> Entry | HardState | SnapshotMarker:
    """Decode a checksummed payload. Raises ValueError describing what is wrong."""
    try:
        obj: object = msgpack.unpackb(payload, raw=False, use_list=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable payload ({exc})") from exc
    if not isinstance(obj, list):
        raise ValueError(f"payload is not an array: {obj!r:.80}")
    if rtype == RECORD_ENTRY:
        if len(obj) == 4:
            term, index, etype, data = obj
            if (
                _is_uint(term)
                and _is_uint(index)
                and index >= 1
                and etype in _ENTRY_TYPES
                and isinstance(data, bytes)
            ):
                return Entry(term=term, index=index, data=data, type=_ENTRY_TYPES[etype])
        raise ValueError(f"malformed entry payload {obj!r:.80}")
    if rtype == RECORD_HARD_STATE:
        if len(obj) == 3:
            term, vote, commit = obj
            if _is_uint(term) and _is_uint(commit) and (vote is None or isinstance(vote, str)):
                return HardState(
                    term=term, vote=None if vote is None else NodeId(vote), commit=commit
                )
        raise ValueError(f"malformed hard state payload {obj!r:.80}")
    if rtype == RECORD_SNAPSHOT_MARKER:
        if len(obj) == 3:
            index, term, keep = obj
            if _is_uint(index) and _is_uint(term) and isinstance(keep, bool):
                return SnapshotMarker(index=index, term=term, keep_entries=keep)
        raise ValueError(f"malformed snapshot marker payload {obj!r:.80}")
    raise ValueError(f"unknown record type {rtype}")


# -- reading segments ----------------------------------------------------------


class _BadRecord(Exception):
    """A record that failed verification at ``offset``.

    ``maybe_torn`` is true for damage an interrupted write can cause (short
    header, length past EOF or insane, checksum mismatch); false for damage
    behind a valid checksum, which no torn write produces.
    """

    def __init__(self, offset: int, reason: str, *, maybe_torn: bool) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason
        self.maybe_torn = maybe_torn


def _check_record(data: bytes, pos: int) -> tuple[int, int, int]:
    """Verify the record at ``pos``; return (type, payload start, end). Raises _BadRecord."""
    size = len(data)
    if size - pos < HEADER_SIZE:
        raise _BadRecord(
            pos, f"short record header ({size - pos} of {HEADER_SIZE} bytes)", maybe_torn=True
        )
    length, crc, rtype = _HEADER.unpack_from(data, pos)
    if length > MAX_RECORD_BYTES:
        raise _BadRecord(
            pos, f"record length {length} exceeds limit {MAX_RECORD_BYTES}", maybe_torn=True
        )
    start = pos + HEADER_SIZE
    end = start + length
    if end > size:
        raise _BadRecord(
            pos,
            f"record length {length} runs past end of file ({size - start} bytes left)",
            maybe_torn=True,
        )
    actual = zlib.crc32(data[start - 1 : end])  # the type byte and the payload
    if actual != crc:
        raise _BadRecord(
            pos, f"checksum mismatch (expected {crc:#010x}, got {actual:#010x})", maybe_torn=True
        )
    if rtype not in _RECORD_TYPES:
        raise _BadRecord(pos, f"unknown record type {rtype}", maybe_torn=False)
    return rtype, start, end


def _valid_record_after(data: bytes, start: int) -> int | None:
    """The offset of the first verifiable record at or after ``start``, if any.

    Tries every offset, so a damaged length field cannot hide the records after
    it; only offsets whose type byte is valid get their checksum computed.
    """
    size = len(data)
    if start >= size or _zero_from(data, start):
        return None  # nothing, or a zero-filled tail
    type_pos = start + HEADER_SIZE - 1
    for match in _TYPE_BYTE_RE.finditer(data, type_pos):
        pos = match.start() - (HEADER_SIZE - 1)
        length, crc, rtype = _HEADER.unpack_from(data, pos)
        end = pos + HEADER_SIZE + length
        if end <= size and zlib.crc32(data[pos + HEADER_SIZE : end], _TYPE_CRC[rtype]) == crc:
            return pos
    return None


def _zero_from(data: bytes, start: int) -> bool:
    """Whether every byte of ``data`` from ``start`` on is zero."""
    return data.count(0, start) == len(data) - start


def _records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield (offset, type, payload) for each record; raise _BadRecord at the first bad one."""
    pos = 0
    while pos < len(data):
        rtype, start, end = _check_record(data, pos)
        yield pos, rtype, data[start:end]
        pos = end


class _Replay:
    """Rebuilds the log from records, in order (the meaning column of the format table)."""

    def __init__(self, *, allow_hole: bool) -> None:
        self.hard_state = HardState()
        self.snapshot: SnapshotMarker | None = None
        self.entries: list[Entry] = []
        # Invariant: entries[i].index == first + i; entries empty => first == snap_index + 1.
        # first > snap_index + 1 only while a released prefix leaves a hole (see allow_hole).
        self.first: Index = 1
        # Segments before the first one present were released: the first entry
        # record may then start above snap_index + 1; the snapshot marker that
        # justified the release must cover that hole by the end of replay.
        self._allow_hole = allow_hole
        self._seen_entry = False

    @property
    def snap_index(self) -> Index:
        return self.snapshot.index if self.snapshot is not None else 0

    def last_index(self) -> Index:
        return self.first + len(self.entries) - 1

    def apply(self, record: Entry | HardState | SnapshotMarker) -> str | None:
        """Apply one record; return why it is inconsistent, or None."""
        if isinstance(record, HardState):
            self.hard_state = record
            return None
        if isinstance(record, SnapshotMarker):
            return self._marker(record)
        return self._entry(record)

    def _entry(self, e: Entry) -> str | None:
        if e.index <= self.snap_index:
            return None  # already in the snapshot
        if e.index > self.last_index() + 1:
            if not self._allow_hole or self._seen_entry:
                return f"entry {e.index} leaves a gap after last index {self.last_index()}"
            self.entries = [e]
            self.first = e.index
        elif e.index < self.first:
            self.entries = [e]  # replaces everything recovered so far (and the hole)
            self.first = e.index
        else:
            del self.entries[e.index - self.first :]
            self.entries.append(e)
        self._seen_entry = True
        return None

    def _marker(self, m: SnapshotMarker) -> str | None:
        if m.index < self.snap_index:
            return f"snapshot marker {m.index} goes back from {self.snap_index}"
        if not m.keep_entries:
            self.entries = []
        else:
            if self.first <= m.index <= self.last_index():
                have = self.entries[m.index - self.first].term
                if have != m.term:
                    return f"snapshot marker {m.index}/{m.term} contradicts entry term {have}"
            drop = m.index - self.first + 1
            if drop > 0:
                del self.entries[:drop]
                self.first += drop
        self.snapshot = m
        if not self.entries:
            self.first = m.index + 1
        return None

    def hole(self) -> str | None:
        if self.entries and self.first > self.snap_index + 1:
            return (
                f"entries {self.snap_index + 1}..{self.first - 1} are missing "
                f"(a released segment was not covered by a snapshot marker)"
            )
        return None
