"""The KV state machine's transactions: the ``/v1`` API's :class:`Txn` and the
etcd v3 API's :class:`EtcdTxn`, each one store transaction.

Rule: the quota and the leases a transaction names are checked before the
store runs it, and a refusal changes nothing; a ``/v1`` value compare is JSON
equality (:meth:`_Transactions._holds`), the other compares the store's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from raftkv.replica.commands import (
    Compare,
    EtcdTxn,
    Txn,
    TxnDelete,
    TxnOp,
    TxnPut,
    json_text,
)
from raftkv.replica.kv._answers import (
    ERR_COMPACTED,
    ERR_FUTURE_REVISION,
    ERR_INVALID_COMMAND,
    ERR_LEASE_NOT_FOUND,
    ERR_NOSPACE,
    ERR_NOT_FOUND,
    Answer,
    Deleted,
    EtcdAnswer,
    Listing,
    PutDone,
    TxnAnswer,
    _deleted,
    _json_equal,
    _listing,
    stored_json,
)
from raftkv.replica.kv._state import _KVState
from raftkv.replica.mvcc import (
    CompactedError,
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    DeleteResult,
    FutureRevisionError,
    KeyNotFoundError,
    MVCCError,
    Op,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
)
from raftkv.replica.mvcc import Compare as StoreCompare
from raftkv.replica.mvcc import TxnOp as StoreTxnOp

_COMPARE_TARGETS: Final = {
    "version": CompareTarget.VERSION,
    "create_revision": CompareTarget.CREATE,
    "mod_revision": CompareTarget.MOD,
}
_COMPARE_RESULTS: Final = {
    "==": CompareResult.EQUAL,
    "!=": CompareResult.NOT_EQUAL,
    "<": CompareResult.LESS,
    ">": CompareResult.GREATER,
}


class _Transactions(_KVState):
    """The state machine's transactions; a base of :class:`KVStateMachine`."""

    def _txn(self, index: int, cmd: Txn) -> Answer:
        succeeded = self._holds(cmd.compares)
        branch = cmd.success if succeeded else cmd.failure
        if self._alarm and any(isinstance(op, TxnPut) for op in branch):
            return self._error(index, ERR_NOSPACE)
        leased = False
        for op in branch:
            if isinstance(op, TxnPut) and op.lease:
                if op.lease not in self._leases:
                    return self._error(index, ERR_LEASE_NOT_FOUND)
                leased = True
        ops = [_store_op(op) for op in branch]
        revision = self._store.revision
        try:
            result = self._store.txn((), ops, ())
        except MVCCError as exc:  # a duplicate key the command's own check missed
            return self._error(index, f"{ERR_INVALID_COMMAND}: {exc}")
        if result.revision != revision:
            self._sync_leases(leased)
        responses: list[PutDone | Deleted | Listing] = []
        for response in result.responses:
            if isinstance(response, PutResult):
                responses.append(PutDone(revision=response.revision))
            elif isinstance(response, DeleteResult):
                responses.append(_deleted(index, response))
            else:
                assert isinstance(response, RangeResult)
                responses.append(_listing(index, response))
        return TxnAnswer(
            index=index, revision=result.revision, succeeded=succeeded, responses=tuple(responses)
        )

    def _etcd_txn(self, index: int, cmd: EtcdTxn) -> EtcdAnswer:
        store = self._store
        if self._alarm and cmd.may_put:
            return EtcdAnswer(index=index, revision=store.revision, error=ERR_NOSPACE)
        leases = {lease for lease in _put_leases((*cmd.success, *cmd.failure)) if lease}
        if any(lease not in self._leases for lease in leases):
            # Stricter than etcd, which checks only the branch that runs.
            return EtcdAnswer(index=index, revision=store.revision, error=ERR_LEASE_NOT_FOUND)
        try:
            result = store.txn(cmd.compares, cmd.success, cmd.failure)
        except MVCCError as exc:
            if isinstance(exc, CompactedError):
                error = ERR_COMPACTED
            elif isinstance(exc, FutureRevisionError):
                error = ERR_FUTURE_REVISION
            elif isinstance(exc, KeyNotFoundError):
                error = ERR_NOT_FOUND
            else:
                error = f"{ERR_INVALID_COMMAND}: {exc}"
            return EtcdAnswer(
                index=index,
                revision=store.revision,
                error=error,
                compact_revision=store.compact_revision,
            )
        # Keys it wrote follow their new version's lease; keys it deleted leave theirs.
        self._sync_leases(bool(leases))
        return EtcdAnswer(index=index, revision=result.revision, result=result)

    def _holds(self, compares: tuple[Compare, ...]) -> bool:
        """Whether every compare holds now (etcd's rules for a range and a missing key).

        Revision and version compares are the store's own; a value compare is
        JSON equality (:func:`json_equal`), which a byte compare of the stored
        text is not (``1`` equals ``1.0``; object key order does not matter).
        """
        guards = []
        for compare in compares:
            key, end = compare.range.to_bytes()
            if compare.target != "value":
                guards.append(
                    StoreCompare(
                        key=key,
                        range_end=end,
                        target=_COMPARE_TARGETS[compare.target],
                        result=_COMPARE_RESULTS[compare.cmp],
                        operand=compare.value,  # type: ignore[arg-type]  # an int (checked)
                    )
                )
                continue
            kvs = self._store.range(key, end).kvs
            if not kvs:
                return False  # a value compare on no key is false (etcd)
            equal = [_json_equal(stored_json(kv.value), compare.value) for kv in kvs]
            if not (all(equal) if compare.cmp == "==" else not any(equal)):
                return False
        # Over every key of a range; a transaction without ops writes nothing.
        return not guards or self._store.txn(tuple(guards), (), ()).succeeded


def _put_leases(ops: tuple[Op, ...]) -> Iterator[int]:
    """The leases the puts of ``ops`` name, nested transactions included."""
    for op in ops:
        if isinstance(op, PutOp):
            yield op.lease
        elif isinstance(op, StoreTxnOp):
            yield from _put_leases((*op.success, *op.failure))


def _store_op(op: TxnOp) -> PutOp | DeleteRangeOp | RangeOp:
    if isinstance(op, TxnPut):
        return PutOp(key=op.key.encode("utf-8"), value=json_text(op.value), lease=op.lease)
    key, end = op.range.to_bytes()
    if isinstance(op, TxnDelete):
        return DeleteRangeOp(key=key, range_end=end, prev_kv=op.prev_kv)
    return RangeOp(
        key=key, range_end=end, limit=op.limit, keys_only=op.keys_only, count_only=op.count_only
    )
