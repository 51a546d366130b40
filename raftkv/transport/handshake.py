"""The peer handshake: both sides of it over asyncio streams, and its proofs.

Rule: a handshake either completes -- and the peer's id is authenticated (with
a cluster secret) -- or raises: :class:`~raftkv.transport.errors.AuthenticationError`
when a side refuses or a proof is wrong, :class:`~raftkv.transport.errors.HandshakeError`
when a frame is out of place, :class:`~raftkv.transport.errors.CodecError` for a
frame that does not decode (and ``EOFError``/``OSError`` from the stream). It
neither logs nor counts, and sets no deadline: :mod:`raftkv.transport.tcp` does.

Handshake (each step one frame; any deviation closes the connection)::

    client -> server  Hello(version, cluster_id, node_id, to, client_nonce)
    server -> client  Challenge(node_id, server_nonce)  |  Reject(reason)
    client -> server  Auth(proof_c)
    server -> client  Welcome(proof_s)                  |  Reject(reason)

    proof_x = HMAC-SHA256(cluster_secret, label_x | cluster_id | client id |
                          server id | client_nonce | server_nonce)

with distinct labels for the two directions, each part length-prefixed, and
both sides comparing with :func:`hmac.compare_digest`. The authentication is
mutual: the server only proves itself to a client that has proved itself.
Without ``cluster_secret`` proofs are empty and any node that claims a member
id is accepted. The handshake authenticates the peer at connect time only: it
neither encrypts nor MACs later frames, so on a hostile network also give the
transport TLS contexts (``ssl_server``/``ssl_client``, mutual TLS: see
docs/security.md). With TLS the handshake above runs inside the TLS session,
and a connection without a certificate the server trusts never reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable

from raftkv.core.types import NodeId
from raftkv.transport.codec import (
    HEADER_SIZE,
    NONCE_LEN,
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    ControlFrame,
    Hello,
    Reject,
    Welcome,
    decode_batch,
    decode_control,
    encode_control,
    encode_frame,
    frame_length,
)
from raftkv.transport.errors import (
    AuthenticationError,
    CodecError,
    HandshakeError,
)

__all__ = [
    "CLIENT_LABEL",
    "SERVER_LABEL",
    "client_handshake",
    "server_handshake",
    "session_proof",
]

_MAX_CONTROL_FRAME = 4096
CLIENT_LABEL = b"raftkv client proof"
SERVER_LABEL = b"raftkv server proof"


def session_proof(
    secret: bytes | None,
    label: bytes,
    cluster_id: str,
    client_id: str,
    server_id: str,
    client_nonce: bytes,
    server_nonce: bytes,
) -> bytes:
    """HMAC-SHA256 over the length-prefixed session parts; empty without a secret."""
    if secret is None:
        return b""
    parts = (
        label,
        cluster_id.encode(),
        client_id.encode(),
        server_id.encode(),
        client_nonce,
        server_nonce,
    )
    message = b"".join(struct.pack(">I", len(p)) + p for p in parts)
    return hmac.new(secret, message, hashlib.sha256).digest()


async def client_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    secret: bytes | None,
    cluster_id: str,
    node_id: NodeId,
    peer: NodeId,
) -> None:
    """The connecting side: ``node_id`` proves itself to ``peer``, and ``peer`` to it."""
    client_nonce = secrets.token_bytes(NONCE_LEN)
    hello = Hello(
        version=PROTOCOL_VERSION,
        cluster_id=cluster_id,
        node_id=node_id,
        to=peer,
        nonce=client_nonce,
    )
    await _write_control(writer, hello)
    reply = await _read_control(reader)
    if isinstance(reply, Reject):
        raise AuthenticationError(f"refused by {peer}: {reply.reason}")
    if not isinstance(reply, Challenge) or reply.node_id != peer:
        raise HandshakeError(f"expected a challenge from {peer}, got {reply!r}")
    proof = session_proof(
        secret,
        CLIENT_LABEL,
        cluster_id,
        node_id,
        peer,
        client_nonce,
        reply.nonce,
    )
    await _write_control(writer, Auth(proof=proof))
    welcome = await _read_control(reader)
    if isinstance(welcome, Reject):
        raise AuthenticationError(f"refused by {peer}: {welcome.reason}")
    if not isinstance(welcome, Welcome):
        raise HandshakeError(f"expected a welcome from {peer}, got {welcome!r}")
    expected = session_proof(
        secret,
        SERVER_LABEL,
        cluster_id,
        node_id,
        peer,
        client_nonce,
        reply.nonce,
    )
    if secret is not None and not hmac.compare_digest(welcome.proof, expected):
        raise AuthenticationError(f"{peer} failed to prove the cluster secret")


async def server_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    secret: bytes | None,
    cluster_id: str,
    node_id: NodeId,
    is_peer: Callable[[NodeId], bool],
) -> NodeId:
    """The accepting side: the authenticated peer's id (``is_peer`` is asked once
    the hello is read)."""
    hello = await _read_control(reader, server=True)
    if not isinstance(hello, Hello):
        raise HandshakeError(f"expected a hello, got {type(hello).__name__}")
    reason = ""
    if hello.version != PROTOCOL_VERSION:
        reason = f"protocol version {hello.version} is not {PROTOCOL_VERSION}"
    elif hello.cluster_id != cluster_id:
        reason = f"cluster id {hello.cluster_id!r} is not {cluster_id!r}"
    elif hello.to != node_id:
        reason = f"this is {node_id}, not {hello.to}"
    elif not is_peer(hello.node_id):
        reason = f"{hello.node_id} is not a peer of {node_id}"
    if reason:
        await _refuse(writer, reason)
        raise AuthenticationError(f"{hello.node_id}: {reason}")
    server_nonce = secrets.token_bytes(NONCE_LEN)
    await _write_control(writer, Challenge(node_id=node_id, nonce=server_nonce))
    auth = await _read_control(reader, server=True)
    if not isinstance(auth, Auth):
        raise HandshakeError(f"expected auth, got {type(auth).__name__}")
    args = (cluster_id, hello.node_id, node_id, hello.nonce, server_nonce)
    expected = session_proof(secret, CLIENT_LABEL, *args)
    if secret is not None and not hmac.compare_digest(auth.proof, expected):
        await _refuse(writer, "authentication failed")
        raise AuthenticationError(f"{hello.node_id} failed to prove the cluster secret")
    await _write_control(writer, Welcome(proof=session_proof(secret, SERVER_LABEL, *args)))
    return hello.node_id


async def _write_control(writer: asyncio.StreamWriter, frame: ControlFrame) -> None:
    writer.write(encode_frame(encode_control(frame)))
    await writer.drain()


async def _read_control(reader: asyncio.StreamReader, *, server: bool = False) -> ControlFrame:
    """One handshake frame. On the accepting side, a Raft message batch in its place
    is an unauthenticated peer (HandshakeError), not merely a bad frame."""
    length = frame_length(await reader.readexactly(HEADER_SIZE), max_frame_size=_MAX_CONTROL_FRAME)
    payload = await reader.readexactly(length)
    try:
        return decode_control(payload)
    except CodecError:
        if server:
            with contextlib.suppress(CodecError):
                decode_batch(payload)
                raise HandshakeError("a Raft message before the handshake completed") from None
        raise


async def _refuse(writer: asyncio.StreamWriter, reason: str) -> None:
    with contextlib.suppress(OSError, CodecError):
        await _write_control(writer, Reject(reason=reason[:200]))
