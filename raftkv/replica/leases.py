"""The replicated lease table: which leases exist and which keys each one holds.

Rules:

1. **Decided by the log alone.** A lease is created by a ``LeaseGrant`` entry and
   removed by a ``LeaseRevoke`` entry (the client's, or the one the leader's
   lessor proposes when the TTL ran out); a ``LeaseCheckpoint`` entry records
   the remaining time the leader measured. Nothing here reads a clock: only the
   leader times leases (:mod:`raftkv.replica.lessor`), every replica just
   follows the entries.
2. **Attached keys mirror the store.** A key belongs to the lease its newest
   live version names (``KeyValue.lease``); a put re-attaches it, a delete
   detaches it. The KV state machine keeps the table in step with the store
   after every write, and a snapshot holds only ``(id, ttl_s, remaining_ms)``
   per lease: the keys are rebuilt from the store on restore.
3. **Deterministic.** Every answer that lists something is sorted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MAX_LEASE_ID",
    "MAX_LEASE_TTL_S",
    "Lease",
    "LeaseTable",
]

MAX_LEASE_ID: Final = 2**63 - 1
"""Largest lease id (ids are 1..2**63-1; 0 means "no lease")."""
MAX_LEASE_TTL_S: Final = 9_000_000_000
"""Longest TTL a lease may be granted (etcd's ``MaxLeaseTTL``)."""


@dataclass(slots=True, kw_only=True)
class Lease:
    """One lease, as the replicas know it (read-only outside this module).

    Attributes:
        id: 1..:data:`MAX_LEASE_ID`.
        ttl_s: the granted TTL in seconds (a keep-alive renews it to this).
        remaining_ms: the remaining time the leader's last checkpoint recorded,
            or ``None`` if none did since the grant (a new leader then starts
            from the full TTL).
        keys: the keys attached to it.
    """

    id: int
    ttl_s: int
    remaining_ms: int | None = None
    keys: set[bytes] = field(default_factory=set)


class LeaseTable:
    """The leases of one replica and their keys (see the module rules)."""

    __slots__ = ("_leases", "_key_lease", "attached_keys")

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        self._key_lease: dict[bytes, int] = {}
        # Invariant: key in _leases[i].keys  <=>  _key_lease[key] == i.
        self.attached_keys = 0
        """How many keys are attached to some lease (read-only; a plain
        attribute: the put path checks it)."""
        # Invariant: attached_keys == len(_key_lease).

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def __repr__(self) -> str:
        return f"LeaseTable(leases={len(self._leases)}, keys={len(self._key_lease)})"

    def get(self, lease_id: int) -> Lease | None:
        """The lease, or ``None``."""
        return self._leases.get(lease_id)

    def ids(self) -> list[int]:
        """Every lease id, sorted."""
        return sorted(self._leases)

    def keys_of(self, lease_id: int) -> list[bytes]:
        """The keys attached to the lease, sorted (empty for an unknown lease)."""
        lease = self._leases.get(lease_id)
        return [] if lease is None else sorted(lease.keys)

    def lease_of(self, key: bytes) -> int:
        """The lease ``key`` is attached to (0: none)."""
        return self._key_lease.get(key, 0)

    def free_id(self, start: int) -> int:
        """The smallest id >= ``start`` (at least 1) that no lease has."""
        lease_id = max(1, start)
        while lease_id in self._leases:
            lease_id += 1
        return lease_id

    # ------------------------------------------------------------------ changes

    def grant(self, lease_id: int, ttl_s: int) -> Lease:
        """Create a lease (the caller checked that ``lease_id`` is free)."""
        lease = Lease(id=lease_id, ttl_s=ttl_s)
        self._leases[lease_id] = lease
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Remove a lease; return its keys, sorted (the caller deletes them)."""
        lease = self._leases.pop(lease_id)
        key_lease = self._key_lease
        for key in lease.keys:
            del key_lease[key]
        self.attached_keys = len(key_lease)
        return sorted(lease.keys)

    def checkpoint(self, checkpoints: Iterable[tuple[int, int]]) -> None:
        """Record remaining times; ids of leases that are gone are ignored."""
        leases = self._leases
        for lease_id, remaining_ms in checkpoints:
            lease = leases.get(lease_id)
            if lease is not None:
                lease.remaining_ms = remaining_ms

    def attach(self, key: bytes, lease_id: int) -> None:
        """Make ``key`` belong to ``lease_id`` (0: to none), leaving its old lease.

        The lease must exist (the caller checked) unless ``lease_id`` is 0.
        """
        key_lease = self._key_lease
        old = key_lease.get(key, 0)
        if old == lease_id:
            return
        if old:
            self._leases[old].keys.discard(key)
            del key_lease[key]
        if lease_id:
            self._leases[lease_id].keys.add(key)
            key_lease[key] = lease_id
        self.attached_keys = len(key_lease)

    # ------------------------------------------------------------------ snapshots

    def to_wire(self) -> list[list[Any]]:
        """``[[id, ttl_s, remaining_ms or None], ...]`` by id (keys are not included)."""
        return [[le.id, le.ttl_s, le.remaining_ms] for _, le in sorted(self._leases.items())]

    @classmethod
    def from_wire(cls, wire: object, attached: Iterable[tuple[bytes, int]]) -> LeaseTable:
        """Rebuild a table from :meth:`to_wire` and the store's ``(key, lease)`` pairs.

        A key naming a lease the table does not have stays unattached.

        Raises:
            ValueError: ``wire`` is not what :meth:`to_wire` makes.
        """
        if not isinstance(wire, list):
            raise ValueError("leases must be a list")
        table = cls()
        for item in wire:
            if not isinstance(item, list) or len(item) != 3:
                raise ValueError("a lease must be [id, ttl_s, remaining_ms]")
            lease_id, ttl_s, remaining_ms = item
            if type(lease_id) is not int or not 1 <= lease_id <= MAX_LEASE_ID:
                raise ValueError(f"bad lease id {lease_id!r}")
            if type(ttl_s) is not int or not 1 <= ttl_s <= MAX_LEASE_TTL_S:
                raise ValueError(f"lease {lease_id}: bad ttl {ttl_s!r}")
            if remaining_ms is not None and (type(remaining_ms) is not int or remaining_ms < 0):
                raise ValueError(f"lease {lease_id}: bad remaining time {remaining_ms!r}")
            if lease_id in table._leases:
                raise ValueError(f"lease {lease_id} twice")
            table._leases[lease_id] = Lease(id=lease_id, ttl_s=ttl_s, remaining_ms=remaining_ms)
        for key, lease_id in attached:
            if lease_id in table._leases:
                table.attach(key, lease_id)
        return table
