"""Errors of the node runtime and its HTTP API, each of one kind (:class:`ErrorCode`).

Rule: the runtime and the API's handlers raise these; each class names its
kind in ``code``, and :func:`raftkv.server.http.answers.answer_for` turns a
kind into a status code and a JSON body (DESIGN.md "Black-box contract": 503 =
nothing happened, safe to retry; 504 = the outcome is unknown). Nothing else
in the server decides status codes, and nothing matches an error's message.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from raftkv.core.errors import RaftKVError

__all__ = [
    "ErrorCode",
    "ServerError",
    "ConfigError",
    "NoLeader",
    "ProposalLost",
    "OutcomeUnknown",
    "ReadTimeout",
    "NodeStopped",
    "NodeFailed",
    "Unsupported",
    "BadRequest",
    "LearnerNotReady",
    "MemberNotFound",
    "MemberRemoved",
    "RaftAddressTaken",
    "TooLarge",
    "TooManyWatchers",
    "NoSpace",
    "SnapshotUndecodable",
    "Unauthenticated",
    "Forbidden",
    "Overloaded",
]


class ErrorCode(enum.Enum):
    """The kinds of error an API answer can report (one status code each)."""

    BAD_REQUEST = "bad_request"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    MEMBER_NOT_FOUND = "member_not_found"
    LEARNER_NOT_READY = "learner_not_ready"
    MEMBER_REMOVED = "member_removed"
    TOO_LARGE = "too_large"
    TOO_MANY_WATCHERS = "too_many_watchers"
    INTERNAL = "internal"
    UNSUPPORTED = "unsupported"
    NO_LEADER = "no_leader"
    PROPOSAL_LOST = "proposal_lost"
    READ_TIMEOUT = "read_timeout"
    NODE_STOPPED = "node_stopped"
    NODE_FAILED = "node_failed"
    OVERLOADED = "overloaded"
    OUTCOME_UNKNOWN = "outcome_unknown"
    NO_SPACE = "no_space"


class ServerError(RaftKVError):
    """Root of the runtime's errors; ``code`` is its kind (by default: a bug, 500)."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, *, leader: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.leader = leader


class ConfigError(ServerError):
    """A bad flag or ``--initial-cluster`` value (a user mistake, shown in one line)."""

    code = ErrorCode.BAD_REQUEST


class BadRequest(ServerError):
    """The request is malformed (bad JSON, bad key, bad body shape)."""

    code = ErrorCode.BAD_REQUEST


class NoLeader(ServerError):
    """No leader is known right now; nothing was proposed. Safe to retry."""

    code = ErrorCode.NO_LEADER


class ProposalLost(ServerError):
    """The proposal was appended but overwritten by a new leader: it was NOT applied.

    Safe to retry (and with an Idempotency-Key it is safe regardless).
    """

    code = ErrorCode.PROPOSAL_LOST


class OutcomeUnknown(ServerError):
    """A write timed out: it may or may not be applied."""

    code = ErrorCode.OUTCOME_UNKNOWN


class ReadTimeout(ServerError):
    """A linearizable read could not be confirmed in time (nothing changed)."""

    code = ErrorCode.READ_TIMEOUT


class NodeStopped(ServerError):
    """The node is shutting down."""

    code = ErrorCode.NODE_STOPPED


class NodeFailed(ServerError):
    """The node's drive loop, WAL or snapshot store failed: it serves nothing more.

    ``__cause__`` is the original error. ``raftkv serve`` exits (code 70) when its
    node fails, so that a supervisor restarts it from the data dir.
    """

    code = ErrorCode.NODE_FAILED


class Unsupported(ServerError):
    """The core does not offer this operation yet."""

    code = ErrorCode.UNSUPPORTED


class LearnerNotReady(ServerError):
    """A learner cannot be promoted yet: its log is too far behind (retry later)."""

    code = ErrorCode.LEARNER_NOT_READY


class MemberRemoved(ServerError):
    """The node id was removed from the cluster once; ids are never reused (as in etcd).

    A node re-added under an id it had before may have lost its vote in the
    current term with its disk, and could then grant that term a second vote.
    Add the replacement under a new id. Not retryable.
    """

    code = ErrorCode.MEMBER_REMOVED

    def __init__(self, node_id: str) -> None:
        super().__init__(
            f"{node_id} was removed from the cluster and a removed id is never reused "
            f"(a node that comes back under an old id may have forgotten its vote): "
            f"add the node under a new id"
        )
        self.node_id = node_id


class MemberNotFound(ServerError):
    """The node id is not a member (voter or learner) of the cluster."""

    code = ErrorCode.MEMBER_NOT_FOUND

    def __init__(self, node_id: str) -> None:
        super().__init__(f"{node_id} is not a member of the cluster")
        self.node_id = node_id


class RaftAddressTaken(BadRequest):
    """Another member already listens on the Raft address a change gives a member."""

    def __init__(self, holder: str, address: str) -> None:
        super().__init__(f"{holder} has the Raft address {address}")


class TooManyWatchers(ServerError):
    """The node serves ``--max-watchers`` watchers already (retry later, or elsewhere)."""

    code = ErrorCode.TOO_MANY_WATCHERS


class TooLarge(ServerError):
    """A request over a configured limit (body, key, value, multi-put pairs)."""

    code = ErrorCode.TOO_LARGE


class NoSpace(ServerError):
    """The NOSPACE alarm is raised (the store passed ``--quota-bytes``): a write
    that may add data was refused before it was proposed. Not retryable until
    an operator frees space (docs/operations.md)."""

    code = ErrorCode.NO_SPACE


class SnapshotUndecodable(ServerError):
    """A snapshot received from the leader passed the transfer checksum but does
    not decode as a snapshot of this state machine: a bug on the sender's side.
    Fatal: it is not persisted and the node's drive loop stops, so the node
    restarts from what it had (never from an image it cannot read)."""


class Unauthenticated(ServerError):
    """A request without a bearer token, or with one the node does not know."""

    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ServerError):
    """A read-only token on a write route."""

    code = ErrorCode.FORBIDDEN


class Overloaded(ServerError):
    """More requests in flight than ``--max-concurrent-requests`` (nothing was done)."""

    code = ErrorCode.OVERLOADED
