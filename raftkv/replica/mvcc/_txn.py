"""The MVCC store's transactions: checked, decided, then run (package rule 5).

Rule: every error is raised by the checks -- the stateless ones
(:mod:`._txncheck`), then the compares and what the executed path needs of
the state before it -- before the first write, so a transaction that raises
changed nothing; then the ops run in order, in at most one new revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from raftkv.core.errors import bug
from raftkv.replica.mvcc._errors import KeyNotFoundError
from raftkv.replica.mvcc._reads import _Reads
from raftkv.replica.mvcc._txncheck import _branch_writes, _validate_txn
from raftkv.replica.mvcc._values import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    DeleteResult,
    Op,
    OpResult,
    PutOp,
    PutResult,
    RangeOp,
    TxnOp,
    TxnResult,
)
from raftkv.replica.mvcc._versions import _make_kv, _newest, _Version

_ABSENT: Final[_Version] = (0, 0, 0, 0, b"")
"""What a compare sees for a range with no live key (etcd compares an empty ``KeyValue``)."""


def _holds(target: CompareTarget, result: CompareResult, operand: int | bytes, v: _Version) -> bool:
    """etcd's ``compareKV`` on one version."""
    if target is CompareTarget.VALUE:
        want = operand if isinstance(operand, bytes) else b""
        have = v[4]
        cmp = (have > want) - (have < want)
    else:
        number = operand if isinstance(operand, int) else 0
        if target is CompareTarget.VERSION:
            field = v[2]
        elif target is CompareTarget.CREATE:
            field = v[1]
        elif target is CompareTarget.MOD:
            field = v[0]
        else:
            field = v[3]
        cmp = (field > number) - (field < number)
    if result is CompareResult.EQUAL:
        return cmp == 0
    if result is CompareResult.NOT_EQUAL:
        return cmp != 0
    if result is CompareResult.GREATER:
        return cmp > 0
    return cmp < 0


class _Plan:
    """A transaction's executed path, decided before any op runs."""

    __slots__ = ("succeeded", "ops", "nested")

    def __init__(
        self, succeeded: bool, ops: Sequence[Op], nested: tuple[_Plan | None, ...] | None
    ) -> None:
        self.succeeded = succeeded
        self.ops = ops
        self.nested = nested
        # Invariant: nested is None if ops has no TxnOp; else nested[i] is the
        # plan of ops[i] for each TxnOp and None for the other ops.


class _Changes:
    """The keys a running transaction has written so far."""

    __slots__ = ("count", "keys")

    def __init__(self) -> None:
        self.count = 0
        self.keys: list[bytes] = []


class _Transactions(_Reads):
    """The store's transactions; a base of :class:`~raftkv.replica.mvcc.MVCCStore`."""

    __slots__ = ()

    def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[Op] = (),
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """Run a transaction atomically, in at most one new revision (etcd's ``Txn``).

        If every compare holds, the ``success`` ops run, else the ``failure``
        ops; in order, each seeing the writes of the ones before it. Module rule
        5 says what is checked before anything runs.

        Returns:
            Whether the compares held, one result per executed op, and the store
            revision afterwards.

        Raises:
            InvalidRequestError: an op is invalid (:class:`EmptyKeyError`,
                :class:`ValueProvidedError`, :class:`LeaseProvidedError`), a
                branch writes a key twice (:class:`DuplicateKeyError`), or a put
                on the executed path needs an absent key (:class:`KeyNotFoundError`).
            RevisionError: a range on the executed path reads a compacted or a
                future revision.
            TypeError: an op is none of :data:`Op`'s types.

            If it raises, the store is unchanged.
        """
        _validate_txn(compares, success, failure)
        _branch_writes(success)
        _branch_writes(failure)
        begin = self._revision
        plan = self._decide(compares, success, failure, begin)
        self._check_plan(plan, begin)
        changes = _Changes()
        responses = self._execute(plan, begin, changes)
        if changes.count:
            self._revision = begin + 1
            self._feed_key = None
            self._feed = changes.keys
            self._feed_revision = begin + 1
        return TxnResult(succeeded=plan.succeeded, responses=responses, revision=self._revision)

    def execute(self, op: Op) -> OpResult:
        """Run one op as etcd runs the request of the same name outside a transaction.

        The same as ``txn((), (op,), ()).responses[0]``, with the same errors.
        """
        return self.txn((), (op,), ()).responses[0]

    def _compare(self, compare: Compare, revision: int) -> bool:
        """etcd's ``applyCompare`` against the store at ``revision``."""
        found = self._collect(compare.key, compare.range_end, revision)
        target, result, operand = compare.target, compare.result, compare.operand
        if not found:
            if target is CompareTarget.VALUE:
                # etcd: "always fail if comparing a value on a key/keys that doesn't exist".
                return False
            return _holds(target, result, operand, _ABSENT)
        return all(_holds(target, result, operand, v) for _, v in found)

    def _decide(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op],
        revision: int,
    ) -> _Plan:
        """Evaluate the compares of a transaction and of the nested ones it will run."""
        succeeded = all(self._compare(c, revision) for c in compares)
        ops = success if succeeded else failure
        nested = None
        if any(isinstance(op, TxnOp) for op in ops):
            nested = tuple(
                self._decide(op.compares, op.success, op.failure, revision)
                if isinstance(op, TxnOp)
                else None
                for op in ops
            )
        return _Plan(succeeded, ops, nested)

    def _check_plan(self, plan: _Plan, revision: int) -> None:
        """etcd's ``checkTxn``: what the executed path needs of the state before it."""
        for i, op in enumerate(plan.ops):
            if isinstance(op, RangeOp):
                if op.revision > 0:
                    self._check_revision(op.revision, revision)
            elif isinstance(op, PutOp):
                if (op.ignore_value or op.ignore_lease) and self.get(op.key) is None:
                    raise KeyNotFoundError(op.key)
            elif isinstance(op, TxnOp):
                nested = None if plan.nested is None else plan.nested[i]
                if nested is None:
                    bug("txn: a nested transaction without a plan")
                self._check_plan(nested, revision)

    def _execute(self, plan: _Plan, begin: int, changes: _Changes) -> tuple[OpResult, ...]:
        """Run the ops of ``plan``; every check already passed, so this cannot fail."""
        responses: list[OpResult] = []
        write_revision = begin + 1
        for i, op in enumerate(plan.ops):
            if isinstance(op, RangeOp):
                responses.append(self._range(op, write_revision if changes.count else begin))
            elif isinstance(op, PutOp):
                key = op.key
                entry = self._entries.get(key)
                prev = None if entry is None else _newest(entry)
                value, lease = op.value, op.lease
                if op.ignore_value or op.ignore_lease:
                    if prev is None:
                        bug(f"txn put {key!r}: key vanished after the checks")
                    if op.ignore_value:
                        value = prev[4]
                    if op.ignore_lease:
                        lease = prev[3]
                self._write_put(key, value, lease, write_revision)
                changes.count += 1
                changes.keys.append(key)
                prev_kv = _make_kv(key, prev) if op.prev_kv and prev is not None else None
                responses.append(PutResult(revision=write_revision, prev_kv=prev_kv))
            elif isinstance(op, DeleteRangeOp):
                found = self._collect(op.key, op.range_end, None)
                for k, _ in found:
                    self._write_tombstone(k, write_revision)
                    changes.keys.append(k)
                changes.count += len(found)
                responses.append(
                    DeleteResult(
                        revision=write_revision if changes.count else begin,
                        deleted=len(found),
                        prev_kvs=tuple(_make_kv(k, v) for k, v in found) if op.prev_kv else (),
                    )
                )
            else:
                nested = None if plan.nested is None else plan.nested[i]
                if nested is None:
                    bug("txn: a nested transaction without a plan")
                sub = self._execute(nested, begin, changes)
                responses.append(
                    TxnResult(
                        succeeded=nested.succeeded,
                        responses=sub,
                        revision=write_revision if changes.count else begin,
                    )
                )
        return tuple(responses)
