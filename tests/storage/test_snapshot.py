"""Snapshot files (raftkv.storage.snapshot) and snapshots in DiskStorage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftkv.core.errors import LogCompacted, LogUnavailable
from raftkv.core.types import ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMetadata
from raftkv.storage import CorruptSnapshotError, DiskStorage, SnapshotStore, StorageError
from raftkv.storage.snapshot import snapshot_name
from raftkv.storage.wal import SnapshotMarker

N1, N2, N3, N4 = NodeId("n1"), NodeId("n2"), NodeId("n3"), NodeId("n4")

JOINT = ConfState(
    voters=(N1, N2, N3),
    learners=(N4,),
    voters_outgoing=(N1, N2),
    learners_next=(N3,),
    auto_leave=True,
)


def snap(index: int, term: int = 1, data: bytes | None = None, cs: ConfState = JOINT) -> Snapshot:
    return Snapshot(
        metadata=SnapshotMetadata(index=index, term=term, conf_state=cs),
        data=f"image@{index}".encode() if data is None else data,
    )


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=f"e{i}".encode()) for i in range(lo, hi)]


def snap_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- SnapshotStore -----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x00\xff" * 1000, b"x"])
def test_round_trip(tmp_path: Path, data: bytes) -> None:
    store = SnapshotStore(tmp_path / "snap")
    assert store.load_latest() is None
    original = snap(7, term=3, data=data)
    path = store.save(original)
    assert path.name == snapshot_name(3, 7) == "snap-0000000000000003-0000000000000007.snap"
    assert store.load_latest() == original
    assert SnapshotStore(tmp_path / "snap").load_latest() == original  # a fresh store too
    minimal = snap(9, term=3, cs=ConfState())
    store.save(minimal)
    assert store.load_latest() == minimal


def test_empty_snapshot_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        SnapshotStore(tmp_path).save(Snapshot())


def test_crash_before_rename_leaves_the_old_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(tmp_path)
    old = snap(5)
    store.save(old)

    # An I/O error at the rename: reported, nothing half-installed.
    def failing_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(StorageError, match="No space left"):
        store.save(snap(9))
    monkeypatch.undo()
    assert snap_files(tmp_path) == [snapshot_name(1, 5)]
    assert store.load_latest() == old

    # A crash at the same point (the process dies): the temp file stays behind,
    # complete or not, and is deleted when the store is next opened.
    tmp = tmp_path / (snapshot_name(1, 9) + ".tmp")
    tmp.write_bytes(b"RKVSNAP\x00partial")
    reopened = SnapshotStore(tmp_path)
    assert "removing unfinished snapshot" in caplog.text
    assert snap_files(tmp_path) == [snapshot_name(1, 5)]
    assert reopened.load_latest() == old


def _corrupt(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "flip-data":
        raw[-1] ^= 0x01
    elif how == "flip-header":
        raw[20] ^= 0x80
    elif how == "truncate":
        del raw[-3:]
    elif how == "extend":
        raw += b"\x00"
    elif how == "magic":
        raw[0:8] = b"NOTASNAP"
    elif how == "empty":
        raw.clear()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("flip-data", "checksum mismatch"),
        ("flip-header", "header says"),
        ("truncate", "header says"),
        ("extend", "header says"),
        ("magic", "bad magic"),
        ("empty", "too short"),
    ],
)
def test_corrupt_snapshot_is_a_clear_error(tmp_path: Path, how: str, reason: str) -> None:
    store = SnapshotStore(tmp_path)
    store.save(snap(3))  # an older valid snapshot is NOT used instead
    path = store.save(snap(8))
    _corrupt(path, how)
    with pytest.raises(CorruptSnapshotError) as info:
        store.load_latest()
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert reason in info.value.reason


def test_renamed_snapshot_file_is_corrupt(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = store.save(snap(8, term=2))
    wrong = path.with_name(snapshot_name(2, 9))
    path.rename(wrong)
    with pytest.raises(CorruptSnapshotError, match="unlike the file name"):
        store.load_latest()


def test_retention_keeps_the_newest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)  # retain=2 by default
    for i in range(1, 6):
        store.save(snap(i * 10, term=i))
    assert snap_files(tmp_path) == [snapshot_name(4, 40), snapshot_name(5, 50)]
    store.save(snap(60, term=5), purge=False)
    assert len(store.files()) == 3
    assert store.purge() == 1
    assert [f.index for f in store.files()] == [50, 60]

    one = SnapshotStore(tmp_path / "one", retain=1)
    one.save(snap(1))
    one.save(snap(2))
    assert [f.index for f in one.files()] == [2]
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path / "zero", retain=0)


# -- DiskStorage -------------------------------------------------------------------


def filled(tmp_path: Path, last: int = 30, **kwargs: object) -> DiskStorage:
    disk = DiskStorage.open(tmp_path, fsync=False, voters=(N1, N2, N3), **kwargs)  # type: ignore[arg-type]
    for i in range(1, last + 1):
        disk.save(ents(i, i + 1, term=1 + i // 10), None, sync=True)
    disk.save([], HardState(term=4, vote=N1, commit=last), sync=True)
    return disk


def test_create_snapshot_compact_and_reopen(tmp_path: Path) -> None:
    disk = filled(tmp_path, segment_bytes=128)
    assert disk.snapshot() == Snapshot()
    assert disk.initial_state()[1] == ConfState(voters=(N1, N2, N3))
    segments = len(disk.wal.segment_paths)
    created = disk.create_snapshot(25, JOINT, b"kv@25")
    assert created == Snapshot(
        metadata=SnapshotMetadata(index=25, term=3, conf_state=JOINT), data=b"kv@25"
    )
    assert disk.snapshot() == created
    assert disk.initial_state() == (HardState(term=4, vote=N1, commit=30), JOINT)
    assert disk.first_index() == 1  # creating a snapshot does not compact
    disk.compact(20)  # keep 5 entries for slow followers
    assert len(disk.wal.segment_paths) < segments
    disk.close()

    with DiskStorage.open(tmp_path, fsync=False, voters=(N1,)) as disk:
        assert disk.snapshot() == created
        assert disk.initial_state() == (HardState(term=4, vote=N1, commit=30), JOINT)
        assert (disk.first_index(), disk.last_index()) == (21, 30)
        assert disk.term(20) == 3
        assert disk.entries(21, 31) == [
            e for i in range(21, 31) for e in ents(i, i + 1, 1 + i // 10)
        ]
        with pytest.raises(LogCompacted):
            disk.entries(20, 25)
        with pytest.raises(LogCompacted):
            disk.term(19)
        disk.compact(25)  # now up to the snapshot
        assert disk.first_index() == 26


def test_create_snapshot_errors(tmp_path: Path) -> None:
    with filled(tmp_path, last=10) as disk:
        with pytest.raises(LogUnavailable):
            disk.create_snapshot(11, JOINT, b"")
        disk.create_snapshot(8, JOINT, b"")
        with pytest.raises(LogCompacted):
            disk.create_snapshot(8, JOINT, b"")
        with pytest.raises(LogCompacted):
            disk.create_snapshot(5, JOINT, b"")
        with pytest.raises(StorageError, match="only covers up to 8"):
            disk.compact(9)
        with pytest.raises(LogCompacted):
            disk.apply_snapshot(snap(8, term=1))


def test_apply_snapshot_then_reopen(tmp_path: Path) -> None:
    disk = filled(tmp_path, last=30, segment_bytes=128)
    disk.create_snapshot(10, JOINT, b"old")
    received = snap(40, term=5, data=b"leader image", cs=ConfState(voters=(N2, N3, N4)))
    disk.apply_snapshot(received)
    assert (disk.first_index(), disk.last_index()) == (41, 40)
    assert disk.term(40) == 5
    assert disk.snapshot() == received
    # term and vote kept; commit raised to the snapshot (the core commits it).
    assert disk.initial_state() == (
        HardState(term=4, vote=N1, commit=40),
        received.metadata.conf_state,
    )
    assert len(disk.wal.segment_paths) == 1  # every older segment released
    disk.close()

    with DiskStorage.open(tmp_path, fsync=False) as disk:
        assert (disk.first_index(), disk.last_index()) == (41, 40)
        assert disk.all_entries() == []
        assert disk.term(40) == 5
        assert disk.snapshot() == received
        assert disk.initial_state() == (
            HardState(term=4, vote=N1, commit=40),
            received.metadata.conf_state,
        )
        with pytest.raises(LogCompacted):
            disk.entries(40, 41)
        disk.save(ents(41, 44, term=5), HardState(term=5, commit=42), sync=True)
    with DiskStorage.open(tmp_path, fsync=False) as disk:
        assert disk.entries(41, 44) == ents(41, 44, term=5)
        assert disk.initial_state()[0] == HardState(term=5, commit=42)
        assert [f.index for f in disk.snapshot_store.files()] == [10, 40]


def test_apply_snapshot_behind_the_log_discards_the_log(tmp_path: Path) -> None:
    with filled(tmp_path, last=30) as disk:
        disk.apply_snapshot(snap(20, term=2))  # even where entry 20 matches: etcd semantics
        assert (disk.first_index(), disk.last_index()) == (21, 20)
    with DiskStorage.open(tmp_path, fsync=False) as disk:
        assert (disk.first_index(), disk.last_index()) == (21, 20)


def test_install_interrupted_before_the_wal_marker_is_undone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with filled(tmp_path, last=10) as disk:
        disk.create_snapshot(5, JOINT, b"mine")
        # apply_snapshot crashed after saving the file, before the WAL marker.
        disk.snapshot_store.save(snap(50, term=9), purge=False)
    with DiskStorage.open(tmp_path, fsync=False) as disk:
        assert "interrupted install" in caplog.text
        assert disk.snapshot().metadata.index == 5
        assert (disk.first_index(), disk.last_index()) == (1, 10)
        assert [f.index for f in disk.snapshot_store.files()] == [5]


def test_install_whose_hard_state_was_torn_raises_commit(tmp_path: Path) -> None:
    with filled(tmp_path, last=10) as disk:
        # The marker reached the disk; the hard state behind it did not.
        disk.snapshot_store.save(snap(50, term=9), purge=False)
        disk.wal.append((), None, snapshot=SnapshotMarker(index=50, term=9, keep_entries=False))
        disk.wal.sync()
    with DiskStorage.open(tmp_path, fsync=False) as disk:
        assert disk.snapshot().metadata.index == 50
        assert disk.initial_state()[0] == HardState(term=4, vote=N1, commit=50)
        assert (disk.first_index(), disk.last_index()) == (51, 50)


def test_missing_snapshot_file_is_a_clear_error(tmp_path: Path) -> None:
    with filled(tmp_path) as disk:
        disk.create_snapshot(20, JOINT, b"")
        disk.compact(15)
    for f in (tmp_path / "snap").iterdir():
        f.unlink()
    with pytest.raises(StorageError, match="compacted up to index 15") as info:
        DiskStorage.open(tmp_path, fsync=False)
    assert str(tmp_path) in str(info.value)
    # The WAL lock was released: the directory is not left "in use".
    with pytest.raises(StorageError, match="compacted"):
        DiskStorage.open(tmp_path, fsync=False)


def test_older_snapshot_than_the_wal_marker_is_a_clear_error(tmp_path: Path) -> None:
    with filled(tmp_path) as disk:
        disk.create_snapshot(10, JOINT, b"")
        disk.create_snapshot(20, JOINT, b"")
        disk.compact(15)
    os.unlink(tmp_path / "snap" / snapshot_name(3, 20))
    with pytest.raises(StorageError, match="no snapshot file"):
        DiskStorage.open(tmp_path, fsync=False)


def test_corrupt_snapshot_on_open_names_the_file(tmp_path: Path) -> None:
    with filled(tmp_path) as disk:
        disk.create_snapshot(20, JOINT, b"state")
        disk.compact(20)
    path = tmp_path / "snap" / snapshot_name(3, 20)
    _corrupt(path, "flip-data")
    with pytest.raises(CorruptSnapshotError) as info:
        DiskStorage.open(tmp_path, fsync=False)
    assert info.value.path == str(path)


def test_snapshot_writes_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = filled(tmp_path, last=5)
    disk.close()
    disk = DiskStorage.open(tmp_path)  # fsync=True
    synced: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync

    def fdatasync(fd: int) -> None:
        synced.append("file")
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        synced.append("dir")
        real_fsync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    disk.create_snapshot(5, JOINT, b"x")
    assert synced == ["file", "dir"]  # the file before its rename, then the directory
    synced.clear()
    disk.apply_snapshot(snap(9, term=2))
    assert synced[:3] == ["file", "dir", "file"]  # snapshot file, its rename, WAL marker
    disk.close()
