"""The leader's ReadIndex bookkeeping (dissertation §6.4; etcd's ``read_only.go``).

Rule: :class:`ReadOnly` only keeps track -- of the reads waiting for a heartbeat
round, the rounds sent and who acknowledged them, and the lease a quorum's
acknowledgement grants (§6.4.1). What to do with a read (serve it at once,
queue it, answer a remote reader) and every message stay in
:class:`~raftkv.core.raft.Raft`.

Reads are batched: every read registered while a round is unsent rides on that
round, so one heartbeat broadcast confirms leadership for all of them. A round
is identified by an increasing number, sent as the heartbeat's 8-byte context;
the number keeps growing across terms, so an acknowledgement of an older round
never matches a newer one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raftkv.core.types import Index, NodeId

__all__ = ["ReadOnly", "ReadRequest"]


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
