"""DiskStorage behaves like MemoryStorage, and survives reopening (raftkv.storage.disk_storage)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core.errors import LogCompacted, LogUnavailable
from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMetadata
from raftkv.storage import DiskStorage, StorageError

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=f"e{i}".encode()) for i in range(lo, hi)]


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except (LogCompacted, LogUnavailable) as exc:
        return ("raises", type(exc))


def assert_same(disk: DiskStorage, mem: MemoryStorage) -> None:
    assert disk.first_index() == mem.first_index()
    assert disk.last_index() == mem.last_index()
    assert disk.initial_state() == mem.initial_state()
    assert disk.snapshot() == mem.snapshot()
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
compact_op = st.tuples(st.just("compact"), st.integers(0, 8))  # how far back from the snapshot
snap_op = st.tuples(st.just("snap"), st.integers(0, 8), st.sampled_from([(N1,), (N1, N2)]))
apply_op = st.tuples(st.just("apply"), st.integers(1, 12), st.integers(0, 2))  # ahead, term bump


def has_snapshot_ops() -> bool:
    return all(
        hasattr(MemoryStorage, name) for name in ("create_snapshot", "apply_snapshot", "compact")
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(save_op, save_op, save_op, reopen_op, compact_op, snap_op, apply_op),
        max_size=30,
    )
)
def test_disk_storage_matches_memory_storage(ops) -> None:
    if not has_snapshot_ops():
        ops = [op for op in ops if op[0] in ("save", "reopen")]
    with tempfile.TemporaryDirectory() as tmp:
        disk = DiskStorage.open(tmp, fsync=False, voters=(N1, N2, N3), segment_bytes=256)
        mem = MemoryStorage(voters=(N1, N2, N3))
        try:
            for op in ops:
                snap_index = mem.snapshot().metadata.index
                if op[0] == "save":
                    _, back, n, term, hard, sync = op
                    # Entries up to a snapshot are committed: never overwritten.
                    start = max(mem.first_index(), mem.last_index() + 1 - back, snap_index + 1)
                    batch = [
                        Entry(term=term, index=i, data=f"{term}:{i}".encode())
                        for i in range(start, start + n)
                    ]
                    hard_state = None
                    if hard is not None:
                        # The core's commit never falls below its snapshot's index.
                        commit = max(hard[0], snap_index)
                        hard_state = HardState(term=hard[0], vote=hard[1], commit=commit)
                    disk.save(batch, hard_state, sync)
                    mem.append(batch)
                    if hard_state is not None:
                        mem.set_hard_state(hard_state)
                elif op[0] == "reopen":
                    disk.close()
                    disk = DiskStorage.open(
                        tmp, fsync=False, voters=(N1, N2, N3), segment_bytes=op[1]
                    )
                elif op[0] == "compact":
                    index = snap_index - op[1]
                    if index < mem.first_index():
                        continue
                    disk.compact(index)
                    mem.compact(index)
                elif op[0] == "snap":
                    index = mem.last_index() - op[1]
                    if index <= snap_index:
                        continue
                    # The driver snapshots applied, hence committed, entries.
                    if mem.hard_state.commit < index:
                        committed = dataclasses.replace(mem.hard_state, commit=index)
                        disk.save([], committed, sync=True)
                        mem.set_hard_state(committed)
                    data = f"state@{index}".encode()
                    conf_state = ConfState(voters=op[2])
                    assert disk.create_snapshot(index, conf_state, data) == mem.create_snapshot(
                        index, conf_state, data
                    )
                else:
                    index = max(snap_index, mem.last_index() - 4) + op[1]
                    term = max(mem.term(mem.last_index()), mem.hard_state.term) + op[2]
                    snapshot = Snapshot(
                        metadata=SnapshotMetadata(
                            index=index, term=term, conf_state=ConfState(voters=(N2, N3))
                        ),
                        data=f"leader@{index}".encode(),
                    )
                    disk.apply_snapshot(snapshot)
                    mem.apply_snapshot(snapshot)
                    # What the driver's next save() would do anyway: the core commits
                    # a snapshot it restores; DiskStorage records that at once.
                    if mem.hard_state.commit < index:
                        mem.set_hard_state(dataclasses.replace(mem.hard_state, commit=index))
                assert_same(disk, mem)
            disk.close()
            disk = DiskStorage.open(tmp, fsync=False, voters=(N1, N2, N3))
            assert_same(disk, mem)
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
    for i in range(1, 31):
        disk.save(ents(i, i + 1, term=3), None, sync=True)
    disk.save([], HardState(term=3, vote=N2, commit=30), sync=True)
    segments_before = len(disk.wal.segment_paths)
    with pytest.raises(StorageError, match="snapshot"):
        disk.compact(20)  # no snapshot holds these entries yet
    disk.create_snapshot(25, ConfState(voters=(N2,)), b"image")
    with pytest.raises(StorageError, match="snapshot only covers"):
        disk.compact(26)
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
        assert disk.initial_state() == (
            HardState(term=3, vote=N2, commit=30),
            ConfState(voters=(N2,)),
        )
        assert disk.snapshot().metadata.index == 25
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
