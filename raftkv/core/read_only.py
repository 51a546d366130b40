"""ReadIndex: linearizable reads without a log entry (dissertation §6.4;
etcd's ``read_only.go``).

Rule: what the leader does with a read -- wait for an entry of its term to
commit (step 1), serve it at once as a single voter or within a lease
(§6.4.1), or queue it for the next heartbeat round (step 3) -- and how a
released read is answered are functions here over one node's
:class:`~raftkv.core.raft.Raft` state. :class:`ReadOnly` only keeps track: of
the reads waiting for a heartbeat round, the rounds sent and who acknowledged
them, and the lease a quorum's acknowledgement grants.

Reads are batched: every read registered while a round is unsent rides on that
round, so one heartbeat broadcast confirms leadership for all of them. A round
is identified by an increasing number, sent as the heartbeat's 8-byte context;
the number keeps growing across terms, so an acknowledgement of an older round
never matches a newer one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.core.errors import ProposalDropped
from raftkv.core.messages import ReadIndex, ReadIndexResponse
from raftkv.core.types import Index, NodeId, ReadState, Role

if TYPE_CHECKING:
    from raftkv.core.raft import Raft

__all__ = [
    "ReadOnly",
    "ReadRequest",
    "flush_reads",
    "handle_read_ack",
    "handle_read_index",
    "read_index",
]

# In CPython 3.11 an attribute of an Enum class costs several times a global lookup.
_LEADER = Role.LEADER


@dataclass(slots=True)
class ReadRequest:
    """A ReadIndex request waiting for its heartbeat round to be acknowledged."""

    index: Index
    context: bytes
    sender: NodeId
    round: int


class ReadOnly:
    """The reads and heartbeat rounds of one leader term (see the module rule)."""

    __slots__ = ("round", "unsent", "queue", "acks", "sent_tick", "lease_until", "awaiting_commit")

    def __init__(self) -> None:
        self.round = 0
        # Invariant: whether round ``round`` has reads (or a lease heartbeat)
        # but was not broadcast yet.
        self.unsent = False
        self.queue: list[ReadRequest] = []
        # Invariant: round -> the voters that acknowledged it (ourselves included).
        self.acks: dict[int, set[NodeId]] = {}
        # Invariant: round -> the leader tick at which it was sent.
        self.sent_tick: dict[int, int] = {}
        # The leader tick before which a quorum's acknowledgement guarantees
        # that no other leader can exist (lease reads).
        self.lease_until = 0
        # Reads that arrived before an entry of the leader's term committed.
        self.awaiting_commit: list[tuple[bytes, NodeId]] = []

    def reset(self) -> None:
        """Forget every read and round (a new term or role); the round number stays."""
        self.unsent = False
        self.queue = []
        self.acks = {}
        self.sent_tick = {}
        self.lease_until = 0
        self.awaiting_commit = []

    def wait_for_commit(self, context: bytes, sender: NodeId) -> None:
        """Keep a read until the leader has committed an entry of its term."""
        self.awaiting_commit.append((context, sender))

    def take_awaiting(self) -> list[tuple[bytes, NodeId]]:
        """The reads kept by :meth:`wait_for_commit`, now to be registered."""
        waiting, self.awaiting_commit = self.awaiting_commit, []
        return waiting

    def open_round(self) -> None:
        """Make sure an unsent round exists (the next heartbeat carries it)."""
        if not self.unsent:
            self.round += 1
            self.unsent = True

    def add(self, index: Index, context: bytes, sender: NodeId) -> None:
        """Queue a read at commit index ``index`` on the unsent round."""
        self.open_round()
        self.queue.append(ReadRequest(index, context, sender, self.round))

    def take_round(self, leader: NodeId, now_tick: int) -> bytes:
        """The context for the next heartbeat: the unsent round, if any, now sent
        (and acknowledged by the ``leader`` itself)."""
        if not self.unsent:
            return b""
        self.unsent = False
        self.acks[self.round] = {leader}
        self.sent_tick[self.round] = now_tick
        return self.round.to_bytes(8, "big")

    def ack(
        self,
        context: bytes,
        voter: NodeId,
        has_quorum: Callable[[set[NodeId]], bool],
        lease_ticks: int,
    ) -> list[ReadRequest]:
        """``voter`` acknowledged the round in ``context``; the reads it releases.

        Once a quorum acknowledged a round, every read of that round and of the
        rounds before it is confirmed, and the lease runs ``lease_ticks`` from
        when the round was sent.
        """
        if len(context) != 8:
            return []
        round_ = int.from_bytes(context, "big")
        acks = self.acks.get(round_)
        if acks is None:
            return []
        acks.add(voter)
        if not has_quorum(acks):
            return []
        self.lease_until = max(self.lease_until, self.sent_tick.get(round_, 0) + lease_ticks)
        for r in [r for r in self.acks if r <= round_]:
            del self.acks[r]
            self.sent_tick.pop(r, None)
        ready = [req for req in self.queue if req.round <= round_]
        self.queue = [req for req in self.queue if req.round > round_]
        return ready


def read_index(r: Raft, context: bytes) -> None:
    """Ask for a read index for ``context``: the leader handles it, a follower
    forwards it to the leader; the answer is a ReadState.

    Raises:
        ProposalDropped: no leader is known to forward the request to.
    """
    if r.role is Role.LEADER:
        r.handle_read_index(context, r.node_id)
    elif r.leader is not None:
        r.send(ReadIndex(term=r.term, sender=r.node_id, to=r.leader, context=context))
    else:
        raise ProposalDropped("no leader to serve a read index")


def handle_read_index(r: Raft, context: bytes, sender: NodeId) -> None:
    """Leader side: register a read at the current commit index."""
    if not r.may_serve_reads():
        # Until an entry of our term commits we may not know the full
        # committed prefix (§6.4 step 1) -- a single voter neither: after a
        # restart its stored commit index may be below what it acknowledged.
        # Answer after the first commit.
        r.reads.wait_for_commit(context, sender)
        return
    if r.voters.has_quorum({r.node_id}):
        # A single voter is its own quorum: no heartbeat round (step 3).
        _release(r, r.log.committed, context, sender)
        return
    if (
        r.config.read_only == "lease"
        and r.lead_transferee is None
        and r.leader_ticks < r.reads.lease_until
    ):
        # Lease-based read (§6.4.1): a quorum acknowledged a heartbeat sent
        # less than an election timeout ago, and each of those voters ignores
        # candidates for an election timeout after hearing from us.
        _release(r, r.log.committed, context, sender)
        return
    r.reads.add(r.log.committed, context, sender)


def flush_reads(r: Raft) -> None:
    """Send the heartbeat round that confirms leadership for queued reads.

    Every read registered since the last round rides on one round (batched
    ReadIndex): one broadcast, however many reads arrived.
    """
    if r.role is _LEADER and r.reads.unsent:
        r.broadcast_heartbeat(r.reads.take_round(r.node_id, r.leader_ticks))


def handle_read_ack(r: Raft, context: bytes, sender: NodeId) -> None:
    """A heartbeat answer carried a round's context: release the reads a
    quorum has now confirmed (it still accepted us as leader after they arrived)."""
    lease_ticks = r.election_timeout - r.config.lease_drift_ticks
    for req in r.reads.ack(context, sender, r.voters.has_quorum, lease_ticks):
        _release(r, req.index, req.context, req.sender)


def _release(r: Raft, index: Index, context: bytes, sender: NodeId) -> None:
    if sender == r.node_id:
        r.read_states.append(ReadState(index, context))
    else:
        r.send(
            ReadIndexResponse(
                term=r.term, sender=r.node_id, to=sender, index=index, context=context
            )
        )
