"""The leader's lease clock: when each lease expires, and the commands that say so.

Rules:

1. **Only the leader times leases.** A :class:`Lessor` keeps deadlines only
   between :meth:`Lessor.promote` and :meth:`Lessor.demote`; on any other node
   it answers nothing and proposes nothing. An expired lease is revoked by a
   ``LeaseRevoke(expired=True)`` that :meth:`Lessor.tick` returns for the node
   to propose: a lease ends through the log, never by a replica's clock.
2. **Promote after the table is complete.** The node calls :meth:`promote`
   once it leads *and* has applied the first entry of its own term (its no-op):
   only then does its lease table hold every committed grant, revoke and
   checkpoint. Every lease then gets ``now + remaining + extend``, where
   ``remaining`` is the last checkpointed remaining time (or the full TTL) and
   ``extend`` the election timeout: no client loses its lease because an
   election kept it from renewing (etcd's ``Promote``).
3. **Keep-alive.** :meth:`keepalive` restarts a lease's full TTL from now. The
   node answers the client only after confirming it still leads -- by a
   ReadIndex, or, if :meth:`keepalive_checkpoint` returns a checkpoint, by
   committing that checkpoint. A new leader, promoted after the confirmation,
   gives the lease ``remaining + extend`` from then; that covers the renewed
   TTL only if ``remaining >= ttl - extend``. So a lease whose replicated
   remaining time -- applied, or in a checkpoint this leader proposed -- is
   shorter must have it reset to the full TTL through the log first, or a new
   leader would restore the old, shorter time (etcd#13508).
4. **Checkpoints.** Every ``checkpoint_interval_ms`` the leader proposes the
   remaining time of every lease (``LeaseCheckpoint``), so a long lease does
   not start over from its full TTL at every leader change.

All times are the driver's monotonic milliseconds (virtual in the simulator);
``time_ms`` is the log time the returned commands carry. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from raftkv.replica.commands import MAX_LEASE_CHECKPOINTS, LeaseCheckpoint, LeaseRevoke
from raftkv.replica.leases import LeaseTable

__all__ = [
    "DEFAULT_CHECKPOINT_INTERVAL_MS",
    "DEFAULT_MAX_REVOKES_PER_TICK",
    "REVOKE_RETRY_MS",
    "Lessor",
]

DEFAULT_CHECKPOINT_INTERVAL_MS: Final = 300_000
"""etcd's default lease checkpoint interval (5 minutes)."""
DEFAULT_MAX_REVOKES_PER_TICK: Final = 500
"""Most expiry revokes one :meth:`Lessor.tick` proposes (etcd's leaseRevokeRate is 1000/s)."""
REVOKE_RETRY_MS: Final = 3_000
"""How long a proposed expiry may stay unapplied before the leader proposes it
again (a proposal can be lost; etcd's ``expiredLeaseRetryInterval``)."""


class Lessor:
    """Deadlines of the leases, on the leader (see the module rules).

    Args:
        table_source: returns the replica's current lease table (the state
            machine may replace the table on a snapshot install).
        checkpoint_interval_ms: time between two checkpoints (0: never).
        max_revokes_per_tick: bound of the revokes one tick returns.
    """

    def __init__(
        self,
        table_source: Callable[[], LeaseTable],
        *,
        checkpoint_interval_ms: int = DEFAULT_CHECKPOINT_INTERVAL_MS,
        max_revokes_per_tick: int = DEFAULT_MAX_REVOKES_PER_TICK,
    ) -> None:
        if checkpoint_interval_ms < 0 or max_revokes_per_tick < 1:
            raise ValueError("need checkpoint_interval_ms >= 0 and max_revokes_per_tick >= 1")
        self._table = table_source
        self._checkpoint_interval_ms = checkpoint_interval_ms
        self._max_revokes = max_revokes_per_tick
        self._leader = False
        self._deadlines: dict[int, int] = {}
        # Invariant: empty unless _leader; else lease id -> when it expires.
        self._revoking: dict[int, int] = {}
        # Invariant: lease id -> when its expiry revoke was last returned by tick.
        self._floor: dict[int, int] = {}
        # Invariant: lease id -> the smallest remaining time a checkpoint returned
        # since promote() (or since its last reset) carried: it may not be applied yet.
        self._extend_ms = 0
        self._last_checkpoint = 0

    def __repr__(self) -> str:
        return f"Lessor(leader={self._leader}, leases={len(self._deadlines)})"

    @property
    def is_leader(self) -> bool:
        """Whether it is promoted (it times leases)."""
        return self._leader

    def promote(self, now_ms: int, extend_ms: int) -> None:
        """Start timing every lease of the table (rule 2)."""
        self._leader = True
        self._deadlines = {}
        self._revoking = {}
        self._floor = {}
        self._extend_ms = extend_ms
        table = self._table()
        for lease_id in table.ids():
            lease = table.get(lease_id)
            assert lease is not None
            base = lease.ttl_s * 1000 if lease.remaining_ms is None else lease.remaining_ms
            self._deadlines[lease_id] = now_ms + base + extend_ms
        self._last_checkpoint = now_ms

    def demote(self) -> None:
        """Stop timing leases (this node no longer leads)."""
        self._leader = False
        self._deadlines = {}
        self._revoking = {}
        self._floor = {}

    def keepalive(self, lease_id: int, now_ms: int) -> int | None:
        """Restart a lease's TTL from ``now_ms``; its TTL in seconds, or ``None``
        if there is no such lease, it has expired already (its revoke is or will
        be on its way, as etcd refuses to renew it), or this lessor is not
        promoted. Rule 3: answer the client only once leadership is confirmed."""
        if not self._leader:
            return None
        lease = self._table().get(lease_id)
        if lease is None:
            self._deadlines.pop(lease_id, None)
            return None
        deadline = self._deadlines.get(lease_id)
        if deadline is not None and deadline <= now_ms:
            return None
        self._deadlines[lease_id] = now_ms + lease.ttl_s * 1000
        return lease.ttl_s

    def keepalive_checkpoint(self, lease_id: int, time_ms: int) -> LeaseCheckpoint | None:
        """The checkpoint to commit before answering a keep-alive (rule 3), if the
        lease's replicated remaining time -- applied, or in a checkpoint this
        leader proposed -- is below ``ttl - extend``; else ``None`` (a ReadIndex
        confirms leadership)."""
        lease = self._table().get(lease_id)
        if lease is None:
            return None
        ttl_ms = lease.ttl_s * 1000
        enough = ttl_ms - self._extend_ms
        floor = self._floor.get(lease_id)
        if (lease.remaining_ms is None or lease.remaining_ms >= enough) and (
            floor is None or floor >= enough
        ):
            return None
        self._floor[lease_id] = ttl_ms
        return LeaseCheckpoint(checkpoints=((lease_id, lease.ttl_s * 1000),), time_ms=time_ms)

    def remaining_ms(self, lease_id: int, now_ms: int) -> int | None:
        """Time left before the lease expires (leader only), or ``None``."""
        if not self._leader or lease_id not in self._table():
            return None
        deadline = self._deadlines.get(lease_id)
        if deadline is None:  # granted since the last tick
            lease = self._table().get(lease_id)
            assert lease is not None
            return lease.ttl_s * 1000
        return max(0, deadline - now_ms)

    def tick(self, now_ms: int, *, time_ms: int) -> list[LeaseRevoke | LeaseCheckpoint]:
        """The commands to propose now: revokes of expired leases (rule 1) and,
        when due, checkpoints (rule 4). ``[]`` unless promoted."""
        if not self._leader:
            return []
        table = self._table()
        deadlines = self._deadlines
        for lease_id in table.ids():
            if lease_id not in deadlines:
                lease = table.get(lease_id)
                assert lease is not None
                deadlines[lease_id] = now_ms + lease.ttl_s * 1000
        if len(deadlines) != len(table):
            for lease_id in [i for i in deadlines if i not in table]:
                del deadlines[lease_id]
                self._revoking.pop(lease_id, None)
        commands: list[LeaseRevoke | LeaseCheckpoint] = []
        revoking = self._revoking
        for lease_id in sorted(deadlines):
            if len(commands) >= self._max_revokes:
                break
            if deadlines[lease_id] > now_ms:
                continue
            proposed = revoking.get(lease_id)
            if proposed is not None and now_ms - proposed < REVOKE_RETRY_MS:
                continue
            revoking[lease_id] = now_ms
            commands.append(LeaseRevoke(id=lease_id, time_ms=time_ms, expired=True))
        interval = self._checkpoint_interval_ms
        if interval and now_ms - self._last_checkpoint >= interval:
            self._last_checkpoint = now_ms
            pairs = [
                (lease_id, deadline - now_ms)
                for lease_id, deadline in sorted(deadlines.items())
                if deadline > now_ms
            ]
            floor = self._floor
            for lease_id, remaining in pairs:
                if remaining < floor.get(lease_id, remaining + 1):
                    floor[lease_id] = remaining
            for i in range(0, len(pairs), MAX_LEASE_CHECKPOINTS):
                commands.append(
                    LeaseCheckpoint(
                        checkpoints=tuple(pairs[i : i + MAX_LEASE_CHECKPOINTS]), time_ms=time_ms
                    )
                )
        return commands
