"""Raft's safety properties (paper Figure 3), checked incrementally after every event.

Rule: the checkers see only what a driver sees -- each node's Readys (entries,
hard state, soft state), the entries it applies, at a crash every node's
*durable* disk, and a new leader's own durable hard state -- and each
observation costs O(what changed). Logs are tracked as chain hashes
(:mod:`raftkv.sim.loghash`), so "these two logs agree up to index i" is one
comparison. The first broken property raises :class:`InvariantViolation`;
nothing is ever silently tolerated.

Properties:

* ``election-safety``: at most one leader per term; and a node takes office
  only once its vote for itself in that term is durable on its disk (a vote a
  crash can lose may be cast again for another candidate -- the candidate's
  own vote is the one the checkers can see directly).
* ``leader-append-only``: a node that is leader of term T before and after a
  Ready never overwrites or truncates its log with it.
* ``log-matching``: two entries with the same (index, term) have the same chain
  hash, i.e. identical logs up to that index.
* ``leader-completeness``: the committed prefix (longest commit index seen on any
  node, with its chain) is in every new leader's log; every node's commit index
  agrees with it; no node overwrites an entry it knows is committed; a node
  never commits beyond the end of its log.
* ``state-machine-safety``: every node applies, in order, the same entry at each
  index; every snapshot taken or installed at an index holds the same state.
* ``durability``: at every crash, a majority of the voters of the newest
  applied configuration (of each half, when it is joint) still hold the
  committed prefix in their durable logs.
* ``membership``: every node that applies the configuration change at an
  index ends up with the same configuration; a node restarted or restored
  from a snapshot resumes with the configuration committed at that point, so
  a committed configuration is never lost.
* ``at-most-once``: a client command (client id, request id) takes effect at one
  log index only -- a retried or duplicated command that reaches the log twice
  is answered from the replicated session table, never executed again (§6.3).
* ``linearizability`` (checked at the end of a run by the runner).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.core.types import ConfState, Entry, HardState, Index, NodeId, Role, Term
from raftkv.sim.disk import SimDisk
from raftkv.sim.loghash import chain

CHECKERS = (
    "election-safety",
    "leader-append-only",
    "log-matching",
    "leader-completeness",
    "state-machine-safety",
    "durability",
    "membership",
    "at-most-once",
    "linearizability",
)
"""Every property the simulator checks, in report order."""

# Read on every Ready; in CPython 3.11 an attribute of an Enum class costs
# several times a global lookup.
_LEADER = Role.LEADER


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """A broken safety property.

    Attributes:
        checker: which property (one of :data:`CHECKERS`, or ``exception`` for an
            unexpected exception raised while driving the cluster).
        time: virtual time in microseconds.
        message: what was observed.
        seed: the run's seed, so it can be replayed.
    """

    checker: str
    time: int
    message: str
    seed: int

    def describe(self) -> str:
        at = f"t={self.time / 1e6:.6f}s"
        return f"VIOLATION {self.checker} at {at} (seed {self.seed}): {self.message}"


class InvariantViolation(Exception):
    """Raised by :class:`Invariants` on the first broken property."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(violation.describe())
        self.violation = violation


class Invariants:
    """Observes a cluster and raises :class:`InvariantViolation` when a property breaks.

    Args:
        node_ids: every node of the cluster.
        seed: the run's seed (copied into violations).
        now: returns the current virtual time.
    """

    def __init__(self, node_ids: Sequence[NodeId], seed: int, now: Callable[[], int]) -> None:
        self._seed = seed
        self._now = now
        self._nodes = tuple(node_ids)
        # term -> the leader of that term.
        self.leaders: dict[Term, NodeId] = {}
        # node -> the term it led as of its last Ready, or None.
        self._leading: dict[NodeId, Term | None] = {n: None for n in self._nodes}
        # node -> chain hashes of its log as seen through Readys; [0] == 0.
        self._logs: dict[NodeId, list[int]] = {n: [0] for n in self._nodes}
        # (index, term) -> chain hash, over every entry any node ever held.
        self._by_index_term: dict[tuple[Index, Term], int] = {}
        # node -> its last reported commit index.
        self._commit: dict[NodeId, Index] = {n: 0 for n in self._nodes}
        # Chain hashes of the committed prefix; len - 1 is the global commit index.
        self._committed: list[int] = [0]
        # node -> last applied index; and (term, data) applied at each index.
        self._applied_index: dict[NodeId, Index] = {n: 0 for n in self._nodes}
        self._applied: list[tuple[Term, bytes]] = [(0, b"")]
        # (client id, request id) -> the log index where the command took effect.
        self._executed: dict[tuple[int, int], Index] = {}
        # index -> the configuration that applying the change there produced.
        self._confs: dict[Index, ConfState] = {}
        # The newest applied configuration: (index, voter halves).
        self._config_index: Index = 0
        self._config_halves: tuple[frozenset[NodeId], ...] = (frozenset(self._nodes),)
        # index -> (first node, its state machine image at that index).
        self._states: dict[Index, tuple[NodeId, bytes]] = {}
        # A plain dict with every key present: bumped on every Ready, and
        # ``d[k] += 1`` on an exact dict is about twice as fast as on a Counter.
        self.checks: dict[str, int] = dict.fromkeys(CHECKERS, 0)
        """How many observations each property examined."""

    # -- helpers -----------------------------------------------------------------

    def _fail(self, checker: str, message: str) -> None:
        raise InvariantViolation(
            Violation(checker=checker, time=self._now(), message=message, seed=self._seed)
        )

    @property
    def committed_index(self) -> Index:
        """The largest commit index any node has reported."""
        return len(self._committed) - 1

    def log_hash(self, node: NodeId, index: Index) -> int | None:
        """The chain hash of ``node``'s tracked log at ``index`` (``None`` if shorter)."""
        log = self._logs[node]
        return log[index] if index < len(log) else None

    # -- observations ------------------------------------------------------------

    def on_role(self, node: NodeId, term: Term, role: Role) -> None:
        """``node``'s role and term right after an input (election safety)."""
        if role is not _LEADER:
            return
        self.checks["election-safety"] += 1
        leader = self.leaders.setdefault(term, node)
        if leader != node:
            self._fail("election-safety", f"two leaders in term {term}: {leader} and {node}")

    def on_leader_vote(self, node: NodeId, term: Term, durable: HardState) -> None:
        """``node`` took office in ``term``; ``durable`` is its disk's durable hard state.

        Its vote for itself counted toward the election, so it must be durable:
        the durable hard state is of ``term`` with the vote for ``node``.
        """
        self.checks["election-safety"] += 1
        if durable.term != term or durable.vote != node:
            self._fail(
                "election-safety",
                f"{node} leads term {term} on a vote that is not durable "
                f"(durable term {durable.term}, vote {durable.vote})",
            )

    def on_ready(
        self, node: NodeId, term: Term, role: Role, entries: Sequence[Entry], commit: Index | None
    ) -> None:
        """One Ready of ``node``; ``term`` and ``role`` are the node's right after ``ready()``.

        Checks, in order: the entries (log matching, leader append-only,
        committed entries kept), leadership (election safety, and leader
        completeness when the node leads in a new term), then the commit index.
        """
        if entries:
            self.on_entries(node, term, role, entries)
        if role is _LEADER:
            if self._leading[node] != term:
                self.on_role(node, term, role)
                self._check_new_leader(node, term)
                self._leading[node] = term
        else:
            self._leading[node] = None
        if commit is not None:
            self.on_commit(node, commit)

    def _check_new_leader(self, node: NodeId, term: Term) -> None:
        # A new leader must hold the committed prefix (paper §5.4.1). Checked
        # on the first Ready in which the node leads, after that Ready's
        # entries (which may have sat in its unstable log) are tracked.
        self.checks["leader-completeness"] += 1
        c = len(self._committed) - 1
        log = self._logs[node]
        if c >= len(log):
            self._fail(
                "leader-completeness",
                f"{node} became leader of term {term} with last index {len(log) - 1} "
                f"below the committed index {c}",
            )
        if log[c] != self._committed[c]:
            self._fail(
                "leader-completeness",
                f"{node} became leader of term {term} with a log that differs from the "
                f"committed prefix at or before index {c}",
            )

    def on_entries(self, node: NodeId, term: Term, role: Role, entries: Sequence[Entry]) -> None:
        """A Ready's ``entries`` of ``node``, whose role and term are those after ``ready()``.

        Leader append-only applies when the node led ``term`` as of its
        previous Ready and still does: only then did every change in this
        Ready happen while it was leader.
        """
        if not entries:
            return
        log = self._logs[node]
        first = entries[0].index
        old_last = len(log) - 1
        if first > old_last + 1 or first < 1:
            self._fail(
                "log-matching",
                f"{node} appended entries at {first} after a log ending at {old_last}",
            )
        # Hash the new entries.
        h = log[first - 1]
        new_hashes: list[int] = []
        for e in entries:
            h = chain(h, e.term, e.data)
            new_hashes.append(h)
        new_last = first + len(entries) - 1
        was = self._leading[node]
        leader_throughout = was is not None and role is _LEADER and was == term
        if leader_throughout:
            self.checks["leader-append-only"] += 1
        if first <= old_last:
            # The Ready replaces the suffix from `first`.
            overlap_end = min(old_last, new_last)
            same_overlap = log[overlap_end] == new_hashes[overlap_end - first]
            if leader_throughout:
                if not same_overlap:
                    self._fail(
                        "leader-append-only",
                        f"{node}, leader of term {term}, overwrote its entries from index {first} "
                        f"(up to {overlap_end}) with different ones",
                    )
                if new_last < old_last:
                    self._fail(
                        "leader-append-only",
                        f"{node}, leader of term {term}, truncated its log "
                        f"from {new_last + 1} to {old_last}",
                    )
            commit = self._commit[node]
            if first <= commit:
                self.checks["leader-completeness"] += 1
                end = min(commit, new_last)
                if log[end] != new_hashes[end - first] or new_last < commit:
                    self._fail(
                        "leader-completeness",
                        f"{node} overwrote entries at or below its commit index {commit} "
                        f"from index {first}",
                    )
            del log[first:]
        log.extend(new_hashes)
        # Log matching, after the more specific checks above.
        by_it = self._by_index_term
        self.checks["log-matching"] += len(entries)
        for e, h in zip(entries, new_hashes, strict=True):
            key = (e.index, e.term)
            seen = by_it.get(key)
            if seen is None:
                by_it[key] = h
            elif seen != h:
                self._fail(
                    "log-matching",
                    f"{node} holds an entry at index {e.index} term {e.term} whose log prefix "
                    f"differs from another node's entry with the same index and term",
                )

    def on_commit(self, node: NodeId, commit: Index) -> None:
        """``node`` reported commit index ``commit`` (its hard state)."""
        if commit == self._commit[node]:
            return
        self._commit[node] = commit
        self.checks["leader-completeness"] += 1
        log = self._logs[node]
        if commit >= len(log):
            self._fail(
                "leader-completeness",
                f"{node} committed index {commit} beyond its last index {len(log) - 1}",
            )
        committed = self._committed
        g = len(committed) - 1
        if commit <= g:
            if log[commit] != committed[commit]:
                self._fail(
                    "leader-completeness",
                    f"{node} committed index {commit} with a log that differs from the "
                    "committed prefix",
                )
            return
        if log[g] != committed[g]:
            self._fail(
                "leader-completeness",
                f"{node} committed index {commit}, but its log differs from the "
                f"committed prefix at {g}",
            )
        committed.extend(log[g + 1 : commit + 1])

    def on_apply(self, node: NodeId, entry: Entry) -> None:
        """``node`` applied ``entry`` to its state machine."""
        self.checks["state-machine-safety"] += 1
        expected = self._applied_index[node] + 1
        if entry.index != expected:
            self._fail(
                "state-machine-safety",
                f"{node} applied index {entry.index} but its next index to apply is {expected}",
            )
        self._applied_index[node] = entry.index
        applied = self._applied
        if entry.index < len(applied):
            term, data = applied[entry.index]
            if term != entry.term or data != entry.data:
                self._fail(
                    "state-machine-safety",
                    f"{node} applied {entry.term}/{entry.index} but another node applied "
                    f"{term}/{entry.index} with "
                    f"{'the same' if data == entry.data else 'different'} data",
                )
        else:
            applied.append((entry.term, entry.data))

    def add_node(self, node: NodeId) -> None:
        """A node joined the simulation (empty, knowing no configuration)."""
        if node in self._logs:
            raise ValueError(f"node {node} is known already")
        self._leading[node] = None
        self._logs[node] = [0]
        self._commit[node] = 0
        self._applied_index[node] = 0

    def on_conf(self, node: NodeId, index: Index, conf: ConfState) -> None:
        """``node`` applied the configuration change at ``index``; ``conf`` is the result."""
        self.checks["membership"] += 1
        first = self._confs.setdefault(index, conf)
        if first != conf:
            self._fail(
                "membership",
                f"{node} applied the configuration change at {index} and has {conf}, "
                f"but another node had {first}",
            )
        if index > self._config_index:
            self._config_index = index
            halves = [frozenset(conf.voters)]
            if conf.voters_outgoing:
                halves.append(frozenset(conf.voters_outgoing))
            self._config_halves = tuple(halves)

    def on_config_at(self, node: NodeId, index: Index, conf: ConfState) -> None:
        """``node`` (re)starts with configuration ``conf`` from a snapshot at ``index``.

        It must be the configuration in force after applying every change up
        to ``index``.
        """
        self.checks["membership"] += 1
        changes = [i for i in self._confs if i <= index]
        if changes:
            expected = self._confs[max(changes)]
            if expected != conf:
                self._fail(
                    "membership",
                    f"{node} holds a snapshot at {index} with configuration {conf}, "
                    f"but the change at {max(changes)} made it {expected}",
                )

    def on_snapshot(self, node: NodeId, index: Index, term: Term, hashes: Sequence[int]) -> None:
        """``node`` installs a leader's snapshot at (``index``, ``term``) in place of its log.

        ``hashes`` are the chain hashes of the log prefix the snapshot covers, as
        held by the node that took it. A snapshot holds only committed state, so
        it must match the committed prefix; the node's log becomes that prefix.
        """
        self.checks["log-matching"] += 1
        h = hashes[index]
        known = self._by_index_term.setdefault((index, term), h)
        if known != h:
            self._fail(
                "log-matching",
                f"{node} installed a snapshot at {term}/{index} whose log differs from "
                f"another log's entry {term}/{index}",
            )
        c = len(self._committed) - 1
        if index > c or self._committed[index] != h:
            self._fail(
                "leader-completeness",
                f"{node} installed a snapshot at {term}/{index} that is not a prefix of the "
                f"committed log (committed index {c})",
            )
        self._logs[node] = list(hashes[: index + 1])

    def on_restore(self, node: NodeId, index: Index, state: bytes) -> None:
        """``node``'s state machine was replaced by a snapshot image taken at ``index``."""
        self.on_state(node, index, state)
        self._applied_index[node] = index

    def on_state(self, node: NodeId, index: Index, state: bytes) -> None:
        """``node``'s state machine, having applied exactly up to ``index``, is ``state``."""
        self.checks["state-machine-safety"] += 1
        first = self._states.setdefault(index, (node, state))
        if first[1] != state:
            self._fail(
                "state-machine-safety",
                f"{node}'s state machine at index {index} differs from {first[0]}'s",
            )

    def on_execute(self, node: NodeId, client_id: int, request_id: int, index: Index) -> None:
        """``node``'s state machine executed (not deduplicated) a client command at ``index``."""
        self.checks["at-most-once"] += 1
        first = self._executed.setdefault((client_id, request_id), index)
        if first != index:
            self._fail(
                "at-most-once",
                f"{node} executed request {request_id} of client {client_id} at index {index}, "
                f"but it already took effect at index {first}",
            )

    def on_crash(self, node: NodeId, disks: dict[NodeId, SimDisk]) -> None:
        """``node`` crashed; ``disks`` hold every node's durable state after the crash."""
        self._leading[node] = None
        self.check_durability(f"after {node} crashed", disks)

    def on_durable_overwrite(self, node: NodeId, disks: dict[NodeId, SimDisk]) -> None:
        """``node`` durably replaced part of its log (a follower truncating a suffix)."""
        self.check_durability(f"after {node} overwrote durable entries", disks)

    def check_durability(self, when: str, disks: dict[NodeId, SimDisk]) -> None:
        """A majority of durable logs must hold the committed prefix."""
        self.checks["durability"] += 1
        c = len(self._committed) - 1
        want = self._committed[c]
        holders = sorted(n for n, d in disks.items() if d.durable_hash(c) == want)
        # Safe while every quorum that could elect a leader includes a holder
        # (who would refuse to vote for a log without the prefix). A voter set
        # of n has a quorum avoiding the holders when fewer than n - n // 2 of
        # them hold it (a majority, for odd n); a joint configuration needs a
        # quorum of each half, so it is unsafe only if both halves have one.
        halves = self._config_halves
        short = [v for v in halves if len(v & set(holders)) < len(v) - len(v) // 2]
        if len(short) == len(halves):
            voters = short[0]
            held = sorted(voters & set(holders))
            self._fail(
                "durability",
                f"{when}, only {held or 'no nodes'} of the voters {sorted(voters)} durably "
                f"hold the committed prefix up to index {c} (a quorum without them exists)",
            )

    def on_restart(self, node: NodeId, disk: SimDisk) -> None:
        """``node`` restarted from ``disk``'s durable state with an empty state machine."""
        self._logs[node] = disk.durable_hashes()
        self._commit[node] = disk.durable_hard_state.commit
        self._applied_index[node] = disk.durable_snapshot.metadata.index
        self._leading[node] = None
