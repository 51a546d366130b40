"""Errors raised by the raftkv clients.

Rule: every failure a caller can see is a :class:`ClientError` with a one-line
message naming the operation, the key and the cause. Misuse that is detected
before anything is sent (an empty key, a value that is not JSON) is a
:class:`BadRequest` too, so callers need one ``except``. The client package is
standard-library only and independent of the server, so these errors do not
derive from :class:`raftkv.core.errors.RaftKVError`.
"""

from __future__ import annotations

from typing import TypeAlias

__all__ = [
    "JSONValue",
    "ClientError",
    "BadRequest",
    "NotFound",
    "LeaseNotFound",
    "Conflict",
    "TooManySessions",
    "Compacted",
    "NoSpace",
    "Unavailable",
    "OutcomeUnknown",
    "ServerError",
    "AuthError",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None


class ClientError(Exception):
    """Root of the errors raised by :mod:`raftkv.client`.

    Attributes:
        status: the HTTP status of the answer this error reports; ``None`` when
            no node answered (or the request was refused before it was sent).
        reason: that answer's own error text (its JSON ``error``), or ``""``.
    """

    status: int | None = None
    reason: str = ""


class BadRequest(ClientError):
    """The request is invalid (HTTP 400/413, or rejected before sending). Do not retry."""


class NotFound(ClientError):
    """The key does not exist (HTTP 404).

    Attributes:
        key: the key that was not found.
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class LeaseNotFound(ClientError):
    """The lease does not exist (HTTP 404): never granted, revoked, or expired.
    A put with such a lease changed nothing.

    Attributes:
        lease_id: the lease asked for.
    """

    def __init__(self, message: str, *, lease_id: int) -> None:
        super().__init__(message)
        self.lease_id = lease_id


class Conflict(ClientError):
    """A compare-and-set found a different current value (HTTP 409).

    Attributes:
        key: the key of the compare-and-set.
        current: the current value, if the server reported it (``None`` if absent
            or not reported).
        found: whether the key exists, if the server reported it.
        replayed: the answer repeats the conflict of an earlier attempt of this
            write (a retry with the same idempotency key); the server then
            reports no ``current`` -- read the key for its value now.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        current: JSONValue = None,
        found: bool | None = None,
        replayed: bool = False,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.current = current
        self.found = found
        self.replayed = replayed


class TooManySessions(ClientError):
    """The cluster refused to open a session for this client (HTTP 429): its table
    of client sessions, or this token's share of it, is full. Nothing was applied.

    Not retried: sessions free up only when idle ones expire (10 minutes after
    their last write). Writes of client ids that already have a session still
    work; a new :class:`~raftkv.client.Client` needs a new one.
    """


class Compacted(ClientError):
    """A read (or compaction) asked for a revision below the store's compaction
    point (HTTP 410): that history is gone. Not retried.

    Attributes:
        compact_revision: the revision the store is compacted to (``None`` if
            not reported); reads at it or later work.
        revision: the store's current revision, if reported.
    """

    def __init__(
        self, message: str, *, compact_revision: int | None = None, revision: int | None = None
    ) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision
        self.revision = revision


class NoSpace(ClientError):
    """The cluster's space quota is used up (HTTP 507, the NOSPACE alarm): a write
    that adds data was refused, nothing was applied. Not retried: it succeeds only
    after an operator frees space (deletes, then a compaction; docs/operations.md).
    Reads, deletes and compaction still work.
    """


class Unavailable(ClientError):
    """No node answered successfully before the deadline (no leader, unreachable).

    The request had no effect, unless it is an :class:`OutcomeUnknown`.

    Attributes:
        status, reason: the last answer that was retried (503, or 502/504),
            if any node answered at all.
        failures: ``(endpoint, error)`` for each endpoint that did not answer,
            its first failure (e.g. ``[Errno 111] Connection refused``), in the
            order they were tried.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        failures: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.failures = failures


class OutcomeUnknown(Unavailable):
    """A write was sent but its outcome is unknown (HTTP 504 or a dropped
    connection), and retrying with the same idempotency key did not settle it
    before the deadline. It may or may not have been applied, at most once.
    """


class ServerError(ClientError):
    """The server answered with an unexpected status (e.g. 500)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(ClientError):
    """Refused for lack of credentials: HTTP 401 (no or unknown token), 403 (a
    read-only token on a write), or a TLS failure (the server's certificate did not
    verify, or the server wants a client certificate). Not retried.

    Attributes:
        status: the HTTP status, or 0 for a TLS failure.
    """

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
