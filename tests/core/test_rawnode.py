"""The Ready/advance contract of RawNode (etcd's rawnode; paper Figure 2 persistence)."""

from __future__ import annotations

import random

import pytest

from raftkv.core import (
    AppendEntries,
    Config,
    Entry,
    HardState,
    Heartbeat,
    InstallSnapshot,
    MemoryStorage,
    NotLeader,
    RaftError,
    RawNode,
    RequestVote,
    Role,
    snapshot_checksum,
)
from raftkv.core.types import ConfChange, ConfChangeSingle, ConfChangeType
from tests.core.harness import Harness, nid

N1, N2, N3 = nid(1), nid(2), nid(3)
IDS = (N1, N2, N3)


def fresh(node_id=N2, storage=None, **cfg) -> tuple[RawNode, MemoryStorage]:
    st = storage or MemoryStorage(voters=IDS)
    return RawNode(Config(node_id=node_id, peers=IDS, **cfg), st, random.Random(0)), st


def handle(node: RawNode, st: MemoryStorage):
    rd = node.ready()
    if rd.entries:
        st.append(list(rd.entries))
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)
    node.advance(rd)
    return rd


def append(term, prev, prev_term, entries, commit):
    return AppendEntries(
        term=term,
        sender=N1,
        to=N2,
        prev_log_index=prev,
        prev_log_term=prev_term,
        entries=tuple(Entry(term=t, index=i, data=b"d") for t, i in entries),
        commit=commit,
    )


def test_ready_twice_without_advance_raises():
    node, _ = fresh()
    node.step(append(1, 0, 0, [(1, 1)], 0))
    node.ready()
    assert not node.has_ready()
    with pytest.raises(RaftError):
        node.ready()


def test_advance_without_ready_raises():
    node, _ = fresh()
    node.step(append(1, 0, 0, [(1, 1)], 0))
    rd = node.ready()
    node.advance(rd)
    with pytest.raises(RaftError):
        node.advance(rd)


def test_fresh_node_has_nothing_ready():
    node, _ = fresh()
    assert not node.has_ready()


def test_hard_state_only_when_changed_and_must_sync_rules():
    """Paper Figure 2: term, vote and log must be durable (must_sync) before replies;
    a change of commit index alone need not be synced."""
    node, st = fresh()
    node.step(append(1, 0, 0, [(1, 1), (1, 2)], 0))
    rd = handle(node, st)
    assert rd.hard_state == HardState(term=1, vote=None, commit=0)
    assert rd.must_sync and len(rd.entries) == 2
    # Commit only: hard state changes, nothing needs syncing.
    node.step(Heartbeat(term=1, sender=N1, to=N2, commit=2))
    rd = handle(node, st)
    assert rd.hard_state == HardState(term=1, vote=None, commit=2)
    assert not rd.must_sync and rd.entries == ()
    assert [e.index for e in rd.committed_entries] == [1, 2]
    # Nothing changed: hard state is None.
    node.step(Heartbeat(term=1, sender=N1, to=N2, commit=2))
    rd = handle(node, st)
    assert rd.hard_state is None and not rd.must_sync and rd.committed_entries == ()
    # A vote in a new term must be synced.
    for _ in range(40):
        node.tick()
    node.step(RequestVote(term=2, sender=N3, to=N2, last_log_index=2, last_log_term=1))
    rd = handle(node, st)
    assert rd.hard_state is not None and rd.hard_state.vote == N3 and rd.must_sync


def test_committed_entries_handed_out_once():
    node, st = fresh()
    node.step(append(1, 0, 0, [(1, 1), (1, 2), (1, 3)], 2))
    rd = handle(node, st)
    assert [e.index for e in rd.committed_entries] == [1, 2]
    node.step(Heartbeat(term=1, sender=N1, to=N2, commit=3))
    rd = handle(node, st)
    assert [e.index for e in rd.committed_entries] == [3]
    assert node.applied_index == 3
    assert not node.has_ready() or handle(node, st).committed_entries == ()


def test_soft_state_reported_on_change():
    h = Harness(3)
    h.node(1).campaign()
    rd = h.node(1).ready()
    assert rd.soft_state is not None and rd.soft_state.role is Role.PRE_CANDIDATE
    h.node(1).advance(rd)


def test_restart_keeps_term_vote_and_commit_and_reapplies():
    """Paper Figure 2: currentTerm/votedFor/log survive restarts; a restarted node does
    not vote twice in a term, and committed entries are handed out again to a state
    machine that starts from scratch (applied=0)."""
    node, st = fresh(check_quorum=False)
    node.step(append(1, 0, 0, [(1, 1), (1, 2)], 2))
    handle(node, st)
    for _ in range(40):
        node.tick()
    node.step(RequestVote(term=2, sender=N3, to=N2, last_log_index=2, last_log_term=1))
    handle(node, st)
    node2, _ = fresh(storage=st, check_quorum=False)
    assert (node2.term, node2.hard_state().vote, node2.commit_index) == (2, N3, 2)
    node2.step(RequestVote(term=2, sender=N1, to=N2, last_log_index=9, last_log_term=2))
    rd = handle(node2, st)
    assert rd.hard_state is None  # nothing changed: the vote stays with n3
    assert [m.granted for m in rd.messages_after_persist] == [False]
    assert [e.index for e in rd.committed_entries] == [1, 2]


def test_restart_with_applied_skips_applied_entries():
    node, st = fresh()
    node.step(append(1, 0, 0, [(1, 1), (1, 2), (1, 3)], 3))
    handle(node, st)
    node2, _ = fresh(storage=st, applied=2)
    rd = handle(node2, st)
    assert [e.index for e in rd.committed_entries] == [3]


def test_propose_on_follower_raises_not_leader_with_hint():
    node, _st = fresh()
    node.step(Heartbeat(term=1, sender=N1, to=N2, commit=0))
    with pytest.raises(NotLeader) as info:
        node.propose(b"x")
    assert info.value.leader == N1


def test_message_for_another_node_ignored():
    node, _ = fresh()
    node.step(
        AppendEntries(
            term=5, sender=N1, to=N3, prev_log_index=0, prev_log_term=0, entries=(), commit=0
        )
    )
    assert node.term == 0 and not node.has_ready()


def test_propose_batch_returns_last_index_and_rejects_empty():
    h = Harness(3)
    h.elect(1)
    assert h.node(1).propose_batch([b"a", b"b", b"c"]) == 4
    with pytest.raises(RaftError):
        h.node(1).propose_batch([])


def test_step_between_ready_and_advance_is_kept_for_next_ready():
    """ready.py: calls between ready() and advance() are allowed; their output goes
    into the next Ready."""
    node, st = fresh()
    node.step(append(1, 0, 0, [(1, 1)], 0))
    rd = node.ready()
    node.step(append(1, 1, 1, [(1, 2)], 1))
    st.append(list(rd.entries))
    node.advance(rd)
    rd2 = handle(node, st)
    assert [e.index for e in rd2.entries] == [2]
    assert [m.index for m in rd2.messages_after_persist] == [2]


def test_tick_returns_whether_it_produced_work():
    """RawNode.tick() is False only when it advanced the timers and nothing else.

    The simulator relies on it to skip has_ready() after most ticks; a tick
    that started an election or sent heartbeats must say so.
    """
    h = Harness(3, election_tick=10, heartbeat_tick=3)
    h.elect(1)
    leader, follower = h.node(1), h.node(2)
    # The leader: two quiet ticks, then a heartbeat round (a Ready with messages).
    assert [leader.tick(), leader.tick()] == [False, False] and not leader.has_ready()
    assert leader.tick() is True and leader.has_ready()
    h.stabilize()
    # A follower cut off from the leader: quiet ticks until its election
    # timeout, then a (pre-)campaign.
    h.isolate(2)
    results = []
    while True:
        acted = follower.tick()
        results.append(acted)
        if acted:
            break
        assert not follower.has_ready(), "a False tick left work behind"
        assert len(results) < 40, "no election after 40 ticks"
    assert follower.has_ready() and len(results) >= 10
    h.heal()
    h.stabilize()


def test_false_ticks_never_leave_work_behind():
    """A random schedule of ticks, proposals and partitions: whenever tick() is
    False on a node that had no Ready pending, it still has none."""
    rng = random.Random(11)
    h = Harness(3, election_tick=6, heartbeat_tick=2, seed=11)
    h.elect(1)
    falses = trues = 0
    for step in range(1500):
        i = rng.randrange(1, 4)
        node = h.node(i)
        if not node.has_ready():
            if node.tick():
                trues += 1
            else:
                falses += 1
                assert not node.has_ready(), f"step {step}: n{i} has work after a False tick"
        roll = rng.random()
        if roll < 0.05:
            h.isolate(rng.randrange(1, 4))
        elif roll < 0.15:
            h.heal()
        elif roll < 0.3 and h.leaders():
            h.nodes[h.leaders()[0]].propose(b"x")
        h.stabilize()
    assert falses > 500 and trues > 100


# -- a candidate's own vote counts once it is durable ------------------------------


def single_voter(storage: MemoryStorage | None = None, **cfg) -> tuple[RawNode, MemoryStorage]:
    st = storage or MemoryStorage(voters=(N1,))
    return RawNode(Config(node_id=N1, **cfg), st, random.Random(0)), st


@pytest.mark.parametrize("pre_vote", [False, True])
def test_candidate_counts_its_own_vote_only_after_advance(pre_vote):
    """Paper Figure 2 ("persist currentTerm and votedFor before responding"), for
    the candidate's vote for itself too (etcd: a MsgVoteResp to itself in
    msgsAfterAppend): a single voter is not leader until the Ready holding its
    new term and vote was persisted and advanced. A PreVote needs no persistence."""
    node, st = single_voter(pre_vote=pre_vote)
    node.campaign()
    assert node.role is Role.CANDIDATE and node.term == 1
    rd = node.ready()
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (1, N1)
    assert rd.must_sync
    # The vote is never a message for the driver to send.
    assert all(m.to != N1 for m in (*rd.messages, *rd.messages_after_persist))
    assert node.role is Role.CANDIDATE
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert node.role is Role.LEADER and node.term == 1
    rd = handle(node, st)
    assert [e.term for e in rd.entries] == [1]  # the no-op
    assert node.commit_index == rd.entries[-1].index


def test_crash_before_the_vote_is_persisted_leaves_no_leader():
    """The driver crashes between ready() and the persist: the vote never counted,
    and the restarted node starts from the durable (older) term."""
    node, st = single_voter(pre_vote=False)
    node.campaign()
    rd = node.ready()
    assert rd.hard_state is not None
    assert node.role is Role.CANDIDATE  # nothing persisted, nothing counted
    node2, _ = single_voter(storage=st, pre_vote=False)  # the restart
    assert (node2.role, node2.term, node2.hard_state().vote) == (Role.FOLLOWER, 0, None)


def test_vote_cast_while_a_ready_is_in_flight_counts_with_the_next_ready():
    """ready.py: a campaign between ready() and advance() goes into the next Ready;
    advancing the Ready already in flight (which does not hold the vote) must not
    count it."""
    st = MemoryStorage(voters=(N1,))
    st.append([Entry(term=1, index=1, data=b"x")])
    st.set_hard_state(HardState(term=1, vote=N1, commit=1))
    node, _ = single_voter(storage=st, pre_vote=False)
    rd1 = node.ready()  # applies entry 1; no hard state change
    assert rd1.hard_state is None and [e.index for e in rd1.committed_entries] == [1]
    node.campaign()
    node.advance(rd1)
    assert node.role is Role.CANDIDATE and node.term == 2
    rd2 = node.ready()
    assert rd2.hard_state is not None and (rd2.hard_state.term, rd2.hard_state.vote) == (2, N1)
    st.set_hard_state(rd2.hard_state)
    node.advance(rd2)
    assert node.role is Role.LEADER and node.term == 2


def test_peer_votes_arriving_before_advance_still_elect_once():
    """In a 3-voter cluster two peer votes win without the candidate's own; its
    own vote, stepped back in at advance(), then changes nothing."""
    h = Harness(3, pre_vote=False)
    node = h.node(1)
    node.campaign()
    rd = node.ready()
    h.storage[N1].set_hard_state(rd.hard_state)
    h.queue.extend(rd.messages_after_persist)
    h.deliver()
    h.process_ready(N2)
    h.process_ready(N3)
    h.deliver()  # both votes reach n1 before it advanced
    assert node.role is Role.LEADER
    node.advance(rd)
    assert node.role is Role.LEADER and node.term == 1
    h.stabilize()
    assert h.leaders() == [N1]


def test_views_show_a_leader_without_reaching_into_raft():
    """Drivers, the simulator and tests read a node through RawNode's views."""
    h = Harness(3)
    h.elect(1)
    leader, follower = h.node(1), h.node(2)
    assert not hasattr(leader, "raft")  # the Raft inside is private
    idx = h.propose(1, b"x")
    h.stabilize()
    assert (leader.term, leader.vote, follower.vote) == (1, N1, N1)
    assert leader.conf_state().voters == IDS
    assert [e.data for e in follower.entries(idx, idx + 1)] == [b"x"]
    assert follower.first_index == 1
    progress = leader.progress()
    assert sorted(progress) == list(IDS)
    assert all(p.match == idx and p.state == "replicate" for p in progress.values())
    assert follower.progress() == {}  # only a leader tracks progress
    assert leader.status().progress == progress
    # Set to the last index on taking office (the log was empty then), then to
    # the index of the change proposed.
    assert leader.pending_conf_index == 0
    cc_index = leader.propose_conf_change(
        ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, nid(9)),))
    )
    assert cc_index > idx and leader.pending_conf_index == cc_index
    h.stabilize()
    assert leader.lead_transferee is None
    leader.transfer_leadership(N3)
    assert leader.lead_transferee == N3


# -- asynchronous storage writes: accept() now, persisted() later ------------------


def leader_alone() -> tuple[RawNode, MemoryStorage]:
    """A single voter that leads term 1 with its no-op committed."""
    node, st = single_voter(pre_vote=False)
    node.campaign()
    handle(node, st)
    handle(node, st)
    assert node.role is Role.LEADER and node.commit_index == 1
    return node, st


def write(st: MemoryStorage, rd) -> None:
    if rd.entries:
        st.append(list(rd.entries))
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)


def test_accept_lets_the_next_ready_come_before_the_persist():
    """A Ready accepted but not persisted: the next Ready may be made at once, and
    holds only the entries proposed since (each entry is handed out once)."""
    node, st = leader_alone()
    node.propose(b"a")
    rd1 = node.ready()
    assert [e.data for e in rd1.entries] == [b"a"] and rd1.must_sync
    write(st, rd1)
    node.accept(rd1)
    assert not node.has_ready()  # nothing new: entry 2 is being written
    node.propose(b"b")
    assert node.has_ready()
    rd2 = node.ready()
    assert [e.data for e in rd2.entries] == [b"b"]
    write(st, rd2)
    node.accept(rd2)
    assert node.unpersisted() == 2


def test_own_entries_count_toward_commit_only_once_persisted():
    """Figure 2 / dissertation §10.2.1: the leader's own copy counts once durable.
    A single voter commits an accepted entry only when persisted() says so."""
    node, st = leader_alone()
    node.propose(b"a")
    rd = node.ready()
    write(st, rd)
    node.accept(rd)
    assert node.commit_index == 1
    node.persisted(rd)
    assert node.commit_index == 2
    rd = node.ready()
    assert [e.index for e in rd.committed_entries] == [2]


def test_persisted_must_follow_accept_and_keep_the_order():
    node, st = leader_alone()
    node.propose(b"a")
    rd1 = node.ready()
    with pytest.raises(RaftError, match="out of order or before accept"):
        node.persisted(rd1)
    write(st, rd1)
    node.accept(rd1)
    node.propose(b"b")
    rd2 = node.ready()
    write(st, rd2)
    node.accept(rd2)
    with pytest.raises(RaftError, match="out of order"):
        node.persisted(rd2)
    node.persisted(rd1)
    node.persisted(rd2)
    assert node.commit_index == 3 and node.unpersisted() == 0
    with pytest.raises(RaftError, match="without that Ready in flight"):
        node.accept(rd2)


def test_entries_replaced_while_being_written_are_handed_out_again():
    """A follower's entries replaced by a new leader before they persisted: the
    replacements go out in the next Ready, and persisting the old Ready does not
    make the replacements count as stable."""
    node, st = fresh()
    node.step(append(1, 0, 0, [(1, 1), (1, 2)], 0))
    rd1 = node.ready()
    assert [(e.term, e.index) for e in rd1.entries] == [(1, 1), (1, 2)]
    write(st, rd1)
    node.accept(rd1)
    # A leader of term 2 overwrites index 2 while rd1 is being synced.
    node.step(append(2, 1, 1, [(2, 2)], 0))
    rd2 = node.ready()
    assert [(e.term, e.index) for e in rd2.entries] == [(2, 2)]
    # rd1's acknowledgement waits for its persist; rd2 acknowledges index 2.
    assert not rd1.messages and not rd2.messages
    write(st, rd2)
    node.accept(rd2)
    node.persisted(rd1)
    assert node.entries(2, 3)[0].term == 2
    node.persisted(rd2)
    assert not node.has_ready()


def test_a_snapshot_ready_waits_for_the_readys_before_it():
    """A snapshot's Ready is accepted only after the Readys before it persisted."""

    h = Harness(3)
    h.elect(N1)
    leader = h.node(1)
    for i in range(5):
        leader.propose(b"%d" % i)
    h.stabilize()
    snap = h.storage[N1].create_snapshot(leader.commit_index, leader.conf_state(), b"state")
    node, st = fresh()
    node.step(append(1, 0, 0, [(1, 1)], 0))
    rd1 = node.ready()
    write(st, rd1)
    node.accept(rd1)
    md = snap.metadata
    node.step(
        InstallSnapshot(
            term=1,
            sender=N1,
            to=N2,
            snapshot_index=md.index,
            snapshot_term=md.term,
            conf_state=md.conf_state,
            offset=0,
            data=snap.data,
            done=True,
            total=len(snap.data),
            checksum=snapshot_checksum(snap.data),
        )
    )
    rd2 = node.ready()
    assert rd2.snapshot is not None
    with pytest.raises(RaftError, match="before it persist"):
        node.accept(rd2)
    node.persisted(rd1)
    node.advance(rd2)
    assert node.unpersisted() == 0
