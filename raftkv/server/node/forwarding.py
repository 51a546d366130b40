"""Forwarding writes to the leader over the peer link, and serving those forwarded here.

Rule 1: a forwarded write's outcome is known only to the leader it went to.
Its answer is accepted from that leader alone; if this node learns of another
leader (or loses track of any) first, or the answer does not come in time, the
write fails with :class:`~raftkv.server.errors.OutcomeUnknown` (it may or may
not be applied).

Rule 2: forward requests and answers made in one loop turn go out together at
the start of the next: the forwards of many client requests, and the leader's
answers to them (which resolve together when a Ready applies their entries),
share one frame and one write per peer. The drive loop may take them sooner
(:meth:`Forwarding.take_outbox`): the leader's answers then lead the commit
notices of the Ready that applied them, in the same frame, so a follower
answers its client before it applies the entries itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence

from raftkv.core.rawnode import RawNode
from raftkv.core.types import NodeId, Term
from raftkv.server.errors import NoLeader, OutcomeUnknown
from raftkv.server.metrics import NodeMetrics
from raftkv.transport.forward import ForwardRequest, ForwardResponse, PeerMessage

__all__ = ["ForwardHandler", "ForwardReply", "Forwarding"]

ForwardReply = Callable[[int, bytes], None]
"""Answers a forwarded write: (HTTP status, JSON body)."""
ForwardHandler = Callable[[bytes, ForwardReply], None]
"""Serves a forwarded write's payload; calls the reply exactly once, now or later
(a callback rather than a coroutine: no task per forwarded write), and never
raises: it answers its own errors."""

logger = logging.getLogger(__name__)


class Forwarding:
    """The writes this node forwarded, and the outbox of forward messages.

    Args:
        node_id: this node.
        metrics: counts forwarded writes and their time-outs.
        timeout_s: how long the leader's own proposal may take when the caller
            gives no timeout (a forward waits a second longer).
        term: this node's current term (stamped on answers).
        send: sends peer messages while the node runs; drops them once it stops.
    """

    __slots__ = (
        "handler",
        "_node_id",
        "_metrics",
        "_timeout_s",
        "_term",
        "_send",
        "_pending",
        "_seq",
        "_outbox",
    )

    def __init__(
        self,
        node_id: NodeId,
        metrics: NodeMetrics,
        *,
        timeout_s: float,
        term: Callable[[], Term],
        send: Callable[[Sequence[PeerMessage]], None],
    ) -> None:
        # Serves a write forwarded to this node (the leader): called with the
        # payload and a reply function, which it calls once with (HTTP status,
        # body), now or later. Set by the API (which alone decides statuses and
        # bodies); without it a forwarded write is dropped (serve).
        self.handler: ForwardHandler | None = None
        self._node_id = node_id
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._term = term
        self._send = send
        # Writes this node forwarded to the leader, by request id: (the leader
        # it went to, future of (HTTP status, body), deadline on the loop's clock).
        self._pending: dict[int, tuple[NodeId, asyncio.Future[tuple[int, bytes]], float]] = {}
        self._seq = itertools.count(1)
        # Invariant: a flush is scheduled while it is non-empty (Rule 2).
        self._outbox: list[PeerMessage] = []

    # ------------------------------------------------------------------ this node forwards

    async def forward(
        self, raw: RawNode, payload: bytes, *, timeout: float | None
    ) -> tuple[int, bytes]:
        """Have the leader serve ``payload``; its (status, body).

        Raises:
            NoLeader: no leader known, or this node is the leader.
            OutcomeUnknown: the leader changed, or did not answer in time.
        """
        leader = raw.leader
        if leader is None or leader == self._node_id:
            raise NoLeader("no leader to forward to", leader=leader)
        request_id = next(self._seq)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        # The leader's own proposal times out after timeout_s; wait a little longer.
        limit = timeout if timeout is not None else self._timeout_s + 1.0
        self._pending[request_id] = (leader, fut, loop.time() + limit)
        self._send_soon(
            ForwardRequest(
                term=raw.term,
                sender=self._node_id,
                to=leader,
                request_id=request_id,
                payload=payload,
            )
        )
        self._metrics.forwarded.inc()
        try:
            return await fut
        finally:
            self._pending.pop(request_id, None)

    def expire(self, now: float) -> None:
        """Fail the forwards whose deadline is at or before ``now`` (the loop's
        clock) with OutcomeUnknown; called every tick, as Proposals.expire."""
        for _, fut, deadline in self._pending.values():
            if deadline <= now and not fut.done():
                self._metrics.failed("timeout")
                fut.set_exception(
                    OutcomeUnknown("the leader did not answer a forwarded write in time")
                )

    def answered(self, msg: ForwardResponse) -> None:
        """The leader's answer to a write this node forwarded."""
        pending = self._pending.get(msg.request_id)
        if pending is None or pending[0] != msg.sender or pending[1].done():
            return  # timed out, failed over, or not ours
        pending[1].set_result((msg.status, msg.body))

    def leader_changed(self, leader: NodeId | None) -> None:
        """Writes forwarded to another node than ``leader`` have an unknown outcome."""
        for to, fut, _ in self._pending.values():
            if to != leader and not fut.done():
                fut.set_exception(
                    OutcomeUnknown("the leader changed; the write may or may not be applied")
                )

    def fail_all(self, unknown: OutcomeUnknown) -> None:
        """The node stops: every forwarded write's outcome is unknown."""
        for _, forward, _ in self._pending.values():
            if not forward.done():
                forward.set_exception(unknown)
        self._pending.clear()

    # ------------------------------------------------------------------ the leader serves

    def serve(self, msg: ForwardRequest) -> None:
        """Serve a write another node forwarded here (see :attr:`handler`)."""
        handler = self.handler
        if handler is None:
            # No API serves this node (the API attaches its handler before the
            # node starts): nothing can answer, the sender's forward times out.
            logger.warning("dropped a forwarded write from %s: this node has no API", msg.sender)
            return

        def reply(status: int, body: bytes) -> None:
            self._answer(msg, status, body)

        try:
            handler(msg.payload, reply)
        except Exception:
            # A bug: the handler answers its own errors. Whether it proposed the
            # write is unknown, as is for the sender once its forward times out.
            logger.exception("serving a forwarded write failed")

    def _answer(self, msg: ForwardRequest, status: int, body: bytes) -> None:
        self._send_soon(
            ForwardResponse(
                term=self._term(),
                sender=self._node_id,
                to=msg.sender,
                request_id=msg.request_id,
                status=status,
                body=body,
            )
        )

    # ------------------------------------------------------------------ outbox

    def _send_soon(self, msg: PeerMessage) -> None:
        """Send ``msg`` at the start of the next loop turn, with every other
        message given to this method in this turn (Rule 2)."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(msg)

    def take_outbox(self) -> list[PeerMessage]:
        """The messages waiting for the next loop turn, to be sent by the caller
        now (the flush scheduled for them then finds nothing to send)."""
        msgs, self._outbox = self._outbox, []
        return msgs

    def _flush(self) -> None:
        self._send(self.take_outbox())
