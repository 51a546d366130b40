"""The Raft protocol for one node: its state, the term rules, roles and replication.

Rule: :class:`Raft` holds one node's protocol state, and every Raft decision is
made on it -- here or in the modules below -- without I/O. Inputs arrive as
method calls (``tick``, ``step``, ``propose``, ``hup``...); outputs are
appended to ``msgs`` / ``msgs_after_persist`` and to the log's unstable part,
and are collected by :class:`raftkv.core.rawnode.RawNode` into a Ready.

Role dispatch swaps handlers (as etcd does): ``become_*`` sets ``_step_role`` and
``_tick_role``. Method boundaries follow the paper's rules so that tests can
subclass :class:`Raft` with one rule broken and check that the simulator's
checkers notice; such methods stay here even where their procedure lives in
another module.

This module holds the term rules, role changes, ticks, message dispatch and
log replication. The other parts of the protocol are functions over the same
state in their own modules: :mod:`~raftkv.core.election` (campaigns, PreVote,
votes, CheckQuorum), :mod:`~raftkv.core.membership` (configuration changes on
a running node), :mod:`~raftkv.core.transfer` (leadership transfer),
:mod:`~raftkv.core.snapshot_transfer` (InstallSnapshot, both sides) and
:mod:`~raftkv.core.read_only` (ReadIndex). Each replication-state change of a
follower is a method of :class:`~raftkv.core.progress.Progress`.

Paper references: Figure 2 (the rules), §5.2 elections, §5.3 replication,
§5.4.1 election restriction, §5.4.2 committing only current-term entries, §7 log
compaction and InstallSnapshot; dissertation §3.10 leadership transfer, §4
membership changes, §6.4 ReadIndex, §9.6 PreVote and CheckQuorum, §10.2.1
leader's parallel disk write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import raftkv.core.election as election
import raftkv.core.membership as membership
import raftkv.core.read_only as read_only
import raftkv.core.snapshot_transfer as snapshot_transfer
import raftkv.core.transfer as leadership
from raftkv.core.confchange import Membership
from raftkv.core.config import Config
from raftkv.core.errors import LogCompacted, NotLeader, ProposalDropped, bug
from raftkv.core.log import RaftLog
from raftkv.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftkv.core.progress import Progress, ProgressState
from raftkv.core.quorum import JointConfig
from raftkv.core.read_only import ReadOnly
from raftkv.core.snapshot_transfer import SnapshotAssembler
from raftkv.core.storage import Storage
from raftkv.core.types import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    ReadState,
    Role,
    Snapshot,
    SoftState,
    Term,
)

logger = logging.getLogger(__name__)


class RandomSource(Protocol):
    """The only randomness the core uses; ``random.Random`` satisfies it."""

    def randrange(self, start: int, stop: int) -> int: ...


_LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot)

# Enum members read on every message, as module constants: in CPython 3.11 an
# attribute of an Enum class costs several times a global lookup.
_LEADER = Role.LEADER
_SNAPSHOT = ProgressState.SNAPSHOT


def needs_persist(msg: Message) -> bool:
    """Whether ``msg`` may leave only once this node's hard state and log are
    durable (Figure 2: "respond to RPCs only after updating stable storage"):
    the one home of that rule. :class:`Raft` queues such messages in
    ``msgs_after_persist`` and the driver sends them after its sync.

    - a RequestVote of a real election promises our new term and self-vote;
    - every vote answer (PreVote too: a rejection carries our term) and every
      AppendEntries / heartbeat answer promise our term, vote and log;
    - a finished InstallSnapshot answer promises the snapshot is installed;
      a chunk's acknowledgement promises nothing and goes at once.
    Everything else (a leader's AppendEntries, heartbeats, PreVote requests,
    ReadIndex traffic, TimeoutNow) goes at once.
    """
    if isinstance(msg, RequestVoteResponse | AppendEntriesResponse | HeartbeatResponse):
        return True
    if isinstance(msg, RequestVote):
        return not msg.pre_vote
    if isinstance(msg, InstallSnapshotResponse):
        return msg.done
    return False


class Raft:
    """One node's Raft state machine. Use it through :class:`RawNode`."""

    def __init__(self, config: Config, storage: Storage, rng: RandomSource) -> None:
        config.validate()
        self.node_id: NodeId = config.node_id
        self.config = config
        self.rng = rng
        self.log = RaftLog(storage, config.applied)
        hard_state, conf_state = storage.initial_state()
        stored_voters = conf_state.voters
        if not conf_state.voters and not conf_state.learners and config.peers:
            # A brand-new cluster: bootstrap from the configured peers. A node
            # started with neither (joining an existing cluster) has no voters
            # and never campaigns until the leader's log or snapshot includes it.
            conf_state = ConfState(voters=tuple(config.peers))
        self.membership = Membership.from_conf_state(conf_state)
        # Invariant: voters is membership.voters (kept as a field for speed).
        self.voters: JointConfig = self.membership.voters
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick

        # Persistent state (paper Figure 2); changes leave through HardState.
        self.term: Term = 0
        self.vote: NodeId | None = None

        # Volatile state.
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self.votes: dict[NodeId, bool] = {}
        # Invariant: prs is non-empty only while role is LEADER.
        self.prs: dict[NodeId, Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        # Set when proposals or commit progress should be broadcast; flushed once
        # per Ready so that a burst of proposals goes out as one AppendEntries.
        self.pending_broadcast = False

        # Leadership transfer (§3.10): the target, while a transfer is under way.
        self.lead_transferee: NodeId | None = None
        # Index of the last configuration change proposed; a new one may be
        # proposed only once it has been applied.
        self.pending_conf_index: Index = 0

        # ReadIndex (§6.4): the leader's rounds and queued reads, and the
        # answers for the driver.
        self.reads = ReadOnly()
        self.read_states: list[ReadState] = []
        # Lease reads (§6.4.1): ticks since this node became leader.
        self.leader_ticks = 0

        self.snapshot_in = SnapshotAssembler()
        # The snapshot last sent and its checksum: computed once per snapshot,
        # not per chunk or per follower.
        self.sent_snapshot_checksum: tuple[Snapshot, int] | None = None
        self.bootstrap_index: Index = 0

        # Output, drained by RawNode.ready().
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []

        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], bool] = self._tick_election

        if (
            config.peers
            and not stored_voters
            and hard_state.is_empty()
            and storage.last_index() == 0
            and storage.snapshot().is_empty()
        ):
            membership.bootstrap(self, config.peers)
        elif not hard_state.is_empty():
            self.term = hard_state.term
            self.vote = hard_state.vote
            last = self.log.last_index()
            if hard_state.commit > last:
                bug(f"{self.node_id}: stored commit {hard_state.commit} beyond last index {last}")
            self.log.commit_to(hard_state.commit)
        self.become_follower(self.term, None)

    # -- state snapshots ---------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(leader=self.leader, role=self.role)

    def is_voter(self, node_id: NodeId) -> bool:
        return node_id in self.voters.ids()

    def peers(self) -> list[NodeId]:
        """Every other voter, in a deterministic order."""
        return sorted(v for v in self.voters.ids() if v != self.node_id)

    def conf_state(self) -> ConfState:
        return self.membership.to_conf_state()

    def committed_in_current_term(self) -> bool:
        """Whether an entry of this term is committed -- the leader then knows the
        full committed prefix (§8) and may serve reads and change membership."""
        return self.log.term_or_none(self.log.committed) == self.term

    def may_serve_reads(self) -> bool:
        """Whether this leader may hand out a read index yet (§6.4 step 1): only
        once an entry of its own term has committed, so that it knows the
        full committed prefix."""
        return self.committed_in_current_term()

    def may_change_membership(self) -> bool:
        """Whether this leader may propose a configuration change yet.

        Only once an entry of its own term has committed (the single-server
        change bug, Ongaro 2015 raft-dev; dissertation §4.1 as corrected). The
        other half of the guard is :meth:`become_leader` setting
        ``pending_conf_index`` to its last index, so that configuration
        entries inherited from earlier terms are applied first.
        """
        return self.committed_in_current_term()

    # -- role transitions --------------------------------------------------

    def _reset(self, term: Term) -> None:
        if self.term != term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            0, self.election_timeout
        )
        self.votes = {}
        self.prs = {}
        self.pending_broadcast = False
        self.lead_transferee = None
        self.reads.reset()
        self.leader_ticks = 0

    def become_follower(self, term: Term, leader: NodeId | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader
        self._step_role = self._step_follower
        self._tick_role = self._tick_election
        logger.debug("%s became follower at term %d (leader %s)", self.node_id, term, leader)

    def become_pre_candidate(self) -> None:
        """Start a PreVote round without touching the term (dissertation §9.6)."""
        if self.role is Role.LEADER:
            bug("leader cannot become pre-candidate")
        self.votes = {}
        self.leader = None
        self.role = Role.PRE_CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        logger.debug("%s became pre-candidate at term %d", self.node_id, self.term)

    def become_candidate(self) -> None:
        """Increment the term and vote for self (paper §5.2)."""
        if self.role is Role.LEADER:
            bug("leader cannot become candidate")
        self._reset(self.term + 1)
        self.vote = self.node_id
        self.role = Role.CANDIDATE
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        logger.debug("%s became candidate at term %d", self.node_id, self.term)

    def become_leader(self) -> None:
        """Take office: reset follower progress and append a no-op (paper §5.4.2, §8)."""
        if self.role is Role.FOLLOWER:
            bug("follower cannot become leader")
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.node_id
        self._step_role = self._step_leader
        self._tick_role = self._tick_heartbeat
        last = self.log.last_index()
        for node_id in sorted(self.membership.members() | {self.node_id}):
            self.prs[node_id] = Progress(last + 1, self.config.max_inflight, recent_active=True)
        # Uncommitted configuration changes may sit in our log; allow no new
        # one until everything up to here is applied.
        self.pending_conf_index = last
        # Only entries known durable count toward our own acknowledgement.
        self.prs[self.node_id].become_own(self.log.stable_last_index(), last)
        logger.debug("%s became leader at term %d", self.node_id, self.term)
        self.append_entries([Entry(term=self.term, index=0)])

    # -- elections (the procedure is in election.py) ---------------------------

    def hup(self, *, transfer: bool = False) -> None:
        """Campaign if allowed: the election timer fired, a campaign was
        requested, or (``transfer``) the leader handed leadership over
        (:func:`raftkv.core.election.hup`)."""
        election.hup(self, transfer=transfer)

    def vote_for_self(self) -> bool:
        """Cast a candidate's own vote; True if that ended the election.

        Our vote counts only once our new term and vote are durable, like any
        voter's (Figure 2: persist before responding): it is a
        RequestVoteResponse to ourselves that waits for persistence with the
        other messages, and :meth:`RawNode.advance` steps it back in. So it
        never ends the election here; a single voter becomes leader only once
        the Ready holding its vote has been persisted and advanced.
        """
        self.send(
            RequestVoteResponse(term=self.term, sender=self.node_id, to=self.node_id, granted=True)
        )
        return False

    def can_vote_for(self, msg: RequestVote) -> bool:
        """Whether this node may grant ``msg`` without breaking one vote per term."""
        return (
            self.vote == msg.sender
            or (self.vote is None and self.leader is None)
            or (msg.pre_vote and msg.term > self.term)
        )

    def log_is_up_to_date(self, msg: RequestVote) -> bool:
        """The election restriction (paper §5.4.1)."""
        return self.log.is_up_to_date(msg.last_log_index, msg.last_log_term)

    def report_unreachable(self, peer: NodeId) -> bool:
        """A hint that ``peer``'s process is gone; True if it was acted on
        (:func:`raftkv.core.election.report_unreachable` has the conditions)."""
        return election.report_unreachable(self, peer)

    # -- ticks -------------------------------------------------------------

    def tick(self) -> bool:
        """Advance the timers by one tick.

        Returns ``False`` when the tick only advanced the timers (no election,
        heartbeat or step-down): it then created no work for a Ready.
        """
        return self._tick_role()

    def _tick_election(self) -> bool:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()
            return True
        return False

    def _tick_heartbeat(self) -> bool:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        self.leader_ticks += 1
        acted = False
        if self.election_elapsed >= self.election_timeout:
            acted = True
            self.election_elapsed = 0
            leadership.abort_transfer(self)
            if self.config.check_quorum and not election.check_quorum_active(self):
                logger.debug("%s steps down at term %d: quorum inactive", self.node_id, self.term)
                self.become_follower(self.term, None)
                return True
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            if self.config.read_only == "lease":
                # Every heartbeat is a round, so acknowledgements extend the lease.
                self.reads.open_round()
            self.broadcast_heartbeat(self.reads.take_round(self.node_id, self.leader_ticks))
            return True
        return acted

    # -- step --------------------------------------------------------------

    def step(self, msg: Message) -> None:
        """Process one message from a peer (term rules of Figure 2 first)."""
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and election.in_lease(self):
                    # CheckQuorum: we heard from a leader within the minimum
                    # election timeout; a disruptive candidate is ignored.
                    return
                if msg.pre_vote:
                    election.handle_request_vote(self, msg)
                    return
                self.become_follower(msg.term, None)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                # A granted PreVote carries the term we would campaign in.
                pass
            elif isinstance(msg, _LEADER_MESSAGES):
                self.become_follower(msg.term, msg.sender)
            else:
                self.become_follower(msg.term, None)
        elif msg.term < self.term:
            self._step_stale(msg)
            return

        if isinstance(msg, RequestVote):
            election.handle_request_vote(self, msg)
            return
        self._step_role(msg)

    def _step_stale(self, msg: Message) -> None:
        """A message from an older term."""
        if isinstance(msg, _LEADER_MESSAGES):
            if self.config.check_quorum or self.config.pre_vote:
                # Tell the stale leader about the newer term so it steps down;
                # without this a node that bumped its term while isolated could
                # never be reached by a leader that cannot win a PreVote from it.
                self.send(
                    AppendEntriesResponse(
                        term=self.term, sender=self.node_id, to=msg.sender, index=0
                    )
                )
        elif isinstance(msg, RequestVote) and msg.pre_vote:
            self.send(
                RequestVoteResponse(
                    term=self.term,
                    sender=self.node_id,
                    to=msg.sender,
                    granted=False,
                    pre_vote=True,
                )
            )

    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            self.election_elapsed = 0
            self.leader = msg.sender
            self.handle_append_entries(msg)
        elif isinstance(msg, Heartbeat):
            self.election_elapsed = 0
            self.leader = msg.sender
            self.handle_heartbeat(msg)
        elif isinstance(msg, InstallSnapshot):
            self.election_elapsed = 0
            self.leader = msg.sender
            snapshot_transfer.handle_install_snapshot(self, msg)
        elif isinstance(msg, TimeoutNow):
            leadership.handle_timeout_now(self, msg)
        elif isinstance(msg, ReadIndexResponse):
            self.read_states.append(ReadState(msg.index, msg.context))

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            self.become_follower(msg.term, msg.sender)
            self.handle_append_entries(msg)
        elif isinstance(msg, Heartbeat):
            self.become_follower(msg.term, msg.sender)
            self.handle_heartbeat(msg)
        elif isinstance(msg, InstallSnapshot):
            self.become_follower(msg.term, msg.sender)
            snapshot_transfer.handle_install_snapshot(self, msg)
        elif isinstance(msg, RequestVoteResponse):
            election.handle_vote_response(self, msg)

    def _step_leader(self, msg: Message) -> None:
        if isinstance(msg, ReadIndex):
            self.handle_read_index(msg.context, msg.sender)
            return
        pr = self.prs.get(msg.sender)
        if pr is None:
            return
        if isinstance(msg, AppendEntriesResponse):
            pr.mark_recent_active()
            self.handle_append_response(msg, pr)
        elif isinstance(msg, HeartbeatResponse):
            pr.heartbeat_acked()
            if pr.state is _SNAPSHOT:
                # Chunks (or the final acknowledgement) may have been lost:
                # resume from what the follower confirmed.
                snapshot_transfer.resend_snapshot(self, msg.sender, pr)
            elif pr.match < self.log.last_index():
                self.send_append(msg.sender, pr)
            if msg.context:
                read_only.handle_read_ack(self, msg.context, msg.sender)
        elif isinstance(msg, InstallSnapshotResponse):
            pr.mark_recent_active()
            snapshot_transfer.handle_snapshot_response(self, msg, pr)
        elif isinstance(msg, _LEADER_MESSAGES):
            logger.warning(
                "%s: leader at term %d got %s from %s in the same term",
                self.node_id,
                self.term,
                type(msg).__name__,
                msg.sender,
            )

    # -- follower side of replication --------------------------------------

    def handle_append_entries(self, msg: AppendEntries) -> None:
        """AppendEntries receiver (paper Figure 2)."""
        if msg.prev_log_index < self.log.committed:
            # Everything up to our commit index already matches the leader.
            self.send(
                AppendEntriesResponse(
                    term=self.term, sender=self.node_id, to=msg.sender, index=self.log.committed
                )
            )
            return
        last_new = self.append_from_leader(msg)
        if last_new is not None:
            self.send(
                AppendEntriesResponse(
                    term=self.term, sender=self.node_id, to=msg.sender, index=last_new
                )
            )
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(msg.prev_log_index, self.log.last_index()), msg.prev_log_term
        )
        self.send(
            AppendEntriesResponse(
                term=self.term,
                sender=self.node_id,
                to=msg.sender,
                index=msg.prev_log_index,
                reject=True,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def append_from_leader(self, msg: AppendEntries) -> Index | None:
        """Consistency check, conflict truncation, append, commit (Figure 2 steps 2-5)."""
        return self.log.maybe_append(msg.prev_log_index, msg.prev_log_term, msg.commit, msg.entries)

    def handle_heartbeat(self, msg: Heartbeat) -> None:
        # The leader never sends a commit index beyond what we are known to match.
        self.log.commit_to(msg.commit)
        self.send(
            HeartbeatResponse(
                term=self.term, sender=self.node_id, to=msg.sender, context=msg.context
            )
        )

    # -- leader side of replication ----------------------------------------

    def handle_append_response(self, msg: AppendEntriesResponse, pr: Progress) -> None:
        if msg.reject:
            match_hint = msg.hint_index
            if msg.hint_term > 0:
                match_hint, _ = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)
            if pr.append_rejected(msg.index, match_hint):
                self.send_append(msg.sender, pr)
            return
        was_paused = pr.is_paused()
        if not pr.append_acked(msg.index):
            return
        if self.lead_transferee is not None:
            leadership.maybe_send_timeout_now(self, msg.sender, pr)
        if self.maybe_commit():
            # Flushed once per Ready: tells every follower the new commit index.
            self.pending_broadcast = True
        elif was_paused:
            # The follower was waiting on us; resume with an empty probe if needed.
            self.send_append(msg.sender, pr)
        # Keep the pipeline full: send as long as there is something to send.
        while self.send_append(msg.sender, pr, send_if_empty=False):
            pass

    def maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds, if it is of our term (§5.4.2)."""
        acked = {node_id: pr.match for node_id, pr in self.prs.items()}
        index = self.voters.committed_index(acked)
        if not self.log.maybe_commit(index, self.term):
            return False
        if self.reads.awaiting_commit and self.may_serve_reads():
            for context, sender in self.reads.take_awaiting():
                self.handle_read_index(context, sender)
        return True

    def send_append(self, to: NodeId, pr: Progress, *, send_if_empty: bool = True) -> bool:
        """Send the next AppendEntries to ``to`` if its progress allows; True if sent."""
        if pr.is_paused():
            return False
        log = self.log
        next_index = pr.next
        prev_index = next_index - 1
        try:
            if prev_index < log.first_index() - 1:
                raise LogCompacted(f"index {prev_index} is compacted")
            prev_term = log.term(prev_index)
        except LogCompacted:
            # The follower is behind our first index: send a snapshot (§7).
            return snapshot_transfer.start_snapshot(self, to, pr)
        entries: list[Entry] = []
        last = log.last_index()
        if next_index <= last:
            config = self.config
            hi = min(last + 1, next_index + config.max_entries_per_msg)
            entries = log.slice(next_index, hi, config.max_size_per_msg)
        if not entries and not send_if_empty:
            return False
        self.send(
            AppendEntries(
                term=self.term,
                sender=self.node_id,
                to=to,
                prev_log_index=prev_index,
                prev_log_term=prev_term,
                entries=tuple(entries),
                commit=log.committed,
            )
        )
        pr.sent_entries(entries[-1].index if entries else None)
        return True

    def broadcast_append(self) -> None:
        self.pending_broadcast = False
        for node_id, pr in self.prs.items():
            if node_id != self.node_id:
                self.send_append(node_id, pr)

    def broadcast_heartbeat(self, context: bytes = b"") -> None:
        committed = self.log.committed
        for node_id, pr in self.prs.items():
            if node_id != self.node_id:
                self.send(
                    Heartbeat(
                        term=self.term,
                        sender=self.node_id,
                        to=node_id,
                        commit=min(pr.match, committed),
                        context=context,
                    )
                )

    def append_entries(self, entries: list[Entry]) -> Index:
        """Append new entries to the leader's own log, assigning term and index."""
        last = self.log.last_index()
        stamped = [
            Entry(term=self.term, index=last + i + 1, data=e.data, type=e.type)
            for i, e in enumerate(entries)
        ]
        last = self.log.append(stamped)
        self.prs[self.node_id].own_appended(last)
        self.pending_broadcast = True
        return last

    def propose(self, entries: list[Entry]) -> Index:
        """Append client commands; returns the index of the last one.

        Raises:
            NotLeader: this node is not the leader.
            ProposalDropped: a leadership transfer is under way (§3.10).
        """
        if self.role is not _LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        return self.append_entries(entries)

    def on_persisted(self, index: Index, term: Term) -> None:
        """The driver made entries up to (index, term) durable."""
        self.log.stable_to(index, term)
        # Our own acknowledgement counts only once our copy is durable.
        if (
            self.role is _LEADER
            and self.log.term_or_none(index) == term
            and self.prs[self.node_id].maybe_update(index)
            and self.maybe_commit()
        ):
            self.pending_broadcast = True

    # -- ReadIndex (dissertation §6.4; the procedure is in read_only.py) -------

    def read_index(self, context: bytes) -> None:
        """Ask for a read index for ``context``; the answer is a ReadState.

        Raises:
            ProposalDropped: no leader is known to forward the request to.
        """
        read_only.read_index(self, context)

    def handle_read_index(self, context: bytes, sender: NodeId) -> None:
        """Leader side: register a read at the current commit index
        (:func:`raftkv.core.read_only.handle_read_index`)."""
        read_only.handle_read_index(self, context, sender)

    # -- leadership transfer and membership (transfer.py, membership.py) -------

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to ``to`` (:func:`raftkv.core.transfer.transfer_leadership`).

        Raises:
            NotLeader: this node is not the leader.
            RaftError: ``to`` is not a voter.
        """
        leadership.transfer_leadership(self, to)

    def propose_conf_change(self, cc: ConfChange) -> Index:
        """Append a configuration change (:func:`raftkv.core.membership.propose_conf_change`).

        Raises:
            NotLeader: this node is not the leader.
            ProposalDropped: another change is pending, a transfer is under way,
                or no entry of this term is committed yet.
            ConfChangeError: the change does not apply to the current membership.
        """
        return membership.propose_conf_change(self, cc)

    def apply_conf_change(self, cc: ConfChange, *, strict: bool = False) -> ConfState:
        """Make a committed change effective (:func:`raftkv.core.membership.apply_conf_change`).

        Raises:
            ConfChangeError: with ``strict``, the change does not apply (nothing changed).
        """
        return membership.apply_conf_change(self, cc, strict=strict)

    # -- output ------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Queue ``msg``: in ``msgs_after_persist`` if it promises that our hard
        state and log are durable (:func:`needs_persist`), else in ``msgs``."""
        if needs_persist(msg):
            self.msgs_after_persist.append(msg)
        else:
            self.msgs.append(msg)
