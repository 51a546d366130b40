"""The transaction commands: the ``/v1`` API's :class:`Txn` (with its compares
and ops) and the etcd v3 API's :class:`EtcdTxn` on raw bytes.

Rule: a transaction is checked whole when built -- the item types, the op
limit, and that no branch writes a key twice -- so the store never sees one it
would refuse for its shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from raftkv.core.frozen import fast_init
from raftkv.replica.commands._values import (
    _SEQ_MAX,
    COMPARE_OPS,
    COMPARE_TARGETS,
    MAX_TXN_OPS,
    InvalidCommand,
    JSONValue,
    KeyRange,
    Session,
    _check_choice,
    _check_count,
    _check_flag,
    _check_lease_id,
    _check_time,
    check_key,
    check_value,
)
from raftkv.replica.mvcc import Compare as StoreCompare
from raftkv.replica.mvcc import (
    InvalidRequestError,
    Op,
    PutOp,
    check_txn,
)
from raftkv.replica.mvcc import TxnOp as StoreTxnOp


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Compare:
    """A transaction guard: ``<target of the key(s)> <op> <value>``.

    ``target`` is ``value`` (``value`` a JSON value; ``==`` and ``!=`` compare
    as JSON, like :func:`json_equal`), or ``version``, ``create_revision``,
    ``mod_revision`` (``value`` an integer; all four ops). Over a range it holds
    only if it holds for every key in it. With no key present, a ``value``
    compare is false and the others compare against 0 (etcd's rule).
    """

    range: KeyRange
    target: str
    cmp: str
    value: JSONValue

    def __post_init__(self) -> None:
        if not isinstance(self.range, KeyRange):
            raise InvalidCommand("a compare needs a KeyRange")
        _check_choice("compare target", self.target, COMPARE_TARGETS)
        _check_choice("compare op", self.cmp, COMPARE_OPS)
        if self.target == "value":
            if self.cmp not in ("==", "!="):
                raise InvalidCommand("a value compare takes == or != (JSON equality)")
            check_value(self.value)
        elif type(self.value) is not int or not 0 <= self.value <= _SEQ_MAX:
            raise InvalidCommand(f"a {self.target} compare takes a non-negative integer")


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnPut:
    """A put inside a transaction."""

    kind: ClassVar[str] = "put"
    key: str
    value: JSONValue
    lease: int = 0
    """As :attr:`Put.lease`."""

    def __post_init__(self) -> None:
        check_key(self.key)
        check_value(self.value)
        _check_lease_id(self.lease, allow_zero=True)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnDelete:
    """A delete (of a key or a range) inside a transaction."""

    kind: ClassVar[str] = "delete"
    range: KeyRange
    prev_kv: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.range, KeyRange):
            raise InvalidCommand("a delete needs a KeyRange")
        _check_flag("prev_kv", self.prev_kv)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnRange:
    """A range read inside a transaction (it sees the transaction's earlier writes)."""

    kind: ClassVar[str] = "range"
    range: KeyRange
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.range, KeyRange):
            raise InvalidCommand("a range read needs a KeyRange")
        _check_count("limit", self.limit)
        _check_flag("keys_only", self.keys_only)
        _check_flag("count_only", self.count_only)


TxnOp: TypeAlias = TxnPut | TxnDelete | TxnRange


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Txn:
    """If every compare holds, run ``success``, else ``failure``: atomically, as
    one revision if the executed branch writes (etcd's ``Txn``).

    A branch may not write a key twice (a put and a delete covering the same
    key count): :class:`InvalidCommand` when built.
    """

    op: ClassVar[str] = "txn"
    compares: tuple[Compare, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...]
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        for name, items, kinds in (
            ("compares", self.compares, (Compare,)),
            ("success", self.success, (TxnPut, TxnDelete, TxnRange)),
            ("failure", self.failure, (TxnPut, TxnDelete, TxnRange)),
        ):
            if not isinstance(items, tuple):
                raise InvalidCommand(f"{name} must be a list")
            if len(items) > MAX_TXN_OPS:
                raise InvalidCommand(f"too many {name}: {len(items)}; the limit is {MAX_TXN_OPS}")
            for item in items:
                if not isinstance(item, kinds):
                    raise InvalidCommand(f"bad item in {name}: {type(item).__name__}")
        for branch in (self.success, self.failure):
            _check_no_duplicate_writes(branch)
        _check_time(self.time_ms)


def _check_no_duplicate_writes(ops: tuple[TxnOp, ...]) -> None:
    """etcd's rule: a branch writes each key at most once (a key put twice, or
    put and deleted by a range covering it)."""
    puts: set[bytes] = set()
    spans: list[tuple[bytes, bytes]] = []
    for op in ops:
        if isinstance(op, TxnPut):
            key = op.key.encode("utf-8")
            if key in puts:
                raise InvalidCommand(f"duplicate key given in txn request: {op.key!r}")
            puts.add(key)
        elif isinstance(op, TxnDelete):
            spans.append(op.range.to_bytes())
    for key in puts:
        for start, end in spans:
            if end == b"":
                covered = key == start
            elif end == b"\0":
                covered = key >= start
            else:
                covered = start <= key < end
            if covered:
                raise InvalidCommand(
                    "duplicate key given in txn request: "
                    f"{key.decode('utf-8')!r} is put and deleted"
                )


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdTxn:
    """An etcd v3 API write on raw bytes: a ``Txn``, or a ``Put`` or a
    ``DeleteRange`` as a transaction of one op with no compares.

    The fields are the MVCC store's (:meth:`~raftkv.replica.mvcc.MVCCStore.txn`):
    keys and values are bytes and are stored as they are, nested transactions
    included. Checked when built with :func:`~raftkv.replica.mvcc.check_txn`.
    """

    op: ClassVar[str] = "etcd_txn"
    compares: tuple[StoreCompare, ...]
    success: tuple[Op, ...]
    failure: tuple[Op, ...]
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        for name, items in (
            ("compares", self.compares),
            ("success", self.success),
            ("failure", self.failure),
        ):
            if not isinstance(items, tuple):
                raise InvalidCommand(f"{name} must be a tuple")
        if any(not isinstance(c, StoreCompare) for c in self.compares):
            raise InvalidCommand("bad item in compares")
        try:
            check_txn(self.compares, self.success, self.failure)
        except (InvalidRequestError, TypeError) as exc:
            raise InvalidCommand(f"invalid etcd request: {exc}") from None
        _check_time(self.time_ms)

    @property
    def may_put(self) -> bool:
        """Whether either branch (nested ones included) has a put."""
        return _has_put(self.success) or _has_put(self.failure)


def _has_put(ops: tuple[Op, ...]) -> bool:
    for op in ops:
        if isinstance(op, PutOp):
            return True
        if isinstance(op, StoreTxnOp) and (_has_put(op.success) or _has_put(op.failure)):
            return True
    return False
