"""One peer link's pieces: the send side's queue (:class:`Outbound`), the size
estimate its bounds use, and stream helpers.

Rule: plain state and small stream operations with no policy; what to queue,
evict, batch and when to reconnect is :class:`~raftkv.transport.tcp.TcpTransport`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque

from raftkv.core.messages import AppendEntries, Heartbeat, HeartbeatResponse
from raftkv.core.types import NodeId
from raftkv.transport.base import Address
from raftkv.transport.forward import ForwardRequest, ForwardResponse, PeerMessage

__all__ = ["Outbound", "approx_size", "close_writer", "set_nodelay", "wait_eof"]


def approx_size(msg: PeerMessage) -> int:
    """A cheap upper-ish estimate of a message's encoded size, for queue and batch limits."""
    if isinstance(msg, AppendEntries):
        return 64 + sum(len(e.data) + 24 for e in msg.entries)
    if isinstance(msg, Heartbeat | HeartbeatResponse):
        return 64 + len(msg.context)
    if isinstance(msg, ForwardRequest):
        return 64 + len(msg.payload)
    if isinstance(msg, ForwardResponse):
        return 64 + len(msg.body)
    return 64


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream, giving up on unflushed data after a short grace period."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()


async def wait_eof(reader: asyncio.StreamReader) -> None:
    """Return when the accepting side sends anything or closes (it never should send)."""
    with contextlib.suppress(OSError):
        await reader.read(1)


class Outbound:
    """One peer's send side: a bounded queue and the task that drains it."""

    __slots__ = ("node_id", "address", "queue", "queued_bytes", "wake", "task", "writer")

    def __init__(self, node_id: NodeId, address: Address) -> None:
        self.node_id = node_id
        self.address = address
        # Invariant: queued_bytes == sum of the sizes in queue.
        self.queue: deque[tuple[PeerMessage, int]] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # The handshaken connection being pumped, while it is up: send() writes
        # to it directly when nothing is waiting to drain.
        self.writer: asyncio.StreamWriter | None = None
