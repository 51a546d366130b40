"""Errors of the node runtime, each mapped to one HTTP answer at the API boundary.

Rule: the runtime raises these; ``api.py`` translates them to status codes
(DESIGN.md "Black-box contract"): 503 = nothing happened, safe to retry;
504 = the outcome is unknown. Nothing else in the server decides status codes.
"""

from __future__ import annotations

from raftkv.core.errors import RaftKVError

__all__ = [
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
]


class ServerError(RaftKVError):
    """Root of the runtime's errors; ``status`` is the HTTP status it maps to."""

    status = 500

    def __init__(self, message: str, *, leader: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.leader = leader


class ConfigError(ServerError):
    """A bad flag or ``--initial-cluster`` value (a user mistake, shown in one line)."""

    status = 400


class BadRequest(ServerError):
    """The request is malformed (bad JSON, bad key, bad body shape)."""

    status = 400


class NoLeader(ServerError):
    """No leader is known right now; nothing was proposed. Safe to retry."""

    status = 503


class ProposalLost(ServerError):
    """The proposal was appended but overwritten by a new leader: it was NOT applied.

    Safe to retry (and with an Idempotency-Key it is safe regardless).
    """

    status = 503


class OutcomeUnknown(ServerError):
    """A write timed out: it may or may not be applied."""

    status = 504


class ReadTimeout(ServerError):
    """A linearizable read could not be confirmed in time (nothing changed)."""

    status = 503


class NodeStopped(ServerError):
    """The node is shutting down."""

    status = 503


class NodeFailed(ServerError):
    """The node's drive loop, WAL or snapshot store failed: it serves nothing more.

    ``__cause__`` is the original error. ``raftkv serve`` exits (code 70) when its
    node fails, so that a supervisor restarts it from the data dir.
    """

    status = 503


class Unsupported(ServerError):
    """The core does not offer this operation yet."""

    status = 501


class LearnerNotReady(ServerError):
    """A learner cannot be promoted yet: its log is too far behind (retry later)."""

    status = 409


class MemberRemoved(ServerError):
    """The node id was removed from the cluster once; ids are never reused (as in etcd).

    A node re-added under an id it had before may have lost its vote in the
    current term with its disk, and could then grant that term a second vote.
    Add the replacement under a new id. Not retryable.
    """

    status = 409

    def __init__(self, node_id: str) -> None:
        super().__init__(
            f"{node_id} was removed from the cluster and a removed id is never reused "
            f"(a node that comes back under an old id may have forgotten its vote): "
            f"add the node under a new id"
        )
        self.node_id = node_id


class MemberNotFound(ServerError):
    """The node id is not a member (voter or learner) of the cluster."""

    status = 404

    def __init__(self, node_id: str) -> None:
        super().__init__(f"{node_id} is not a member of the cluster")
        self.node_id = node_id


class RaftAddressTaken(BadRequest):
    """Another member already listens on the Raft address a change gives a member."""

    def __init__(self, holder: str, address: str) -> None:
        super().__init__(f"{holder} has the Raft address {address}")


class TooManyWatchers(ServerError):
    """The node serves ``--max-watchers`` watchers already (retry later, or elsewhere)."""

    status = 429


class TooLarge(ServerError):
    """A request over a configured limit (body, key, value, multi-put pairs)."""

    status = 413


class NoSpace(ServerError):
    """The NOSPACE alarm is raised (the store passed ``--quota-bytes``): a write
    that may add data was refused before it was proposed. Not retryable until
    an operator frees space (docs/operations.md)."""

    status = 507


class SnapshotUndecodable(ServerError):
    """A snapshot received from the leader passed the transfer checksum but does
    not decode as a snapshot of this state machine: a bug on the sender's side.
    Fatal: it is not persisted and the node's drive loop stops, so the node
    restarts from what it had (never from an image it cannot read)."""
