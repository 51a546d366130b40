"""The peer transport: moves core messages between real nodes.

Rule: the transport never interprets messages beyond their envelope and never
blocks the node; it may drop (Raft tolerates loss), and counts every drop.
``codec`` is sans-I/O (msgpack <-> messages, frames); ``base`` holds the
:class:`Transport` Protocol and an in-memory twin for tests; ``tcp`` is the
asyncio implementation used by real nodes.
"""

from __future__ import annotations

from raftkv.transport.base import (
    Address,
    InMemoryHub,
    InMemoryTransport,
    OnMessages,
    Transport,
    TransportStats,
)
from raftkv.transport.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    decode_batch,
    encode_batch,
    encode_frame,
    frame_length,
)
from raftkv.transport.errors import (
    AuthenticationError,
    CodecError,
    FrameTooLarge,
    HandshakeError,
    TransportClosed,
    TransportError,
)
from raftkv.transport.tcp import TcpTransport

__all__ = [
    "Transport",
    "OnMessages",
    "Address",
    "TransportStats",
    "TcpTransport",
    "InMemoryHub",
    "InMemoryTransport",
    "encode_batch",
    "decode_batch",
    "encode_frame",
    "frame_length",
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "TransportError",
    "CodecError",
    "FrameTooLarge",
    "HandshakeError",
    "AuthenticationError",
    "TransportClosed",
]
