"""Mutation tests of membership, reads, PreVote and client sessions.

Each test runs one deliberately broken variant through a scripted schedule and
shows that a checker catches it, then runs the correct implementation through
the same schedule (the control) and shows it passes -- so a "catch" cannot come
from the schedule or the checker being wrong. The checkers are the simulator's:

* :class:`raftkv.sim.invariants.Invariants` (Figure 3 safety properties), fed
  every Ready and every applied entry of every node, as the simulator does;
* :func:`raftkv.history.linearizability.check_history` over the history of
  scripted clients talking to :class:`raftkv.replica.kv.KVStateMachine` replicas;
* the simulator's at-most-once checker (``Invariants.on_execute``) over what
  the replicas' state machines executed;
* a liveness bound (the one mutant that breaks availability, not safety).

Schedules are scripted on the synchronous core harness rather than found by a
seed sweep: every one of these bugs needs a specific interleaving (the message
that carries a commit index lost, two pre-candidates timing out in one tick, a
snapshot installed between a command and its retry) that random schedules hit
rarely, so a sweep would make the catch slow and seed-dependent. The mutants
are also in ``MUTANTS`` for ``raftkv sim --mutant NAME``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import msgpack

from raftkv.core import (
    AppendEntries,
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    EntryType,
    Message,
    NodeId,
    ProposalDropped,
    Raft,
    RawNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from raftkv.history.linearizability import INFO, OK, Operation, check_history
from raftkv.replica.kv import (
    KVResult,
    KVStateMachine,
    Put,
    Session,
    decode_command,
    encode_command,
)
from raftkv.sim.invariants import Invariants, InvariantViolation, Violation
from raftkv.sim.mutants import (
    MUTANTS,
    ConfChangeBeforeOwnCommit,
    IncomingHalfOnlyCommit,
    LocalReadsWithoutQuorum,
    PreCandidateKeepsLeader,
    ReadsBeforeOwnCommit,
)
from tests.core.harness import Harness, nid

N1, N2, N3, N4, N5 = (nid(i) for i in range(1, 6))

ADD_VOTER = ConfChangeType.ADD_VOTER
ADD_LEARNER = ConfChangeType.ADD_LEARNER
REMOVE = ConfChangeType.REMOVE_NODE


def cc(
    *changes: tuple[ConfChangeType, int],
    transition: ConfChangeTransition = ConfChangeTransition.AUTO,
) -> ConfChange:
    return ConfChange(
        changes=tuple(ConfChangeSingle(t, nid(i)) for t, i in changes), transition=transition
    )


# --------------------------------------------------------------------------- driver


class Driven(Harness):
    """The core harness, observed as the simulator observes its nodes.

    Every Ready goes to :class:`Invariants` (when ``check``), every applied
    entry too; with ``kv_class`` each node also runs a KV state machine that
    applies committed entries, is restored from installed snapshots, and
    records what each entry returned.

    Args:
        watch: how many node ids (``n1``..) the checkers know about, counting
            nodes added later with :meth:`add_node`.
    """

    def __init__(
        self,
        n: int,
        *,
        watch: int | None = None,
        check: bool = True,
        kv_class: type[KVStateMachine] | None = None,
        **cfg: object,
    ) -> None:
        self.kv_class = kv_class
        self.kvs: dict[NodeId, KVStateMachine] = {}
        self.results: dict[NodeId, list[tuple[int, bytes, KVResult]]] = {}
        self.inv = (
            Invariants([nid(i) for i in range(1, (watch or n) + 1)], seed=0, now=lambda: 0)
            if check
            else None
        )
        super().__init__(n, **cfg)  # type: ignore[arg-type]

    def _new_kv(self, node_id: NodeId) -> None:
        if self.kv_class is not None:
            self.kvs[node_id] = self.kv_class()
            self.results[node_id] = []

    def start(self, node_id: NodeId) -> RawNode:
        node = super().start(node_id)
        self._new_kv(node_id)
        return node

    def add_node(self, i: int | str) -> RawNode:
        node = super().add_node(i)
        self._new_kv(nid(i))
        return node

    def process_ready(self, node_id: NodeId) -> bool:
        node = self.nodes[node_id]
        if not node.has_ready():
            return False
        rd = node.ready()
        if self.inv is not None:
            hs = rd.hard_state
            self.inv.on_ready(
                node_id, node.term, node.role, rd.entries, None if hs is None else hs.commit
            )
        self.queue.extend(rd.messages)
        st = self.storage[node_id]
        kv = self.kvs.get(node_id)
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            self.snapshots_installed.setdefault(node_id, []).append(rd.snapshot)
            if kv is not None:
                kv.restore(rd.snapshot.data)
        if rd.entries:
            st.append(list(rd.entries))
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages_after_persist)
        for e in rd.committed_entries:
            if self.inv is not None:
                self.inv.on_apply(node_id, e)
            self.applied[node_id].append(e)
            data = e.data
            if e.type is EntryType.CONF_CHANGE:
                cs = node.apply_conf_change(ConfChange.decode(e.data))
                st.set_conf_state(cs)
                self.conf_history.setdefault(node_id, []).append(cs)
                data = b""  # a no-op for the state machine
            if kv is not None:
                self.results[node_id].append((e.index, data, kv.apply(e.index, data)))
        self.read_states.setdefault(node_id, []).extend(rd.read_states)
        node.advance(rd)
        return True

    def settle(self, deliver_if: Callable[[Message], bool]) -> None:
        """Run Ready loops and deliver only messages passing ``deliver_if``
        (the others stay queued, in order) until nothing moves."""
        for _ in range(10_000):
            moved = False
            for node_id in self.ids:
                moved |= self.process_ready(node_id)
            if self.deliver(deliver_if):
                moved = True
            if not moved:
                return
        raise AssertionError("did not settle")

    def snapshot_and_compact(self, i: int) -> int:
        """Node ``i`` snapshots its state machine and compacts its log there."""
        node_id = nid(i)
        kv = self.kvs[node_id]
        index = kv.applied_index
        st = self.storage[node_id]
        st.create_snapshot(index, self.nodes[node_id].conf_state(), kv.snapshot())
        st.compact(index)
        return index


T = TypeVar("T")


def checked(schedule: Callable[[], T]) -> tuple[T | None, Violation | None]:
    """Run a schedule: its result, or the first safety violation the checkers raised."""
    try:
        return schedule(), None
    except InvariantViolation as exc:
        return None, exc.violation


@dataclass
class History:
    """Operations of scripted clients, on a logical clock that ticks per event."""

    ops: list[Operation] = field(default_factory=list)
    now: float = 0.0

    def _tick(self) -> float:
        self.now += 1
        return self.now

    def put(self, client: int, key: str, value: object, call: float) -> None:
        self.ops.append(
            Operation(
                op_id=len(self.ops),
                client_id=client,
                key=key,
                kind="put",
                value=value,
                call=call,
                ret=self._tick(),
            )
        )

    def get(self, client: int, key: str, call: float, result: KVResult | None) -> None:
        """A read; ``result is None`` when the client never heard back."""
        if result is None:
            op = Operation(
                op_id=len(self.ops), client_id=client, key=key, kind="get", call=call, status=INFO
            )
        else:
            op = Operation(
                op_id=len(self.ops),
                client_id=client,
                key=key,
                kind="get",
                call=call,
                ret=self._tick(),
                status=OK,
                output=result.value if result.found else None,
                found=result.found,
            )
        self.ops.append(op)

    def call(self) -> float:
        return self._tick()


def put_cmd(key: str, value: object, session: Session | None = None) -> bytes:
    return encode_command(Put(key=key, value=value, time_ms=0, session=session))  # type: ignore[arg-type]


def write(h: Driven, hist: History, node: int, client: int, key: str, value: object) -> int:
    """A client write through ``node``: acknowledged once ``node`` applied it."""
    call = hist.call()
    index = h.propose(node, put_cmd(key, value))
    h.stabilize()
    assert h.node(node).applied_index >= index
    hist.put(client, key, value, call)
    return index


def linearizable_read(h: Driven, hist: History, node: int, client: int, key: str) -> None:
    """A client read through ``node``'s ReadIndex: served from ``node``'s state
    machine once it applied the read index; no answer if no ReadState came."""
    context = f"read-{len(hist.ops)}".encode()
    call = hist.call()
    h.node(node).read_index(context)
    h.stabilize()
    [state] = [rs for rs in h.read_states.get(nid(node), []) if rs.context == context] or [None]
    if state is None:
        hist.get(client, key, call, None)
        return
    assert h.node(node).applied_index >= state.index
    hist.get(client, key, call, h.kvs[nid(node)].read(key))


# --------------------------------------------------------------------------- registry


def test_issue3_mutants_are_registered_under_kebab_case_names():
    """Every Raft mutant of issue 3 can be run by name (``raftkv sim --mutant``)."""
    for name, cls in {
        "conf-change-before-own-commit": ConfChangeBeforeOwnCommit,
        "local-reads-without-quorum": LocalReadsWithoutQuorum,
        "reads-before-own-commit": ReadsBeforeOwnCommit,
        "pre-candidate-keeps-leader": PreCandidateKeepsLeader,
        "incoming-half-only-commit": IncomingHalfOnlyCommit,
    }.items():
        assert MUTANTS[name] is cls


# --------------------------------------------------------------------------- 1. §4.1


def overlapping_single_server_changes(raft_class: type[Raft]) -> tuple[Driven, dict[str, int]]:
    """Two single-server changes from successive leaders (Ongaro, raft-dev 2015).

    C0 = {n1,n2,n3} with learner n4. n1 (term 2) proposes C1 = promote n4; only
    n3 receives it, and n1 is cut off. n3 wins term 3 (votes of n2) and
    proposes C2 = remove n1 as soon as it is allowed to. From the moment n3
    has committed C2, its messages to n2 are lost. n3 commits Y with n4 (a
    majority of {n2,n3,n4}); then n3 and n4 are cut off and n2 campaigns with
    n1's vote.

    A correct leader proposes C2 only after its no-op -- and with it C1 -- has
    committed and C1 has been applied, so the AppendEntries that carries C2
    to n2 also tells n2 that C1 committed: n2 then counts in {n1,n2,n3,n4} and
    cannot win with n1 alone. The mutant proposes C2 at once; C1 and C2 commit
    together while n2 knows of neither commit, so n2 still counts in C0, whose
    majority {n1,n2} is disjoint from {n3,n4}: it wins term 4 without Y.
    """
    h = Driven(3, watch=4, bootstrap=True, check_quorum=False, raft_class=raft_class)
    h.elect(1)
    h.add_node(4)
    h.node(1).propose_conf_change(cc((ADD_LEARNER, 4)))
    h.stabilize()
    h.propose(1, b"base")
    h.stabilize()
    marks: dict[str, int] = {}

    marks["C1"] = h.node(1).propose_conf_change(cc((ADD_VOTER, 4)))
    h.process_ready(N1)
    h.deliver(lambda m: m.to == N3)  # C1 reaches n3 only ...
    h.isolate(1)  # ... and n1 never hears back
    h.stabilize()

    h.node(3).campaign()
    h.settle(lambda m: isinstance(m, RequestVote | RequestVoteResponse))
    assert h.node(3).role is Role.LEADER and h.node(3).term == 3
    marks["refusals"] = 0
    for _ in range(100):  # the operator retries, one round apart, until n3 accepts
        try:
            marks["C2"] = h.node(3).propose_conf_change(cc((REMOVE, 1)))
            break
        except ProposalDropped:
            marks["refusals"] += 1
            for node_id in h.ids:
                h.process_ready(node_id)
            h.deliver()
    assert "C2" in marks, "n3 never accepted C2"
    for _ in range(100):
        if h.node(3).commit_index >= marks["C2"]:
            break
        for node_id in h.ids:
            h.process_ready(node_id)
        h.deliver()
    assert h.node(3).commit_index >= marks["C2"]
    h.cut(3, 2)  # every message n3 sends n2 from now on is lost
    h.stabilize()
    assert h.node(3).status().conf_state.voters == (N2, N3, N4)

    marks["Y"] = h.propose(3, b"Y")
    h.stabilize()
    assert h.node(3).commit_index >= marks["Y"]  # committed by n3 + n4

    h.heal()
    h.isolate(3)
    h.isolate(4)
    h.node(2).campaign()
    h.stabilize()
    return h, marks


def test_mutant_conf_change_before_own_commit_is_caught_by_leader_completeness():
    """Dissertation §4.1 / Ongaro's raft-dev post "bug in single-server membership
    changes" (2015): a leader may not change membership before an entry of its
    own term commits. Without the guard two overlapping single-server changes
    from successive leaders leave C0 = {n1,n2,n3} and {n2,n3,n4} both in use;
    their majorities {n1,n2} and {n3,n4} are disjoint, and a committed entry is
    lost: Leader Completeness (paper §5.4) fails when n2 takes office."""
    result, violation = checked(lambda: overlapping_single_server_changes(Raft))
    assert violation is None, violation.describe()
    assert result is not None
    h, marks = result
    assert marks["refusals"] > 0  # the guard held the change back
    assert h.node(2).role is not Role.LEADER  # C0's minority cannot elect
    assert h.node(2).status().conf_state.voters == (N1, N2, N3, N4)

    _, violation = checked(lambda: overlapping_single_server_changes(ConfChangeBeforeOwnCommit))
    assert violation is not None, "the single-server change bug went unnoticed"
    assert violation.checker == "leader-completeness", violation.describe()
    assert "n2 became leader of term 4" in violation.message


class WithoutOwnTermCheck(Raft):
    def may_change_membership(self) -> bool:
        return True


class WithoutInheritedChangeWait(Raft):
    def become_leader(self) -> None:
        super().become_leader()
        self.pending_conf_index = 0


def test_either_half_of_the_new_leader_guard_suffices_here():
    """§4.1: configurations take effect when applied, so either half of the
    guard alone is enough -- the explicit own-term check commits C1 before C2
    is proposed, and ``pending_conf_index`` (the last index on election)
    waits until C1 is applied; either way the AppendEntries carrying C2 tells
    n2 that C1 committed. Hence ConfChangeBeforeOwnCommit drops both."""
    for half in (WithoutOwnTermCheck, WithoutInheritedChangeWait):
        result, violation = checked(lambda half=half: overlapping_single_server_changes(half))
        assert violation is None, violation.describe()
        assert result is not None
        h, marks = result
        assert marks["refusals"] > 0, half.__name__
        assert h.node(2).role is not Role.LEADER


# --------------------------------------------------------------------------- 2. §6.4 step 3


def partitioned_leader_reads(raft_class: type[Raft]) -> History:
    """n1 leads and acknowledges x=1; it is partitioned and n2 wins term 2 and
    acknowledges x=2; then a client reads x through n1, which still believes it
    leads; finally another client reads x through n2.

    CheckQuorum is off so that n1 keeps believing it leads for as long as the
    script needs; with it on the window is an election timeout long, and
    ReadIndex must be safe without it anyway.
    """
    h = Driven(3, check_quorum=False, kv_class=KVStateMachine, raft_class=raft_class)
    hist = History()
    h.elect(1)
    write(h, hist, 1, client=1, key="x", value=1)
    h.isolate(1)
    h.elect(2)
    write(h, hist, 2, client=2, key="x", value=2)
    assert h.node(1).role is Role.LEADER  # deposed, but has not heard of it
    linearizable_read(h, hist, 1, client=3, key="x")
    linearizable_read(h, hist, 2, client=4, key="x")
    return hist


def test_mutant_local_reads_without_quorum_is_caught_by_linearizability():
    """Dissertation §6.4 step 3 ("the leader sends heartbeats ... and waits for
    acknowledgments from a majority"): a leader partitioned from the majority
    that answers from its own state returns x=1 after x=2 was acknowledged by
    the new leader. The correct leader never gathers a quorum, so the read is
    never answered (recorded with an unknown outcome)."""
    good = partitioned_leader_reads(Raft)
    assert check_history(good.ops).ok is True
    assert [op.status for op in good.ops if op.kind == "get"] == [INFO, OK]

    bad = partitioned_leader_reads(LocalReadsWithoutQuorum)
    stale = [op for op in bad.ops if op.kind == "get" and op.client_id == 3]
    assert [op.output for op in stale] == [1]
    result = check_history(bad.ops)
    assert result.ok is False, result.describe()


# --------------------------------------------------------------------------- 3. §6.4 step 1


def new_leader_reads(raft_class: type[Raft]) -> History:
    """x=0 is committed everywhere. n1 commits x=1 with n2's acknowledgement and
    answers the client, but dies before telling anyone the new commit index; n2
    (holding x=1, commit index below it) wins term 2 while its no-op is held
    back, and a client reads x through n2. Then n2's messages flow again."""
    h = Driven(3, check_quorum=False, kv_class=KVStateMachine, raft_class=raft_class)
    hist = History()
    h.elect(1)
    write(h, hist, 1, client=1, key="x", value=0)

    call = hist.call()
    w = h.propose(1, put_cmd("x", 1))
    h.process_ready(N1)
    h.deliver(lambda m: m.to == N2)  # x=1 reaches n2 only
    h.process_ready(N2)
    h.deliver(lambda m: m.sender == N2)  # n2's acknowledgement reaches n1
    h.process_ready(N1)  # n1 commits and applies x=1: the client hears "ok"
    assert h.node(1).applied_index >= w > h.node(2).commit_index
    hist.put(1, "x", 1, call)
    h.isolate(1)
    h.queue.clear()

    h.drop_if = lambda m: isinstance(m, AppendEntries) and m.sender == N2
    h.node(2).campaign()
    h.stabilize()
    assert h.node(2).role is Role.LEADER and h.node(2).commit_index < w
    context = b"read-at-n2"
    call = hist.call()
    h.node(2).read_index(context)
    h.stabilize()
    h.drop_if = None
    for _ in range(4):  # heartbeats: n3's replies make n2 resend its no-op
        states = [rs for rs in h.read_states.get(N2, []) if rs.context == context]
        if states:  # served as soon as the read index is applied
            assert h.node(2).applied_index >= states[0].index
            hist.get(2, "x", call, h.kvs[N2].read("x"))
            return hist
        h.tick(2)
        h.stabilize()
    raise AssertionError("the read was never answered")


def test_mutant_reads_before_own_commit_is_caught_by_linearizability():
    """Dissertation §6.4 step 1 ("if the leader has not yet marked an entry from
    its current term committed, it waits until it has done so"): a new leader
    whose commit index trails an acknowledged write serves a read that misses
    it. The correct leader answers after its no-op commits, with x=1."""
    good = new_leader_reads(Raft)
    assert [op.output for op in good.ops if op.kind == "get"] == [1]
    assert check_history(good.ops).ok is True

    bad = new_leader_reads(ReadsBeforeOwnCommit)
    assert [op.output for op in bad.ops if op.kind == "get"] == [0]
    result = check_history(bad.ops)
    assert result.ok is False, result.describe()


# --------------------------------------------------------------------------- 4. §9.6


ELECTION_TICK = 10
LIVENESS_BOUND = 10 * ELECTION_TICK
"""Ticks within which the survivors must elect a leader (ten election timeouts)."""
LIVENESS_SEEDS = range(30)


def ticks_to_elect_after_leader_crash(raft_class: type[Raft], seed: int) -> int | None:
    """n1 leads a 3-node cluster (PreVote + CheckQuorum) and crashes; n2 and n3
    tick in lock step. Ticks until one of them leads, or None within the bound."""
    h = Harness(3, seed=seed, raft_class=raft_class, election_tick=ELECTION_TICK)
    h.elect(1)
    for _ in range(3):
        h.tick_all()
        h.stabilize()
    h.isolate(1)
    for t in range(1, LIVENESS_BOUND + 1):
        h.tick(2)
        h.tick(3)
        h.stabilize()
        if h.node(2).role is Role.LEADER or h.node(3).role is Role.LEADER:
            return t
    return None


def test_mutant_pre_candidate_keeps_leader_is_caught_by_liveness():
    """Dissertation §9.6 (PreVote with CheckQuorum; etcd-io/etcd#8334). A
    liveness mutant, not a safety one: nothing unsafe ever happens, but the
    cluster stops electing leaders.

    A pre-candidate that keeps believing in its old leader is "in the lease" of
    that (dead) leader for an election timeout after each of its own
    PreVote rounds, so it ignores its peer's PreVote. When both survivors time
    out in the same tick, each ignores the other, neither is refused (so
    neither redraws its timeout), and they repeat in lock step forever. The
    check: after the leader crashes, the survivors elect a new one within ten
    election timeouts, for every seed.
    """
    correct = {seed: ticks_to_elect_after_leader_crash(Raft, seed) for seed in LIVENESS_SEEDS}
    assert all(t is not None for t in correct.values()), correct

    stuck = [
        seed
        for seed in LIVENESS_SEEDS
        if ticks_to_elect_after_leader_crash(PreCandidateKeepsLeader, seed) is None
    ]
    assert stuck, "every seed elected a leader: the mutant was not caught"


# --------------------------------------------------------------------------- 5. §6.3


class SnapshotWithoutSessions(KVStateMachine):
    """Snapshots the data but not the session table (breaks dissertation §6.3:
    the session table is replicated state and must be in every snapshot).

    A state-machine mutant, not a :class:`Raft` one, so it lives here:
    ``raftkv.sim`` may not import ``raftkv.server`` (DESIGN.md, dependency
    direction; tests/test_imports.py).
    """

    def snapshot(self) -> bytes:
        body = msgpack.unpackb(super().snapshot(), raw=False)
        body["sessions"] = []
        data: bytes = msgpack.packb(body, use_bin_type=True)
        return data


def executions(h: Driven) -> Iterator[tuple[NodeId, str, int, int]]:
    """(node, client id, seq, log index) for every session command a replica
    executed -- as opposed to answered from its session table, which returns
    the original result, carrying the original index."""
    for node_id in sorted(h.results):
        for index, data, result in h.results[node_id]:
            if not data:
                continue
            session = decode_command(data).session
            if session is not None and result.index == index:
                yield node_id, session.client_id, session.seq, index


def at_most_once(h: Driven) -> Violation | None:
    """Feed every execution to the simulator's at-most-once checker
    (``Invariants.on_execute``: a client's request takes effect at one log
    index only, on every replica)."""
    inv = Invariants(h.ids, seed=0, now=lambda: 0)
    numbers: dict[str, int] = {}  # the checker numbers clients
    try:
        for node_id, client, seq, index in executions(h):
            inv.on_execute(node_id, numbers.setdefault(client, len(numbers) + 1), seq, index)
    except InvariantViolation as exc:
        return exc.violation
    return None


def retry_after_snapshot_install(kv_class: type[KVStateMachine]) -> Driven:
    """n3 is cut off. Client A's put x="a" (session A/1) commits, but A never
    hears back; client B's put x="b" (B/1) commits. n1 snapshots and compacts;
    n3 comes back and gets the snapshot through InstallSnapshot. A retries A/1."""
    h = Driven(3, check=False, kv_class=kv_class)
    h.elect(1)
    h.isolate(3)
    first = h.propose(1, put_cmd("x", "a", Session(client_id="A", seq=1)))
    h.stabilize()
    h.propose(1, put_cmd("x", "b", Session(client_id="B", seq=1)))
    h.stabilize()
    snap = h.snapshot_and_compact(1)
    assert snap > first
    h.heal()
    h.tick(1)
    h.stabilize()
    assert [s.metadata.index for s in h.snapshots_installed[N3]] == [snap]
    retry = h.propose(1, put_cmd("x", "a", Session(client_id="A", seq=1)))
    h.stabilize()
    h.tick(1)  # a heartbeat carries the commit index to n3
    h.stabilize()
    assert all(h.kvs[n].applied_index == retry for n in h.ids)
    return h


def test_mutant_snapshot_without_sessions_is_caught_by_at_most_once():
    """Dissertation §6.3: a retried command is applied at most once per session,
    on every replica. A replica restored from a snapshot without the session
    table executes the retry again -- A/1 takes effect at two log indexes, and
    that replica's x goes back to "a" while the others keep "b"."""
    good = retry_after_snapshot_install(KVStateMachine)
    assert at_most_once(good) is None
    assert {(client, seq) for _, client, seq, _ in executions(good)} == {("A", 1), ("B", 1)}
    assert {good.kvs[n].read("x").value for n in good.ids} == {"b"}
    assert good.kvs[N3].sessions().keys() == {"A", "B"}

    bad = retry_after_snapshot_install(SnapshotWithoutSessions)
    violation = at_most_once(bad)
    assert violation is not None, "the retry was executed twice unnoticed"
    assert violation.checker == "at-most-once", violation.describe()
    assert "n3 executed request 1 of client 1" in violation.message
    assert bad.kvs[N3].read("x").value == "a" and bad.kvs[N1].read("x").value == "b"


# --------------------------------------------------------------------------- 6. §4.3


def joint_commit_then_old_majority_elects(raft_class: type[Raft]) -> tuple[Driven, int]:
    """C_old = {n1,n2,n3}; n1 proposes the joint change to C_new = {n1,n4,n5}
    (explicit leave). It reaches n2 only, whose acknowledgement commits it; n1
    applies it, but n2 and n3 are cut off from n1 before hearing the new
    commit index. n4 and n5 (empty, joining by log replay) catch up and n1
    proposes x. Then n1, n4 and n5 fall silent and n2 campaigns with n3's vote.

    Returns the harness and x's index.
    """
    h = Driven(3, watch=5, bootstrap=True, check_quorum=False, raft_class=raft_class)
    h.elect(1)
    h.add_node(4)
    h.add_node(5)
    h.propose(1, b"base")
    h.stabilize()
    joint = h.node(1).propose_conf_change(
        cc(
            (ADD_VOTER, 4),
            (ADD_VOTER, 5),
            (REMOVE, 2),
            (REMOVE, 3),
            transition=ConfChangeTransition.JOINT_EXPLICIT,
        )
    )
    h.process_ready(N1)
    h.deliver(lambda m: m.to == N2)
    h.process_ready(N2)
    h.deliver(lambda m: m.sender == N2)
    h.cut(1, 2)
    h.cut(1, 3)
    h.stabilize()
    assert h.node(1).applied_index >= joint > h.node(2).commit_index
    cs = h.node(1).status().conf_state
    assert cs.voters == (N1, N4, N5) and cs.voters_outgoing == (N1, N2, N3)
    x = h.propose(1, b"x")
    h.stabilize()
    assert h.node(4).last_index >= x and h.node(5).last_index >= x

    h.heal()
    for i in (1, 4, 5):
        h.isolate(i)
    h.node(2).campaign()
    h.stabilize()
    return h, x


def test_mutant_incoming_half_only_commit_is_caught_by_leader_completeness():
    """Dissertation §4.3: in C_old,new, "agreement (for elections and entry
    commitment) requires separate majorities from both the old and new
    configurations". Committing x with C_new = {n1,n4,n5} alone lets C_old's
    majority {n2,n3}, which never saw x, elect a leader without it: Leader
    Completeness (paper §5.4) fails when n2 takes office. The correct leader
    does not commit x without n2 or n3, so the same election loses nothing."""
    result, violation = checked(lambda: joint_commit_then_old_majority_elects(Raft))
    assert violation is None, violation.describe()
    assert result is not None
    h, x = result
    assert h.node(1).commit_index < x
    assert h.node(2).role is Role.LEADER  # the schedule did run to the election

    _, violation = checked(lambda: joint_commit_then_old_majority_elects(IncomingHalfOnlyCommit))
    assert violation is not None, "a commit by C_new alone went unnoticed"
    assert violation.checker == "leader-completeness", violation.describe()
    assert "n2 became leader" in violation.message
