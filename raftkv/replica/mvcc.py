"""The MVCC key space: etcd v3's revisions, range reads, transactions and compaction.

Rules:

1. **Pure and deterministic.** No clock, randomness, I/O or threads. Nothing
   that reaches a result, :meth:`MVCCStore.to_wire` or
   :meth:`MVCCStore.state_digest` depends on dict or set order: ranges walk the
   sorted :class:`~raftkv.replica.keyindex.KeyIndex`, snapshots list keys in
   order. Stores that receive the same calls in the same order are equal, and
   answer alike.
2. **One store revision** (etcd's main revision). A fresh store is at 1. A call
   that changes something moves it up by exactly one, and every version that
   call writes carries the new revision: a put (always, even of the value the
   key already holds), a delete that finds a live key, a transaction whose
   executed branch did either. Reads, deletes that find nothing and
   transactions whose executed branch changed nothing leave it where it is.
3. **Versions.** Per key: ``create_revision``, ``mod_revision``, ``version``
   (1 when the key is created, +1 per put) and ``lease`` (0 = none). A delete
   writes a tombstone: the key is absent from then on, and the next put creates
   it again (version 1, a new ``create_revision``). A key has at most one
   version per revision (rule 5 forbids writing a key twice in one transaction).
4. **Reads at a revision.** ``revision <= 0`` reads the current revision; above
   it raises :class:`FutureRevisionError`; below :attr:`MVCCStore.compact_revision`
   raises :class:`CompactedError`. The compact revision itself and everything
   above answer exactly as when they were current. Key ranges follow etcd:
   ``range_end == b""`` is the single key, ``b"\\0"`` every key ``>= key``,
   anything else ``[key, range_end)`` (empty if ``range_end <= key``); the empty
   key is never a key (:class:`EmptyKeyError`), so ``key=b"\\0",
   range_end=b"\\0"`` is every key and :func:`prefix_range_end` gives prefixes.
5. **Transactions are checked, then applied** (etcd's apply order): validate
   every op of both branches, nested ones included (empty keys,
   ``ignore_value`` with a value, ``ignore_lease`` with a lease); reject a
   branch that writes a key twice (:class:`DuplicateKeyError`); evaluate all
   compares -- nested ones too -- against the state before the transaction,
   which picks the executed path; check that path's range revisions and the
   keys its ``ignore_value``/``ignore_lease`` puts need. Only then run the ops,
   in order, each seeing the writes of the ones before it. Every error is raised
   by the checks before the first write, so a call that raises changed nothing.
6. **Compaction.** ``compact(r)`` keeps, of each key, the versions after ``r``
   and its newest version at or before ``r`` -- the one reads at ``r`` see --
   and drops the older ones. If that version is a tombstone older than ``r``,
   it goes too (and the key with it, if nothing follows). A tombstone exactly
   at ``r`` stays: it is a change at a readable revision (etcd keeps it too,
   for watchers starting at ``r``). So a live key's newest version is never
   dropped, and every read at ``r`` or later answers as before.
7. **Size.** :attr:`MVCCStore.size_bytes` is
   ``sum(len(key) + len(value) + VERSION_OVERHEAD_BYTES)`` over every kept
   version, tombstones included (a tombstone's value is empty). It grows with
   each write and falls as a compaction's physical pass frees versions
   (:meth:`MVCCStore.compact_step`), so two stores with the same content may
   differ in it until their passes end; a store restored from :meth:`to_wire`
   starts compacted.

Where this deliberately differs from etcd (v3.6 and main), and why:

* The duplicate-key rule is the one etcd means, not the one its
  ``checkIntervals`` implements: a delete with ``range_end == b"\\0"`` (every
  key from ``key`` on) covers the keys it deletes (etcd builds the empty
  interval ``[key, "\\0")``, etcd-io/etcd#22395), and a put in one nested
  transaction conflicts with a delete in a *later* sibling as well as an
  earlier one (etcd#16380). etcd's looser check lets one transaction delete
  and re-create a key in the same revision, a shape its own compaction then
  loses data on (etcd#22376); here it cannot arise.
* Sorting by version, create, mod revision or value keeps equal elements in
  ascending key order (etcd's ``sort.Sort`` is not stable, so any order of
  ties is etcd-compatible).
* ``keys_only`` results keep ``lease`` (etcd 3.5/3.6 do; 3.7's in-memory
  keys-only path returns lease 0).
* A nested transaction's result carries the revision seen after it (etcd
  leaves the nested header's revision 0).
* ``revision < 0`` always means "current" (etcd's transaction check calls a
  negative range revision compacted once a compaction has happened).
* Values are compared as Python ``bytes``; a :class:`Compare` whose operand
  has the wrong type for its target compares against the target's zero
  (``b""`` or 0), as etcd does with an unset ``target_union``.
"""

from __future__ import annotations

import enum
import hashlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, ClassVar, Final, TypeAlias, cast

import msgpack

from raftkv.core.errors import RaftKVError, bug
from raftkv.core.frozen import fast_init
from raftkv.replica.keyindex import KeyIndex

__all__ = [
    "VERSION_OVERHEAD_BYTES",
    "WIRE_FORMAT",
    "MVCCError",
    "RevisionError",
    "CompactedError",
    "FutureRevisionError",
    "InvalidRequestError",
    "EmptyKeyError",
    "ValueProvidedError",
    "LeaseProvidedError",
    "DuplicateKeyError",
    "KeyNotFoundError",
    "InvalidSnapshotError",
    "SortOrder",
    "SortTarget",
    "CompareTarget",
    "CompareResult",
    "KeyValue",
    "EVENT_PUT",
    "EVENT_DELETE",
    "Event",
    "Compare",
    "RangeOp",
    "PutOp",
    "DeleteRangeOp",
    "TxnOp",
    "Op",
    "RangeResult",
    "PutResult",
    "DeleteResult",
    "TxnResult",
    "OpResult",
    "MVCCStore",
    "check_txn",
    "prefix_range_end",
]

VERSION_OVERHEAD_BYTES: Final = 192
"""What each kept version adds to :attr:`MVCCStore.size_bytes` besides its key
and value: a fixed stand-in for its revisions, version, lease and bookkeeping,
close to what a version costs in memory on CPython 3.11 beyond its key and value
bytes (about 190 bytes; ``bench/mvcc_memory.py``), so a quota on ``size_bytes``
bounds the store's memory. Every replica must use the same value: it decides
when writes are refused."""

WIRE_FORMAT: Final = 1
"""First element of :meth:`MVCCStore.to_wire`; :meth:`MVCCStore.from_wire` refuses others."""

_PACK_CHUNK_KEYS: Final = 512
_PACK_CHUNK_BYTES: Final = 256 * 1024
"""A snapshot packs a chunk of keys per msgpack call (:meth:`MVCCStore.capture`):
at most this many keys, or about this many bytes of values (~0.3 ms each)."""


# --------------------------------------------------------------------------- errors


class MVCCError(RaftKVError):
    """Root of the errors the MVCC store raises to its caller.

    ``message`` is etcd's text for the error (without etcd's ``"etcdserver: "``
    prefix), for an API layer that must answer as etcd does.
    """

    message: ClassVar[str] = "mvcc error"


class RevisionError(MVCCError):
    """A requested revision is outside what the store can answer (gRPC OutOfRange)."""


class CompactedError(RevisionError):
    """The revision is below the compact revision (etcd's ``ErrCompacted``).

    Attributes:
        compact_revision: the store's compact revision when the error was raised.
    """

    message: ClassVar[str] = "mvcc: required revision has been compacted"

    def __init__(self, compact_revision: int) -> None:
        super().__init__(self.message)
        self.compact_revision = compact_revision


class FutureRevisionError(RevisionError):
    """The revision is above the current revision (etcd's ``ErrFutureRev``).

    Attributes:
        revision: the store's current revision when the error was raised.
    """

    message: ClassVar[str] = "mvcc: required revision is a future revision"

    def __init__(self, revision: int) -> None:
        super().__init__(self.message)
        self.revision = revision


class InvalidRequestError(MVCCError):
    """The request itself is invalid (gRPC InvalidArgument); nothing was changed.

    Attributes:
        key: the key the error is about, if there is one.
    """

    def __init__(self, key: bytes | None = None) -> None:
        super().__init__(self.message)
        self.key = key


class EmptyKeyError(InvalidRequestError):
    """A request names the empty key (etcd's ``ErrGRPCEmptyKey``)."""

    message: ClassVar[str] = "key is not provided"


class ValueProvidedError(InvalidRequestError):
    """A put has ``ignore_value`` and a non-empty value (``ErrGRPCValueProvided``)."""

    message: ClassVar[str] = "value is provided"


class LeaseProvidedError(InvalidRequestError):
    """A put has ``ignore_lease`` and a lease (``ErrGRPCLeaseProvided``)."""

    message: ClassVar[str] = "lease is provided"


class DuplicateKeyError(InvalidRequestError):
    """A transaction branch writes a key twice (``ErrGRPCDuplicateKey``; module rule 5)."""

    message: ClassVar[str] = "duplicate key given in txn request"


class KeyNotFoundError(InvalidRequestError):
    """A put with ``ignore_value`` or ``ignore_lease`` names an absent key (``ErrKeyNotFound``)."""

    message: ClassVar[str] = "key not found"


class InvalidSnapshotError(MVCCError):
    """:meth:`MVCCStore.from_wire` got something :meth:`MVCCStore.to_wire` cannot have made."""

    message: ClassVar[str] = "invalid MVCC snapshot"

    def __init__(self, reason: str) -> None:
        super().__init__(f"{self.message}: {reason}")
        self.reason = reason


# --------------------------------------------------------------------------- values


class SortOrder(enum.Enum):
    """Order of a range's results (values are etcd's ``RangeRequest.SortOrder``)."""

    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(enum.Enum):
    """Field a range is sorted by (values are etcd's ``RangeRequest.SortTarget``)."""

    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareTarget(enum.Enum):
    """Field a :class:`Compare` inspects (values are etcd's ``Compare.CompareTarget``)."""

    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class CompareResult(enum.Enum):
    """Relation a :class:`Compare` checks (values are etcd's ``Compare.CompareResult``)."""

    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValue:
    """One version of a key, as etcd's ``mvccpb.KeyValue``."""

    key: bytes
    value: bytes
    create_revision: int
    """Revision at which the key was (last) created."""
    mod_revision: int
    """Revision of this version."""
    version: int
    """1 at creation, +1 per put since (never 0: an absent key has no ``KeyValue``)."""
    lease: int = 0
    """Lease the key is attached to; 0 = none."""


EVENT_PUT: Final = "put"
EVENT_DELETE: Final = "delete"


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One change of one key at one revision (etcd's ``mvccpb.Event``).

    A put's ``kv`` is the version it wrote; a delete's ``kv`` has the key and
    ``mod_revision`` = the delete's revision, everything else 0 or empty (etcd).
    ``prev_kv`` is the key's previous live version (``None`` if it was absent,
    or if compaction dropped it: the events at the compact revision itself have
    none).
    """

    kind: str
    """:data:`EVENT_PUT` or :data:`EVENT_DELETE`."""
    kv: KeyValue
    prev_kv: KeyValue | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Compare:
    """A transaction guard (etcd's ``Compare``): ``<target of key(s)> <result> operand``.

    Over a range (``range_end`` as for :meth:`MVCCStore.range`) it holds only if
    it holds for every key in it. With no key present, a ``VALUE`` compare is
    false and any other compares the target's zero (version, create, mod
    revision and lease are 0 for an absent key).
    """

    key: bytes
    target: CompareTarget
    result: CompareResult
    operand: int | bytes
    """``bytes`` for ``VALUE``, ``int`` for the other targets."""
    range_end: bytes = b""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RangeOp:
    """A range read (etcd's ``RangeRequest``); the fields mean what
    :meth:`MVCCStore.range`'s arguments mean."""

    key: bytes
    range_end: bytes = b""
    revision: int = 0
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class PutOp:
    """A put (etcd's ``PutRequest``)."""

    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    """Return the key's previous version (if it was live) in :attr:`PutResult.prev_kv`."""
    ignore_value: bool = False
    """Keep the key's current value (the key must exist; ``value`` must be empty)."""
    ignore_lease: bool = False
    """Keep the key's current lease (the key must exist; ``lease`` must be 0)."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRangeOp:
    """A delete of a key or a range (etcd's ``DeleteRangeRequest``)."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False
    """Return the deleted versions in :attr:`DeleteResult.prev_kvs`."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnOp:
    """A transaction (etcd's ``TxnRequest``); nested inside another one since etcd 3.3."""

    compares: tuple[Compare, ...] = ()
    success: tuple[Op, ...] = ()
    failure: tuple[Op, ...] = ()


Op: TypeAlias = RangeOp | PutOp | DeleteRangeOp | TxnOp


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RangeResult:
    """The answer to a range read (etcd's ``RangeResponse``)."""

    kvs: tuple[KeyValue, ...]
    """Matching live keys, filtered, sorted, cut to ``limit``; empty with ``count_only``."""
    count: int
    """Number of live keys in the range at the read revision, before filters and limit."""
    more: bool
    """Whether ``limit`` cut ``kvs``."""
    revision: int
    """The store's revision when it answered (not the read revision), as etcd's header."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class PutResult:
    """The answer to a put (etcd's ``PutResponse``)."""

    revision: int
    """Revision of the new version."""
    prev_kv: KeyValue | None = None
    """The key's previous live version, if ``prev_kv`` was asked and there was one."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteResult:
    """The answer to a delete (etcd's ``DeleteRangeResponse``)."""

    revision: int
    """The store's revision after the delete (unchanged if nothing was written)."""
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()
    """The deleted versions, in key order, if ``prev_kv`` was asked."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnResult:
    """The answer to a transaction (etcd's ``TxnResponse``)."""

    succeeded: bool
    """Whether every compare held (the success branch ran)."""
    responses: tuple[OpResult, ...]
    """One result per op of the executed branch, in order."""
    revision: int
    """The store's revision after the transaction."""


OpResult: TypeAlias = RangeResult | PutResult | DeleteResult | TxnResult


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, range_end)`` every key starting with ``prefix``.

    etcd's ``GetPrefixRangeEnd``: drop trailing ``0xff`` bytes and increment the
    last remaining byte. A prefix of only ``0xff`` bytes (or the empty prefix)
    has no upper bound: ``b"\\0"``, "every key from ``prefix`` on". For the
    empty prefix, read from ``key=b"\\0"``.
    """
    end = prefix.rstrip(b"\xff")
    if not end:
        return b"\0"
    return end[:-1] + bytes((end[-1] + 1,))


# --------------------------------------------------------------------------- store

_Version: TypeAlias = tuple[int, int, int, int, bytes]
"""One kept version inside the store: ``(mod_revision, create_revision, version,
lease, value)``; ``version == 0`` marks a tombstone ``(mod_revision, 0, 0, 0, b"")``.

A tuple rather than a :class:`KeyValue`: it is as small, much cheaper to build,
and a tuple of ints and bytes drops out of the cyclic garbage collector's
bookkeeping, which a store of millions of versions would otherwise make every
full collection walk."""

_Entry: TypeAlias = _Version | list[_Version]
"""A key's kept versions: the one version, or a list of >= 2 in revision order."""

_ABSENT: Final[_Version] = (0, 0, 0, 0, b"")
"""What a compare sees for a range with no live key (etcd compares an empty ``KeyValue``)."""

_by_mod_revision = itemgetter(0)
_revision_then_key = itemgetter(0, 1)
_new = object.__new__


def _make_kv(key: bytes, version: _Version, keys_only: bool = False) -> KeyValue:
    """The :class:`KeyValue` for a live version.

    Builds it by storing straight into its slots: :func:`fast_init` removed the
    frozen guard, and this is three times cheaper than the keyword-only
    ``__init__`` on the read path.
    """
    kv: Any = _new(KeyValue)
    kv.key = key
    kv.value = b"" if keys_only else version[4]
    kv.create_revision = version[1]
    kv.mod_revision = version[0]
    kv.version = version[2]
    kv.lease = version[3]
    return cast(KeyValue, kv)


def _visible(entry: _Entry, revision: int) -> _Version | None:
    """The live version of a key at ``revision``, or ``None`` if it was absent then."""
    if isinstance(entry, list):
        v = entry[-1]
        if v[0] > revision:
            i = bisect_right(entry, revision, key=_by_mod_revision) - 1
            if i < 0:
                return None
            v = entry[i]
    else:
        v = entry
        if v[0] > revision:
            return None
    return v if v[2] else None


def _newest(entry: _Entry) -> _Version | None:
    """The key's newest version if it is live, else ``None``."""
    v = entry[-1] if isinstance(entry, list) else entry
    return v if v[2] else None


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


_Found: TypeAlias = tuple[bytes, _Version]
"""A live key and its version, as a range collects them."""

_SORT_KEYS: Final[dict[SortTarget, Callable[[_Found], int | bytes]]] = {
    SortTarget.KEY: lambda found: found[0],
    SortTarget.VERSION: lambda found: found[1][2],
    SortTarget.CREATE: lambda found: found[1][1],
    SortTarget.MOD: lambda found: found[1][0],
    SortTarget.VALUE: lambda found: found[1][4],
}


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
    """The checks of module rule 5 that need no state: what :meth:`MVCCStore.txn`
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


def _compacted(entry: _Entry, revision: int) -> _Entry | list[_Version] | None:
    """What compaction at ``revision`` keeps of a key's versions (module rule 6):
    ``entry`` itself if nothing is dropped, ``None`` if the key disappears,
    else the kept versions (a new list)."""
    if isinstance(entry, list):
        i = bisect_right(entry, revision, key=_by_mod_revision) - 1
        if i < 0:
            return entry
        v = entry[i]
        drop = i + 1 if not v[2] and v[0] < revision else i
        if not drop:
            return entry
        kept = entry[drop:]
        return kept if kept else None
    if not entry[2] and entry[0] < revision:
        return None  # a lone tombstone below the compaction point: the key is gone
    return entry


def _kept_versions(
    keys: Iterable[bytes],
    entries: dict[bytes, _Entry],
    revision: int,
    compact_revision: int,
    compacting: bool,
) -> Iterator[tuple[bytes, Sequence[_Version]]]:
    """Each of ``keys`` with the versions a snapshot at ``revision`` holds: at
    or below ``revision`` (a list may have grown since it was captured), less
    what a compaction at ``compact_revision`` still under way drops (rule 6)."""
    for key in keys:
        entry: _Entry | None = entries[key]
        if isinstance(entry, list):
            versions: list[_Version] = entry[:]  # one atomic copy
            if versions[-1][0] > revision:
                versions = [v for v in versions if v[0] <= revision]
            entry = versions
        if compacting:
            entry = _compacted(entry, compact_revision)  # type: ignore[arg-type]
        if entry is not None:
            yield key, entry if isinstance(entry, list) else (entry,)


def _packed_items(
    packer: msgpack.Packer, items: list[tuple[bytes, Sequence[_Version]]]
) -> memoryview:
    """``items`` packed as msgpack array elements: the array less its header."""
    header = len(packer.pack_array_header(len(items)))
    return memoryview(packer.pack(items))[header:]


class MVCCStore:
    """An in-memory multi-version key space with etcd v3's semantics (see the module rules).

    Not thread-safe; a replica applies to it from one place.
    """

    __slots__ = (
        "_entries",
        "_index",
        "_superseded_keys",
        "_superseded_revs",
        "_superseded_head",
        "_compact_cut",
        "_floor_tombstones",
        "_pending_compaction",
        "_revision",
        "_compact_revision",
        "_size",
        "_versions",
        "_live",
        "_feed",
        "_feed_key",
        "_feed_revision",
    )

    def __init__(self) -> None:
        """An empty store at revision 1, never compacted."""
        self._entries: dict[bytes, _Entry] = {}
        # Invariant: a key's entry holds its kept versions (at least one, at most
        # one per revision, in revision order). A tombstone follows a live
        # version, except as a key's first kept version, which then has
        # mod_revision == _compact_revision (module rule 6).
        self._index = KeyIndex()
        # Invariant: the keys of _index are exactly the keys of _entries.
        self._superseded_keys: list[bytes] = []
        self._superseded_revs = array("q")
        self._superseded_head = 0
        self._compact_cut = 0
        # Invariant: from _superseded_head on, one (revision, key) pair per kept
        # version that a later write superseded, in revision order: the key, and
        # the revision of the write that superseded it. A compaction at r can
        # drop a version only if it was superseded at or before r, so the keys
        # compact(r) must visit are those of the pairs up to r -- a pass that
        # costs what the history since the last compaction wrote, not the whole
        # key space.
        self._floor_tombstones: list[bytes] = []
        # Invariant: the keys whose first kept version is a tombstone (left at
        # the compact revision, rule 6): a later compaction drops it, though no
        # write superseded it.
        self._pending_compaction: list[bytes] = []
        # Invariant: the keys whose versions below _compact_revision may not be
        # freed yet (compact() is logical at once, compact_step() physical in
        # slices) are those of _pending_compaction and of the superseded pairs
        # from _superseded_head up to _compact_cut.
        self._revision = 1
        # Invariant: every kept version's mod_revision <= _revision.
        self._compact_revision = 0
        # Invariant: 0 <= _compact_revision <= _revision; only a key's first kept
        # version may have mod_revision <= _compact_revision -- except keys in
        # _pending_compaction, whose older versions no read can reach any more.
        self._size = 0
        # Invariant: _size == sum(len(key) + len(value) + VERSION_OVERHEAD_BYTES)
        # over all kept versions.
        self._versions = 0
        # Invariant: the number of kept versions, tombstones included.
        self._live = 0
        # Invariant: the number of keys whose newest version is live.
        self._feed_key: bytes | None = None
        self._feed: list[bytes] = []
        self._feed_revision = 0
        # Invariant: the change feed, only keys (the versions are in _entries):
        # the keys written at _feed_revision are [_feed_key] if it is not None
        # (a plain put: two stores on the hot path), else _feed.

    def __repr__(self) -> str:
        return (
            f"MVCCStore(revision={self._revision}, compact_revision={self._compact_revision}, "
            f"keys={self._live}, versions={self._versions}, size_bytes={self._size})"
        )

    # ------------------------------------------------------------------ state

    @property
    def revision(self) -> int:
        """The current store revision (1 for a fresh store)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction; 0 until the first one."""
        return self._compact_revision

    @property
    def size_bytes(self) -> int:
        """Logical size of every kept version (module rule 7)."""
        return self._size

    @property
    def key_count(self) -> int:
        """Number of live keys at the current revision."""
        return self._live

    @property
    def version_count(self) -> int:
        """Number of kept versions, tombstones included."""
        return self._versions

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The live version of ``key`` at ``revision`` (``<= 0``: current), or ``None``.

        Raises:
            EmptyKeyError: ``key`` is empty.
            FutureRevisionError: ``revision`` is above the current revision.
            CompactedError: ``revision`` is below the compact revision.
        """
        if not key:
            raise EmptyKeyError()
        entry = self._entries.get(key)
        if revision <= 0:
            if entry is None:
                return None
            v = entry[-1] if isinstance(entry, list) else entry
        else:
            self._check_revision(revision, self._revision)
            if entry is None:
                return None
            found = _visible(entry, revision)
            if found is None:
                return None
            v = found
        if not v[2]:
            return None
        kv: Any = _new(KeyValue)  # as _make_kv, inlined: this is the hot read path
        kv.key = key
        kv.value = v[4]
        kv.create_revision = v[1]
        kv.mod_revision = v[0]
        kv.version = v[2]
        kv.lease = v[3]
        return cast(KeyValue, kv)

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: SortOrder = SortOrder.NONE,
        sort_target: SortTarget = SortTarget.KEY,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
    ) -> RangeResult:
        """Read the live keys of a range at a revision (etcd's ``Range``).

        Args:
            key: first key of the range (not empty).
            range_end: ``b""``: only ``key``; ``b"\\0"``: every key ``>= key``;
                otherwise the keys in ``[key, range_end)``.
            revision: the revision to read at; ``<= 0`` reads the current one.
            limit: at most this many ``kvs`` (``<= 0``: no limit); ``more`` tells
                whether it cut any.
            keys_only: return versions with empty values.
            count_only: return only ``count``.
            sort_order: ``NONE`` is ascending key order; with a ``sort_target``
                other than ``KEY``, ``NONE`` means ``ASCEND``. Sorting happens
                before ``limit``.
            sort_target: the field to sort by.
            min_mod_revision: drop keys with a lower mod revision (0: no bound).
            max_mod_revision: drop keys with a higher mod revision (0: no bound).
            min_create_revision: drop keys with a lower create revision (0: no bound).
            max_create_revision: drop keys with a higher create revision (0: no bound).

        Returns:
            The keys, ``count`` (of live keys in the range at the read revision,
            before the revision bounds and ``limit``), ``more``, and the current
            store revision.

        Raises:
            EmptyKeyError: ``key`` is empty.
            FutureRevisionError: ``revision`` is above the current revision.
            CompactedError: ``revision`` is below the compact revision.
        """
        if not key:
            raise EmptyKeyError()
        return self._range(
            RangeOp(
                key=key,
                range_end=range_end,
                revision=revision,
                limit=limit,
                keys_only=keys_only,
                count_only=count_only,
                sort_order=sort_order,
                sort_target=sort_target,
                min_mod_revision=min_mod_revision,
                max_mod_revision=max_mod_revision,
                min_create_revision=min_create_revision,
                max_create_revision=max_create_revision,
            ),
            self._revision,
        )

    def _check_revision(self, revision: int, current: int) -> None:
        """etcd's ``rangeKeys`` bounds for an explicit ``revision > 0``."""
        if revision > current:
            raise FutureRevisionError(current)
        if revision < self._compact_revision:
            raise CompactedError(self._compact_revision)

    def _collect(self, key: bytes, range_end: bytes, revision: int | None) -> list[_Found]:
        """The live keys of a range, in key order, with their versions.

        At ``revision``, or with ``revision=None`` as of the newest versions
        (which include the writes of a running transaction).
        """
        entries = self._entries
        if not range_end:
            entry = entries.get(key)
            if entry is None:
                return []
            v = _newest(entry) if revision is None else _visible(entry, revision)
            return [] if v is None else [(key, v)]
        hi = None if range_end == b"\0" else range_end
        found: list[_Found] = []
        append = found.append
        if revision is None:
            for k in self._index.irange(key, hi):
                v = _newest(entries[k])
                if v is not None:
                    append((k, v))
        else:
            for k in self._index.irange(key, hi):
                entry = entries[k]
                # _visible, inlined for the common case of the newest version.
                v = entry[-1] if isinstance(entry, list) else entry
                if v[0] > revision:
                    older = _visible(entry, revision)
                    if older is None:
                        continue
                    v = older
                if v[2]:
                    append((k, v))
        return found

    def _range(self, op: RangeOp, current: int) -> RangeResult:
        """Execute a range with ``current`` as the revision "now" (etcd's
        ``rangeKeys`` followed by ``executeRange``'s filters, sort and limit)."""
        revision = op.revision
        if revision <= 0:
            revision = current
        else:
            self._check_revision(revision, current)
        found = self._collect(op.key, op.range_end, revision)
        count = len(found)
        if op.count_only:
            return RangeResult(kvs=(), count=count, more=False, revision=current)
        if op.max_mod_revision:
            found = [f for f in found if f[1][0] <= op.max_mod_revision]
        if op.min_mod_revision:
            found = [f for f in found if f[1][0] >= op.min_mod_revision]
        if op.max_create_revision:
            found = [f for f in found if f[1][1] <= op.max_create_revision]
        if op.min_create_revision:
            found = [f for f in found if f[1][1] >= op.min_create_revision]
        order, target = op.sort_order, op.sort_target
        if target is not SortTarget.KEY and order is SortOrder.NONE:
            order = SortOrder.ASCEND
        if not (
            order is SortOrder.NONE or (target is SortTarget.KEY and order is SortOrder.ASCEND)
        ):
            # Stable: ties keep ascending key order, also when descending.
            found.sort(key=_SORT_KEYS[target], reverse=order is SortOrder.DESCEND)
        more = 0 < op.limit < len(found)
        if more:
            found = found[: op.limit]
        kvs: list[KeyValue] = []
        append = kvs.append
        keys_only = op.keys_only
        for k, v in found:
            kv: Any = _new(KeyValue)  # as _make_kv, inlined: ranges build many
            kv.key = k
            kv.value = b"" if keys_only else v[4]
            kv.create_revision = v[1]
            kv.mod_revision = v[0]
            kv.version = v[2]
            kv.lease = v[3]
            append(kv)
        return RangeResult(kvs=tuple(kvs), count=count, more=more, revision=current)

    # ------------------------------------------------------------------ writes

    def put(
        self, key: bytes, value: bytes, lease: int = 0, *, prev_kv: bool = True
    ) -> tuple[int, KeyValue | None]:
        """Set ``key`` to ``value`` in a new revision (etcd's ``Put``).

        Args:
            key: the key (not empty).
            value: its new value.
            lease: the lease to attach it to (0: none).
            prev_kv: whether to return the previous version; ``False`` saves
                building it on a path that does not need it.

        Returns:
            The new revision and the key's previous live version (``None`` if it
            was absent, or not asked for).

        Raises:
            EmptyKeyError: ``key`` is empty.
        """
        revision, prev = self._put(key, value, lease)
        if prev is None or not prev_kv:
            return revision, None
        return revision, _make_kv(key, prev)

    def put_found(self, key: bytes, value: bytes, lease: int = 0) -> tuple[int, bool]:
        """:meth:`put` without building the previous version: the new revision
        and whether ``key`` was live before (the single-key write's hot path).

        Raises:
            EmptyKeyError: ``key`` is empty.
        """
        revision, prev = self._put(key, value, lease)
        return revision, prev is not None

    def _put(self, key: bytes, value: bytes, lease: int) -> tuple[int, _Version | None]:
        if not key:
            raise EmptyKeyError()
        revision = self._revision + 1
        prev = self._write_put(key, value, lease, revision)
        self._revision = revision
        self._feed_key = key
        self._feed_revision = revision
        return revision, prev

    def delete_range(self, key: bytes, range_end: bytes = b"") -> tuple[int, tuple[KeyValue, ...]]:
        """Delete ``key`` or a range of keys (etcd's ``DeleteRange``).

        ``range_end`` is as for :meth:`range`. Deleting nothing does not move the
        revision.

        Returns:
            The store's revision afterwards and the deleted versions in key order.

        Raises:
            EmptyKeyError: ``key`` is empty.
        """
        if not key:
            raise EmptyKeyError()
        found = self._collect(key, range_end, None)
        if not found:
            return self._revision, ()
        revision = self._revision + 1
        for k, _ in found:
            self._write_tombstone(k, revision)
        self._revision = revision
        self._feed_key = None
        self._feed = [k for k, _ in found]
        self._feed_revision = revision
        return revision, tuple(_make_kv(k, v) for k, v in found)

    def _write_put(self, key: bytes, value: bytes, lease: int, revision: int) -> _Version | None:
        """Append a put at ``revision``; return the previous version if it was live."""
        entries = self._entries
        entry = entries.get(key)
        prev: _Version | None
        if entry is None:
            entries[key] = (revision, revision, 1, lease, value)
            self._index.add(key)
            self._live += 1
            prev = None
        else:
            last = entry[-1] if isinstance(entry, list) else entry
            if last[2]:
                v = (revision, last[1], last[2] + 1, lease, value)
                prev = last
            else:
                v = (revision, revision, 1, lease, value)
                self._live += 1
                prev = None
            if isinstance(entry, list):
                entry.append(v)
            else:
                entries[key] = [entry, v]
            self._superseded_keys.append(key)
            self._superseded_revs.append(revision)
        self._size += len(key) + len(value) + VERSION_OVERHEAD_BYTES
        self._versions += 1
        return prev

    def _write_tombstone(self, key: bytes, revision: int) -> None:
        """Append a tombstone at ``revision`` to a key whose newest version is live."""
        tomb: _Version = (revision, 0, 0, 0, b"")
        entry = self._entries[key]
        if isinstance(entry, list):
            entry.append(tomb)
        else:
            self._entries[key] = [entry, tomb]
        self._superseded_keys.append(key)
        self._superseded_revs.append(revision)
        self._live -= 1
        self._size += len(key) + VERSION_OVERHEAD_BYTES
        self._versions += 1

    # ------------------------------------------------------------------ transactions

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

    # ------------------------------------------------------------------ change feed

    def last_written(self) -> tuple[int, tuple[bytes, ...]] | None:
        """The current revision and the keys written at it, in write order, if
        this store object wrote it (``None`` in a fresh or restored store until
        its first write)."""
        if self._feed_revision != self._revision:
            return None
        if self._feed_key is not None:
            return self._revision, (self._feed_key,)
        return self._revision, tuple(self._feed)

    def last_events(self) -> tuple[int, tuple[Event, ...]] | None:
        """The events of the current revision, in key order, with ``prev_kv``
        (``None`` as for :meth:`last_written`)."""
        written = self.last_written()
        if written is None:
            return None
        revision, keys = written
        entries = self._entries
        events: list[Event] = []
        for key in sorted(keys):
            entry = entries[key]
            if isinstance(entry, list):
                events.append(self._event(key, entry, len(entry) - 1))
            else:
                events.append(self._event(key, [entry], 0))
        return revision, tuple(events)

    def _event(self, key: bytes, versions: list[_Version], i: int) -> Event:
        """The event of ``versions[i]``; its ``prev_kv`` unless compaction dropped it."""
        v = versions[i]
        prev_kv = None
        if i > 0 and v[0] > self._compact_revision:
            p = versions[i - 1]
            if p[2]:
                prev_kv = _make_kv(key, p)
        ev: Any = _new(Event)
        ev.kind = EVENT_PUT if v[2] else EVENT_DELETE
        ev.kv = _make_kv(key, v)
        ev.prev_kv = prev_kv
        return cast(Event, ev)

    def events_between(
        self, key: bytes, range_end: bytes, start_revision: int, end_revision: int
    ) -> list[Event]:
        """Every change to a key or range at revisions ``start..end`` (both
        included; ``end`` is cut to the current revision), in revision order
        and within a revision in key order -- what a watcher from
        ``start_revision`` must see.

        ``range_end`` is as for :meth:`range`. The history is complete from the
        compact revision on: a change at the compact revision itself is kept
        (module rule 6), but without its ``prev_kv``.

        Raises:
            EmptyKeyError: ``key`` is empty.
            CompactedError: ``start_revision`` is below the compact revision.
        """
        if not key:
            raise EmptyKeyError()
        if start_revision < self._compact_revision:
            raise CompactedError(self._compact_revision)
        end_revision = min(end_revision, self._revision)
        if start_revision > end_revision:
            return []
        entries = self._entries
        if not range_end:
            keys: Iterable[bytes] = (key,) if key in entries else ()
        else:
            keys = self._index.irange(key, None if range_end == b"\0" else range_end)
        found: list[tuple[int, bytes, list[_Version], int]] = []
        for k in keys:
            entry = entries[k]
            if isinstance(entry, list):
                versions = entry
                i = bisect_right(versions, start_revision - 1, key=_by_mod_revision)
            else:
                versions = [entry]
                i = 0 if entry[0] >= start_revision else 1
            while i < len(versions) and versions[i][0] <= end_revision:
                found.append((versions[i][0], k, versions, i))
                i += 1
        found.sort(key=_revision_then_key)
        return [self._event(k, versions, i) for _, k, versions, i in found]

    def live_leases(self) -> list[tuple[bytes, int]]:
        """``(key, lease)`` of every live key attached to a lease, in key order."""
        out: list[tuple[bytes, int]] = []
        entries = self._entries
        for key in self._index:
            entry = entries[key]
            v = entry[-1] if isinstance(entry, list) else entry
            if v[2] and v[3]:
                out.append((key, v[3]))
        return out

    # ------------------------------------------------------------------ compaction

    def compact(self, revision: int) -> None:
        """Drop the history no read at ``revision`` or later needs (module rule 6).

        Logically at once: from now on reads below ``revision`` raise
        :class:`CompactedError`, and :meth:`to_wire` holds only what rule 6
        keeps. Physically in slices: the old versions are freed by
        :meth:`compact_step`, which walks the versions superseded since the last
        compaction (about 0.5 µs each, seconds for millions -- too long for one
        call on a node's event loop). Nothing observable depends on how far the
        physical pass got but :attr:`size_bytes` and memory.

        Raises:
            CompactedError: ``revision`` is not above the compact revision.
            FutureRevisionError: ``revision`` is above the current revision.
        """
        if revision <= self._compact_revision:
            raise CompactedError(self._compact_revision)
        if revision > self._revision:
            raise FutureRevisionError(self._revision)
        self._compact_revision = revision
        # The pass visits the keys with a version superseded at or before
        # ``revision`` -- the superseded pairs up to the cut -- and those left
        # with a tombstone first (the invariants in __init__). A pass under way
        # just goes on to the new cut (compacting a key is idempotent, and uses
        # the newest compact revision). O(log n) here: the keys are visited by
        # compact_step, not listed now.
        self._compact_cut = bisect_right(
            self._superseded_revs, revision, lo=max(self._superseded_head, self._compact_cut)
        )
        self._pending_compaction.extend(self._floor_tombstones)
        self._floor_tombstones = []

    @property
    def compacting(self) -> bool:
        """Whether a physical compaction pass is unfinished (:meth:`compact_step`)."""
        return bool(self._pending_compaction) or self._superseded_head < self._compact_cut

    def compact_step(self, budget: int) -> bool:
        """Free the old versions of up to ``budget`` keys; whether work is left.

        The order of the pass (set order) reaches nothing observable: each key
        is compacted on its own, and reads and :meth:`to_wire` see the compacted
        store whatever the pass reached.
        """
        pending = self._pending_compaction
        head, cut = self._superseded_head, self._compact_cut
        if not pending and head >= cut:
            return False
        # This slice's keys: the tombstones left first, then the next pairs.
        batch = [pending.pop() for _ in range(min(budget, len(pending)))]
        take = min(budget - len(batch), cut - head)
        if take > 0:
            keys = self._superseded_keys
            batch += keys[head : head + take]
            head += take
            if head > 4096 and head * 2 > len(keys):
                # Forget the pairs visited (amortized: once per halving).
                del keys[:head]
                del self._superseded_revs[:head]
                self._compact_cut = cut - head
                head = 0
            self._superseded_head = head
        revision = self._compact_revision
        entries = self._entries
        floor_tombstones = self._floor_tombstones
        index = self._index
        dropped_size = 0
        dropped_versions = 0
        for key in batch:
            entry = entries.get(key)
            if entry is None:
                continue
            if entry.__class__ is list:
                last = entry[-1]
                if last[2] and last[0] <= revision:
                    # The common case: every version at or below the point, the
                    # newest live -- it alone stays (rule 6).
                    drop = len(entry) - 1
                    dropped_versions += drop
                    dropped_size += drop * (len(key) + VERSION_OVERHEAD_BYTES) + sum(
                        [len(v[4]) for v in entry[:drop]]
                    )
                    entries[key] = last
                    continue
            kept = _compacted(entry, revision)
            if kept is entry:
                continue
            if kept is None:
                versions = entry if isinstance(entry, list) else [entry]
                dropped_versions += len(versions)
                dropped_size += len(versions) * (len(key) + VERSION_OVERHEAD_BYTES) + sum(
                    [len(v[4]) for v in versions]
                )
                del entries[key]
                index.discard(key)
                continue
            assert isinstance(entry, list)
            drop = len(entry) - len(kept)
            dropped_versions += drop
            dropped_size += drop * (len(key) + VERSION_OVERHEAD_BYTES) + sum(
                [len(v[4]) for v in entry[:drop]]
            )
            first = entry[drop]
            # A new list, not ``del entry[:drop]``: a capture (snapshot) taken
            # before may still share the old one (capture()).
            entries[key] = kept if len(kept) > 1 else first
            if not first[2]:
                floor_tombstones.append(key)
        self._size -= dropped_size
        self._versions -= dropped_versions
        return self.compacting

    # ------------------------------------------------------------------ snapshots

    def to_wire(self) -> list[object]:
        """Everything the store holds, as plain msgpack-able sequences, ints and bytes.

        ``[WIRE_FORMAT, revision, compact_revision, keys]`` where ``keys`` is
        ``[[key, versions], ...]`` in key order and each version is
        ``(mod_revision, create_revision, version, lease, value)`` in revision
        order (a tombstone is ``(mod_revision, 0, 0, 0, b"")``). Versions are
        tuples shared with the store (immutable); msgpack writes them as arrays.
        Equal stores give equal results.
        """
        keys = [
            [key, list(versions)]
            for key, versions in _kept_versions(
                self._index, self._entries, self._revision, self._compact_revision, self.compacting
            )
        ]
        return [WIRE_FORMAT, self._revision, self._compact_revision, keys]

    def capture(self) -> Callable[[], bytes]:
        """Capture the store now; the returned function packs :meth:`to_wire`'s
        result as of the capture (``msgpack.packb(to_wire(), use_bin_type=True)``,
        byte for byte), and may run in another thread while the store goes on
        changing (a replica encoding a snapshot off its event loop).

        The capture copies only the key order and the entry map (~0.2 ms for
        10,000 keys): a key's list of versions is shared, which is safe because
        the store only ever appends to a list (versions above the captured
        revision, which the packing leaves out) or replaces it (compaction makes
        a new list); versions themselves are immutable tuples.

        The packing takes a chunk of keys per msgpack call (:data:`_PACK_CHUNK_KEYS`
        keys, or :data:`_PACK_CHUNK_BYTES` of values): one call for the whole
        store would hold the GIL, and stall the node's event loop, for the whole
        encoding (~80 ms for 63 MB), and one call per key costs 40 % more CPU.
        """
        keys = list(self._index)
        entries = self._entries.copy()
        revision, compact_revision = self._revision, self._compact_revision
        compacting = self.compacting

        def pack() -> bytes:
            packer = msgpack.Packer(use_bin_type=True)
            parts: list[bytes | memoryview] = []
            count = 0
            chunk: list[tuple[bytes, Sequence[_Version]]] = []
            chunk_bytes = 0
            items = _kept_versions(keys, entries, revision, compact_revision, compacting)
            for item in items:
                chunk.append(item)
                versions = item[1]
                chunk_bytes += len(versions) * len(versions[-1][4])  # about: the last value's
                if len(chunk) >= _PACK_CHUNK_KEYS or chunk_bytes >= _PACK_CHUNK_BYTES:
                    parts.append(_packed_items(packer, chunk))
                    count += len(chunk)
                    chunk, chunk_bytes = [], 0
            if chunk:
                parts.append(_packed_items(packer, chunk))
                count += len(chunk)
            head = [packer.pack_array_header(4), packer.pack(WIRE_FORMAT)]
            head += [packer.pack(revision), packer.pack(compact_revision)]
            head.append(packer.pack_array_header(count))
            return b"".join(head + parts)

        return pack

    @classmethod
    def from_wire(cls, wire: object) -> MVCCStore:
        """Rebuild a store from :meth:`to_wire`'s result (also after a msgpack round trip).

        The result answers every read at every readable revision as the original
        did, and continues with the same revisions.

        Raises:
            InvalidSnapshotError: ``wire`` is not something :meth:`to_wire` makes.
        """
        if not isinstance(wire, list | tuple) or len(wire) != 4:
            raise InvalidSnapshotError("not a 4-element list")
        fmt, revision, compact_revision, keys = wire
        if type(fmt) is not int or fmt != WIRE_FORMAT:
            raise InvalidSnapshotError(f"format {fmt!r}, expected {WIRE_FORMAT}")
        if type(revision) is not int or type(compact_revision) is not int:
            raise InvalidSnapshotError("revisions are not integers")
        if revision < 1 or not 0 <= compact_revision <= revision:
            raise InvalidSnapshotError(
                f"revision {revision}, compact revision {compact_revision}: out of order"
            )
        if not isinstance(keys, list | tuple):
            raise InvalidSnapshotError("keys are not a list")
        store = cls()
        entries = store._entries
        superseded: list[tuple[int, bytes]] = []
        ordered: list[bytes] = []
        size = versions_total = live = 0
        previous_key: bytes | None = None
        for item in keys:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise InvalidSnapshotError("a key is not a [key, versions] pair")
            key, raw_versions = item
            if type(key) is not bytes or not key:
                raise InvalidSnapshotError(f"bad key {key!r}")
            if previous_key is not None and not previous_key < key:
                raise InvalidSnapshotError(f"key {key!r} out of order")
            previous_key = key
            versions = _decode_versions(key, raw_versions, revision, compact_revision)
            ordered.append(key)
            if len(versions) == 1:
                entries[key] = versions[0]
            else:
                entries[key] = versions
                superseded.extend((v[0], key) for v in versions[1:])
            if not versions[0][2]:
                store._floor_tombstones.append(key)
            if versions[-1][2]:
                live += 1
            versions_total += len(versions)
            for v in versions:
                size += len(key) + len(v[4]) + VERSION_OVERHEAD_BYTES
        superseded.sort(key=itemgetter(0))
        store._superseded_keys = [key for _, key in superseded]
        store._superseded_revs = array("q", [rev for rev, _ in superseded])
        store._index = KeyIndex(ordered)
        store._revision = revision
        store._compact_revision = compact_revision
        store._size = size
        store._versions = versions_total
        store._live = live
        return store

    def state_digest(self) -> str:
        """SHA-256 (hex) of :meth:`to_wire` packed with msgpack: equal stores, equal digests."""
        packed = msgpack.packb(self.to_wire(), use_bin_type=True)
        return hashlib.sha256(packed).hexdigest()


def _decode_versions(
    key: bytes, raw: object, revision: int, compact_revision: int
) -> list[_Version]:
    """One key's versions from the wire, checked against the store's invariants."""
    if not isinstance(raw, list | tuple) or not raw:
        raise InvalidSnapshotError(f"key {key!r}: no versions")
    out: list[_Version] = []
    prev: _Version | None = None
    for fields in raw:
        if not isinstance(fields, list | tuple) or len(fields) != 5:
            raise InvalidSnapshotError(f"key {key!r}: a version is not 5 fields")
        mod, create, version, lease, value = fields
        if not (type(mod) is type(create) is type(version) is type(lease) is int):
            raise InvalidSnapshotError(f"key {key!r}: non-integer revision, version or lease")
        if type(value) is not bytes:
            raise InvalidSnapshotError(f"key {key!r}: value is not bytes")
        where = f"key {key!r} at revision {mod}"
        if not 2 <= mod <= revision:
            raise InvalidSnapshotError(f"{where}: revision outside [2, {revision}]")
        if prev is not None and mod <= prev[0]:
            raise InvalidSnapshotError(f"{where}: revisions not increasing")
        if prev is not None and mod <= compact_revision:
            raise InvalidSnapshotError(f"{where}: history below the compact revision")
        if version == 0:
            if create or lease or value:
                raise InvalidSnapshotError(f"{where}: a tombstone with content")
            if prev is None and mod != compact_revision:
                raise InvalidSnapshotError(f"{where}: a tombstone without the version it deletes")
            if prev is not None and not prev[2]:
                raise InvalidSnapshotError(f"{where}: a tombstone after a tombstone")
        elif version < 0:
            raise InvalidSnapshotError(f"{where}: negative version")
        elif prev is not None and prev[2]:
            if version != prev[2] + 1 or create != prev[1]:
                raise InvalidSnapshotError(f"{where}: does not follow the version before it")
        elif prev is not None or mod > compact_revision:
            if version != 1 or create != mod:
                raise InvalidSnapshotError(f"{where}: a created key must be version 1")
        elif not (create == mod if version == 1 else 1 <= create < mod):
            raise InvalidSnapshotError(f"{where}: create revision does not fit its version")
        v: _Version = (mod, create, version, lease, value)
        out.append(v)
        prev = v
    return out
