"""The lease commands: grant, revoke, and the leader's checkpoints.

Rule: as every command, validated when built; ids and TTLs follow the lease
table's limits (:mod:`raftkv.replica.leases`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from raftkv.core.frozen import fast_init
from raftkv.replica.commands._values import (
    InvalidCommand,
    Session,
    _check_count,
    _check_flag,
    _check_lease_id,
    _check_time,
)
from raftkv.replica.leases import MAX_LEASE_TTL_S

MAX_LEASE_CHECKPOINTS: Final = 1000
"""Most leases one :class:`LeaseCheckpoint` carries (etcd's batch size)."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseGrant:
    """Create a lease of ``ttl_s`` seconds.

    ``id=0``: the state machine assigns one (the entry's index, or the next
    free id above it); ``id > 0``: the client's choice. The node raises
    ``ttl_s`` to its minimum TTL before proposing (the replica does not know
    the election timeout).
    """

    op: ClassVar[str] = "lease_grant"
    id: int
    ttl_s: int
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_lease_id(self.id, allow_zero=True)
        if type(self.ttl_s) is not int or not 1 <= self.ttl_s <= MAX_LEASE_TTL_S:
            raise InvalidCommand(
                f"lease ttl must be an integer from 1 to {MAX_LEASE_TTL_S} seconds, "
                f"not {self.ttl_s!r}"
            )
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRevoke:
    """Remove a lease and delete every key attached to it, in one revision.

    ``expired=True`` marks the revoke the leader's lessor proposed because the
    lease's TTL ran out (the effect is the same).
    """

    op: ClassVar[str] = "lease_revoke"
    id: int
    time_ms: int
    expired: bool = False
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_lease_id(self.id)
        _check_flag("expired", self.expired)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseCheckpoint:
    """Record the remaining time of leases, as the leader measured it:
    ``(id, remaining_ms)`` pairs (ids of leases that are gone are ignored).
    Proposed by the leader's lessor, never by clients; changes no revision."""

    op: ClassVar[str] = "lease_checkpoint"
    checkpoints: tuple[tuple[int, int], ...]
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoints, tuple):
            raise InvalidCommand("checkpoints must be a list of [id, remaining_ms]")
        if len(self.checkpoints) > MAX_LEASE_CHECKPOINTS:
            raise InvalidCommand(
                f"too many checkpoints: {len(self.checkpoints)}; "
                f"the limit is {MAX_LEASE_CHECKPOINTS}"
            )
        for pair in self.checkpoints:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidCommand("a checkpoint must be [id, remaining_ms]")
            _check_lease_id(pair[0])
            _check_count("remaining_ms", pair[1])
        _check_time(self.time_ms)
