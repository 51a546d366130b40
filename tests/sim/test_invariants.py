"""Every checker reports the violation it exists for (none can silently pass).

Each test feeds :class:`Invariants` a deliberately wrong observation, next to
a legal one that must pass.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from raftkv.core import Entry, HardState, NodeId, Role
from raftkv.sim.disk import SimDisk
from raftkv.sim.invariants import Invariants, InvariantViolation

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
NODES = (N1, N2, N3)


def inv() -> Invariants:
    return Invariants(NODES, seed=42, now=lambda: 1234)


def e(term: int, index: int, data: bytes = b"") -> Entry:
    return Entry(term=term, index=index, data=data or f"{term}/{index}".encode())


def violated(checker: str) -> AbstractContextManager[pytest.ExceptionInfo[InvariantViolation]]:
    return pytest.raises(InvariantViolation, match=checker)


def test_violation_carries_checker_time_and_seed() -> None:
    i = inv()
    i.on_role(N1, 2, Role.LEADER)
    with pytest.raises(InvariantViolation) as info:
        i.on_role(N2, 2, Role.LEADER)
    v = info.value.violation
    assert (v.checker, v.time, v.seed) == ("election-safety", 1234, 42)
    assert "n1" in v.message and "n2" in v.message


def test_election_safety() -> None:
    i = inv()
    i.on_role(N1, 1, Role.LEADER)
    i.on_role(N1, 1, Role.LEADER)  # the same leader again is fine
    i.on_role(N2, 2, Role.LEADER)  # another term, another leader: fine
    i.on_role(N3, 1, Role.FOLLOWER)
    with violated("election-safety"):
        i.on_role(N3, 1, Role.LEADER)


def test_election_safety_via_ready_soft_state() -> None:
    i = inv()
    i.on_ready(N1, 3, Role.LEADER, [], None)
    with violated("election-safety"):
        i.on_ready(N2, 3, Role.LEADER, [], None)


def test_leader_append_only_overwrite() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1), e(1, 2)], None)
    i.on_ready(N1, 1, Role.LEADER, [e(1, 3)], None)  # appending is fine
    with violated("leader-append-only"):
        i.on_ready(N1, 1, Role.LEADER, [e(1, 2, b"other")], None)


def test_leader_append_only_truncation() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1), e(1, 2), e(1, 3)], None)
    with violated("leader-append-only"):
        i.on_ready(N1, 1, Role.LEADER, [e(1, 2)], None)  # same entry 2, but 3 is dropped


def test_followers_may_overwrite_uncommitted_entries() -> None:
    i = inv()
    i.on_ready(N2, 1, Role.FOLLOWER, [e(1, 1), e(1, 2)], None)
    i.on_ready(N2, 2, Role.FOLLOWER, [e(2, 2)], None)
    # A node that becomes leader in this very Ready may have overwritten as a follower first.
    i.on_ready(N3, 1, Role.FOLLOWER, [e(1, 1), e(1, 2)], None)
    i.on_ready(N3, 3, Role.LEADER, [e(2, 2), e(3, 3)], None)


def test_log_matching() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.FOLLOWER, [e(1, 1), e(1, 2)], None)
    i.on_ready(N2, 1, Role.FOLLOWER, [e(1, 1), e(1, 2)], None)  # identical: fine
    with violated("log-matching"):
        i.on_ready(N3, 1, Role.FOLLOWER, [e(1, 1, b"divergent"), e(1, 2)], None)


def test_log_matching_catches_a_divergent_prefix_below_identical_entries() -> None:
    i = inv()
    i.on_ready(N1, 2, Role.FOLLOWER, [e(1, 1), e(2, 2)], None)
    with violated("log-matching"):
        # Entry 2 is byte-identical; the prefix under it is not.
        i.on_ready(N2, 2, Role.FOLLOWER, [e(1, 1, b"x"), e(2, 2)], None)


def test_log_matching_rejects_gaps() -> None:
    i = inv()
    with violated("log-matching"):
        i.on_ready(N1, 1, Role.FOLLOWER, [e(1, 3)], None)


def test_leader_completeness_new_leader_missing_committed_entries() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1), e(1, 2)], 2)
    i.on_ready(N2, 1, Role.FOLLOWER, [e(1, 1), e(1, 2)], 2)
    i.on_ready(N3, 1, Role.FOLLOWER, [e(1, 1)], 1)
    i.on_ready(N2, 2, Role.LEADER, [], None)  # has the committed prefix: fine
    with violated("leader-completeness"):
        i.on_ready(N3, 3, Role.LEADER, [], None)


def test_leader_completeness_commit_disagrees_with_committed_prefix() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.FOLLOWER, [e(1, 1), e(1, 2)], 2)
    i.on_ready(
        N2, 2, Role.FOLLOWER, [e(2, 1), e(2, 2)], None
    )  # different (index, term): log matching is silent
    with violated("leader-completeness"):
        i.on_ready(N2, 2, Role.FOLLOWER, [], 1)


def test_leader_completeness_commit_beyond_log() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.FOLLOWER, [e(1, 1)], None)
    with violated("leader-completeness"):
        i.on_ready(N1, 1, Role.FOLLOWER, [], 2)


def test_committed_entries_are_never_overwritten() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.FOLLOWER, [e(1, 1), e(1, 2)], 2)
    with violated("leader-completeness"):
        i.on_ready(N1, 2, Role.FOLLOWER, [e(2, 2)], None)


def test_state_machine_safety_different_entry() -> None:
    i = inv()
    i.on_apply(N1, e(1, 1))
    i.on_apply(N2, e(1, 1))
    with violated("state-machine-safety"):
        i.on_apply(N3, e(1, 1, b"other"))


def test_state_machine_safety_out_of_order() -> None:
    i = inv()
    i.on_apply(N1, e(1, 1))
    with violated("state-machine-safety"):
        i.on_apply(N1, e(1, 3))


def _disk(entries: list[Entry], commit: int = 0) -> SimDisk:
    d = SimDisk(NODES)
    d.write(HardState(term=1, commit=commit), entries)
    d.sync_now()
    return d


def test_durability_majority_holds_committed_prefix() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1), e(1, 2)], 2)
    disks = {N1: _disk([e(1, 1), e(1, 2)]), N2: _disk([e(1, 1), e(1, 2)]), N3: _disk([e(1, 1)])}
    i.on_crash(N3, disks)  # two of three hold index 2: fine


def test_durability_committed_prefix_on_a_minority() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1), e(1, 2)], 2)
    disks = {N1: _disk([e(1, 1), e(1, 2)]), N2: _disk([e(1, 1)]), N3: _disk([])}
    with violated("durability"):
        i.on_crash(N1, disks)


def test_durability_unsynced_writes_do_not_count() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1)], 1)
    unsynced = SimDisk(NODES)
    unsynced.write(None, [e(1, 1)])  # visible, never fsynced
    disks = {N1: _disk([e(1, 1)]), N2: unsynced, N3: SimDisk(NODES)}
    with violated("durability"):
        i.on_crash(N2, disks)


def test_restart_resets_the_tracked_log_to_the_durable_one() -> None:
    i = inv()
    i.on_ready(N1, 1, Role.FOLLOWER, [e(1, 1), e(1, 2), e(1, 3)], None)
    i.on_apply(N1, e(1, 1))
    i.on_restart(N1, _disk([e(1, 1)], commit=1))
    # The lost entries 2..3 may come back different, and applying restarts at 1.
    i.on_ready(N1, 2, Role.FOLLOWER, [e(2, 2)], None)
    i.on_apply(N1, e(1, 1))
