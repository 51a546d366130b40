"""Scenarios on the synchronous core harness: membership under load,
replacing a failed node, removing the leader, a learner caught up from a
snapshot, and leadership transfer to a node behind the leader's snapshot.

"Under load" means a client proposes a command at the current leader before
every delivery round, so configuration entries travel interleaved with ordinary
ones. A command is *acknowledged* when the node that proposed it applied it at
the index it was given (what a server answers its client on). Every scenario
ends by checking real outcomes: every acknowledged command is in the log of
every final member at its index, the final members' logs and applied sequences
agree, and the final configuration is the intended one on every member.

Leadership transfer to a *lagging* node that can be caught up from the log is
tests/core/test_transfer.py::test_transfer_to_lagging_follower_catches_it_up_first;
the removed-leader basics are in tests/core/test_membership.py; here both are
extended (a target behind the snapshot; removal under load with CheckQuorum).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from raftkv.core import (
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfChangeType,
    Entry,
    InstallSnapshot,
    NodeId,
    NotLeader,
    ProposalDropped,
    Raft,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
)
from tests.core.harness import Harness, nid

N1, N2, N3, N4, N5 = (nid(i) for i in range(1, 6))

ADD_VOTER = ConfChangeType.ADD_VOTER
ADD_LEARNER = ConfChangeType.ADD_LEARNER
REMOVE = ConfChangeType.REMOVE_NODE


def cc(*changes: tuple[ConfChangeType, int]) -> ConfChange:
    return ConfChange(changes=tuple(ConfChangeSingle(t, nid(i)) for t, i in changes))


@dataclass
class Load:
    """A client that proposes one command per round at whoever leads, and the
    rounds themselves: Ready loops, one delivery pass, and a tick of every live
    node every ``tick_every`` rounds (the harness has no clock of its own)."""

    h: Harness
    dead: set[NodeId] = field(default_factory=set)
    tick_every: int = 3
    rounds: int = 0
    sent: int = 0
    pending: list[tuple[NodeId, int, bytes]] = field(default_factory=list)
    # (proposer, index, data) of every acknowledged command.
    acked: list[tuple[NodeId, int, bytes]] = field(default_factory=list)
    lost: int = 0

    def live(self) -> list[NodeId]:
        return [n for n in self.h.ids if n not in self.dead]

    def leader(self) -> NodeId | None:
        leaders = [n for n in self.live() if self.h.nodes[n].role is Role.LEADER]
        return max(leaders, key=lambda n: self.h.nodes[n].term) if leaders else None

    def crash(self, i: int) -> None:
        """Node ``i`` stops for good: no ticks, no messages in or out."""
        self.dead.add(nid(i))
        self.h.isolate(i)

    def round(self, *, propose: bool = True) -> None:
        h = self.h
        leader = self.leader()
        if propose and leader is not None:
            data = b"load-%d" % self.sent
            try:
                index = h.nodes[leader].propose(data)
            except (ProposalDropped, NotLeader):
                pass
            else:
                self.sent += 1
                self.pending.append((leader, index, data))
        for node_id in h.ids:
            h.process_ready(node_id)
        h.deliver()
        for node_id in h.ids:
            h.process_ready(node_id)
        self.rounds += 1
        if self.rounds % self.tick_every == 0:
            for node_id in self.live():
                h.nodes[node_id].tick()
        self._collect_acks()

    def _collect_acks(self) -> None:
        still: list[tuple[NodeId, int, bytes]] = []
        for node_id, index, data in self.pending:
            if self.h.nodes[node_id].applied_index < index:
                still.append((node_id, index, data))
                continue
            entry = applied_at(self.h, node_id, index)
            if entry is not None and entry.data == data:
                self.acked.append((node_id, index, data))
            else:
                self.lost += 1  # overwritten by a later leader: never acknowledged
        self.pending = still

    def until(self, done: Callable[[], bool], what: str, max_rounds: int = 2_000) -> None:
        """Run rounds until ``done()`` holds."""
        for _ in range(max_rounds):
            if done():
                return
            self.round()
        raise AssertionError(f"not reached within {max_rounds} rounds: {what}")

    def change(self, conf: ConfChange, applied_on: list[int] | None = None) -> int:
        """Propose ``conf`` at the leader (retrying while it is refused), then run
        until the leader and the nodes ``applied_on`` applied it."""
        index = 0

        def proposed() -> bool:
            nonlocal index
            leader = self.leader()
            if leader is None:
                return False
            try:
                index = self.h.nodes[leader].propose_conf_change(conf)
            except ProposalDropped:
                return False
            return True

        self.until(proposed, f"{conf} accepted")
        leader = self.leader()
        assert leader is not None
        targets = [leader, *(nid(i) for i in applied_on or [])]
        self.until(
            lambda: all(self.h.nodes[n].applied_index >= index for n in targets),
            f"{conf} applied on {targets}",
        )
        return index

    def drain(self, members: list[int]) -> None:
        """Stop proposing and run until every member applied the leader's last entry."""
        for _ in range(2_000):
            leader = self.leader()
            if leader is not None:
                last = self.h.nodes[leader].last_index
                if all(self.h.node(i).applied_index >= last for i in members):
                    break
            self.round(propose=False)
        else:
            raise AssertionError("members did not converge")
        self._collect_acks()


def caught_up(leader: Raft, node_id: NodeId) -> bool:
    """The leader knows ``node_id`` holds everything the leader has committed."""
    return leader.prs[node_id].match >= leader.log.committed


def applied_at(h: Harness, node_id: NodeId, index: int) -> Entry | None:
    for e in h.applied[node_id]:
        if e.index == index:
            return e
    return None


def assert_converged(h: Harness, load: Load, members: list[int], voters: tuple[int, ...]) -> None:
    """Every acknowledged command is on every final member at its index; the
    members' logs and applied sequences agree; the configuration is ``voters``."""
    load.drain(members)
    ids = [nid(i) for i in members]
    first = max(h.nodes[n].first_index for n in ids)
    logs = {n: h.nodes[n].entries(first, h.nodes[n].last_index + 1) for n in ids}
    reference = logs[ids[0]]
    assert reference, "empty logs"
    for n in ids:
        assert logs[n] == reference, f"{n}'s log differs from {ids[0]}'s"
        assert h.nodes[n].commit_index == h.nodes[ids[0]].commit_index
    by_index = {e.index: e for e in reference}
    for _, index, data in load.acked:
        if index >= first:
            assert by_index[index].data == data, f"acknowledged entry {index} lost"
    applied = {n: [(e.index, e.term, e.data) for e in h.applied[n]] for n in ids}
    longest = max(applied.values(), key=len)
    for n in ids:
        # Nodes that replayed the whole log applied the same sequence; a node
        # that started from a snapshot applied a suffix of it.
        seq = applied[n]
        assert seq == longest[len(longest) - len(seq) :], f"{n} applied a different sequence"
        assert h.node(n).status().conf_state.voters == tuple(nid(i) for i in voters)
        assert not h.node(n).status().conf_state.is_joint()
    assert load.acked, "nothing was acknowledged"


def loaded_cluster(n: int, **cfg: object) -> tuple[Harness, Load]:
    """``n`` founding members (membership bootstrapped into the log, so new
    nodes join by replaying it), n1 leading, a few commands in."""
    h = Harness(n, bootstrap=True, **cfg)  # type: ignore[arg-type]
    h.elect(1)
    load = Load(h)
    for _ in range(5):
        load.round()
    return h, load


# --------------------------------------------------------------------------- §4.1 / §4.3 under load


def test_grow_three_to_five_under_load():
    """Dissertation §4.1 and §4.2.1: new servers join as learners, catch up and
    are promoted one at a time while commands keep committing; nothing
    acknowledged is lost and all five end with the same log."""
    h, load = loaded_cluster(3)
    for i in (4, 5):
        h.add_node(i)
        load.change(cc((ADD_LEARNER, i)))
        load.until(lambda i=i: caught_up(h.raft(1), nid(i)), f"n{i} caught up")
        load.change(cc((ADD_VOTER, i)), applied_on=[i])
    before = len(load.acked)
    for _ in range(20):
        load.round()
    assert len(load.acked) > before  # still committing with five voters
    # Five voters: a majority of three commits without n2 and n3.
    h.isolate(2)
    h.isolate(3)
    index = h.propose(1, b"five")
    h.stabilize()
    assert h.node(1).commit_index >= index
    h.heal()
    assert_converged(h, load, [1, 2, 3, 4, 5], voters=(1, 2, 3, 4, 5))
    assert load.lost == 0 and len(load.acked) == load.sent >= 25


def test_shrink_five_to_three_under_load_with_one_joint_change():
    """Dissertation §4.3: removing two voters at once goes through C_old,new and
    is left automatically, while commands keep committing; afterwards a
    majority of the three remaining voters commits on its own."""
    h, load = loaded_cluster(5)
    index = load.change(cc((REMOVE, 4), (REMOVE, 5)), applied_on=[2, 3])
    load.until(lambda: not h.node(1).status().conf_state.is_joint(), "left the joint configuration")
    joint, final = h.conf_history[N1][-2:]
    assert joint.voters_outgoing == (N1, N2, N3, N4, N5) and joint.voters == (N1, N2, N3)
    assert final.voters == (N1, N2, N3) and not final.is_joint()
    assert set(h.node(1).progress()) == {N1, N2, N3}
    sent_before = load.sent
    for _ in range(20):
        load.round()
    assert load.sent > sent_before
    # Three voters: n4 and n5 are irrelevant, n1 + n2 is a quorum.
    for i in (3, 4, 5):
        load.crash(i)
    mark = h.propose(1, b"three")
    h.stabilize()
    assert h.node(1).commit_index >= mark > index
    h.heal()
    load.dead.clear()
    assert_converged(h, load, [1, 2, 3], voters=(1, 2, 3))
    assert load.lost == 0 and len(load.acked) == load.sent >= 25


def test_shrink_five_to_three_under_load_one_server_at_a_time():
    """Dissertation §4.1: the same shrink with two single-server changes."""
    h, load = loaded_cluster(5)
    for i in (5, 4):
        load.change(cc((REMOVE, i)), applied_on=[2, 3])
    assert set(h.node(1).progress()) == {N1, N2, N3}
    for _ in range(20):
        load.round()
    assert_converged(h, load, [1, 2, 3], voters=(1, 2, 3))
    assert load.lost == 0 and len(load.acked) == load.sent >= 25


# --------------------------------------------------------------------------- replace a failed node


def test_replace_a_failed_node_then_survive_another_failure():
    """Dissertation §4 (replacing a server): n3 fails for good; a new n4 joins as
    a learner, catches up, is promoted, and n3 is removed -- all while commands
    commit with n1 + n2. The cluster {n1, n2, n4} then survives losing its
    leader: n2 and n4 elect a new one and keep committing."""
    h, load = loaded_cluster(3)
    load.crash(3)
    for _ in range(10):
        load.round()
    h.add_node(4)
    load.change(cc((ADD_LEARNER, 4)))
    load.until(lambda: caught_up(h.raft(1), N4), "n4 caught up")
    load.change(cc((ADD_VOTER, 4)), applied_on=[2, 4])  # 4 voters, 3 alive: still a quorum
    load.change(cc((REMOVE, 3)), applied_on=[2, 4])
    assert h.node(1).status().conf_state.voters == (N1, N2, N4)
    for _ in range(10):
        load.round()

    old_term = h.node(1).term
    load.crash(1)
    load.until(lambda: load.leader() in (N2, N4), "a new leader among n2, n4")
    new = load.leader()
    assert new is not None and h.nodes[new].term > old_term
    sent = len(load.acked)
    for _ in range(30):
        load.round()
    assert len(load.acked) > sent  # n2 + n4 commit on their own
    assert_converged(h, load, [2, 4], voters=(1, 2, 4))
    # n3, the failed node, never came back and holds nothing written after it failed.
    assert h.node(3).last_index < h.node(4).last_index


# ------------------------------------------------------------------ §4.2.2 remove the leader


def test_remove_the_leader_under_load():
    """Dissertation §4.2.2: the leader replicates its own removal, steps down once
    it is committed, and the others elect a leader among themselves (with
    PreVote and CheckQuorum on) and go on committing. The removed server never
    campaigns again, and every command it acknowledged survives."""
    h, load = loaded_cluster(3)
    index = load.change(cc((REMOVE, 1)))
    assert h.node(1).role is Role.FOLLOWER  # stepped down on applying it
    # The others learned the change is committed before the leader left.
    load.until(
        lambda: h.node(2).commit_index >= index and h.node(3).commit_index >= index,
        "n2 and n3 know the removal committed",
    )
    load.until(lambda: load.leader() in (N2, N3), "a new leader among n2, n3")
    new = load.leader()
    assert new is not None
    for _ in range(60):
        load.round()  # n1 keeps ticking: it must not disrupt
    assert load.leader() == new
    assert not any(
        isinstance(m, RequestVote) and m.sender == N1 and m.term > 2 for m in h.delivered
    )
    assert_converged(h, load, [2, 3], voters=(2, 3))
    # Commands acknowledged by the removed leader and by its successor are all there.
    assert {proposer for proposer, _, _ in load.acked} == {N1, new}


# ------------------------------------------------------------------ learner from a snapshot


def test_learner_catches_up_from_a_snapshot_then_the_log():
    """Paper §7 and dissertation §4.2.1: the leader has compacted its log, so a
    new learner is sent the snapshot by InstallSnapshot (in chunks) and then
    the entries after it, including its own ADD_LEARNER and the commands that
    kept arriving meanwhile; it converges with the voters and never counts
    toward commitment."""
    h, load = loaded_cluster(3, snapshot_chunk_size=16, max_snapshot_chunks_inflight=2)
    for _ in range(20):
        load.round()
    load.drain([1, 2, 3])
    snap_index = h.node(1).applied_index
    h.compact(1, snap_index)
    assert h.node(1).first_index == snap_index + 1
    snapshot = h.storage[N1].snapshot()
    assert len(snapshot.data) > 3 * 16  # several chunks

    h.add_node(4)
    load.change(cc((ADD_LEARNER, 4)))
    load.until(lambda: caught_up(h.raft(1), N4), "n4 caught up")

    [installed] = h.snapshots_installed[N4]
    assert installed.metadata.index == snap_index and installed.data == snapshot.data
    chunks = [m for m in h.delivered if isinstance(m, InstallSnapshot) and m.to == N4]
    assert len(chunks) >= 3 and chunks[-1].done
    # After the snapshot, n4 applied exactly the entries that follow it, in order.
    after = [e.index for e in h.applied[N4]]
    assert after == list(range(snap_index + 1, after[-1] + 1))
    cs = h.node(4).status().conf_state
    assert cs.learners == (N4,) and cs.voters == (N1, N2, N3)
    assert h.storage[N4].snapshot() == installed

    # A learner does not count: with n2 and n3 gone nothing commits.
    h.isolate(2)
    h.isolate(3)
    before = h.node(1).commit_index
    stuck = h.propose(1, b"not committed")
    h.stabilize()
    assert h.node(4).last_index >= stuck and h.node(1).commit_index == before
    h.heal()
    assert_converged(h, load, [1, 2, 3, 4], voters=(1, 2, 3))


# --------------------------------------------------------------------------- §3.10 transfer


def test_transfer_to_a_node_behind_the_snapshot():
    """Dissertation §3.10 with paper §7: the transfer target lags behind the
    leader's compacted log, so the leader first sends it the snapshot, then the
    entries after it, and only then TimeoutNow; the target wins with the full
    log, and proposals are refused while the transfer runs."""
    h = Harness(3, snapshot_chunk_size=8)
    h.elect(1)
    h.isolate(3)
    for k in range(10):
        h.propose(1, b"m%d" % k)
    h.stabilize()
    h.compact(1, h.node(1).applied_index - 2)
    h.propose(1, b"after-snapshot")
    h.stabilize()
    last = h.node(1).last_index
    assert h.node(3).last_index < h.node(1).first_index - 1
    h.heal()
    mark = len(h.delivered)
    h.node(1).transfer_leadership(N3)
    try:
        h.propose(1, b"refused")
    except ProposalDropped:
        pass
    else:
        raise AssertionError("a proposal was accepted during the transfer")
    h.tick(1)  # a heartbeat reveals how far behind n3 is
    h.stabilize()
    after = h.delivered[mark:]
    first_chunk = next(i for i, m in enumerate(after) if isinstance(m, InstallSnapshot))
    timeout_now = next(i for i, m in enumerate(after) if isinstance(m, TimeoutNow))
    assert first_chunk < timeout_now
    assert len(h.snapshots_installed[N3]) == 1
    assert h.node(3).role is Role.LEADER and h.leaders() == [N3]
    assert h.node(3).entries(last, last + 1) == h.node(1).entries(last, last + 1)
    index = h.propose(3, b"new leader")
    h.stabilize()
    assert all(h.node(i).commit_index >= index for i in (1, 2, 3))


def test_change_refused_while_the_leader_has_an_unapplied_inherited_change():
    """Dissertation §4.1: a leader never has two changes in flight, counting a
    change it inherited uncommitted from a previous term; it must also first
    commit an entry of its own term. Both guards hold the next change back
    until the inherited one is applied."""
    h = Harness(3, bootstrap=True, check_quorum=False)
    h.elect(1)
    h.add_node(4)
    h.node(1).propose_conf_change(cc((ADD_LEARNER, 4)))
    h.process_ready(N1)
    h.deliver(lambda m: m.to == N2)  # only n2 gets the change
    h.isolate(1)
    h.stabilize()
    h.node(2).campaign()
    for _ in range(10):  # deliver only the election's messages
        for node_id in h.ids:
            h.process_ready(node_id)
        h.deliver(lambda m: isinstance(m, RequestVote | RequestVoteResponse))
    assert h.node(2).role is Role.LEADER
    assert h.node(2).applied_index < h.node(2).pending_conf_index
    try:
        h.node(2).propose_conf_change(cc((ADD_LEARNER, 5)))
    except ProposalDropped:
        pass
    else:
        raise AssertionError("a second change was accepted while one was unapplied")
    h.stabilize()
    assert h.node(2).status().conf_state.learners == (N4,)
    try:
        h.node(2).propose_conf_change(cc((ADD_VOTER, 4)))
    except (ProposalDropped, ConfChangeError) as exc:
        raise AssertionError(f"refused after the inherited change applied: {exc}") from exc
    h.stabilize()
    assert h.node(2).status().conf_state.voters == (N1, N2, N3, N4)
