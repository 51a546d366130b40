"""WAL format, recovery, torn tails, corruption, rotation and release
(raftkv.storage.wal, raftkv.storage.walrecords)."""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

import raftkv.storage.wal as wal_module
from raftkv.core.types import Entry, EntryType, HardState, NodeId
from raftkv.storage import CorruptLogError, StorageError
from raftkv.storage.wal import WAL, Recovered, segment_name
from raftkv.storage.walrecords import HEADER_SIZE, RECORD_ENTRY, SnapshotMarker


def ents(lo: int, hi: int, term: int = 1, tag: str = "") -> list[Entry]:
    """Entries lo..hi-1 with a payload naming them."""
    return [Entry(term=term, index=i, data=f"{tag}{i}".encode()) for i in range(lo, hi)]


def hs(term: int, vote: str | None = None, commit: int = 0) -> HardState:
    return HardState(term=term, vote=None if vote is None else NodeId(vote), commit=commit)


def reopen(path: Path, **kwargs: object) -> Recovered:
    wal, rec = WAL.open(path, fsync=False, **kwargs)  # type: ignore[arg-type]
    wal.close()
    return rec


def only_segment(path: Path) -> Path:
    segments = sorted(path.glob("*.wal"))
    assert len(segments) == 1, segments
    return segments[0]


def raw_record(rtype: int, payload: bytes) -> bytes:
    return struct.pack("<IIB", len(payload), zlib.crc32(bytes([rtype]) + payload), rtype) + payload


# -- round trips -----------------------------------------------------------------


def test_round_trip_over_several_readys(tmp_path: Path) -> None:
    wal, rec = WAL.open(tmp_path / "wal")
    assert rec == Recovered(hard_state=HardState(), snapshot=None, entries=())
    wal.append(ents(1, 4), hs(1, "n1", 0))
    wal.sync()
    wal.append(ents(4, 5), None)  # entries only
    wal.sync()
    wal.append([], hs(2, "n2", 3))  # hard state only
    wal.sync()
    conf = Entry(term=2, index=5, data=b"\x00\xffbinary", type=EntryType.CONF_CHANGE)
    wal.append([conf], hs(2, "n2", 4))
    wal.sync()
    wal.close()

    rec = reopen(tmp_path / "wal")
    assert rec.entries == (*ents(1, 5), conf)
    assert rec.hard_state == hs(2, "n2", 4)
    assert rec.snapshot is None
    assert rec.torn_bytes == 0


def test_suffix_replacement_survives_reopen(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 10, term=1), hs(1))
    wal.append(ents(6, 8, term=2), hs(2))  # a follower overwrites 6..9 with 6..7
    wal.append(ents(8, 9, term=2), None)
    wal.append(ents(3, 4, term=3), None)  # and later 3.. with a single entry
    wal.append(ents(4, 6, term=3, tag="x"), None)
    wal.sync()
    wal.close()
    rec = reopen(tmp_path)
    assert rec.entries == (*ents(1, 3, term=1), *ents(3, 4, term=3), *ents(4, 6, term=3, tag="x"))
    assert rec.hard_state == hs(2)


def test_appending_continues_after_reopen(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 3), hs(1))
    wal.close()
    wal, rec = WAL.open(tmp_path, fsync=False)
    assert wal.last_index == 2
    wal.append(ents(3, 5), hs(1, commit=4))
    wal.close()
    rec = reopen(tmp_path)
    assert rec.entries == tuple(ents(1, 5))
    assert rec.hard_state == hs(1, commit=4)


def test_append_with_a_gap_is_a_caller_bug(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 3), None)
    with pytest.raises(AssertionError, match="gap"):
        wal.append(ents(5, 6), None)
    wal.close()
    assert reopen(tmp_path).entries == tuple(ents(1, 3))


def test_record_layout_is_as_documented(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append([Entry(term=7, index=1, data=b"hi")], None)
    wal.close()
    data = only_segment(tmp_path).read_bytes()
    payload = msgpack.packb([7, 1, 0, b"hi"], use_bin_type=True)
    assert data == raw_record(RECORD_ENTRY, payload)
    assert only_segment(tmp_path).name == segment_name(0, 1) == f"{0:016x}-{1:016x}.wal"


# -- fresh logs ------------------------------------------------------------------


def test_missing_directory_is_a_fresh_log(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "wal"
    rec = reopen(path)
    assert rec.entries == () and rec.hard_state == HardState() and rec.snapshot is None
    assert path.is_dir()


def test_empty_directory_is_a_fresh_log(tmp_path: Path) -> None:
    assert reopen(tmp_path).entries == ()


def test_zero_length_segment_is_a_fresh_log(tmp_path: Path) -> None:
    (tmp_path / segment_name(0, 1)).write_bytes(b"")
    wal, rec = WAL.open(tmp_path, fsync=False)
    assert rec.entries == () and rec.torn_bytes == 0
    wal.append(ents(1, 2), None)
    wal.close()
    assert reopen(tmp_path).entries == tuple(ents(1, 2))
    assert len(list(tmp_path.glob("*.wal"))) == 1


def test_unfinished_tmp_segment_is_removed(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 3), None)
    wal.close()
    tmp = tmp_path / (segment_name(1, 3) + ".tmp")
    tmp.write_bytes(b"half a header")
    assert reopen(tmp_path).entries == tuple(ents(1, 3))
    assert not tmp.exists()


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    with pytest.raises(StorageError, match="in use"):
        WAL.open(tmp_path, fsync=False)
    wal.close()
    reopen(tmp_path)  # the lock went with close()


# -- torn tails ------------------------------------------------------------------


def _write_log(path: Path, n: int) -> tuple[int, int]:
    """n entries, one per Ready; return the segment size before and after the last one."""
    wal, _ = WAL.open(path, fsync=False)
    for i in range(1, n):
        wal.append(ents(i, i + 1), hs(1, commit=i - 1))
    before = only_segment(path).stat().st_size
    wal.append(ents(n, n + 1, tag="last entry with some payload "), None)
    wal.close()
    return before, only_segment(path).stat().st_size


def test_torn_tail_at_every_cut_point_of_the_last_record(tmp_path: Path) -> None:
    before, after = _write_log(tmp_path, 5)
    segment = only_segment(tmp_path)
    full = segment.read_bytes()
    assert after - before > HEADER_SIZE
    for cut in range(1, after - before + 1):
        segment.write_bytes(full[: after - cut])
        wal, rec = WAL.open(tmp_path)
        assert rec.entries == tuple(ents(1, 5)), cut
        assert rec.hard_state == hs(1, commit=3)
        assert rec.torn_bytes == after - before - cut
        assert segment.stat().st_size == before, cut
        # The log stays appendable where the torn record was.
        wal.append(ents(5, 6, term=2), None)
        wal.close()
        assert reopen(tmp_path).entries == (*ents(1, 5), *ents(5, 6, term=2))


def test_torn_tail_inside_a_multi_record_ready(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 3), hs(1))
    wal.append(ents(3, 6), hs(2, commit=2))  # four records in one write
    wal.close()
    segment = only_segment(tmp_path)
    data = segment.read_bytes()
    last = _record_offsets(data)[-1]
    segment.write_bytes(data[: last + 3])  # the hard state record is cut
    rec = reopen(tmp_path)
    assert rec.entries == tuple(ents(1, 6))
    assert rec.hard_state == hs(1)


def test_zero_filled_tail_ends_the_records_and_is_cut_off(tmp_path: Path) -> None:
    # Space never written (or preallocated) is not a torn record.
    _, after = _write_log(tmp_path, 4)
    segment = only_segment(tmp_path)
    with segment.open("ab") as f:
        f.write(bytes(4096))
    rec = reopen(tmp_path)
    assert rec.entries == (*ents(1, 4), *ents(4, 5, tag="last entry with some payload "))
    assert rec.torn_bytes == 0
    assert segment.stat().st_size == after


def test_torn_record_followed_by_zeros_is_truncated(tmp_path: Path) -> None:
    before, _ = _write_log(tmp_path, 4)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[before + HEADER_SIZE :] = bytes(len(data) - before - HEADER_SIZE + 512)
    segment.write_bytes(bytes(data))
    assert reopen(tmp_path).entries == tuple(ents(1, 4))
    assert segment.stat().st_size == before


def test_garbage_tail_without_any_valid_record_is_truncated(tmp_path: Path) -> None:
    # Reused disk blocks can leave non-zero garbage after a torn write.
    _, after = _write_log(tmp_path, 4)
    segment = only_segment(tmp_path)
    with segment.open("ab") as f:
        f.write(random.Random(7).randbytes(64 * 1024))
    assert len(reopen(tmp_path).entries) == 4
    assert segment.stat().st_size == after


def test_torn_tail_truncation_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    before, after = _write_log(tmp_path, 3)
    segment = only_segment(tmp_path)
    os.truncate(segment, after - 1)
    with caplog.at_level("WARNING", logger="raftkv.storage.wal"):
        reopen(tmp_path)
    assert f"{segment} at offset {before}" in caplog.text


# -- corruption ------------------------------------------------------------------


def _record_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        (length,) = struct.unpack_from("<I", data, pos)
        pos += HEADER_SIZE + length
    return offsets


def test_flipped_byte_before_the_tail_is_corruption_at_that_record(tmp_path: Path) -> None:
    _write_log(tmp_path, 6)
    segment = only_segment(tmp_path)
    good = segment.read_bytes()
    offsets = _record_offsets(good)
    victim = offsets[3]  # followed by several valid records
    for pos in range(victim, offsets[4]):
        bad = bytearray(good)
        bad[pos] ^= 0xFF
        segment.write_bytes(bytes(bad))
        with pytest.raises(CorruptLogError) as info:
            reopen(tmp_path)
        err = info.value
        assert (err.path, err.offset) == (str(segment), victim), pos
        assert f"corrupt WAL record in {segment} at offset {victim}: " in str(err)
        assert segment.read_bytes() == bytes(bad), "a corrupt log must not be modified"


def test_checksum_mismatch_message(tmp_path: Path) -> None:
    _write_log(tmp_path, 3)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[HEADER_SIZE + 1] ^= 0x01  # payload of the first record
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match=r"at offset 0: checksum mismatch \(expected 0x"):
        reopen(tmp_path)


def test_flipped_byte_in_the_last_record_of_a_non_last_segment(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=64)
    for i in range(1, 8):
        wal.append(ents(i, i + 1), None)
    wal.close()
    first = sorted(tmp_path.glob("*.wal"))[0]
    data = bytearray(first.read_bytes())
    last_record = _record_offsets(bytes(data))[-1]
    data[-1] ^= 0x55  # the tail of a segment that is not the last one
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as info:
        reopen(tmp_path, segment_bytes=64)
    assert (info.value.path, info.value.offset) == (str(first), last_record)
    assert "not the last segment" in str(info.value)


def test_truncated_non_last_segment_is_corruption(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=64)
    for i in range(1, 8):
        wal.append(ents(i, i + 1), None)
    wal.close()
    first = sorted(tmp_path.glob("*.wal"))[0]
    os.truncate(first, first.stat().st_size - 3)
    with pytest.raises(CorruptLogError, match=r"short record header|runs past end"):
        reopen(tmp_path, segment_bytes=64)


def test_unknown_record_type_is_corruption_even_at_the_tail(tmp_path: Path) -> None:
    _write_log(tmp_path, 3)
    segment = only_segment(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(raw_record(9, b"\x90"))
    with pytest.raises(CorruptLogError, match=f"offset {size}: unknown record type 9"):
        reopen(tmp_path)


def test_malformed_payload_behind_a_valid_checksum_is_corruption(tmp_path: Path) -> None:
    _write_log(tmp_path, 3)
    segment = only_segment(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(raw_record(RECORD_ENTRY, msgpack.packb(["not", "an", "entry"])))
    with pytest.raises(CorruptLogError, match=f"offset {size}: malformed entry payload"):
        reopen(tmp_path)


def test_insane_length_before_the_tail_is_corruption_not_memory_error(tmp_path: Path) -> None:
    _write_log(tmp_path, 4)
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    victim = _record_offsets(bytes(data))[1]
    data[victim : victim + 4] = struct.pack("<I", 0xFFFFFFF0)
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match=f"offset {victim}: record length 4294967280"):
        reopen(tmp_path)


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=64)
    for i in range(1, 10):
        wal.append(ents(i, i + 1), None)
    paths = wal.segment_paths
    wal.close()
    assert len(paths) >= 3
    paths[1].unlink()
    with pytest.raises(CorruptLogError, match="segment 0000000000000001 is missing"):
        reopen(tmp_path)


def test_deleting_segments_no_snapshot_covers_is_detected(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=64)
    for i in range(1, 10):
        wal.append(ents(i, i + 1), None)
    paths = wal.segment_paths
    wal.close()
    paths[0].unlink()  # by hand: no snapshot marker says entries 1.. are elsewhere
    with pytest.raises(CorruptLogError, match=r"entries 1\.\.\d+ are missing"):
        reopen(tmp_path)


# -- rotation and release ----------------------------------------------------------


def test_rotation_and_reopen_across_segments(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=200)
    for lo in range(1, 100, 3):
        wal.append(ents(lo, lo + 3), hs(1, commit=lo))
    wal.append(ents(50, 52, term=2), hs(2, commit=49))  # a suffix replacement across segments
    paths = wal.segment_paths
    wal.close()
    assert len(paths) > 5
    assert [p.name[:16] for p in paths] == [f"{i:016x}" for i in range(len(paths))]
    assert all(p.stat().st_size < 200 + 100 for p in paths)
    rec = reopen(tmp_path, segment_bytes=200)
    assert rec.entries == (*ents(1, 50), *ents(50, 52, term=2))
    assert rec.hard_state == hs(2, commit=49)


def test_segment_name_carries_the_next_index(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=1)
    wal.append(ents(1, 4), None)
    wal.append(ents(4, 5), None)
    wal.append(ents(5, 9), None)
    assert [p.name for p in wal.segment_paths] == [
        segment_name(0, 1),
        segment_name(1, 4),
        segment_name(2, 5),
    ]
    wal.close()


def test_release_before_deletes_covered_segments_and_keeps_state(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=150)
    wal.append([], hs(5, "n3", 0))  # the only hard state: it lives in segment 0
    for i in range(1, 41):
        wal.append(ents(i, i + 1, term=5), None)
    assert len(wal.segment_paths) > 4
    with pytest.raises(StorageError, match="snapshot marker only covers up to 0"):
        wal.release_before(2)
    wal.append([], None, snapshot=SnapshotMarker(index=30, term=5))
    wal.sync()
    before = wal.segment_paths
    released = wal.release_before(31)
    after = wal.segment_paths
    assert released > 0 and after == before[released:]
    assert not before[0].exists()
    wal.close()

    rec = reopen(tmp_path, segment_bytes=150)
    assert rec.hard_state == hs(5, "n3", 0)  # carried by the segment headers
    assert rec.snapshot == SnapshotMarker(index=30, term=5)
    assert rec.entries == tuple(ents(31, 41, term=5))


def test_release_never_deletes_the_last_segment(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=64)
    for i in range(1, 6):
        wal.append(ents(i, i + 1), None)
    wal.append([], None, snapshot=SnapshotMarker(index=5, term=1))
    wal.release_before(6)
    assert len(wal.segment_paths) == 1
    wal.append(ents(6, 7), None)
    wal.close()
    rec = reopen(tmp_path)
    assert rec.snapshot == SnapshotMarker(index=5, term=1)
    assert rec.entries == tuple(ents(6, 7))


def test_release_keeps_segments_with_entries_at_or_above_index(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=64)
    for i in range(1, 11):
        wal.append(ents(i, i + 1), None)
    wal.append([], None, snapshot=SnapshotMarker(index=4, term=1))
    wal.release_before(5)
    wal.close()
    rec = reopen(tmp_path)
    assert rec.entries == tuple(ents(5, 11))


def test_snapshot_marker_compaction_and_install(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 11), hs(1, commit=10))
    wal.append([], None, snapshot=SnapshotMarker(index=4, term=1))  # compaction keeps 5..
    wal.close()
    rec = reopen(tmp_path)
    assert rec.entries == tuple(ents(5, 11))

    wal, _ = WAL.open(tmp_path, fsync=False)
    # Installing a leader's snapshot replaces the log, even the matching part.
    wal.append(
        ents(21, 23, term=3),
        hs(3, commit=20),
        snapshot=SnapshotMarker(index=20, term=3, keep_entries=False),
    )
    with pytest.raises(StorageError, match="below the current one"):
        wal.append([], None, snapshot=SnapshotMarker(index=19, term=3))
    wal.close()
    rec = reopen(tmp_path)
    assert rec.snapshot == SnapshotMarker(index=20, term=3, keep_entries=False)
    assert rec.entries == tuple(ents(21, 23, term=3))


def test_install_marker_below_last_index_discards_the_suffix(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.append(ents(1, 11, term=1), None)
    wal.append([], None, snapshot=SnapshotMarker(index=6, term=2, keep_entries=False))
    assert wal.last_index == 6
    wal.append(ents(7, 8, term=2), None)
    wal.close()
    assert reopen(tmp_path).entries == tuple(ents(7, 8, term=2))


# -- syncing -----------------------------------------------------------------------


class _SyncCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.calls = 0
        self._real = os.fdatasync
        self._fail = fail
        monkeypatch.setattr(os, "fdatasync", self)

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self._fail:
            raise OSError(5, "Input/output error")
        self._real(fd)


def test_one_fdatasync_per_append_and_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal, _ = WAL.open(tmp_path)
    counter = _SyncCounter(monkeypatch)
    writes: list[int] = []
    real_pwrite = os.pwrite

    def counting_pwrite(fd: int, data: bytes, offset: int) -> int:
        writes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting_pwrite)
    for ready in range(10):
        wal.append(ents(ready * 64 + 1, ready * 64 + 65), hs(1, commit=ready * 64))
        wal.sync()
        assert counter.calls == ready + 1
    assert len(writes) == 10, "one write per Ready"
    wal.sync()  # nothing new: no syscall
    assert counter.calls == 10
    wal.close()


def test_fsync_false_never_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = _SyncCounter(monkeypatch)
    fsyncs: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd))
    wal, _ = WAL.open(tmp_path / "wal", fsync=False, segment_bytes=64)
    for i in range(1, 10):
        wal.append(ents(i, i + 1), hs(1))
        wal.sync()
    wal.append([], None, snapshot=SnapshotMarker(index=5, term=1))
    wal.release_before(6)
    wal.close()
    assert counter.calls == 0 and fsyncs == []


def test_failed_fdatasync_makes_the_wal_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 2), None)
    _SyncCounter(monkeypatch, fail=True)
    with pytest.raises(StorageError, match="I/O error"):
        wal.sync()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="unusable"):
        wal.append(ents(2, 3), None)
    with pytest.raises(StorageError, match="unusable"):
        wal.sync()
    wal.close()


def test_closed_wal_refuses_writes(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False)
    wal.close()
    wal.close()
    with pytest.raises(StorageError, match="closed"):
        wal.append(ents(1, 2), None)


def test_unsynced_writes_are_visible_to_a_reopen(tmp_path: Path) -> None:
    # Written but not synced: the OS page cache still has it, so a reopen in the
    # same OS sees it (only a power failure could lose it).
    wal, _ = WAL.open(tmp_path)
    wal.append(ents(1, 3), hs(1))
    wal.close()
    assert reopen(tmp_path).entries == tuple(ents(1, 3))


def test_directory_is_synced_after_creating_and_deleting_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = WAL.open(tmp_path, segment_bytes=64)
    dir_syncs: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            dir_syncs.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    wal.append(ents(1, 6), None)
    wal.append(ents(6, 7), None)  # rotates: a new file, so a directory sync
    assert dir_syncs == [str(tmp_path)]
    wal.append([], None, snapshot=SnapshotMarker(index=6, term=1))
    assert wal.release_before(7) == 1
    assert dir_syncs == [str(tmp_path)] * 2
    wal.close()


# -- preallocated segments --------------------------------------------------------


def test_preallocated_segment_keeps_its_size_and_round_trips(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=True, segment_bytes=1 << 20, preallocate=True)
    assert only_segment(tmp_path).stat().st_size == 1 << 20
    for i in range(1, 20):
        wal.append(ents(i, i + 1), hs(1, commit=i - 1))
        wal.sync()
    wal.close()
    assert only_segment(tmp_path).stat().st_size == 1 << 20  # appends do not grow it
    wal, rec = WAL.open(tmp_path, segment_bytes=1 << 20, preallocate=True)
    assert rec.entries == tuple(ents(1, 20))
    assert rec.hard_state == hs(1, commit=18)
    assert rec.torn_bytes == 0
    # Appends continue right after the last record, not at the end of the file.
    wal.append(ents(20, 22, term=2), hs(2, commit=19))
    wal.close()
    rec = reopen(tmp_path, preallocate=True, segment_bytes=1 << 20)
    assert rec.entries == (*ents(1, 20), *ents(20, 22, term=2))
    assert only_segment(tmp_path).stat().st_size == 1 << 20


def test_preallocated_torn_tail_is_cut_and_the_space_preallocated_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = 64 * 1024
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=size, preallocate=True)
    wal.append(ents(1, 4), hs(1, commit=2))
    wal.append(ents(4, 5, tag="the torn one "), None)
    wal.close()
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    last = _record_offsets(bytes(data.rstrip(b"\0")))[-1]
    end = len(data.rstrip(b"\0"))
    data[end - 5 : end] = bytes(5)  # the last record's final bytes never reached the disk
    segment.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="raftkv.storage.wal"):
        wal, rec = WAL.open(tmp_path, fsync=False, segment_bytes=size, preallocate=True)
    assert rec.entries == tuple(ents(1, 4))
    assert 0 < rec.torn_bytes < end - last  # the record's bytes, not the zeros after it
    assert "truncating torn tail" in caplog.text
    assert segment.stat().st_size == size
    wal.append(ents(4, 5, term=2), None)
    wal.close()
    assert reopen(tmp_path, preallocate=True).entries == (*ents(1, 4), *ents(4, 5, term=2))


def test_rotation_cuts_the_free_tail_of_the_full_segment(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=4096, preallocate=True)
    for i in range(1, 200):
        wal.append(ents(i, i + 1, tag="x" * 40), hs(1, commit=i - 1))
    paths = wal.segment_paths
    wal.close()
    assert len(paths) > 2
    # Full segments hold only records (no zero tail: a strict reader accepts them);
    # the last one is preallocated.
    for p in paths[:-1]:
        data = p.read_bytes()
        last = _record_offsets(data)[-1]
        (length,) = struct.unpack_from("<I", data, last)
        assert last + HEADER_SIZE + length == len(data) < 4096 + 200
    assert paths[-1].stat().st_size == 4096
    # A zero tail in any but the last segment would be corruption to the reader.
    assert reopen(tmp_path).entries == tuple(ents(1, 200, tag="x" * 40))


def test_an_older_unpreallocated_log_is_preallocated_on_open(tmp_path: Path) -> None:
    _, after = _write_log(tmp_path, 4)
    wal, rec = WAL.open(tmp_path, fsync=False, segment_bytes=1 << 16, preallocate=True)
    assert len(rec.entries) == 4 and rec.torn_bytes == 0
    assert only_segment(tmp_path).stat().st_size == 1 << 16
    wal.append(ents(5, 6), None)
    wal.close()
    assert len(reopen(tmp_path).entries) == 5  # and read back without preallocation too
    assert only_segment(tmp_path).stat().st_size > after


def test_a_file_system_that_cannot_preallocate_falls_back_to_appending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(fd: int, offset: int, length: int) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    with caplog.at_level("WARNING", logger="raftkv.storage.wal"):
        wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=1 << 16, preallocate=True)
    assert "cannot preallocate" in caplog.text
    wal.append(ents(1, 3), hs(1))
    wal.close()
    assert only_segment(tmp_path).stat().st_size < 1 << 16
    assert reopen(tmp_path).entries == tuple(ents(1, 3))


def test_preallocation_runs_a_chunk_ahead_of_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A node does not reserve a whole segment: disk use stays records + one chunk.
    monkeypatch.setattr(wal_module, "PREALLOCATE_BYTES", 8192)
    wal, _ = WAL.open(tmp_path, fsync=False, segment_bytes=1 << 20, preallocate=True)
    assert only_segment(tmp_path).stat().st_size == 8192
    for i in range(1, 400):
        wal.append(ents(i, i + 1, tag="y" * 100), None)
        size = only_segment(tmp_path).stat().st_size
        records = len(only_segment(tmp_path).read_bytes().rstrip(b"\0"))
        assert records <= size <= records + 8192 + 200, (i, records, size)
    assert size > 8192  # it grew, a chunk at a time
    wal.close()
    assert reopen(tmp_path, preallocate=True).entries == tuple(ents(1, 400, tag="y" * 100))


# -- syncs on another thread (asynchronous storage writes) -------------------------


def test_a_sync_begun_elsewhere_covers_the_writes_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """begin_sync() hands out a duplicate descriptor and the write count it
    covers; writes made before end_sync() stay unsynced, so the next
    begin_sync() covers them; nothing to sync gives None."""
    synced: list[int] = []
    real = wal_module.datasync
    monkeypatch.setattr(wal_module, "datasync", lambda fd: (synced.append(fd), real(fd)))
    wal, _ = WAL.open(tmp_path / "wal")
    synced.clear()  # the new segment's own sync
    assert wal.begin_sync() is None  # nothing written yet
    wal.append(ents(1, 3), hs(1, "n1", 0))
    started = wal.begin_sync()
    assert started is not None
    fd, covered = started
    assert covered == wal.writes == 1
    wal.append(ents(3, 4), None)  # written while the sync runs
    wal_module.sync_duplicate(fd)
    assert synced == [fd]
    with pytest.raises(OSError):
        os.fstat(fd)  # sync_duplicate closed the duplicate
    wal.end_sync(covered)
    again = wal.begin_sync()
    assert again is not None and again[1] == 2  # the later write still needs a sync
    wal_module.sync_duplicate(again[0])
    wal.end_sync(again[1])
    assert wal.begin_sync() is None
    wal.close()
    assert reopen(tmp_path / "wal").entries == tuple(ents(1, 4))


def test_a_failed_sync_begun_elsewhere_makes_the_wal_unusable(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path / "wal")
    wal.append(ents(1, 2), None)
    started = wal.begin_sync()
    assert started is not None
    os.close(started[0])
    with pytest.raises(StorageError, match="No space left"):
        wal.end_sync(started[1], OSError(28, "No space left on device"))
    with pytest.raises(StorageError, match="unusable"):
        wal.append(ents(2, 3), None)
    wal.close()


def test_the_duplicate_outlives_a_rotation(tmp_path: Path) -> None:
    """A segment rotated while its sync runs elsewhere: the duplicate still
    refers to the old segment (the rotation synced it), not to a reused number."""
    wal, _ = WAL.open(tmp_path / "wal", segment_bytes=64)
    wal.append(ents(1, 2, tag="x" * 80), None)
    started = wal.begin_sync()
    assert started is not None
    fd, covered = started
    old = os.readlink(f"/proc/self/fd/{fd}")
    wal.append(ents(2, 3, tag="y" * 80), None)  # over 64 bytes: rotates
    assert len(list((tmp_path / "wal").glob("*.wal"))) == 2
    assert os.readlink(f"/proc/self/fd/{fd}") == old
    wal_module.sync_duplicate(fd)
    wal.end_sync(covered)
    wal.close()
