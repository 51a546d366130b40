"""Leases on this node: the leader's lease clock, and the requests only the leader answers.

Rule 1: only the leader times leases (DESIGN.md). The replica's
:class:`~raftkv.replica.lessor.Lessor` (pure) is promoted when this node becomes
leader -- every lease's deadline is extended by an election timeout, so none
expires early because of the election -- and demoted when it stops leading. On
every tick the leader's lessor returns the commands to propose (revokes of
expired leases, periodic checkpoints of remaining TTLs), which go through the
log like any write; a follower's clock never ends a lease.

Rule 2: a keep-alive and a time-to-live are answered by the leader only, after
a ReadIndex round confirmed that it still leads (and in the same term); a
follower forwards them over the peer link as a :class:`LeaseRequest` (not a
log entry: a msgpack array, where every command is a map), or over HTTP to the
same route on the leader when clients use tokens.

Rule 3: the minimum TTL is 1.5 election timeouts, rounded up to whole seconds
(etcd's ``minLeaseTTL``): a grant asking for less gets that. A lease shorter
than an election could expire while no leader can renew it.

Rule 4: crash-stop. An exception from the lessor is a broken invariant: on the
ticker it stops the node, as the ticker's other failures do.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgpack

from raftkv.core.rawnode import RawNode
from raftkv.core.types import Role
from raftkv.replica.commands import encode_command
from raftkv.replica.kv import KVStateMachine
from raftkv.replica.leases import Lease, LeaseTable
from raftkv.replica.lessor import Lessor
from raftkv.replica.statemachine import StateMachine
from raftkv.server.errors import BadRequest, NoLeader, ServerError

__all__ = [
    "Leases",
    "LeaseRequest",
    "LeaseView",
    "min_ttl_s",
    "REQUEST_KEEPALIVE",
    "REQUEST_TTL",
]

logger = logging.getLogger(__name__)

REQUEST_KEEPALIVE: Final = "keepalive"
REQUEST_TTL: Final = "ttl"
_REQUEST_TAG: Final = "lease"


def min_ttl_s(election_timeout_ms: int) -> int:
    """The shortest lease TTL, in seconds: 1.5 election timeouts, rounded up."""
    return max(1, math.ceil(1.5 * election_timeout_ms / 1000))


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def wall_ms() -> int:
    """The log time commands carry."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRequest:
    """A request about a lease that only the leader answers (Rule 2).

    Attributes:
        kind: :data:`REQUEST_KEEPALIVE` or :data:`REQUEST_TTL`.
        lease_id: the lease.
        keys: (time-to-live) list the attached keys too.
    """

    kind: str
    lease_id: int
    keys: bool = False

    def encode(self) -> bytes:
        data: bytes = msgpack.packb([_REQUEST_TAG, self.kind, self.lease_id, self.keys])
        return data

    @staticmethod
    def decode(payload: bytes) -> LeaseRequest | None:
        """The request in a forwarded payload, or None if it is a command (a map).

        Raises:
            BadRequest: an array that is not a lease request.
        """
        if not payload or not 0x90 <= payload[0] <= 0x9F:  # not a msgpack fixarray
            return None
        try:
            raw = msgpack.unpackb(payload, raw=False)
        except Exception as exc:  # msgpack raises many unrelated types on bad input
            raise BadRequest(f"not msgpack: {exc}") from None
        if (
            not isinstance(raw, list)
            or len(raw) != 4
            or raw[0] != _REQUEST_TAG
            or raw[1] not in (REQUEST_KEEPALIVE, REQUEST_TTL)
            or not isinstance(raw[2], int)
            or not isinstance(raw[3], bool)
        ):
            raise BadRequest("not a lease request")
        return LeaseRequest(kind=raw[1], lease_id=raw[2], keys=raw[3])


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseView:
    """A lease as a time-to-live answer shows it.

    Attributes:
        lease_id: the lease.
        ttl_s: whole seconds left, as the leader's clock counts (etcd's
            rounding: a lease has at least that long).
        granted_ttl_s: the TTL it was granted with.
        keys: the attached keys, sorted (when asked for).
    """

    lease_id: int
    ttl_s: int
    granted_ttl_s: int
    keys: tuple[bytes, ...] = ()


class Leases:
    """The leader's lease clock and the leader-only lease requests.

    Args:
        state_machine: the replica's state machine (leases need the KV store's).
        election_timeout_ms: the extension on promotion, and the minimum TTL's base.
        propose: proposes an encoded command without waiting for it (the
            lessor's revokes and checkpoints).
        clock_ms: monotonic milliseconds (tests inject a fake).
    """

    __slots__ = ("_sm", "_lessor", "_election_timeout_ms", "_propose", "_clock_ms")

    def __init__(
        self,
        state_machine: StateMachine,
        *,
        election_timeout_ms: int,
        propose: Callable[[bytes], None],
        clock_ms: Callable[[], int] = monotonic_ms,
    ) -> None:
        self._sm = state_machine if isinstance(state_machine, KVStateMachine) else None
        sm = self._sm
        self._lessor = Lessor(lambda: sm.leases) if sm is not None else None
        self._election_timeout_ms = election_timeout_ms
        self._propose = propose
        self._clock_ms = clock_ms

    @property
    def count(self) -> int:
        """Leases in the replica's table (0 without a KV store)."""
        return len(self._sm.leases) if self._sm is not None else 0

    @property
    def min_ttl_s(self) -> int:
        return min_ttl_s(self._election_timeout_ms)

    def grant_ttl(self, ttl_s: int) -> int:
        """The TTL a grant asking for ``ttl_s`` gets (Rule 3)."""
        return max(ttl_s, self.min_ttl_s)

    # ------------------------------------------------------------------ the runtime's calls

    def role_changed(self, role: Role) -> None:
        """Demote the lessor when this node stops leading (promotion waits for
        :meth:`applied`)."""
        if role is not Role.LEADER and self._lessor is not None and self._lessor.is_leader:
            self._lessor.demote()

    def applied(self, raw: RawNode, term: int) -> None:
        """Entries up to one of ``term`` were applied: a leader that applied an
        entry of its own term (its no-op first) has every committed grant,
        revoke and checkpoint in its table, and starts timing leases then --
        every deadline extended by an election timeout (Rule 1)."""
        lessor = self._lessor
        if (
            lessor is not None
            and not lessor.is_leader
            and raw.role is Role.LEADER
            and term == raw.term
        ):
            lessor.promote(self._clock_ms(), self._election_timeout_ms)
            logger.info("lessor promoted", extra={"fields": {"leases": len(self._table())}})

    def tick(self, raw: RawNode) -> None:
        """On the leader: propose the lessor's revokes and checkpoints.

        Raises:
            Exception: a broken invariant in the lessor (the ticker stops the node).
        """
        lessor = self._lessor
        if lessor is None or not lessor.is_leader:
            return
        if raw.role is not Role.LEADER:
            lessor.demote()
            return
        commands = lessor.tick(self._clock_ms(), time_ms=wall_ms())
        for command in commands:
            try:
                self._propose(encode_command(command))
            except (NoLeader, ServerError) as exc:  # leadership is being handed over
                logger.debug("lessor proposal dropped: %s", exc)
                return

    # ------------------------------------------------------------------ requests

    def keepalive_checkpoint(self, lease_id: int) -> bytes | None:
        """The encoded checkpoint to commit before renewing ``lease_id`` -- which
        also confirms leadership -- or None: confirm it by a ReadIndex
        (:meth:`~raftkv.replica.lessor.Lessor.keepalive_checkpoint`).

        Raises:
            NoLeader: the lessor is not promoted (not the leader, or not yet).
        """
        checkpoint = self._leader_lessor().keepalive_checkpoint(lease_id, wall_ms())
        return encode_command(checkpoint) if checkpoint is not None else None

    def keepalive(self, lease_id: int) -> int | None:
        """Renew ``lease_id`` (the caller confirmed leadership first); its TTL,
        or None if there is no such lease (or it expired already).

        Raises:
            NoLeader: the lessor is not promoted (not the leader, or not yet).
        """
        return self._leader_lessor().keepalive(lease_id, self._clock_ms())

    def time_to_live(self, lease_id: int, *, keys: bool) -> LeaseView | None:
        """``lease_id`` as the leader's clock sees it (the caller confirmed
        leadership first), or None if there is no such lease.

        Raises:
            NoLeader: not the leader.
        """
        lessor = self._leader_lessor()
        lease = self._table().get(lease_id)
        if lease is None:
            return None
        remaining = lessor.remaining_ms(lease_id, self._clock_ms()) or 0
        return LeaseView(
            lease_id=lease_id,
            ttl_s=max(0, remaining // 1000),  # whole seconds left, as etcd's
            granted_ttl_s=lease.ttl_s,
            keys=tuple(self._table().keys_of(lease_id)) if keys else (),
        )

    def leases(self) -> list[Lease]:
        """Every live lease, by id (this node's replica; any node can answer)."""
        table = self._table()
        out = []
        for lease_id in table.ids():
            lease = table.get(lease_id)
            if lease is not None:
                out.append(lease)
        return out

    def _table(self) -> LeaseTable:
        if self._sm is None:
            raise BadRequest("this node's state machine has no leases")
        return self._sm.leases

    def _leader_lessor(self) -> Lessor:
        if self._lessor is None:
            raise BadRequest("this node's state machine has no leases")
        if not self._lessor.is_leader:
            raise NoLeader("not the leader (or not yet timing leases); retry")
        return self._lessor
