"""DiskStorage behaves like MemoryStorage, and survives reopening (raftkv.storage.disk_storage)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core.errors import LogCompacted, LogUnavailable
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, Entry, HardState, NodeId
from raftkv.storage import DiskStorage

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=f"e{i}".encode()) for i in range(lo, hi)]


def compact_reference(mem: MemoryStorage, index: int) -> None:
    """etcd's MemoryStorage.Compact, which our MemoryStorage does not have (yet)."""
    offset = mem._entries[0].index
    term = mem.term(index)
    mem._entries = [Entry(term=term, index=index), *mem._entries[index - offset + 1 :]]


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except (LogCompacted, LogUnavailable) as exc:
        return ("raises", type(exc))


def assert_same(disk: DiskStorage, mem: MemoryStorage) -> None:
    assert disk.first_index() == mem.first_index()
    assert disk.last_index() == mem.last_index()
    assert disk.initial_state()[0] == mem.hard_state
    top = mem.last_index() + 3
    for index in range(-1, top):
        assert outcome(disk.term, index) == outcome(mem.term, index), index
    for lo in range(0, top):
        for hi in range(lo, top):
            for max_size in (None, 0, 20, 45):
                assert outcome(disk.entries, lo, hi, max_size) == outcome(
                    mem.entries, lo, hi, max_size
                ), (lo, hi, max_size)


save_op = st.tuples(
    st.just("save"),
    st.integers(0, 6),  # how far back from last_index + 1 the entries start
    st.integers(0, 5),  # how many entries
    st.integers(1, 4),  # their term
    st.one_of(st.none(), st.tuples(st.integers(0, 9), st.sampled_from([None, "n1", "n2"]))),
    st.booleans(),  # sync
)
reopen_op = st.tuples(st.just("reopen"), st.sampled_from([64, 256, 1 << 20]))
compact_op = st.tuples(st.just("compact"), st.integers(0, 8))  # how far back from last


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(save_op, save_op, reopen_op, compact_op), max_size=25))
def test_disk_storage_matches_memory_storage(ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        disk = DiskStorage.open(tmp, fsync=False, voters=(N1, N2, N3), segment_bytes=256)
        mem = MemoryStorage(voters=(N1, N2, N3))
        try:
            for op in ops:
                if op[0] == "save":
                    _, back, n, term, hard, sync = op
                    start = max(0, mem.last_index() + 1 - back) or 1
                    batch = [
                        Entry(term=term, index=i, data=f"{term}:{i}".encode())
                        for i in range(start, start + n)
                    ]
                    hard_state = None
                    if hard is not None:
                        hard_state = HardState(term=hard[0], vote=hard[1], commit=hard[0])
                    disk.save(batch, hard_state, sync)
                    mem.append(batch)
                    if hard_state is not None:
                        mem.set_hard_state(hard_state)
                elif op[0] == "reopen":
                    disk.close()
                    disk = DiskStorage.open(
                        tmp, fsync=False, voters=(N1, N2, N3), segment_bytes=op[1]
                    )
                else:
                    index = mem.last_index() - op[1]
                    if index < mem.first_index():
                        continue
                    disk.compact(index)
                    compact_reference(mem, index)
                assert_same(disk, mem)
            disk.close()
            disk = DiskStorage.open(tmp, fsync=False, voters=(N1, N2, N3))
            assert_same(disk, mem)
            assert disk.initial_state()[1] == ConfState(voters=(N1, N2, N3))
        finally:
            disk.close()


def test_save_and_reopen(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, voters=(N1,)) as disk:
        assert disk.initial_state() == (HardState(), ConfState(voters=(N1,)))
        assert (disk.first_index(), disk.last_index()) == (1, 0)
        disk.save(ents(1, 4), HardState(term=1, vote=N1, commit=0), sync=True)
        disk.save(ents(4, 6), HardState(term=1, vote=N1, commit=3), sync=True)
        disk.save(ents(5, 7, term=2), HardState(term=2, commit=4), sync=True)
    assert (tmp_path / "wal").is_dir()
    with DiskStorage.open(tmp_path, voters=(N1,)) as disk:
        assert disk.initial_state()[0] == HardState(term=2, commit=4)
        assert disk.entries(1, 7) == [*ents(1, 5), *ents(5, 7, term=2)]
        assert disk.term(6) == 2 and disk.term(0) == 0


def test_compaction_survives_reopen_and_releases_segments(tmp_path: Path) -> None:
    disk = DiskStorage.open(tmp_path, fsync=False, segment_bytes=128)
    disk.save([], HardState(term=3, vote=N2), sync=True)
    for i in range(1, 31):
        disk.save(ents(i, i + 1, term=3), None, sync=True)
    segments_before = len(disk.wal.segment_paths)
    disk.compact(20)
    assert len(disk.wal.segment_paths) < segments_before
    assert (disk.first_index(), disk.last_index()) == (21, 30)
    with pytest.raises(LogCompacted):
        disk.compact(20)
    with pytest.raises(LogUnavailable):
        disk.compact(31)
    disk.save(ents(15, 17, term=3), None, sync=True)  # at/below the compaction point: skipped
    assert disk.last_index() == 30
    disk.close()

    with DiskStorage.open(tmp_path, fsync=False) as disk:
        assert disk.initial_state()[0] == HardState(term=3, vote=N2)
        assert (disk.first_index(), disk.last_index()) == (21, 30)
        assert disk.term(20) == 3
        with pytest.raises(LogCompacted):
            disk.term(19)
        with pytest.raises(LogCompacted):
            disk.entries(20, 22)
        assert disk.entries(21, 31) == ents(21, 31, term=3)


def test_save_with_a_gap_is_a_caller_bug(tmp_path: Path) -> None:
    with DiskStorage.open(tmp_path, fsync=False) as disk:
        disk.save(ents(1, 3), None, sync=False)
        with pytest.raises(AssertionError, match="gap"):
            disk.save(ents(4, 5), None, sync=False)
        with pytest.raises(AssertionError, match="contiguous"):
            disk.save([*ents(3, 4), *ents(5, 6)], None, sync=False)
        assert disk.last_index() == 2


def test_sync_flag_controls_fdatasync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskStorage.open(tmp_path)
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    disk.save(ents(1, 65), HardState(term=1, commit=0), sync=True)
    assert len(calls) == 1
    disk.save(ents(65, 129), HardState(term=1, commit=64), sync=False)
    assert len(calls) == 1
    disk.save([], HardState(term=2), sync=True)  # also covers the unsynced Ready before it
    assert len(calls) == 2
    disk.close()
    with DiskStorage.open(tmp_path) as disk:
        assert disk.last_index() == 128 and disk.initial_state()[0] == HardState(term=2)
