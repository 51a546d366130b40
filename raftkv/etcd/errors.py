"""The etcd v3 API's errors: etcd's message strings and gRPC status codes.

Rule: every error the etcd API answers is an :class:`EtcdError` built by one of
the functions or constants below, with the exact text etcd's server sends
(the Go client matches on it: ``rpctypes.ErrGRPC*``) and etcd's gRPC code. The
gRPC server aborts with ``(code, message)``; the JSON gateway answers
grpc-gateway's ``{"error", "code", "message"}`` with :attr:`Code.http_status`.
"""

from __future__ import annotations

import enum
from typing import Final

from raftkv.core.errors import RaftKVError

__all__ = [
    "Code",
    "EtcdError",
    "COMPACTED",
    "FUTURE_REVISION",
    "NO_LEADER",
    "TIMEOUT",
    "DUPLICATE_KEY",
    "EMPTY_KEY",
    "VALUE_PROVIDED",
    "LEASE_PROVIDED",
    "KEY_NOT_FOUND",
    "NO_SPACE",
    "TOO_MANY_OPS",
    "REQUEST_TOO_LARGE",
    "TOO_MANY_REQUESTS",
    "LEASE_NOT_FOUND",
    "LEASE_EXISTS",
    "LEASE_TTL_TOO_LARGE",
    "INVALID_AUTH_TOKEN",
    "PERMISSION_DENIED",
    "STOPPED",
    "MEMBER_EXIST",
    "MEMBER_NOT_FOUND",
    "MEMBER_NOT_LEARNER",
    "LEARNER_NOT_READY",
    "PEER_URL_EXIST",
    "MEMBER_BAD_URLS",
    "UNHEALTHY",
    "unimplemented",
    "invalid_argument",
]


class Code(enum.Enum):
    """gRPC status codes (their numbers), and the HTTP status grpc-gateway gives each."""

    OK = 0
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        """grpc-gateway's ``HTTPStatusFromCode``."""
        return _HTTP_STATUS[self]


_HTTP_STATUS: Final = {
    Code.OK: 200,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 412,  # etcd 3.4's grpc-gateway (v1.9); later ones say 400
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.UNAUTHENTICATED: 401,
}


class EtcdError(RaftKVError):
    """An answer of the etcd API that is an error: etcd's ``message`` and ``code``.

    Errors compare equal when their code and message are equal (the constants
    below are values, raised as they are).
    """

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EtcdError) and (self.code, self.message) == (
            other.code,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


COMPACTED: Final = EtcdError(
    Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
)
FUTURE_REVISION: Final = EtcdError(
    Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
)
NO_LEADER: Final = EtcdError(Code.UNAVAILABLE, "etcdserver: no leader")
TIMEOUT: Final = EtcdError(Code.UNAVAILABLE, "etcdserver: request timed out")
STOPPED: Final = EtcdError(Code.UNAVAILABLE, "etcdserver: server stopped")
DUPLICATE_KEY: Final = EtcdError(
    Code.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"
)
EMPTY_KEY: Final = EtcdError(Code.INVALID_ARGUMENT, "etcdserver: key is not provided")
VALUE_PROVIDED: Final = EtcdError(Code.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED: Final = EtcdError(Code.INVALID_ARGUMENT, "etcdserver: lease is provided")
KEY_NOT_FOUND: Final = EtcdError(Code.INVALID_ARGUMENT, "etcdserver: key not found")
NO_SPACE: Final = EtcdError(Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
TOO_MANY_OPS: Final = EtcdError(
    Code.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"
)
REQUEST_TOO_LARGE: Final = EtcdError(Code.INVALID_ARGUMENT, "etcdserver: request is too large")
TOO_MANY_REQUESTS: Final = EtcdError(Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
LEASE_NOT_FOUND: Final = EtcdError(Code.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS: Final = EtcdError(Code.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE: Final = EtcdError(Code.OUT_OF_RANGE, "etcdserver: too large lease TTL")
INVALID_AUTH_TOKEN: Final = EtcdError(Code.UNAUTHENTICATED, "etcdserver: invalid auth token")
PERMISSION_DENIED: Final = EtcdError(Code.PERMISSION_DENIED, "etcdserver: permission denied")

MEMBER_EXIST: Final = EtcdError(Code.FAILED_PRECONDITION, "etcdserver: member ID already exist")
MEMBER_NOT_FOUND: Final = EtcdError(Code.NOT_FOUND, "etcdserver: member not found")
MEMBER_NOT_LEARNER: Final = EtcdError(
    Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"
)
LEARNER_NOT_READY: Final = EtcdError(
    Code.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
PEER_URL_EXIST: Final = EtcdError(Code.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MEMBER_BAD_URLS: Final = EtcdError(
    Code.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid"
)
UNHEALTHY: Final = EtcdError(Code.UNAVAILABLE, "etcdserver: unhealthy cluster")


def unimplemented(what: str, until: str = "") -> EtcdError:
    """``what`` is not served by raftkv (``until``: when it will be)."""
    suffix = f" ({until})" if until else ""
    return EtcdError(Code.UNIMPLEMENTED, f"etcdserver: {what} is not implemented by raftkv{suffix}")


def invalid_argument(message: str) -> EtcdError:
    """A request raftkv cannot accept, for a reason etcd has no message for."""
    return EtcdError(Code.INVALID_ARGUMENT, f"etcdserver: {message}")
