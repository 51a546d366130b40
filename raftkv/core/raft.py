"""The Raft protocol: term rules, elections and replication for one node.

Rule: :class:`Raft` makes every Raft decision and performs no I/O. Inputs arrive
as method calls (``tick``, ``step``, ``propose``, ``campaign``); outputs are
appended to ``msgs`` / ``msgs_after_persist`` and to the log's unstable part, and
are collected by :class:`raftkv.core.rawnode.RawNode` into a Ready.

Role dispatch swaps handlers (as etcd does): ``become_*`` sets ``_step_role`` and
``_tick_role``. Method boundaries follow the paper's rules so that tests can
subclass :class:`Raft` with one rule broken and check that the simulator's
checkers notice.

Paper references: Figure 2 (the rules), §5.2 elections, §5.3 replication,
§5.4.1 election restriction, §5.4.2 committing only current-term entries;
dissertation §9.6 PreVote and CheckQuorum, §10.2.1 leader's parallel disk write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from raftkv.core.config import Config
from raftkv.core.errors import NotLeader, bug
from raftkv.core.log import RaftLog
from raftkv.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from raftkv.core.progress import Progress, ProgressState
from raftkv.core.quorum import JointConfig, VoteResult
from raftkv.core.storage import Storage
from raftkv.core.types import Entry, HardState, Index, NodeId, Role, SoftState, Term

logger = logging.getLogger(__name__)


class RandomSource(Protocol):
    """The only randomness the core uses; ``random.Random`` satisfies it."""

    def randrange(self, start: int, stop: int) -> int: ...


class Raft:
    """One node's Raft state machine. Use it through :class:`RawNode`."""

    def __init__(self, config: Config, storage: Storage, rng: RandomSource) -> None:
        config.validate()
        self.node_id: NodeId = config.node_id
        self.config = config
        self.rng = rng
        self.log = RaftLog(storage, config.applied)
        hard_state, conf_state = storage.initial_state()
        voters = conf_state.voters or config.peers or (config.node_id,)
        self.voters = JointConfig.of(tuple(voters))
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

        # Output, drained by RawNode.ready().
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []

        self._step_role: Callable[[Message], None] = self._step_follower
        self._tick_role: Callable[[], None] = self._tick_election

        if not hard_state.is_empty():
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
        for node_id in sorted(self.voters.ids()):
            pr = Progress(last + 1, self.config.max_inflight)
            pr.recent_active = True
            self.prs[node_id] = pr
        me = self.prs[self.node_id]
        # Only entries known durable count toward our own acknowledgement.
        me.maybe_update(self.log.stable_last_index())
        me.become_replicate()
        me.next = last + 1
        logger.debug("%s became leader at term %d", self.node_id, self.term)
        self.append_entries([Entry(term=self.term, index=0)])

    # -- elections ---------------------------------------------------------

    def hup(self) -> None:
        """The election timer fired (or a campaign was requested)."""
        if self.role is Role.LEADER:
            return
        if not self.is_voter(self.node_id):
            return
        if self.config.pre_vote:
            self.campaign(pre_vote=True)
        else:
            self.campaign(pre_vote=False)

    def campaign(self, *, pre_vote: bool) -> None:
        if pre_vote:
            self.become_pre_candidate()
            vote_term = self.term + 1
        else:
            self.become_candidate()
            vote_term = self.term
        if self._record_vote(self.node_id, True, pre_vote=pre_vote):
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for peer in self.peers():
            msg = RequestVote(
                term=vote_term,
                sender=self.node_id,
                to=peer,
                last_log_index=last_index,
                last_log_term=last_term,
                pre_vote=pre_vote,
            )
            if pre_vote:
                self.msgs.append(msg)
            else:
                # A RequestVote promises that our new term and self-vote are durable.
                self.msgs_after_persist.append(msg)

    def _record_vote(self, voter: NodeId, granted: bool, *, pre_vote: bool) -> bool:
        """Count a vote; act on the result. True if the election ended."""
        self.votes.setdefault(voter, granted)
        result = self.voters.vote_result(self.votes)
        if result is VoteResult.WON:
            if pre_vote:
                self.campaign(pre_vote=False)
            else:
                self.become_leader()
                self.broadcast_append()
            return True
        if result is VoteResult.LOST:
            self.become_follower(self.term, None)
            return True
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

    def _handle_request_vote(self, msg: RequestVote) -> None:
        if self.can_vote_for(msg) and self.log_is_up_to_date(msg):
            self.send_after_persist(
                RequestVoteResponse(
                    term=msg.term,
                    sender=self.node_id,
                    to=msg.sender,
                    granted=True,
                    pre_vote=msg.pre_vote,
                )
            )
            if not msg.pre_vote:
                self.election_elapsed = 0
                self.vote = msg.sender
        else:
            self.send_after_persist(
                RequestVoteResponse(
                    term=self.term,
                    sender=self.node_id,
                    to=msg.sender,
                    granted=False,
                    pre_vote=msg.pre_vote,
                )
            )

    # -- ticks -------------------------------------------------------------

    def tick(self) -> None:
        self._tick_role()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.config.check_quorum and not self.check_quorum_active():
                logger.debug("%s steps down at term %d: quorum inactive", self.node_id, self.term)
                self.become_follower(self.term, None)
                return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.broadcast_heartbeat()

    def check_quorum_active(self) -> bool:
        """CheckQuorum: did a quorum talk to us this election timeout? Resets the marks."""
        active = {self.node_id}
        for node_id, pr in self.prs.items():
            if node_id == self.node_id:
                continue
            if pr.recent_active:
                active.add(node_id)
            pr.recent_active = False
        return self.voters.has_quorum(active)

    # -- step --------------------------------------------------------------

    def step(self, msg: Message) -> None:
        """Process one message from a peer (term rules of Figure 2 first)."""
        if msg.term > self.term:
            if isinstance(msg, RequestVote):
                if self._in_lease():
                    # CheckQuorum: we heard from a leader within the minimum
                    # election timeout; a disruptive candidate is ignored.
                    return
                if msg.pre_vote:
                    self._handle_request_vote(msg)
                    return
                self.become_follower(msg.term, None)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                # A granted PreVote carries the term we would campaign in.
                pass
            elif isinstance(msg, AppendEntries | Heartbeat):
                self.become_follower(msg.term, msg.sender)
            else:
                self.become_follower(msg.term, None)
        elif msg.term < self.term:
            self._step_stale(msg)
            return

        if isinstance(msg, RequestVote):
            self._handle_request_vote(msg)
            return
        self._step_role(msg)

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.leader is not None
            and self.election_elapsed < self.election_timeout
        )

    def _step_stale(self, msg: Message) -> None:
        """A message from an older term."""
        if isinstance(msg, AppendEntries | Heartbeat):
            if self.config.check_quorum or self.config.pre_vote:
                # Tell the stale leader about the newer term so it steps down;
                # without this a node that bumped its term while isolated could
                # never be reached by a leader that cannot win a PreVote from it.
                self.send_after_persist(
                    AppendEntriesResponse(
                        term=self.term, sender=self.node_id, to=msg.sender, index=0
                    )
                )
        elif isinstance(msg, RequestVote) and msg.pre_vote:
            self.send_after_persist(
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

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries):
            self.become_follower(msg.term, msg.sender)
            self.handle_append_entries(msg)
        elif isinstance(msg, Heartbeat):
            self.become_follower(msg.term, msg.sender)
            self.handle_heartbeat(msg)
        elif isinstance(msg, RequestVoteResponse):
            expecting_pre = self.role is Role.PRE_CANDIDATE
            if msg.pre_vote != expecting_pre:
                return
            self._record_vote(msg.sender, msg.granted, pre_vote=expecting_pre)

    def _step_leader(self, msg: Message) -> None:
        pr = self.prs.get(msg.sender)
        if pr is None:
            return
        if isinstance(msg, AppendEntriesResponse):
            pr.recent_active = True
            self.handle_append_response(msg, pr)
        elif isinstance(msg, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                # Appends in a full window may all have been lost; free a slot so
                # the next append goes out and, if the follower lacks its
                # predecessor, its rejection drops us back to probing (§5.3:
                # the leader retries indefinitely).
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(msg.sender, pr)
        elif isinstance(msg, AppendEntries | Heartbeat):
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
            self.send_after_persist(
                AppendEntriesResponse(
                    term=self.term, sender=self.node_id, to=msg.sender, index=self.log.committed
                )
            )
            return
        last_new = self.append_from_leader(msg)
        if last_new is not None:
            self.send_after_persist(
                AppendEntriesResponse(
                    term=self.term, sender=self.node_id, to=msg.sender, index=last_new
                )
            )
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(msg.prev_log_index, self.log.last_index()), msg.prev_log_term
        )
        self.send_after_persist(
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
        self.send_after_persist(
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
            if pr.maybe_decr_to(msg.index, match_hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(msg.sender, pr)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(msg.index)
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
        return self.log.maybe_commit(index, self.term)

    def send_append(self, to: NodeId, pr: Progress, *, send_if_empty: bool = True) -> bool:
        """Send the next AppendEntries to ``to`` if its progress allows; True if sent."""
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        entries: list[Entry] = []
        if pr.next <= self.log.last_index():
            hi = min(self.log.last_index() + 1, pr.next + self.config.max_entries_per_msg)
            entries = self.log.slice(pr.next, hi, self.config.max_size_per_msg)
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
                commit=self.log.committed,
            )
        )
        pr.sent_entries(entries[-1].index if entries else None)
        return True

    def broadcast_append(self) -> None:
        self.pending_broadcast = False
        for node_id, pr in self.prs.items():
            if node_id != self.node_id:
                self.send_append(node_id, pr)

    def broadcast_heartbeat(self) -> None:
        committed = self.log.committed
        for node_id, pr in self.prs.items():
            if node_id != self.node_id:
                self.send(
                    Heartbeat(
                        term=self.term,
                        sender=self.node_id,
                        to=node_id,
                        commit=min(pr.match, committed),
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
        self.prs[self.node_id].next = last + 1
        self.pending_broadcast = True
        return last

    def propose(self, entries: list[Entry]) -> Index:
        """Append client commands; returns the index of the last one.

        Raises:
            NotLeader: this node is not the leader.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        return self.append_entries(entries)

    def on_persisted(self, index: Index, term: Term) -> None:
        """The driver made entries up to (index, term) durable."""
        self.log.stable_to(index, term)
        # Our own acknowledgement counts only once our copy is durable.
        if (
            self.role is Role.LEADER
            and self.log.term_or_none(index) == term
            and self.prs[self.node_id].maybe_update(index)
            and self.maybe_commit()
        ):
            self.pending_broadcast = True

    # -- output ------------------------------------------------------------

    def send(self, msg: Message) -> None:
        self.msgs.append(msg)

    def send_after_persist(self, msg: Message) -> None:
        """Queue a message that promises our hard state and log are durable."""
        self.msgs_after_persist.append(msg)
