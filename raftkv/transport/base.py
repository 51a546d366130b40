"""The Transport interface, its counters, and an in-memory twin for tests.

Rule 1: a transport moves messages and nothing else. It never interprets them
beyond their envelope (``sender``, ``to``); Raft tolerates loss, duplication and
delay, so a transport may drop messages but must never block its caller or grow
without bound.

Rule 2: :meth:`Transport.send` is synchronous and non-blocking; received
messages reach the node through the ``on_messages`` callback given at
construction, called on the event loop, one call per received batch, in the
order the batches arrived. Per directed link, messages arrive in send order
(minus any that were dropped).

Rule 3: a message is delivered only if it came from a known peer and its
``sender`` is that peer and its ``to`` is this node; anything else is dropped
and counted in :class:`TransportStats`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from raftkv.core.types import NodeId
from raftkv.transport.errors import TransportClosed
from raftkv.transport.forward import PeerMessage

__all__ = [
    "Address",
    "OnMessages",
    "Transport",
    "TransportStats",
    "InMemoryHub",
    "InMemoryTransport",
]

Address: TypeAlias = tuple[str, int]
"""A peer's (host, port)."""

OnMessages: TypeAlias = Callable[[list[PeerMessage]], None]
"""Receives each batch of messages addressed to this node."""


@dataclass(slots=True)
class TransportStats:
    """Monotonic counters; read them, never write them from outside.

    Attributes:
        frames_in: data frames (batches) received from authenticated peers.
        frames_out: data frames written to peers.
        msgs_in: messages delivered to ``on_messages``.
        msgs_out: messages written to peers.
        dropped_queue_full: messages evicted from a full per-peer queue.
        dropped_unroutable: messages addressed to a node that is not a peer.
        dropped_bad_sender: received messages whose ``sender`` is not the
            authenticated peer or whose ``to`` is not this node.
        dropped_oversize: messages that alone exceed the maximum frame size.
        dropped_invalid: messages that cannot be encoded (a bug upstream).
        decode_errors: received frames that failed to decode (each closes its
            connection), including oversized and truncated frames.
        auth_failures: handshakes refused, by us (inbound: wrong secret, unknown
            node, a Raft message before the handshake) or by the peer / a failed
            server proof / a TLS failure (outbound).
        handshakes_incomplete: inbound connections closed or timed out before
            the handshake completed (nothing of theirs was delivered).
        handshakes_evicted_per_source: pending inbound handshakes closed to
            admit a newer connection from the same source address (at the
            per-source limit).
        handshakes_evicted_global: pending inbound handshakes closed to admit
            a newer connection (at the global limit).
        handshakes_refused_per_source: new inbound connections closed at once
            at the per-source limit (every pending one there is a member's).
        handshakes_refused_global: new inbound connections closed at once at
            the global limit (every pending one is from a member's host).
        connects: outbound connections that completed the handshake.
        accepts: inbound connections that completed the handshake.
    """

    frames_in: int = 0
    frames_out: int = 0
    msgs_in: int = 0
    msgs_out: int = 0
    dropped_queue_full: int = 0
    dropped_unroutable: int = 0
    dropped_bad_sender: int = 0
    dropped_oversize: int = 0
    dropped_invalid: int = 0
    decode_errors: int = 0
    auth_failures: int = 0
    handshakes_incomplete: int = 0
    handshakes_evicted_per_source: int = 0
    handshakes_evicted_global: int = 0
    handshakes_refused_per_source: int = 0
    handshakes_refused_global: int = 0
    connects: int = 0
    accepts: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, e.g. for metrics export."""
        return dataclasses.asdict(self)


class Transport(Protocol):
    """Delivers core messages between the nodes of one cluster.

    Not thread-safe: call every method from the event loop's thread.
    """

    @property
    def node_id(self) -> NodeId:
        """This node's id; outgoing messages carry it as ``sender``."""
        ...

    @property
    def stats(self) -> TransportStats:
        """The transport's counters."""
        ...

    async def start(self) -> None:
        """Begin listening and connecting to peers."""
        ...

    def send(self, msgs: Sequence[PeerMessage]) -> None:
        """Queue ``msgs`` for their ``to`` peers and return at once.

        Raises:
            TransportClosed: the transport was stopped.
        """
        ...

    def update_peers(self, peers: Mapping[NodeId, Address]) -> None:
        """Replace the peer set (membership change); this node's id is ignored."""
        ...

    def is_connected(self, peer: NodeId) -> bool:
        """Whether messages to ``peer`` go out now (a link is up), as far as is known."""
        ...

    async def stop(self) -> None:
        """Close every connection and task; idempotent."""
        ...


# --------------------------------------------------------------------------- in-memory twin


class InMemoryHub:
    """Connects :class:`InMemoryTransport` instances inside one event loop.

    A partition is a set of blocked directed links ``(src, dst)``, checked when
    a message would be delivered, so cutting a link also loses what is in flight.
    """

    def __init__(self) -> None:
        self._nodes: dict[NodeId, InMemoryTransport] = {}
        self._blocked: set[tuple[NodeId, NodeId]] = set()

    def transport(
        self,
        node_id: NodeId,
        on_messages: OnMessages,
        peers: Iterable[NodeId] | None = None,
    ) -> InMemoryTransport:
        """Create a transport for ``node_id`` attached to this hub.

        Args:
            node_id: the node's id; unique on the hub.
            on_messages: receives delivered batches.
            peers: the nodes it may exchange messages with; ``None`` means any
                node on the hub.
        """
        if node_id in self._nodes:
            raise ValueError(f"node {node_id!r} is already attached to this hub")
        transport = InMemoryTransport(node_id, self, on_messages, peers)
        self._nodes[node_id] = transport
        return transport

    def block(self, src: NodeId, dst: NodeId, *, both_ways: bool = True) -> None:
        """Drop messages from ``src`` to ``dst`` (and back, unless ``both_ways`` is False)."""
        self._blocked.add((src, dst))
        if both_ways:
            self._blocked.add((dst, src))

    def unblock(self, src: NodeId, dst: NodeId, *, both_ways: bool = True) -> None:
        """Undo :meth:`block`."""
        self._blocked.discard((src, dst))
        if both_ways:
            self._blocked.discard((dst, src))

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Block every link between nodes of different groups (nodes in no group are isolated)."""
        group_of: dict[NodeId, int] = {}
        for i, group in enumerate(groups):
            for node in group:
                group_of[node] = i
        self._blocked.clear()
        for a in self._nodes:
            for b in self._nodes:
                if a != b and (a not in group_of or group_of.get(a) != group_of.get(b)):
                    self._blocked.add((a, b))

    def isolate(self, node_id: NodeId) -> None:
        """Block every link to and from ``node_id``."""
        for other in self._nodes:
            if other != node_id:
                self.block(node_id, other)

    def heal(self) -> None:
        """Unblock every link."""
        self._blocked.clear()

    def is_blocked(self, src: NodeId, dst: NodeId) -> bool:
        """Whether messages from ``src`` to ``dst`` are dropped."""
        return (src, dst) in self._blocked

    def _deliver(self, src: NodeId, dst: NodeId, msgs: list[PeerMessage]) -> None:
        target = self._nodes.get(dst)
        if target is None or (src, dst) in self._blocked:
            return
        target._receive(src, msgs)

    def _detach(self, node_id: NodeId) -> None:
        self._nodes.pop(node_id, None)


class InMemoryTransport:
    """A :class:`Transport` that delivers through an :class:`InMemoryHub`.

    Delivery is asynchronous (``loop.call_soon``), one batch per destination
    per :meth:`send` call, so it interleaves with other tasks as a network
    would while keeping per-link order.
    """

    def __init__(
        self,
        node_id: NodeId,
        hub: InMemoryHub,
        on_messages: OnMessages,
        peers: Iterable[NodeId] | None = None,
    ) -> None:
        self._node_id = node_id
        self._hub = hub
        self._on_messages = on_messages
        self._peers: frozenset[NodeId] | None = None if peers is None else frozenset(peers)
        self._stats = TransportStats()
        self._running = False
        self._stopped = False

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`; only running nodes receive."""
        return self._running

    async def start(self) -> None:
        if self._stopped:
            raise TransportClosed(f"transport {self._node_id} was stopped")
        self._running = True

    async def stop(self) -> None:
        self._running = False
        self._stopped = True
        self._hub._detach(self._node_id)

    def update_peers(self, peers: Mapping[NodeId, Address]) -> None:
        self._peers = frozenset(p for p in peers if p != self._node_id)

    def is_connected(self, peer: NodeId) -> bool:
        target = self._hub._nodes.get(peer)
        return (
            self._running
            and self._is_peer(peer)
            and target is not None
            and target.running
            and not self._hub.is_blocked(self._node_id, peer)
        )

    def _is_peer(self, node_id: NodeId) -> bool:
        if node_id == self._node_id:
            return False
        return self._peers is None or node_id in self._peers

    def send(self, msgs: Sequence[PeerMessage]) -> None:
        if self._stopped:
            raise TransportClosed(f"transport {self._node_id} was stopped")
        by_dst: dict[NodeId, list[PeerMessage]] = defaultdict(list)
        for msg in msgs:
            if self._is_peer(msg.to):
                by_dst[msg.to].append(msg)
            else:
                self._stats.dropped_unroutable += 1
        loop = asyncio.get_running_loop()
        for dst, batch in by_dst.items():
            self._stats.frames_out += 1
            self._stats.msgs_out += len(batch)
            loop.call_soon(self._hub._deliver, self._node_id, dst, batch)

    def _receive(self, src: NodeId, msgs: list[PeerMessage]) -> None:
        if not self._running or not self._is_peer(src):
            return
        self._stats.frames_in += 1
        good = [m for m in msgs if m.sender == src and m.to == self._node_id]
        self._stats.dropped_bad_sender += len(msgs) - len(good)
        if good:
            self._stats.msgs_in += len(good)
            self._on_messages(good)
