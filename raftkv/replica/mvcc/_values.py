"""The MVCC store's requests and answers: etcd v3's messages as frozen values.

Rule: plain data, built once and never changed (``fast_init`` dataclasses:
cheap to build on the read path); what they mean is the store's business
(:class:`~raftkv.replica.mvcc.MVCCStore`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeAlias

from raftkv.core.frozen import fast_init


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
