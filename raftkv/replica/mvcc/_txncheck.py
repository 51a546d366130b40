"""The transaction checks that need no state: package rule 5's first half.

Rule: what :meth:`~raftkv.replica.mvcc.MVCCStore.txn` refuses before it looks
at the store -- an empty key, ``ignore_value`` with a value, ``ignore_lease``
with a lease, a branch that writes a key twice -- decided here once, for the
store and for a caller that refuses a request early (:func:`check_txn`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

from raftkv.replica.mvcc._errors import (
    DuplicateKeyError,
    EmptyKeyError,
    LeaseProvidedError,
    ValueProvidedError,
)
from raftkv.replica.mvcc._values import Compare, DeleteRangeOp, Op, PutOp, RangeOp, TxnOp


def _validate_ops(ops: Iterable[Op]) -> None:
    """etcd's ``checkRequestOp`` over a branch (``checkTxnRequest`` for nested ones)."""
    for op in ops:
        if isinstance(op, PutOp):
            if not op.key:
                raise EmptyKeyError()
            if op.ignore_value and op.value:
                raise ValueProvidedError(op.key)
            if op.ignore_lease and op.lease:
                raise LeaseProvidedError(op.key)
        elif isinstance(op, RangeOp | DeleteRangeOp):
            if not op.key:
                raise EmptyKeyError()
        elif isinstance(op, TxnOp):
            _validate_txn(op.compares, op.success, op.failure)
        else:
            raise TypeError(f"not a transaction op: {op!r}")


def _validate_txn(
    compares: Iterable[Compare], success: Iterable[Op], failure: Iterable[Op]
) -> None:
    """etcd's ``checkTxnRequest`` (without the op count limit, a server setting)."""
    for compare in compares:
        if not compare.key:
            raise EmptyKeyError()
    _validate_ops(success)
    _validate_ops(failure)


def check_txn(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> None:
    """The checks of package rule 5 that need no state: what :meth:`MVCCStore.txn`
    raises before it looks at the store, for a caller to refuse a request early.

    Raises:
        InvalidRequestError: an empty key, ``ignore_value`` with a value,
            ``ignore_lease`` with a lease, or a branch that writes a key twice.
        TypeError: an op is none of :data:`Op`'s types.
    """
    _validate_txn(compares, success, failure)
    _branch_writes(success)
    _branch_writes(failure)


_Span: TypeAlias = tuple[bytes, bytes | None]
"""A deleted key interval ``[lo, hi)``; ``hi=None`` means no upper bound."""


def _deleted_span(op: DeleteRangeOp) -> _Span:
    if not op.range_end:
        return (op.key, op.key + b"\0")
    if op.range_end == b"\0":
        return (op.key, None)
    return (op.key, op.range_end)


def _covers(span: _Span, key: bytes) -> bool:
    lo, hi = span
    return lo <= key and (hi is None or key < hi)


def _branch_writes(ops: Sequence[Op]) -> tuple[dict[bytes, None], list[_Span]]:
    """The keys a branch puts and the spans it deletes, nested transactions included.

    Raises:
        DuplicateKeyError: two ops of the branch that both run (two ops of it,
            or one of it and one inside a nested transaction's branch) put the
            same key, or one puts a key the other deletes. The two branches of
            one nested transaction never both run, so they do not conflict.
    """
    puts: dict[bytes, None] = {}  # insertion-ordered: the reported key is deterministic
    spans: list[_Span] = []
    if all(isinstance(op, PutOp | RangeOp) for op in ops):
        # The common case, puts and reads only: a key may be put once.
        for op in ops:
            if isinstance(op, PutOp):
                if op.key in puts:
                    raise DuplicateKeyError(op.key)
                puts[op.key] = None
        return puts, spans
    for op in ops:
        if isinstance(op, PutOp):
            op_puts: Iterable[bytes] = (op.key,)
            op_spans: list[_Span] = []
        elif isinstance(op, DeleteRangeOp):
            op_puts = ()
            op_spans = [_deleted_span(op)]
        elif isinstance(op, TxnOp):
            then_puts, then_spans = _branch_writes(op.success)
            else_puts, else_spans = _branch_writes(op.failure)
            op_puts = {**then_puts, **else_puts}
            op_spans = then_spans + else_spans
        else:
            continue
        for key in op_puts:
            if key in puts or any(_covers(span, key) for span in spans):
                raise DuplicateKeyError(key)
        for span in op_spans:
            for key in puts:
                if _covers(span, key):
                    raise DuplicateKeyError(key)
        puts.update(dict.fromkeys(op_puts))
        spans.extend(op_spans)
    return puts, spans
