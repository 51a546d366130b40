"""Deliberately broken variants ("mutants") that the checkers must catch.

Rule: each mutant breaks exactly one rule by overriding the methods that
implement it; production code carries no bug switches. Three kinds:

* Raft mutants (:data:`MUTANTS`) break a rule of the paper in a subclass of
  :class:`raftkv.core.Raft`, run on every node;
* replica mutants (:data:`REPLICA_MUTANTS`) break the store's semantics in a
  subclass of :class:`~raftkv.replica.kv.KVStateMachine` (or of the MVCC store
  it holds) -- the code real nodes run -- planted on every node through the
  cluster's ``state_machine`` factory;
* driver mutants (:data:`CLUSTER_MUTANTS`) break the simulated nodes' read
  path in a subclass of :class:`~raftkv.sim.cluster.Cluster`;
* watch and lease mutants (:data:`WATCH_MUTANTS`, :data:`LEASE_MUTANTS`) break
  the replica layer's :class:`~raftkv.replica.watch.WatchHub` or
  :class:`~raftkv.replica.lessor.Lessor` in a subclass run on every node.

``raftkv sim --mutant NAME`` runs any of them (:func:`plant` turns on the
workload a replica or driver mutant needs); ``tests/sim/test_mutants.py`` and
``tests/sim/test_mutants_txn.py`` and ``tests/sim/test_mutants_watch.py`` show
each one is caught within a bounded sweep.

Mutants bypass the core's own defensive assertions where the broken rule
would otherwise trip them first, so that what catches them is a safety checker
and not the core noticing its own inconsistency.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace

from raftkv.core import (
    AppendEntries,
    Entry,
    Heartbeat,
    Index,
    JointConfig,
    Message,
    NodeId,
    Raft,
    RawNode,
    ReadIndexResponse,
    ReadState,
    RequestVote,
    Role,
)
from raftkv.core.election import record_vote
from raftkv.core.raft import needs_persist
from raftkv.replica.kv import Command, Compare, KeyRange, KVStateMachine, Range
from raftkv.replica.lessor import Lessor
from raftkv.replica.mvcc import VERSION_OVERHEAD_BYTES, MVCCStore, Op, RangeOp, TxnResult
from raftkv.replica.mvcc import Compare as StoreCompare
from raftkv.replica.watch import Watcher, WatchHub, WatchResponse
from raftkv.sim.cluster import Cluster
from raftkv.sim.node import SimNode
from raftkv.sim.runner import SimConfig
from raftkv.sim.workload import ClientRequest


class VotesTwice(Raft):
    """Grants a vote to every candidate, even after voting in this term (breaks §5.2)."""

    def can_vote_for(self, msg: RequestVote) -> bool:
        return True


class NoUpToDateCheck(Raft):
    """Votes for candidates whose log is behind its own (breaks §5.4.1)."""

    def log_is_up_to_date(self, msg: RequestVote) -> bool:
        return True


class CommitsPreviousTerm(Raft):
    """Commits by counting replicas regardless of the entry's term (breaks §5.4.2, Figure 8)."""

    def maybe_commit(self) -> bool:
        acked = {node_id: pr.match for node_id, pr in self.prs.items()}
        index = self.voters.committed_index(acked)
        if index > self.log.committed:
            self.log.commit_to(index)
            return True
        return False


class LeaderOverwritesLog(Raft):
    """A leader writes new proposals right after its commit index, overwriting its
    own uncommitted entries (breaks Leader Append-Only, §5.3)."""

    def append_entries(self, entries: list[Entry]) -> Index:
        if self.role is not Role.LEADER or not entries or entries[0].data == b"":
            return super().append_entries(entries)
        base = max(self.log.committed, self.log.stable_last_index())
        if base >= self.log.last_index():
            return super().append_entries(entries)
        stamped = [
            Entry(term=self.term, index=base + i + 1, data=e.data, type=e.type)
            for i, e in enumerate(entries)
        ]
        last = self.log.append(stamped)
        me = self.prs[self.node_id]
        me.match = min(me.match, base)
        me.next = last + 1
        self.pending_broadcast = True
        return last


class AcksBeforePersist(Raft):
    """Sends votes and append acknowledgements before they are durable."""

    def send(self, msg: Message) -> None:
        if needs_persist(msg) and not isinstance(msg, RequestVote) and msg.to != self.node_id:
            self.msgs.append(msg)  # an answer to a peer, before the sync
        else:
            super().send(msg)


class CountsOwnVoteEarly(Raft):
    """A candidate counts its vote for itself at once, before its new term and
    vote are durable (breaks Figure 2's "persist before responding" for the
    candidate's own vote): a single voter leads on a vote a crash can lose."""

    def vote_for_self(self) -> bool:
        return record_vote(self, self.node_id, True, pre_vote=False)


class TruncatesMatchingSuffix(Raft):
    """A follower truncates everything after prevLogIndex even where the entries match,
    so a delayed, reordered AppendEntries erases later (possibly committed) entries
    (breaks Figure 2, AppendEntries receiver step 3)."""

    def append_from_leader(self, msg: AppendEntries) -> Index | None:
        log = self.log
        if not log.match_term(msg.prev_log_index, msg.prev_log_term):
            return None
        last_new = msg.prev_log_index + len(msg.entries)
        if msg.entries and last_new < log.last_index():
            log.unstable.truncate_and_append(list(msg.entries))
            if log.committed > last_new:
                # Silently forget commitment we can no longer back with entries.
                log.committed = max(last_new, log.applied)
        elif msg.entries:
            conflict = log.find_conflict(msg.entries)
            if conflict:
                log.unstable.truncate_and_append(
                    list(msg.entries[conflict - msg.prev_log_index - 1 :])
                )
        log.commit_to(min(msg.commit, last_new, log.last_index()))
        return last_new

    def handle_heartbeat(self, msg: Heartbeat) -> None:
        # Commit as far as the leader says and our log goes (commit_to would call
        # a commit past the last index a bug).
        super().handle_heartbeat(replace(msg, commit=min(msg.commit, self.log.last_index())))


class CommitsPastMatch(Raft):
    """A follower advances its commit index to the leader's even past the last entry
    it knows to match the leader's log (breaks Figure 2, receiver step 5).

    Two routes: an AppendEntries commits up to the follower's *last* index rather
    than the last entry the message proved to match; and a heartbeat -- which
    proves no match at all -- carries the leader's whole commit index (instead of
    ``min(commit, match)``) and the follower commits as far as its own log goes.
    """

    def append_from_leader(self, msg: AppendEntries) -> Index | None:
        last_new = super().append_from_leader(msg)
        if last_new is not None:
            self.log.commit_to(min(msg.commit, self.log.last_index()))
        return last_new

    def broadcast_heartbeat(self, context: bytes = b"") -> None:
        for node_id in self.prs:
            if node_id != self.node_id:
                self.send(
                    Heartbeat(
                        term=self.term,
                        sender=self.node_id,
                        to=node_id,
                        commit=self.log.committed,
                        context=context,
                    )
                )

    def handle_heartbeat(self, msg: Heartbeat) -> None:
        # Commit as far as the leader says and our log goes (commit_to would call
        # a commit past the last index a bug).
        super().handle_heartbeat(replace(msg, commit=min(msg.commit, self.log.last_index())))


# -- membership, reads, PreVote (tests/sim/test_mutants_membership_reads_sessions.py) ----


class ConfChangeBeforeOwnCommit(Raft):
    """A new leader proposes a configuration change before an entry of its own
    term has committed (the single-server change bug: dissertation §4.1, as
    corrected by Ongaro's 2015 raft-dev post).

    Both halves of the guard go: the explicit own-term check, and the wait for
    configuration entries inherited from earlier terms (``pending_conf_index``
    set to the last index on election, as etcd's pendingConfIndex). With
    configurations taking effect when applied, either half alone keeps a
    follower that holds the new change informed that the previous one
    committed; without both, two changes commit at once and a lagging voter can
    still count with the configuration before both.
    """

    def may_change_membership(self) -> bool:
        return True

    def become_leader(self) -> None:
        super().become_leader()
        self.pending_conf_index = 0


class LocalReadsWithoutQuorum(Raft):
    """A leader answers reads from its local state at once, without a heartbeat
    round confirming that a quorum still follows it, so a deposed leader that
    has not heard of its successor serves stale data (breaks dissertation §6.4
    step 3). Step 1 (wait for an own-term commit) is kept."""

    def handle_read_index(self, context: bytes, sender: NodeId) -> None:
        if not self.may_serve_reads():
            super().handle_read_index(context, sender)  # re-enters here after the commit
            return
        if sender == self.node_id:
            self.read_states.append(ReadState(self.log.committed, context))
        else:
            self.send(
                ReadIndexResponse(
                    term=self.term,
                    sender=self.node_id,
                    to=sender,
                    index=self.log.committed,
                    context=context,
                )
            )


class ReadsBeforeOwnCommit(Raft):
    """A new leader serves ReadIndex before its no-op commits, at a commit index
    that may be below a write its predecessor already acknowledged (breaks
    dissertation §6.4 step 1)."""

    def may_serve_reads(self) -> bool:
        return True


class PreCandidateKeepsLeader(Raft):
    """A pre-candidate keeps believing in its old leader: it does not clear
    ``leader`` when it starts a PreVote round (dissertation §9.6; the bug
    etcd-io/etcd#8334 fixed). A liveness mutant, not a safety one.

    CheckQuorum's lease -- ignore a RequestVote while a leader was heard from
    less than an election timeout ago -- then also covers the pre-candidate's
    own election timer, which it has just reset. Two survivors whose timers
    fire in the same tick ignore each other's PreVotes; neither is refused, so
    neither redraws its timeout, and they fire together again, forever: the
    cluster never elects another leader. (Timers that fire apart only delay
    the election.)
    """

    def become_pre_candidate(self) -> None:
        leader = self.leader
        super().become_pre_candidate()
        self.leader = leader


class IncomingHalfOnlyCommit(Raft):
    """During joint consensus, commits with a majority of C_new alone (breaks
    dissertation §4.3: "agreement (for elections and entry commitment) requires
    separate majorities from both the old and new configurations")."""

    def maybe_commit(self) -> bool:
        saved = self.voters
        self.voters = JointConfig(saved.incoming)
        try:
            return super().maybe_commit()
        finally:
            self.voters = saved


MUTANTS: dict[str, type[Raft]] = {
    "votes-twice": VotesTwice,
    "no-up-to-date-check": NoUpToDateCheck,
    "commits-previous-term": CommitsPreviousTerm,
    "leader-overwrites-log": LeaderOverwritesLog,
    "acks-before-persist": AcksBeforePersist,
    "counts-own-vote-early": CountsOwnVoteEarly,
    "truncates-matching-suffix": TruncatesMatchingSuffix,
    "commits-past-match": CommitsPastMatch,
    "conf-change-before-own-commit": ConfChangeBeforeOwnCommit,
    "local-reads-without-quorum": LocalReadsWithoutQuorum,
    "reads-before-own-commit": ReadsBeforeOwnCommit,
    "pre-candidate-keeps-leader": PreCandidateKeepsLeader,
    "incoming-half-only-commit": IncomingHalfOnlyCommit,
}
"""Mutants by their command-line name."""


# -- the replicated store (tests/sim/test_mutants_txn.py) ----------------------


class RangeReadsWithoutReadIndex(Cluster):
    """A node answers a range read from its own applied state at once, without
    a ReadIndex round (breaks dissertation §6.4): a follower that has not yet
    applied a write already acknowledged to another client -- or a node cut
    off from the leader -- serves an older revision."""

    def _on_client_request(self, node: SimNode, raw: RawNode, src: str, req: ClientRequest) -> None:
        if req.read:
            cmd = self._decode(req.data)
            if isinstance(cmd, Range):
                self._answer_read(node, src, req.client_id, cmd)
                return
        super()._on_client_request(node, raw, src, req)


class CompareHoldsOnAnyKey(KVStateMachine):
    """A transaction compare over a range holds when it holds for *some* key
    of the range, not every key: the success branch runs although the compare
    fails on one key (etcd's rule: over a range, every key must satisfy it)."""

    def _holds(self, compares: tuple[Compare, ...]) -> bool:
        for compare in compares:
            if compare.range.is_single:
                if not super()._holds((compare,)):
                    return False
                continue
            key, end = compare.range.to_bytes()
            keys = [kv.key.decode("utf-8") for kv in self._store.range(key, end).kvs]
            singles = [replace(compare, range=KeyRange(key=k)) for k in keys] or [compare]
            if not any(super(CompareHoldsOnAnyKey, self)._holds((c,)) for c in singles):
                return False
        return True


class _ReadOnlyTxnBumps(MVCCStore):
    def txn(
        self,
        compares: Sequence[StoreCompare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        result = super().txn(compares, success, failure)
        ran = success if result.succeeded else failure
        if ran and all(isinstance(op, RangeOp) for op in ran):
            self._revision += 1
            return TxnResult(
                succeeded=result.succeeded, responses=result.responses, revision=self._revision
            )
        return result


class _CompactionDropsNewest(MVCCStore):
    def compact(self, revision: int) -> None:
        # The keys with history (more than one version, or a lone tombstone).
        historied = [k for k, e in self._entries.items() if isinstance(e, list) or not e[2]]
        super().compact(revision)
        while self.compact_step(1 << 30):  # the physical pass, at once
            pass
        for key in historied:
            entry = self._entries.get(key)
            if entry is None or isinstance(entry, list) or not entry[2] or entry[0] >= revision:
                continue
            # The key's newest version, below the compaction point: dropped too.
            del self._entries[key]
            self._index.discard(key)
            self._live -= 1
            self._versions -= 1
            self._size -= len(key) + len(entry[4]) + VERSION_OVERHEAD_BYTES


class _WithStore(KVStateMachine):
    """A state machine whose MVCC store is of class ``store_class`` (also after
    a snapshot is restored)."""

    store_class: type[MVCCStore] = MVCCStore

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._store = self.store_class()

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self._store = self.store_class.from_wire(self._store.to_wire())


class ReadOnlyTxnBumpsRevision(_WithStore):
    """A transaction whose executed branch only reads still moves the store's
    revision (breaks etcd's rule: only a change makes a revision)."""

    store_class = _ReadOnlyTxnBumps


class CompactionDropsNewestVersion(_WithStore):
    """Compaction drops a key's newest version when it is below the compaction
    point, instead of keeping it: the key vanishes (breaks: compaction only
    drops history no read at or after the compaction revision needs)."""

    store_class = _CompactionDropsNewest


def _make(cls: type[KVStateMachine], decode_cache: dict[bytes, Command]) -> KVStateMachine:
    return cls(decode_cache=decode_cache)


REPLICA_MUTANTS: dict[str, type[KVStateMachine]] = {
    "txn-compare-any-key": CompareHoldsOnAnyKey,
    "read-only-txn-bumps-revision": ReadOnlyTxnBumpsRevision,
    "compaction-drops-newest-version": CompactionDropsNewestVersion,
}
"""Replica-layer mutants by their command-line name (they need ``--txn``)."""

CLUSTER_MUTANTS: dict[str, type[Cluster]] = {
    "range-reads-without-read-index": RangeReadsWithoutReadIndex,
}
"""Driver mutants by their command-line name (they need ``--txn --reads``)."""

# -- watches and leases (tests/sim/test_mutants_watch.py) ----------------------


class WatchSkipsOnResume(WatchHub):
    """A watch resumed from a past revision starts at the next one instead: what
    happened while the client was away is skipped (breaks "a watcher resuming
    from the last revision it saw gets exactly what it missed")."""

    def create(self, key: bytes, range_end: bytes = b"", **kw: object) -> Watcher:
        start = kw.get("start_revision", 0)
        assert isinstance(start, int)
        if start and start <= self.revision:
            kw["start_revision"] = 0
        return super().create(key, range_end, **kw)  # type: ignore[arg-type]


class ProgressAheadOfEvents(WatchHub):
    """Progress notifications go to watchers still catching up, at the hub's
    current revision, ahead of the history events they have not been given
    (breaks "progress never overtakes events", etcd#15220)."""

    def progress(self) -> None:
        super().progress()
        for watch_id in range(1, self._next_id):
            w = self.get(watch_id)
            if w is not None and watch_id in self._unsynced and not w.pending:
                w._pending.append(
                    WatchResponse(watch_id=watch_id, revision=self.revision, progress=True)
                )


class FollowerExpiresLeases(Lessor):
    """Every node times leases on its own clock, leader or not, and never stops
    (breaks "only the leader times leases"): a follower never sees keep-alives
    and expires leases that are kept alive."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._leader = True

    def demote(self) -> None:
        pass


class LeaderDoesNotExtendLeases(Lessor):
    """A new leader starts every lease's remaining time at once, without the
    election timeout's extension (breaks etcd's Promote: a lease may expire
    right after an election that kept its client from renewing)."""

    def promote(self, now_ms: int, extend_ms: int) -> None:
        super().promote(now_ms, 0)


WATCH_MUTANTS: dict[str, type[WatchHub]] = {
    "watch-skips-on-resume": WatchSkipsOnResume,
    "progress-ahead-of-events": ProgressAheadOfEvents,
}
"""Watch hub mutants by their command-line name (they turn on ``--watches``)."""

LEASE_MUTANTS: dict[str, type[Lessor]] = {
    "follower-expires-leases": FollowerExpiresLeases,
    "leader-does-not-extend-leases": LeaderDoesNotExtendLeases,
}
"""Lessor mutants by their command-line name (they turn on ``--leases``)."""

ALL_MUTANTS: frozenset[str] = (
    frozenset(MUTANTS)
    | frozenset(REPLICA_MUTANTS)
    | frozenset(CLUSTER_MUTANTS)
    | frozenset(WATCH_MUTANTS)
    | frozenset(LEASE_MUTANTS)
)


def state_machine_factory(name: str) -> Callable[[dict[bytes, Command]], KVStateMachine]:
    """The ``SimConfig.state_machine`` factory of replica mutant ``name`` (picklable)."""
    return functools.partial(_make, REPLICA_MUTANTS[name])


def plant(name: str, config: SimConfig) -> SimConfig:
    """``config`` with mutant ``name`` planted, and the workload it needs on.

    Raises:
        KeyError: no mutant has that name.
    """
    if name in MUTANTS:
        return replace(config, raft_class=MUTANTS[name])
    if name in REPLICA_MUTANTS:
        return replace(config, txn=True, state_machine=state_machine_factory(name))
    if name in WATCH_MUTANTS:
        return replace(config, watches=True, watch_hub_class=WATCH_MUTANTS[name])
    if name in LEASE_MUTANTS:
        return replace(config, leases=True, lessor_class=LEASE_MUTANTS[name])
    return replace(config, txn=True, reads=True, cluster_class=CLUSTER_MUTANTS[name])
