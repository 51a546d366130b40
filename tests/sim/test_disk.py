"""Simulated disk: unsynced writes vanish on crash; durable state survives exactly."""

from __future__ import annotations

import pytest

from raftkv.core import ConfState, Entry, HardState, NodeId
from raftkv.sim.disk import SimDisk
from raftkv.sim.loghash import chain, extend_hashes

VOTERS = (NodeId("n1"), NodeId("n2"), NodeId("n3"))


def ents(term: int, lo: int, hi: int) -> tuple[Entry, ...]:
    return tuple(Entry(term=term, index=i, data=f"{term}/{i}".encode()) for i in range(lo, hi + 1))


def test_writes_are_visible_but_lost_on_crash_until_fsynced() -> None:
    disk = SimDisk(VOTERS)
    disk.write(HardState(term=1, vote=NodeId("n1")), ents(1, 1, 3))
    assert disk.storage.last_index() == 3 and disk.durable_last_index == 0
    token = disk.begin_fsync()
    disk.write(
        HardState(term=1, vote=NodeId("n1"), commit=2), ents(1, 4, 5)
    )  # after the fsync began
    assert disk.complete_fsync(token)
    assert disk.durable_last_index == 3 and disk.durable_hard_state == HardState(
        term=1, vote=NodeId("n1")
    )
    disk.crash()
    assert disk.storage.last_index() == 3
    assert disk.storage.hard_state == HardState(term=1, vote=NodeId("n1"))
    assert disk.lost_writes == 1 and disk.crashes == 1


def test_crash_restores_a_durable_suffix_overwritten_by_an_unsynced_write() -> None:
    disk = SimDisk(VOTERS)
    disk.write(HardState(term=1), ents(1, 1, 5))
    disk.sync_now()
    disk.write(HardState(term=2), ents(2, 3, 3))  # replaces 3..5 in the visible log
    assert [e.term for e in disk.storage.all_entries()] == [1, 1, 2]
    disk.crash()
    assert disk.storage.all_entries() == list(ents(1, 1, 5))
    assert disk.storage.hard_state.term == 1


def test_fsync_that_began_before_a_crash_never_completes() -> None:
    disk = SimDisk(VOTERS)
    disk.write(HardState(term=1), ents(1, 1, 2))
    token = disk.begin_fsync()
    disk.crash()
    assert not disk.complete_fsync(token)
    assert disk.durable_last_index == 0 and disk.storage.last_index() == 0


def test_durable_hashes_track_the_durable_log() -> None:
    disk = SimDisk(VOTERS)
    disk.write(None, ents(1, 1, 4))
    disk.sync_now()
    disk.write(None, ents(3, 3, 3))
    disk.sync_now()
    expected = [0]
    extend_hashes(expected, [*ents(1, 1, 2), *ents(3, 3, 3)])
    assert disk.durable_hashes() == expected
    assert disk.durable_hash(3) == chain(expected[2], 3, b"3/3")
    assert disk.durable_hash(4) is None


def test_crash_after_everything_synced_loses_nothing() -> None:
    disk = SimDisk(VOTERS)
    disk.write(HardState(term=4, vote=NodeId("n2"), commit=3), ents(4, 1, 3))
    disk.sync_now()
    before = (disk.storage.hard_state, disk.storage.all_entries())
    disk.crash()
    assert (disk.storage.hard_state, disk.storage.all_entries()) == before
    assert disk.lost_writes == 0


# -- snapshots ------------------------------------------------------------------


def _synced(disk: SimDisk, entries: tuple[Entry, ...]) -> None:
    disk.write(HardState(term=entries[-1].term, commit=entries[-1].index), entries)
    disk.sync_now()


def test_own_snapshot_is_durable_at_once_and_compacts_both_logs() -> None:
    disk = SimDisk(VOTERS)
    _synced(disk, ents(1, 1, 6))
    hashes = disk.durable_hashes()
    snap = disk.take_snapshot(4, ConfState(voters=VOTERS), b"state@4")
    assert snap.metadata.index == 4 and snap.metadata.term == 1
    assert disk.storage.first_index() == 5 and disk.durable_last_index == 6
    assert [e.index for e in disk.durable_entries()] == [5, 6]
    # The chain hashes still cover the compacted prefix.
    assert disk.durable_hashes() == hashes
    disk.crash()
    assert disk.storage.snapshot().data == b"state@4"
    assert disk.storage.first_index() == 5 and disk.storage.last_index() == 6
    assert disk.storage.entries(5, 7) == list(ents(1, 5, 6))


def test_own_snapshot_must_cover_only_durable_entries() -> None:
    disk = SimDisk(VOTERS)
    _synced(disk, ents(1, 1, 3))
    disk.write(None, ents(1, 4, 5))  # visible, not durable
    with pytest.raises(ValueError, match="beyond durable"):
        disk.take_snapshot(5, ConfState(voters=VOTERS), b"")


def test_received_snapshot_is_lost_on_crash_until_fsynced() -> None:
    disk = SimDisk(VOTERS)
    _synced(disk, ents(1, 1, 2))
    leader = SimDisk(VOTERS)
    _synced(leader, ents(1, 1, 8))
    snap = leader.take_snapshot(8, ConfState(voters=VOTERS), b"state@8")
    disk.write_snapshot(snap, leader.durable_hashes()[:9])
    assert disk.storage.first_index() == 9  # visible at once
    disk.crash()
    assert disk.storage.last_index() == 2 and disk.durable_snapshot.is_empty()
    disk.write_snapshot(snap, leader.durable_hashes()[:9])
    disk.write(None, ents(1, 9, 9))
    disk.sync_now()
    assert disk.durable_snapshot == snap and disk.durable_last_index == 9
    assert disk.durable_hash(8) == leader.durable_hash(8)
    disk.crash()
    assert disk.storage.first_index() == 9 and disk.storage.last_index() == 9
    assert disk.storage.initial_state()[1] == ConfState(voters=VOTERS)
