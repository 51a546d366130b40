"""Requests a follower forwards to the leader over the peer link, and their answers.

Rule: these travel beside the core's messages in the same frames, with the same
envelope (``term``, ``sender``, ``to``) and the same checks, but the core never
sees them. The transport treats ``payload`` and ``body`` as opaque bytes; the
server gives them meaning (raftkv.server.http.forwarding: a KV command in, an HTTP status
and JSON body out).

Forwarding a write this way instead of over HTTP saves the follower an HTTP
client request and the leader an HTTP server request per write: one small
msgpack array each way, batched with the Raft traffic on a connection that is
already open (DESIGN.md "followers forwarding over a persistent connection").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from raftkv.core.frozen import fast_init
from raftkv.core.messages import Message
from raftkv.core.types import NodeId, Term

__all__ = ["ForwardRequest", "ForwardResponse", "PeerMessage"]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardRequest:
    """A follower asks the leader to serve ``payload`` (a write) on its behalf."""

    term: Term
    sender: NodeId
    to: NodeId
    request_id: int
    """Unique among the sender's outstanding requests; echoed in the response."""
    payload: bytes


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardResponse:
    """The leader's answer to the :class:`ForwardRequest` with ``request_id``."""

    term: Term
    sender: NodeId
    to: NodeId
    request_id: int
    status: int
    """An HTTP status code."""
    body: bytes
    """The response body (JSON)."""


PeerMessage: TypeAlias = Message | ForwardRequest | ForwardResponse
"""Everything a peer link carries."""
