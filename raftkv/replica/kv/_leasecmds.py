"""The KV state machine's lease commands: grant, revoke, checkpoint, and a put
that names a lease.

Rule: the lease table changes only here and in
:meth:`~raftkv.replica.kv._state._KVState._sync_leases`; revoking a lease
deletes its keys in one revision, in key order. No clock: the leader's lessor
times leases and proposes their expiry (:mod:`raftkv.replica.lessor`).
"""

from __future__ import annotations

from raftkv.replica.commands import (
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    Put,
    json_text,
)
from raftkv.replica.kv._answers import (
    ERR_LEASE_EXISTS,
    ERR_LEASE_NOT_FOUND,
    ERR_NOSPACE,
    Answer,
    KVResult,
    LeaseGranted,
    LeaseRevoked,
)
from raftkv.replica.kv._state import _KVState
from raftkv.replica.mvcc import (
    DeleteRangeOp,
)


class _LeaseCommands(_KVState):
    """The state machine's lease commands; a base of :class:`KVStateMachine`."""

    def _put_with_lease(self, index: int, cmd: Put) -> KVResult:
        leases = self._leases
        if cmd.lease not in leases:
            return self._error(index, ERR_LEASE_NOT_FOUND)
        key = cmd.key.encode("utf-8")
        revision, prev = self._store.put(key, json_text(cmd.value), cmd.lease)
        leases.attach(key, cmd.lease)
        return KVResult(ok=True, index=index, revision=revision, found=prev is not None)

    def _lease_command(self, index: int, cmd: LeaseGrant | LeaseRevoke | LeaseCheckpoint) -> Answer:
        store = self._store
        leases = self._leases
        if isinstance(cmd, LeaseGrant):
            if self._alarm:
                return self._error(index, ERR_NOSPACE)
            lease_id = cmd.id or leases.free_id(index)
            if lease_id in leases:
                return self._error(index, ERR_LEASE_EXISTS)
            leases.grant(lease_id, cmd.ttl_s)
            return LeaseGranted(index=index, revision=store.revision, id=lease_id, ttl_s=cmd.ttl_s)
        if isinstance(cmd, LeaseRevoke):
            if cmd.id not in leases:
                return self._error(index, ERR_LEASE_NOT_FOUND)
            keys = leases.revoke(cmd.id)
            if keys:
                # One revision, keys in order (leases.revoke sorts them).
                store.txn((), [DeleteRangeOp(key=k) for k in keys], ())
            return LeaseRevoked(index=index, revision=store.revision, deleted=len(keys))
        leases.checkpoint(cmd.checkpoints)
        return KVResult(ok=True, index=index, revision=store.revision)
