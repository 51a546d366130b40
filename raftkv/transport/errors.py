"""Errors raised by the peer transport.

Rule: caller misuse (sending on a stopped transport) raises; a bad frame or an
unauthenticated peer is the *remote* side's fault and is dropped, logged and
counted by the transport -- :class:`CodecError` and :class:`HandshakeError`
only escape from the sans-I/O helpers in :mod:`raftkv.transport.codec`, whose
callers decide what to drop.
"""

from __future__ import annotations

from raftkv.core.errors import RaftKVError


class TransportError(RaftKVError):
    """Root of the errors raised by :mod:`raftkv.transport`."""


class CodecError(TransportError):
    """A payload or frame is not a valid encoding (or a value cannot be encoded)."""


class FrameTooLarge(CodecError):
    """A frame's length prefix exceeds the configured maximum frame size."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class HandshakeError(TransportError):
    """The connection handshake did not complete as the protocol requires."""


class AuthenticationError(HandshakeError):
    """The peer was refused: wrong cluster secret, cluster id or unknown node id."""


class TransportClosed(TransportError):
    """The transport was used after :meth:`stop`."""
