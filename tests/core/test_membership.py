"""Membership changes driven through the log (dissertation §4).

Changes take effect when their CONF_CHANGE entry is applied (the harness calls
``RawNode.apply_conf_change``). A change of one voter is applied directly
(§4.1); larger changes go through a joint configuration (§4.3) that the leader
leaves automatically unless the change asked to leave explicitly. Learners
(§4.2.1: "non-voting members") receive the log but neither vote nor count for
commitment.
"""

from __future__ import annotations

import pytest

from raftkv.core import (
    AppendEntries,
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    EntryType,
    ProposalDropped,
    Raft,
    RequestVote,
    Role,
)
from raftkv.sim.mutants import IncomingHalfOnlyCommit
from tests.core.harness import Harness, nid

N1, N2, N3, N4, N5 = (nid(i) for i in range(1, 6))

ADD_VOTER = ConfChangeType.ADD_VOTER
ADD_LEARNER = ConfChangeType.ADD_LEARNER
REMOVE = ConfChangeType.REMOVE_NODE


def cc(*changes: tuple[ConfChangeType, int], transition=ConfChangeTransition.AUTO) -> ConfChange:
    return ConfChange(
        changes=tuple(ConfChangeSingle(t, nid(i)) for t, i in changes), transition=transition
    )


def cluster(n: int = 3, **cfg: object) -> Harness:
    # Without CheckQuorum elections can be forced at any time with campaign().
    cfg.setdefault("check_quorum", False)
    h = Harness(n, **cfg)
    h.elect(1)
    h.stabilize()
    return h


def join(h: Harness, i: int, leader: int = 1) -> None:
    """Start empty node ``i``, making sure it will get the leader's configuration.

    The bootstrap configuration is not in the log, so a node that replays the
    log from index 1 never learns it (see the two BUG tests below). The leader
    therefore compacts first: the new node starts from a snapshot, whose
    ConfState carries the full membership, and replays only later changes.
    """
    st = h.storage[nid(leader)]
    applied = h.node(leader).applied_index
    if st.first_index() <= applied:
        h.compact(leader, applied)
    h.add_node(i)


def change(h: Harness, leader: int, conf: ConfChange) -> int:
    """Propose ``conf`` at ``leader`` and run until every node applied everything."""
    index = h.node(leader).propose_conf_change(conf)
    h.stabilize()
    assert h.node(leader).applied_index >= index
    return index


def voters(h: Harness, i: int) -> tuple:
    return h.node(i).status().conf_state.voters


def conf_entries(h: Harness, i: int) -> list[ConfChange]:
    """The configuration changes node ``i`` applied, in order."""
    return [ConfChange.decode(e.data) for e in h.applied[nid(i)] if e.type is EntryType.CONF_CHANGE]


def elect_one_of(h: Harness, candidates: list[int], ticks: int = 100) -> int:
    """Tick everyone until one of ``candidates`` is leader; return it."""
    for _ in range(ticks):
        h.tick_all()
        h.stabilize()
        for c in candidates:
            if h.node(c).role is Role.LEADER:
                return c
    raise AssertionError(f"none of {candidates} became leader")


# --------------------------------------------------------------------------- learners


def test_learner_replicates_but_never_votes_campaigns_or_counts():
    """§4.2.1: a learner receives the log, but is not asked for votes, never
    campaigns, and its acknowledgement does not count toward commitment."""
    h = cluster()
    join(h, 4)
    change(h, 1, cc((ADD_LEARNER, 4)))
    cs = h.node(1).status().conf_state
    assert cs.learners == (N4,) and cs.voters == (N1, N2, N3)
    assert h.node(4).status().conf_state == cs  # n4 learned its own role from the log
    h.propose(1, b"x")
    h.stabilize()
    assert h.node(4).commit_index == h.node(1).commit_index == h.node(4).last_index

    # Never campaigns, however long it waits.
    for _ in range(5 * h.raft(4).election_timeout):
        h.tick(4)
    h.stabilize()
    assert h.node(4).role is Role.FOLLOWER
    assert not any(isinstance(m, RequestVote) and m.sender == N4 for m in h.delivered)

    # Not counted: with n2 and n3 gone, n1 + n4 hold the entry but it does not commit.
    h.isolate(2)
    h.isolate(3)
    before = h.node(1).commit_index
    idx = h.propose(1, b"y")
    h.stabilize()
    assert h.node(4).last_index == idx
    assert h.node(1).progress()[N4].match == idx
    assert h.node(1).commit_index == before

    # Never asked for a vote.
    h.heal()
    h.node(2).campaign()
    h.stabilize()
    assert h.node(2).role is Role.LEADER
    assert not any(isinstance(m, RequestVote) and m.to == N4 for m in h.delivered)


def test_promote_learner_to_voter():
    """§4.2.1: once caught up, a learner is promoted with an ordinary change and
    then counts for commitment and elections."""
    h = cluster()
    join(h, 4)
    change(h, 1, cc((ADD_LEARNER, 4)))
    change(h, 1, cc((ADD_VOTER, 4)))
    assert all(voters(h, i) == (N1, N2, N3, N4) for i in range(1, 5))
    assert h.node(1).status().conf_state.learners == ()
    # 4 voters: n1 + n4 alone is no longer a quorum, n1 + n2 + n4 is.
    h.isolate(3)
    idx = h.propose(1, b"z")
    h.stabilize()
    assert h.node(1).commit_index == idx
    h.isolate(2)
    idx = h.propose(1, b"w")
    h.stabilize()
    assert h.node(1).commit_index < idx
    h.heal()
    h.stabilize()
    h.node(4).campaign()
    h.stabilize()
    assert h.node(4).role is Role.LEADER


# --------------------------------------------------------------------------- §4.1


def test_grow_three_to_five_and_shrink_back_one_server_at_a_time():
    """§4.1: single-server changes, each applied before the next, grow the
    cluster to five voters and shrink it back; quorums follow the configuration."""
    h = cluster()
    for i in (4, 5):
        join(h, i)
        change(h, 1, cc((ADD_VOTER, i)))
    five = (N1, N2, N3, N4, N5)
    assert all(voters(h, i) == five for i in range(1, 6))
    assert len(conf_entries(h, 1)) == 2
    # Five voters: n1, n4, n5 commit without n2 and n3.
    h.isolate(2)
    h.isolate(3)
    idx = h.propose(1, b"five")
    h.stabilize()
    assert h.node(1).commit_index == idx
    assert h.node(5).commit_index == idx  # n5 applies it too
    h.heal()
    h.stabilize()

    for i in (5, 4):
        change(h, 1, cc((REMOVE, i)))
    assert all(voters(h, i) == (N1, N2, N3) for i in range(1, 4))
    assert set(h.node(1).progress()) == {N1, N2, N3}
    # Three voters again: n4 and n5 are irrelevant, n1 + n2 is a quorum.
    h.isolate(3)
    h.isolate(4)
    h.isolate(5)
    idx = h.propose(1, b"three")
    h.stabilize()
    assert h.node(1).commit_index == idx


# --------------------------------------------------------------------------- §4.3


def test_multi_voter_change_enters_joint_and_leaves_automatically():
    """§4.3: adding two voters at once goes through C_old,new and then C_new:
    two configuration entries, the second proposed by the leader itself."""
    h = cluster()
    join(h, 4)
    join(h, 5)
    change(h, 1, cc((ADD_VOTER, 4), (ADD_VOTER, 5)))
    entries = conf_entries(h, 1)
    assert len(entries) == 2
    assert len(entries[0].changes) == 2 and entries[1].leaves_joint()
    assert conf_entries(h, 4) == entries  # replicated like any entry
    for i in range(1, 6):
        [joint, final] = h.conf_history[nid(i)]
        assert joint.voters == (N1, N2, N3, N4, N5) and joint.voters_outgoing == (N1, N2, N3)
        assert joint.auto_leave
        assert final.voters == (N1, N2, N3, N4, N5) and not final.is_joint()


def test_joint_explicit_stays_joint_until_an_empty_change():
    """§4.3: with JOINT_EXPLICIT the cluster stays in C_old,new until asked to
    leave; no other change is accepted meanwhile."""
    h = cluster()
    join(h, 4)
    change(h, 1, cc((ADD_VOTER, 4), transition=ConfChangeTransition.JOINT_EXPLICIT))
    h.tick_all(3)
    h.stabilize()
    cs = h.node(1).status().conf_state
    assert cs.is_joint() and not cs.auto_leave
    assert len(conf_entries(h, 1)) == 1
    join(h, 5)
    with pytest.raises(ConfChangeError):
        h.node(1).propose_conf_change(cc((ADD_VOTER, 5)))
    change(h, 1, ConfChange())
    assert len(conf_entries(h, 1)) == 2
    for i in range(1, 5):
        cs = h.node(i).status().conf_state
        assert not cs.is_joint() and cs.voters == (N1, N2, N3, N4)


def replace_two_voters_jointly(raft_class: type[Raft]) -> tuple[Harness, int]:
    """C_old = {n1,n2,n3}, C_new = {n1,n4,n5}; stay joint, then lose n2 and n3
    and propose. Returns the harness and the proposal's index."""
    h = cluster(raft_class=raft_class)
    join(h, 4)
    join(h, 5)
    change(
        h,
        1,
        cc(
            (ADD_VOTER, 4),
            (ADD_VOTER, 5),
            (REMOVE, 2),
            (REMOVE, 3),
            transition=ConfChangeTransition.JOINT_EXPLICIT,
        ),
    )
    cs = h.node(1).status().conf_state
    assert cs.voters == (N1, N4, N5) and cs.voters_outgoing == (N1, N2, N3)
    h.isolate(2)
    h.isolate(3)
    idx = h.propose(1, b"x")
    h.stabilize()
    # Every member of C_new holds the entry: C_new alone has a majority (3 of 3).
    assert all(h.node(1).progress()[n].match >= idx for n in (N1, N4, N5))
    return h, idx


def test_joint_commit_needs_majorities_of_both_configurations():
    """§4.3: "agreement (for elections and entry commitment) requires separate
    majorities from both the old and new configurations"."""
    h, idx = replace_two_voters_jointly(Raft)
    assert h.node(1).commit_index < idx
    h.heal()
    h.tick(1)
    h.stabilize()
    assert h.node(1).commit_index >= idx  # n2/n3 back: C_old has its majority


def test_commit_with_incoming_majority_only_is_caught():
    """§4.3 matters: the broken subclass commits with C_new alone, which C_old
    never agreed to (the test above would fail against it). That this loses a
    committed entry, caught by the simulator's checkers, is
    tests/sim/test_mutants_membership_reads_sessions.py::
    test_mutant_incoming_half_only_commit_is_caught_by_leader_completeness."""
    h, idx = replace_two_voters_jointly(IncomingHalfOnlyCommit)
    assert h.node(1).commit_index >= idx


# --------------------------------------------------------------------------- §4.2.2


def test_removed_leader_steps_down_after_applying_and_the_rest_elect():
    """§4.2.2: the leader manages its own removal, steps down once the change is
    committed (applied here), and the remaining voters elect a new leader."""
    h = cluster()
    idx = h.node(1).propose_conf_change(cc((REMOVE, 1)))
    # Still leading while the change is in flight.
    assert h.node(1).role is Role.LEADER
    h.stabilize()
    assert h.node(1).applied_index >= idx
    assert h.node(1).role is Role.FOLLOWER
    assert voters(h, 1) == voters(h, 2) == voters(h, 3) == (N2, N3)
    # The others learned the change is committed before the leader left.
    assert h.node(2).commit_index >= idx and h.node(3).commit_index >= idx

    new = elect_one_of(h, [2, 3])
    assert h.node(1).role is Role.FOLLOWER  # n1 never campaigns
    assert not any(
        isinstance(m, RequestVote) and m.sender == N1 and m.term > 1 for m in h.delivered
    )
    h.isolate(1)
    idx = h.propose(new, b"after")
    h.stabilize()
    assert h.node(new).commit_index == idx


# --------------------------------------------------------------------------- guards


def new_leader_without_own_commit() -> Harness:
    """n2 wins term 2 but its no-op has not reached anyone."""
    h = cluster()
    h.drop_if = lambda m: isinstance(m, AppendEntries) and m.sender == N2
    h.node(2).campaign()
    h.stabilize()
    assert h.node(2).role is Role.LEADER and h.node(2).term == 2
    assert not h.raft(2).committed_in_current_term()
    return h


def test_new_leader_refuses_a_change_until_an_own_term_entry_commits():
    """§4.1 (the single-server change bug, Ongaro 2015 raft-dev): a leader may
    not change membership until an entry of its own term has committed."""
    h = new_leader_without_own_commit()
    join(h, 4, leader=2)
    with pytest.raises(ProposalDropped):
        h.node(2).propose_conf_change(cc((ADD_VOTER, 4)))
    assert conf_entries(h, 2) == []
    h.drop_if = None
    h.tick(2)
    h.stabilize()
    assert h.raft(2).committed_in_current_term()
    change(h, 2, cc((ADD_VOTER, 4)))
    assert voters(h, 2) == (N1, N2, N3, N4)


def test_second_change_while_one_is_pending_is_refused():
    """§4.1: one change at a time; the next may be proposed once the previous is applied."""
    h = cluster()
    join(h, 4)
    join(h, 5)
    h.node(1).propose_conf_change(cc((ADD_LEARNER, 4)))
    with pytest.raises(ProposalDropped):
        h.node(1).propose_conf_change(cc((ADD_LEARNER, 5)))
    h.stabilize()
    change(h, 1, cc((ADD_LEARNER, 5)))
    assert h.node(1).status().conf_state.learners == (N4, N5)


def test_node_without_configuration_never_campaigns():
    """§4.1: a new server starts with no configuration and waits to be added."""
    h = cluster()
    node = h.add_node(4)
    assert node.status().conf_state.voters == ()
    for _ in range(10 * h.raft(4).election_timeout):
        node.tick()
    h.stabilize()
    assert node.role is Role.FOLLOWER and node.term == 0
    assert not any(isinstance(m, RequestVote) and m.sender == N4 for m in h.delivered)
    with pytest.raises(ProposalDropped):
        node.propose(b"x")


# --------------------------------------------------------------------------- core bugs


def test_node_joining_by_log_replay_learns_the_full_configuration():
    """§4.1: a new server that catches up from the log must end up with the
    leader's configuration.

    The founding membership is log entry 1 (written at bootstrap from
    ``Config.peers``), so an empty node (``add_node``) that replays the log from
    index 1 applies every change to the right membership. Before that entry
    existed, ADD_LEARNER n4 was rejected ("removing every voter") on n4 and
    ADD_VOTER n4 yielded voters == (n4,).
    """
    h = cluster(bootstrap=True)
    h.add_node(4)  # leader's log is not compacted: n4 replays it from index 1
    change(h, 1, cc((ADD_LEARNER, 4)))
    assert h.node(4).status().conf_state == h.node(1).status().conf_state


def test_promoted_node_that_joined_by_log_replay_cannot_win_alone():
    """§4.1 / Election Safety (paper §5.2): consequence of the bug above.

    After promotion n4 believes it is the only voter, so when cut off it elects
    itself in term 2 with no other vote and commits its own no-op alone --
    a second leader and an entry "committed" by one of four voters.
    """
    h = cluster(bootstrap=True)
    h.add_node(4)
    change(h, 1, cc((ADD_LEARNER, 4)))
    change(h, 1, cc((ADD_VOTER, 4)))
    h.isolate(4)
    h.node(4).campaign()
    h.stabilize()
    assert h.node(4).role is not Role.LEADER
    assert h.node(4).commit_index <= h.node(1).commit_index
