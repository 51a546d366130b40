"""ReadIndex: linearizable reads without writing the log (dissertation §6.4, §6.4.1).

Each test names the step of §6.4 it guards: (1) a leader serves reads only once
an entry of its own term is committed, (2) the read index is the commit index
when the request arrives, (3) leadership is confirmed by a heartbeat round
acknowledged by a quorum, batched for every read registered since the last
round; followers forward requests to the leader. §6.4.1 replaces step 3 with
the CheckQuorum lease.
"""

from __future__ import annotations

import pytest

from raftkv.core import (
    AppendEntries,
    Config,
    Heartbeat,
    HeartbeatResponse,
    ProposalDropped,
    Raft,
    ReadIndex,
    ReadIndexResponse,
    ReadState,
    Role,
)
from raftkv.sim.mutants import ReadsBeforeOwnCommit
from tests.core.harness import Harness, nid

N1, N2, N3 = (nid(i) for i in range(1, 4))


def read_heartbeats(msgs: list) -> list[Heartbeat]:
    """Heartbeats that carry a ReadIndex round."""
    return [m for m in msgs if isinstance(m, Heartbeat) and m.context]


def cluster_with_writes(n_writes: int = 3, **cfg: object) -> Harness:
    h = Harness(3, **cfg)
    h.elect(1)
    for k in range(n_writes):
        h.propose(1, b"w%d" % k)
    h.stabilize()
    return h


# --------------------------------------------------------------------------- §6.4 steps 2-3


def test_leader_read_returns_commit_index_after_quorum_heartbeat_round():
    """§6.4 steps 2-3: the read index is the commit index, released only after a
    quorum acknowledged the heartbeat round sent after the request."""
    h = cluster_with_writes()
    commit = h.node(1).commit_index
    assert commit == 4  # no-op + 3 writes

    h.node(1).read_index(b"r1")
    assert h.raft(1).read_states == []  # not before the round

    # Both followers unreachable: the round is sent but nobody acknowledges it.
    h.drop_if = lambda m: isinstance(m, Heartbeat) and m.context != b""
    h.stabilize()
    assert h.read_states.get(N1, []) == []

    # The next round (next heartbeat tick) reaches n2 only: n1 + n2 is a quorum.
    h.drop_if = lambda m: m.to == N3 or m.sender == N3
    # Periodic heartbeats carry no context once a round went out; a later read
    # starts a new round, and its quorum acknowledgement releases r1 as well.
    h.node(1).read_index(b"r2")
    h.stabilize()
    got = h.read_states[N1]
    assert [rs.context for rs in got] == [b"r1", b"r2"]
    assert all(rs.index == commit for rs in got)
    acks = [m for m in h.delivered if isinstance(m, HeartbeatResponse) and m.context]
    assert {m.sender for m in acks} == {N2}


def test_follower_read_is_forwarded_to_the_leader():
    """§6.4: a follower asks the leader for a read index and serves the read itself."""
    h = cluster_with_writes()
    commit = h.node(1).commit_index
    h.node(2).read_index(b"f")
    h.stabilize()
    assert h.read_states[N2] == [ReadState(commit, b"f")]
    assert h.read_states.get(N1, []) == []  # the leader did not keep it
    kinds = [(type(m), m.sender, m.to) for m in h.delivered]
    assert (ReadIndex, N2, N1) in kinds
    assert (ReadIndexResponse, N1, N2) in kinds
    # The leader confirmed its leadership before answering.
    first_response = next(i for i, m in enumerate(h.delivered) if isinstance(m, ReadIndexResponse))
    assert any(isinstance(m, HeartbeatResponse) and m.context for m in h.delivered[:first_response])


def test_follower_without_leader_cannot_read():
    """§6.4: with no known leader there is nobody to ask."""
    h = Harness(3)
    with pytest.raises(ProposalDropped):
        h.node(2).read_index(b"x")


def test_reads_between_two_readys_share_one_heartbeat_round():
    """§6.4 (batching): every read registered between two Readys rides on one
    heartbeat broadcast carrying one context."""
    h = cluster_with_writes()
    commit = h.node(1).commit_index
    # A forwarded follower read arrives at the leader between the same two Readys.
    h.node(2).read_index(b"from-n2")
    h.process_ready(N2)
    h.deliver(lambda m: isinstance(m, ReadIndex))
    for ctx in (b"a", b"b", b"c"):
        h.node(1).read_index(ctx)
    start = len(h.delivered)

    h.process_ready(N1)
    sent = read_heartbeats(h.queue)
    assert sorted(m.to for m in sent) == [N2, N3]  # one broadcast
    assert len({m.context for m in sent}) == 1  # one context

    h.stabilize()
    assert len(read_heartbeats(h.delivered[start:])) == 2  # no further round
    assert h.read_states[N1] == [ReadState(commit, c) for c in (b"a", b"b", b"c")]
    assert h.read_states[N2] == [ReadState(commit, b"from-n2")]


# --------------------------------------------------------------------------- §6.4 step 1


def new_leader_with_stale_commit(raft_class: type[Raft]) -> tuple[Harness, int]:
    """n1 commits write w and acknowledges it, but dies before telling anyone
    the new commit index; n2 (holding w) wins term 2 and its no-op is held back.

    Returns the harness and w's index.
    """
    h = Harness(3, check_quorum=False, raft_class=raft_class)
    h.elect(1)
    w = h.propose(1, b"w")
    h.process_ready(N1)
    h.deliver(lambda m: m.to == N2)  # w reaches n2 only
    h.process_ready(N2)
    h.deliver(lambda m: m.sender == N2)  # n2's ack reaches n1
    assert h.node(1).commit_index == w  # the write is acknowledged to the client
    assert h.node(2).commit_index < w
    h.isolate(1)
    h.queue.clear()
    # n2 wins (n3 votes: n2's log is longer); its no-op does not reach n3.
    h.drop_if = lambda m: isinstance(m, AppendEntries) and m.sender == N2
    h.node(2).campaign()
    h.stabilize()
    assert h.node(2).role is Role.LEADER and h.node(2).term == 2
    assert h.node(2).commit_index < w
    return h, w


def test_new_leader_defers_reads_until_its_noop_commits():
    """§6.4 step 1: until an entry of its term commits, a new leader may not know
    the latest commit index, so it must not hand out a read index."""
    h, w = new_leader_with_stale_commit(Raft)
    h.node(2).read_index(b"r")
    h.stabilize()
    assert h.read_states.get(N2, []) == []

    h.drop_if = None
    h.tick(2)  # a heartbeat; n3's reply makes n2 resend the no-op
    h.stabilize()
    assert h.node(2).commit_index == w + 1
    [rs] = h.read_states[N2]
    assert rs.context == b"r" and rs.index >= w


def test_skipping_own_term_commit_rule_reads_below_acknowledged_write():
    """§6.4 step 1 matters: without it the read index is below a write that was
    already acknowledged, so the read could miss it (not linearizable; the
    history-checked version is tests/sim/test_mutants_membership_reads_sessions.py::
    test_mutant_reads_before_own_commit_is_caught_by_linearizability)."""
    h, w = new_leader_with_stale_commit(ReadsBeforeOwnCommit)
    h.node(2).read_index(b"r")
    h.stabilize()
    [rs] = h.read_states[N2]
    assert rs.index < w


def test_single_voter_leader_defers_reads_until_its_noop_commits():
    """§6.4 step 1 holds for a single voter too, although it is its own quorum.

    A one-node cluster acknowledged writes 3..5 (durable, committed), but lost
    power before its hard state recorded a commit index above 2. Restarted, it
    wins term 2; its commit index (2) is below what it acknowledged, and entries
    of term 1 commit only with one of term 2 (§5.4.2). A read answered before the
    no-op commits would miss the acknowledged writes.
    """
    h = Harness(1)
    acknowledged = 5
    h.load(1, [1] * acknowledged, term=1, vote=1, commit=2)
    h.node(1).campaign()
    for _ in range(10):
        if h.node(1).role is Role.LEADER:
            break
        assert h.process_ready(N1)
    assert h.node(1).role is Role.LEADER and h.node(1).term == 2
    assert h.node(1).commit_index == 2

    h.node(1).read_index(b"r")
    assert h.raft(1).read_states == []  # not at the stale commit index
    h.stabilize()
    [rs] = h.read_states[N1]
    assert rs.context == b"r" and rs.index >= acknowledged
    assert rs.index == h.node(1).commit_index == acknowledged + 1  # the no-op


# --------------------------------------------------------------------------- §6.4 step 3


def test_partitioned_stale_leader_never_releases_a_read():
    """§6.4 step 3: a deposed leader cannot gather a quorum of acknowledgements,
    so its reads are never answered (they would be stale)."""
    h = cluster_with_writes(check_quorum=False)
    h.isolate(1)
    h.node(1).read_index(b"stale")
    for _ in range(5):
        h.tick(1)
        h.stabilize()
    assert h.read_states.get(N1, []) == []

    h.heal()
    h.isolate(1)
    h.elect(2)
    h.propose(2, b"newer")
    h.stabilize()
    # The old leader now reaches the others: they refuse its term-1 heartbeats.
    h.heal()
    for _ in range(3):
        h.tick(1)
        h.stabilize()
    assert h.node(1).role is Role.FOLLOWER and h.node(1).term == 2
    assert all(rs.context != b"stale" for rs in h.read_states.get(N1, []))
    assert not any(
        isinstance(m, HeartbeatResponse) and m.to == N1 and m.term == 1 and m.context
        for m in h.delivered
    )


# --------------------------------------------------------------------------- §6.4.1


def test_lease_read_is_answered_without_a_heartbeat_round():
    """§6.4.1: with read_only="lease" (and CheckQuorum) the leader answers at once
    while a quorum acknowledged a heartbeat sent less than an election timeout ago."""
    h = cluster_with_writes(read_only="lease")
    # No lease before the first acknowledged heartbeat round: the read waits.
    h.node(1).read_index(b"early")
    assert h.raft(1).read_states == []
    h.stabilize()
    assert [rs.context for rs in h.read_states[N1]] == [b"early"]
    h.read_states[N1].clear()
    # That round established the lease; the next read needs no round.
    commit = h.node(1).commit_index
    start = len(h.delivered)
    h.node(1).read_index(b"l")
    assert h.raft(1).read_states == [ReadState(commit, b"l")]
    h.stabilize()
    assert h.read_states[N1] == [ReadState(commit, b"l")]
    assert read_heartbeats(h.delivered[start:]) == []


def test_safe_mode_needs_a_round_where_lease_mode_does_not():
    """§6.4 vs §6.4.1: the same request in "safe" mode waits for a heartbeat round."""
    h = cluster_with_writes()
    h.node(1).read_index(b"s")
    assert h.raft(1).read_states == []
    h.process_ready(N1)
    assert len(read_heartbeats(h.queue)) == 2


def test_lease_leader_serves_no_read_after_a_newer_leader_committed():
    """§6.4.1: the lease must expire before the followers may elect someone else.

    Every node is ticked in lock step (no clock drift at all). n1 is isolated; n2
    wins term 2 and commits a write; every tick n1 is still leader it is asked
    for a lease read. A lease that expires in time never answers with an index
    below the newer leader's committed write.
    """
    h = cluster_with_writes(n_writes=1, read_only="lease")
    h.isolate(1)
    stale: list[tuple[int, ReadState, int]] = []
    newer_commit = 0
    for t in range(1, 4 * h.raft(1).election_timeout):
        h.tick_all()
        h.stabilize()
        new_leaders = [n for n in (N2, N3) if h.nodes[n].role is Role.LEADER]
        if new_leaders and not newer_commit:
            h.nodes[new_leaders[0]].propose(b"newer")
            h.stabilize()
            newer_commit = h.nodes[new_leaders[0]].commit_index
        if h.node(1).role is not Role.LEADER:
            break
        h.node(1).read_index(b"t%d" % t)
        stale += [(t, rs, newer_commit) for rs in h.raft(1).read_states if rs.index < newer_commit]
    assert newer_commit, "the majority side never elected a leader"
    assert h.node(1).role is Role.FOLLOWER
    assert stale == [], f"stale lease reads (tick, read, newer commit): {stale}"


def test_lease_reads_require_check_quorum():
    """§6.4.1: without CheckQuorum there is no lease to rely on."""
    with pytest.raises(ValueError):
        Config(node_id=N1, read_only="lease", check_quorum=False).validate()
    Config(node_id=N1, read_only="lease", check_quorum=True).validate()
    with pytest.raises(ValueError):
        Config(node_id=N1, read_only="fast").validate()
