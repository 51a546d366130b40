"""The public, single-threaded API of the core.

Rule: :class:`RawNode` turns calls into Raft inputs and collects Raft outputs
into :class:`~raftkv.core.ready.Ready` batches. It owns no I/O, no clock and no
threads; the caller ticks it and drives the Ready loop (see ``ready.py``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from raftkv.core.config import Config
from raftkv.core.errors import RaftError
from raftkv.core.messages import Message
from raftkv.core.raft import Raft, RandomSource
from raftkv.core.read_only import flush_reads
from raftkv.core.ready import Ready
from raftkv.core.storage import Storage
from raftkv.core.types import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    NodeId,
    ReadState,
    Role,
    SoftState,
    Term,
)

# In CPython 3.11 an attribute of an Enum class costs several times a global lookup.
_LEADER = Role.LEADER


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressStatus:
    """The leader's view of one member's replication."""

    match: Index
    next: Index
    state: str
    recent_active: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """A point-in-time view of a node, for status endpoints and tests."""

    node_id: NodeId
    term: Term
    vote: NodeId | None
    role: Role
    leader: NodeId | None
    commit_index: Index
    applied_index: Index
    first_index: Index
    last_index: Index
    conf_state: ConfState
    lead_transferee: NodeId | None
    progress: dict[NodeId, ProgressStatus] = field(default_factory=dict)


class RawNode:
    """A Raft node without I/O.

    Args:
        config: static configuration.
        storage: stable storage the driver appends to (read-only for the core).
        rng: randomness for election timeouts; pass ``random.Random(seed)`` for a
            reproducible run.
        raft_class: the protocol implementation; tests pass a subclass with one
            rule deliberately broken to show that the checkers catch it.

    The :class:`~raftkv.core.raft.Raft` inside is private: drivers and the
    simulator read a node through the views at the end of this class
    (``term``, ``role``, ``commit_index``, ``conf_state()``, ``progress()``,
    ``entries()``...), and change it only through the inputs.
    """

    __slots__ = (
        "_raft",
        "_prev_hard_state",
        "_prev_soft_state",
        "_ready_in_flight",
        "_unpersisted",
    )

    def __init__(
        self,
        config: Config,
        storage: Storage,
        rng: RandomSource,
        *,
        raft_class: type[Raft] = Raft,
    ) -> None:
        self._raft = raft_class(config, storage, rng)
        # What storage holds; a bootstrapped node's first Ready persists more.
        self._prev_hard_state = storage.initial_state()[0]
        self._prev_soft_state = self._raft.soft_state()
        self._ready_in_flight: Ready | None = None
        # The Readys accepted but not yet persisted, oldest first, each with the
        # messages this node addressed to itself after its persist (a
        # candidate's own vote): stepped in by persisted().
        self._unpersisted: deque[tuple[Ready, list[Message]]] = deque()

    # -- inputs ------------------------------------------------------------

    def tick(self) -> bool:
        """Advance logical time by one tick.

        Returns ``False`` if the tick did nothing but advance the timers: a
        driver that had no Ready pending before it still has none (it may skip
        :meth:`has_ready`). ``True`` means an election, heartbeat or step-down
        may have produced work.
        """
        return self._raft.tick()

    def step(self, msg: Message) -> None:
        """Deliver a message from a peer. Messages for another node are ignored."""
        if msg.to != self._raft.node_id:
            return
        self._raft.step(msg)

    def propose(self, data: bytes) -> Index:
        """Append a command to the log; returns its index (not yet committed).

        Raises:
            NotLeader: this node is not the leader (``.leader`` says who is).
        """
        return self._raft.propose([Entry(term=0, index=0, data=data)])

    def propose_batch(self, commands: list[bytes]) -> Index:
        """Append several commands at once; returns the index of the last one."""
        if not commands:
            raise RaftError("propose_batch needs at least one command")
        return self._raft.propose(
            [Entry(term=0, index=0, data=d, type=EntryType.NORMAL) for d in commands]
        )

    def campaign(self) -> None:
        """Start an election now (with PreVote first if configured)."""
        self._raft.hup()

    def report_unreachable(self, peer: NodeId) -> bool:
        """Hint that ``peer``'s process is gone (its address refuses connections).

        A follower whose leader is ``peer`` campaigns after a tick or a few
        instead of a whole election timeout (see
        :func:`raftkv.core.election.report_unreachable` for the conditions).
        Returns ``True`` if the hint was acted on.
        """
        return self._raft.report_unreachable(peer)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read point (dissertation §6.4).

        The answer arrives in a later Ready as ``ReadState(index, context)``:
        serve the read once the state machine has applied ``index``. Works on
        followers (the request is forwarded to the leader). Requests that cannot
        be answered (leadership lost) produce no ReadState; callers time out.

        Raises:
            ProposalDropped: no leader is known.
        """
        self._raft.read_index(context)

    def propose_conf_change(self, cc: ConfChange) -> Index:
        """Propose a membership change; returns its log index.

        Raises:
            NotLeader: not the leader.
            ProposalDropped: a change is pending, a transfer is under way, or no
                entry of this term is committed yet.
            ConfChangeError: the change does not apply to the membership.
        """
        return self._raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange, *, strict: bool = False) -> ConfState:
        """Make a committed change effective; call it when applying its entry.

        A change that does not apply to the membership (it was validated
        against an older one) changes nothing on any replica; the configuration
        is returned unchanged, or, with ``strict``, :class:`ConfChangeError`
        is raised.

        Raises:
            ConfChangeError: with ``strict``, the change does not apply.
        """
        if strict:
            return self._raft.apply_conf_change(cc, strict=True)
        # Without the keyword: a subclass of Raft (a test's mutant) may override it so.
        return self._raft.apply_conf_change(cc)

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to ``to`` (dissertation §3.10).

        Raises:
            NotLeader: not the leader.
            RaftError: ``to`` is not a voter.
        """
        self._raft.transfer_leadership(to)

    def status(self) -> Status:
        r = self._raft
        return Status(
            node_id=r.node_id,
            term=r.term,
            vote=r.vote,
            role=r.role,
            leader=r.leader,
            commit_index=r.log.committed,
            applied_index=r.log.applied,
            first_index=r.log.first_index(),
            last_index=r.log.last_index(),
            conf_state=r.conf_state(),
            lead_transferee=r.lead_transferee,
            progress=self.progress(),
        )

    # -- outputs -----------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether :meth:`ready` would return a non-empty batch."""
        if self._ready_in_flight is not None:
            return False
        r = self._raft
        if r.msgs or r.msgs_after_persist or r.pending_broadcast or r.read_states or r.reads.unsent:
            return True
        log = r.log
        unstable = log.unstable
        if unstable.has_unsent() or unstable.snapshot is not None or log.committed > log.applied:
            return True
        # Compare the fields of SoftState/HardState rather than building both
        # after every input: this runs once per input, ready() far less often.
        ss = self._prev_soft_state
        if r.role is not ss.role or r.leader != ss.leader:
            return True
        hs = self._prev_hard_state
        return r.term != hs.term or r.vote != hs.vote or log.committed != hs.commit

    def ready(self) -> Ready:
        """Collect the pending work. Call :meth:`advance` (or :meth:`accept`)
        before the next ``ready``."""
        if self._ready_in_flight is not None:
            raise RaftError("ready() called again before advance() or accept()")
        r = self._raft
        if r.pending_broadcast and r.role is _LEADER:
            r.broadcast_append()
        r.pending_broadcast = False
        if r.reads.unsent:
            flush_reads(r)
        log = r.log
        unstable = log.unstable
        # New SoftState/HardState objects only when a field changed.
        prev_ss = self._prev_soft_state
        soft_state: SoftState | None = None
        if r.role is not prev_ss.role or r.leader != prev_ss.leader:
            soft_state = self._prev_soft_state = r.soft_state()
        prev_hs = self._prev_hard_state
        hard_state: HardState | None = None
        must_sync = False
        if r.term != prev_hs.term or r.vote != prev_hs.vote:
            hard_state = self._prev_hard_state = r.hard_state()
            must_sync = True
        elif log.committed != prev_hs.commit:
            hard_state = self._prev_hard_state = r.hard_state()
        entries: tuple[Entry, ...] = ()
        if unstable.has_unsent():
            entries = tuple(unstable.unsent())
            unstable.in_progress = entries[-1].index
        if log.committed > log.applied:
            committed = tuple(log.next_committed_entries(r.config.max_committed_size_per_ready))
            if committed:
                log.applying = committed[-1].index
        else:
            committed = ()
        snapshot = unstable.snapshot
        messages: tuple[Message, ...] = ()
        if r.msgs:
            messages = tuple(r.msgs)
            r.msgs = []
        after_persist: tuple[Message, ...] = ()
        to_self: list[Message] = []
        if r.msgs_after_persist:
            pending = r.msgs_after_persist
            r.msgs_after_persist = []
            node_id = r.node_id
            to_self = [m for m in pending if m.to == node_id]
            if to_self:
                # Not for the driver to send: they count once this Ready is
                # persisted, when persisted() steps them back in.
                pending = [m for m in pending if m.to != node_id]
            after_persist = tuple(pending)
        read_states: tuple[ReadState, ...] = ()
        if r.read_states:
            read_states = tuple(r.read_states)
            r.read_states = []
        rd = Ready(
            soft_state=soft_state,
            hard_state=hard_state,
            entries=entries,
            committed_entries=committed,
            messages=messages,
            messages_after_persist=after_persist,
            must_sync=must_sync or bool(entries) or snapshot is not None,
            snapshot=snapshot,
            read_states=read_states,
        )
        self._ready_in_flight = rd
        self._unpersisted.append((rd, to_self))
        return rd

    def advance(self, rd: Ready) -> None:
        """Tell the core that ``rd`` was fully handled (persisted, sent, applied):
        :meth:`accept` and :meth:`persisted` at once.

        This is also how the core learns that ``rd`` is durable: its own log
        entries count toward commitment, and what it addressed to itself after
        the persist (a candidate's own vote) is stepped back in, here.
        """
        self.accept(rd)
        self.persisted(rd)

    def accept(self, rd: Ready) -> None:
        """Tell the core that ``rd`` was handed to storage but may not be durable
        yet: its messages sent, its entries and hard state written, its
        committed entries applied (steps 1, 2 without the sync, and 4). The next
        :meth:`ready` may follow at once; :meth:`persisted` reports ``rd``
        durable later (asynchronous storage writes, ``ready.py``).

        Raises:
            RaftError: ``rd`` is not the Ready in flight, or it holds a
                snapshot while earlier Readys are not persisted (install a
                snapshot only after they are).
        """
        if self._ready_in_flight is not rd:
            raise RaftError("accept() or advance() called without that Ready in flight")
        if rd.snapshot is not None:
            if self._unpersisted[0][0] is not rd:
                raise RaftError("a snapshot's Ready is handled after the Readys before it persist")
            self._raft.log.applied_snapshot(rd.snapshot.metadata.index)
        self._ready_in_flight = None
        if rd.committed_entries:
            self._raft.log.applied_to(rd.committed_entries[-1].index)

    def persisted(self, rd: Ready) -> None:
        """Tell the core that ``rd``'s entries and hard state are durable (step
        2 done): its own entries now count toward commitment, and what it
        addressed to itself after the persist is stepped back in. Readys are
        persisted in the order :meth:`ready` made them, each after its
        :meth:`accept`.

        Raises:
            RaftError: ``rd`` is not the oldest accepted Ready not yet persisted.
        """
        q = self._unpersisted
        if not q or q[0][0] is not rd or self._ready_in_flight is rd:
            raise RaftError("persisted() called out of order or before accept()")
        _, steps = q.popleft()
        raft = self._raft
        if rd.entries:
            last = rd.entries[-1]
            raft.on_persisted(last.index, last.term)
        for m in steps:
            raft.step(m)

    def unpersisted(self) -> int:
        """How many accepted Readys are not yet persisted."""
        return len(self._unpersisted) - (self._ready_in_flight is not None)

    # -- read-only views ---------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self._raft.node_id

    @property
    def term(self) -> Term:
        return self._raft.term

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def leader(self) -> NodeId | None:
        return self._raft.leader

    @property
    def commit_index(self) -> Index:
        return self._raft.log.committed

    @property
    def applied_index(self) -> Index:
        return self._raft.log.applied

    @property
    def last_index(self) -> Index:
        return self._raft.log.last_index()

    def hard_state(self) -> HardState:
        return self._raft.hard_state()

    def soft_state(self) -> SoftState:
        return self._raft.soft_state()

    @property
    def vote(self) -> NodeId | None:
        return self._raft.vote

    @property
    def first_index(self) -> Index:
        return self._raft.log.first_index()

    @property
    def pending_conf_index(self) -> Index:
        """The index of the last configuration change this node proposed as
        leader (or its last index when it took office); no new change is
        accepted until the node has applied it."""
        return self._raft.pending_conf_index

    @property
    def lead_transferee(self) -> NodeId | None:
        """The target of the leadership transfer under way, if any (leader only)."""
        return self._raft.lead_transferee

    def conf_state(self) -> ConfState:
        """The membership in force (changes count once applied)."""
        return self._raft.conf_state()

    def progress(self) -> dict[NodeId, ProgressStatus]:
        """The leader's view of each member's replication, by node id (empty
        unless this node is the leader)."""
        return {
            node_id: ProgressStatus(
                match=pr.match, next=pr.next, state=pr.state.value, recent_active=pr.recent_active
            )
            for node_id, pr in sorted(self._raft.prs.items())
        }

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        """The log's entries in ``[lo, hi)``, stable and unstable alike.

        Raises:
            LogCompacted: ``lo`` is below the first index.
        """
        return self._raft.log.slice(lo, hi)
