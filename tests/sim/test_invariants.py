"""Every checker reports the violation it exists for (none can silently pass).

Each test feeds :class:`Invariants` a deliberately wrong observation, next to
a legal one that must pass.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from raftkv.core import ConfState, Entry, HardState, NodeId, Role
from raftkv.sim.disk import SimDisk
from raftkv.sim.invariants import Invariants, InvariantViolation
from raftkv.sim.loghash import extend_hashes

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


def test_election_safety_needs_the_leaders_own_vote_durable() -> None:
    i = inv()
    i.on_leader_vote(N1, 2, HardState(term=2, vote=N1, commit=0))  # durable: fine
    with violated("election-safety"):
        i.on_leader_vote(N2, 3, HardState(term=2, vote=N1, commit=0))  # term 3 not durable
    with violated("election-safety"):
        i.on_leader_vote(N2, 3, HardState(term=3, vote=None, commit=0))  # vote not durable


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


# -- issue 3: sessions, snapshots, membership -------------------------------------


def test_at_most_once_same_index_is_fine_another_index_is_not() -> None:
    i = inv()
    i.on_execute(N1, 7, 1, index=5)
    i.on_execute(N2, 7, 1, index=5)  # every replica executes it at the same index
    with violated("at-most-once"):
        i.on_execute(N3, 7, 1, index=9)  # a retry executed a second time


def test_state_at_one_index_must_agree() -> None:
    i = inv()
    i.on_state(N1, 10, b"state-a")
    i.on_state(N2, 10, b"state-a")
    with violated("state-machine-safety"):
        i.on_restore(N3, 10, b"state-b")


def _committed(i: Invariants, n: int) -> list[int]:
    entries = [e(1, k) for k in range(1, n + 1)]
    i.on_ready(N1, 1, Role.LEADER, entries, n)
    hashes = [0]
    extend_hashes(hashes, entries)
    return hashes


def test_installed_snapshot_must_be_a_committed_prefix() -> None:
    i = inv()
    hashes = _committed(i, 4)
    i.on_snapshot(N3, 3, 1, hashes)  # fine: within the committed prefix
    i.on_ready(N3, 1, Role.FOLLOWER, [e(1, 4)], 4)  # entries continue after it
    other = [0]
    extend_hashes(other, [e(1, 1), e(1, 2), e(2, 3)])
    with violated("leader-completeness"):
        i.on_snapshot(N2, 3, 2, other)


def test_snapshot_beyond_the_committed_index_is_caught() -> None:
    i = inv()
    hashes = _committed(i, 2)
    extend_hashes(hashes, [e(1, 3)])
    with violated("leader-completeness"):
        i.on_snapshot(N2, 3, 1, hashes)


def test_membership_same_change_same_result() -> None:
    i = inv()
    conf = ConfState(voters=(N1, N2, N3))
    i.on_conf(N1, 5, conf)
    i.on_conf(N2, 5, conf)
    with violated("membership"):
        i.on_conf(N3, 5, ConfState(voters=(N1, N2)))


def test_membership_snapshot_must_carry_the_committed_configuration() -> None:
    i = inv()
    i.on_conf(N1, 5, ConfState(voters=(N1, N2)))
    i.on_config_at(N3, 7, ConfState(voters=(N1, N2)))
    with violated("membership"):
        i.on_config_at(N3, 8, ConfState(voters=(N1, N2, N3)))


def test_durability_follows_the_newest_configuration() -> None:
    n4 = NodeId("n4")
    i = Invariants((*NODES, n4), seed=1, now=lambda: 0)
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1), e(1, 2)], 2)
    full, short = _disk([e(1, 1), e(1, 2)]), _disk([e(1, 1)])
    # Four voters: two holders leave no quorum of three without one.
    i.on_conf(N1, 1, ConfState(voters=(N1, N2, N3, n4)))
    i.on_crash(N3, {N1: full, N2: full, N3: short, n4: short})
    # Down to three voters {n2, n3, n4}: one holder is not enough.
    i.on_conf(N1, 2, ConfState(voters=(N2, N3, n4)))
    with violated("durability"):
        i.on_crash(N3, {N1: full, N2: full, N3: short, n4: short})


def test_durability_joint_configuration_needs_one_safe_half() -> None:
    n4, n5 = NodeId("n4"), NodeId("n5")
    i = Invariants((*NODES, n4, n5), seed=1, now=lambda: 0)
    i.on_ready(N1, 1, Role.LEADER, [e(1, 1)], 1)
    full, empty = _disk([e(1, 1)]), SimDisk(NODES)
    # Joint {n1,n2,n3} (outgoing) and {n3,n4,n5} (incoming); n1, n2 hold it.
    i.on_conf(N1, 1, ConfState(voters=(N3, n4, n5), voters_outgoing=(N1, N2, N3)))
    disks = {N1: full, N2: full, N3: empty, n4: empty, n5: empty}
    i.on_crash(N3, disks)  # every joint quorum needs two of n1..n3: one holds it
    disks[N2] = empty
    with violated("durability"):
        i.on_crash(N3, disks)
