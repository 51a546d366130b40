"""The KV store's commands: what a client asks, validated, as it travels in the log.

Rules:

1. **Validated when built.** Every command class checks its fields in
   ``__post_init__`` (keys, JSON values, ranges, sessions, log time) and raises
   :class:`InvalidCommand`, which the API turns into a 400 before anything is
   proposed. A command decoded from the log is built the same way, so a replica
   never acts on a malformed one.
2. **msgpack on the wire, and old entries stay readable.** :func:`encode_command`
   writes a map with an ``"op"`` and the command's fields; :func:`decode_command`
   reads every format a released version wrote (a log outlives an upgrade).
3. **Keys are text, values are JSON** at this level (the ``/v1`` API's model);
   the store underneath holds bytes: a key's UTF-8, a value's compact JSON text
   (:func:`json_text`). Ranges follow etcd's conventions on those bytes
   (:class:`KeyRange`). The one exception is :class:`EtcdTxn`, the etcd v3
   API's writes: raw key and value bytes, stored exactly as the client sent
   them, in the MVCC store's own vocabulary (:mod:`raftkv.replica.mvcc`).
4. **Log time.** Every command carries ``time_ms``, stamped by the leader when it
   proposed it; the state machine's clock is the largest one applied.

Keys are non-empty strings of at most :data:`MAX_KEY_BYTES` bytes of UTF-8 with no
control characters. Values are JSON values: ``None``, ``bool``, ``int`` (64-bit),
finite ``float``, ``str``, ``list`` and ``dict`` with string keys.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

import msgpack

from raftkv.core.errors import RaftKVError
from raftkv.core.frozen import fast_init
from raftkv.replica.leases import MAX_LEASE_ID, MAX_LEASE_TTL_S
from raftkv.replica.mvcc import (
    Compare as StoreCompare,
)
from raftkv.replica.mvcc import (
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    InvalidRequestError,
    Op,
    PutOp,
    RangeOp,
    SortOrder,
    SortTarget,
    check_txn,
    prefix_range_end,
)
from raftkv.replica.mvcc import (
    TxnOp as StoreTxnOp,
)

__all__ = [
    "JSONValue",
    "Absent",
    "ABSENT",
    "MAX_KEY_BYTES",
    "MAX_VALUE_DEPTH",
    "MAX_CLIENT_ID_CHARS",
    "MAX_TXN_OPS",
    "OWNER_CHARS",
    "KVError",
    "InvalidCommand",
    "InvalidSnapshot",
    "check_key",
    "check_value",
    "json_equal",
    "json_text",
    "Session",
    "parse_idempotency_key",
    "format_idempotency_key",
    "KeyRange",
    "SORT_ORDERS",
    "SORT_TARGETS",
    "COMPARE_TARGETS",
    "COMPARE_OPS",
    "Put",
    "Delete",
    "Cas",
    "MultiPut",
    "Get",
    "Range",
    "DeleteRange",
    "Compare",
    "TxnPut",
    "TxnDelete",
    "TxnRange",
    "TxnOp",
    "Txn",
    "Compact",
    "Alarm",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseCheckpoint",
    "MAX_LEASE_CHECKPOINTS",
    "EtcdTxn",
    "Command",
    "encode_command",
    "decode_command",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

MAX_KEY_BYTES: Final = 1024
"""Longest key, in bytes of UTF-8."""
MAX_VALUE_DEPTH: Final = 64
"""Deepest nesting of lists/objects allowed in a value."""
MAX_CLIENT_ID_CHARS: Final = 128
MAX_TXN_OPS: Final = 128
"""Most compares, and most operations per branch, in one transaction (etcd's
``--max-txn-ops`` default)."""
OWNER_CHARS: Final = 16
"""Length of a session owner: lowercase hex digits."""
MAX_LEASE_CHECKPOINTS: Final = 1000
"""Most leases one :class:`LeaseCheckpoint` carries (etcd's batch size)."""

SORT_ORDERS: Final = ("none", "ascend", "descend")
SORT_TARGETS: Final = ("key", "version", "create_revision", "mod_revision", "value")
COMPARE_TARGETS: Final = ("value", "version", "create_revision", "mod_revision")
COMPARE_OPS: Final = ("==", "!=", "<", ">")

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_SEQ_MAX: Final = 2**63 - 1
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CLIENT_ID_CHARS: Final = re.compile(r"[A-Za-z0-9._:~-]+")
_OWNER: Final = re.compile(f"[0-9a-f]{{{OWNER_CHARS}}}")


# ----------------------------------------------------------------------------- errors


class KVError(RaftKVError):
    """Root of the errors raised by the KV state machine (caller misuse)."""


class InvalidCommand(KVError, ValueError):
    """A command, key, value or idempotency key is not acceptable."""


class InvalidSnapshot(KVError, ValueError):
    """Snapshot bytes that :meth:`KVStateMachine.snapshot` did not produce."""


# ----------------------------------------------------------------------------- values


class Absent(enum.Enum):
    """Type of :data:`ABSENT`, the compare-and-set expectation "no such key"."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent.ABSENT


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid key.

    Raises:
        InvalidCommand: if it is not a non-empty ``str`` of at most
            :data:`MAX_KEY_BYTES` bytes of UTF-8 without control characters.
    """
    if not isinstance(key, str):
        raise InvalidCommand(f"key must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidCommand("key must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidCommand("key is not valid Unicode (lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidCommand(f"key is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    if _CONTROL_CHARS.search(key):
        raise InvalidCommand("key must not contain control characters")
    return key


def check_value(value: object) -> JSONValue:
    """Return ``value`` if it is a JSON value raftkv can store.

    Raises:
        InvalidCommand: for non-JSON types (tuples, bytes, sets, ...), non-string
            object keys, integers outside 64 bits, NaN/infinity, or nesting deeper
            than :data:`MAX_VALUE_DEPTH`.
    """
    if value.__class__ is str or value is None:
        return value  # the common case, without the walk
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if not _INT_MIN <= item <= _INT_MAX:
                raise InvalidCommand("integer out of the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidCommand("NaN and infinity are not JSON values")
        elif isinstance(item, list | dict):
            if depth >= MAX_VALUE_DEPTH:
                raise InvalidCommand(f"value nested deeper than {MAX_VALUE_DEPTH} levels")
            if isinstance(item, dict):
                for k, v in item.items():
                    if not isinstance(k, str):
                        raise InvalidCommand("object keys must be strings")
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
        else:
            raise InvalidCommand(f"{type(item).__name__} is not a JSON value")
    return value  # type: ignore[return-value]  # checked above


def json_equal(a: JSONValue, b: JSONValue) -> bool:
    """JSON equality: like ``==`` but ``true`` is not ``1`` and ``false`` is not ``0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(json_equal(v, b[k]) for k, v in a.items())
        )
    if isinstance(b, list | dict):
        return False
    return a == b


_json_text = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_text(value: JSONValue) -> bytes:
    """A checked JSON value as the store keeps it: compact JSON text in UTF-8.

    Object keys keep their order; numbers as Python writes them (``1``, ``1.5``).
    Deterministic: the same value gives the same bytes on every replica.
    """
    return _json_text(value).encode("utf-8")


# ----------------------------------------------------------------------------- sessions


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A client's identity and the sequence number of one logical write.

    Attributes:
        client_id: 1-128 characters of ``[A-Za-z0-9._:~-]``, unique per client.
        seq: increases by at least one per logical write; a retry reuses it.
        owner: who may use the session: :data:`OWNER_CHARS` lowercase hex digits
            that name the client's token (the API derives them), or ``None``
            (no tokens: anyone may).
    """

    client_id: str
    seq: int
    owner: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not _CLIENT_ID_CHARS.fullmatch(self.client_id):
            raise InvalidCommand(f"invalid client id {self.client_id!r}")
        if len(self.client_id) > MAX_CLIENT_ID_CHARS:
            raise InvalidCommand(f"client id longer than {MAX_CLIENT_ID_CHARS} characters")
        if type(self.seq) is not int or not 1 <= self.seq <= _SEQ_MAX:
            raise InvalidCommand(f"sequence number must be an integer >= 1, not {self.seq!r}")
        if self.owner is not None and (
            not isinstance(self.owner, str) or not _OWNER.fullmatch(self.owner)
        ):
            raise InvalidCommand(f"session owner must be {OWNER_CHARS} lowercase hex digits")


def parse_idempotency_key(header: str) -> tuple[str, int]:
    """Parse an ``Idempotency-Key: CLIENT/SEQ`` header value.

    Returns:
        ``(client_id, seq)``.

    Raises:
        ValueError: (an :class:`InvalidCommand`) if it is not ``CLIENT/SEQ`` with a
            valid client id and a decimal ``seq >= 1``.
    """
    client_id, sep, seq_text = header.strip().rpartition("/")
    if not sep or not seq_text.isascii() or not seq_text.isdigit():
        raise InvalidCommand(f"Idempotency-Key must be CLIENT/SEQ, not {header!r}")
    session = Session(client_id=client_id, seq=int(seq_text))
    return session.client_id, session.seq


def format_idempotency_key(client_id: str, seq: int) -> str:
    """The ``Idempotency-Key`` header value for a session (inverse of the parser)."""
    return f"{client_id}/{seq}"


# ----------------------------------------------------------------------------- ranges


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRange:
    """A key, a key range or a prefix, in etcd's conventions on the keys' UTF-8.

    - ``range_end=None`` and ``prefix=False``: the single ``key``;
    - ``range_end=RANGE_END``: ``[key, range_end)`` (empty if ``range_end <= key``),
      and ``range_end="\\0"`` means every key ``>= key``;
    - ``prefix=True``: every key starting with ``key``; ``key=""`` is every key.
    """

    key: str
    range_end: str | None = None
    prefix: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, bool):
            raise InvalidCommand("prefix must be true or false")
        if self.prefix:
            if self.range_end is not None:
                raise InvalidCommand("a range has a prefix or a range_end, not both")
            if self.key != "":
                check_key(self.key)
            return
        check_key(self.key)
        if self.range_end is not None and self.range_end != "\0":
            try:
                check_key(self.range_end)
            except InvalidCommand as exc:
                raise InvalidCommand(f"bad range_end: {exc}") from None

    @property
    def is_single(self) -> bool:
        """Whether it is one key."""
        return self.range_end is None and not self.prefix

    def to_bytes(self) -> tuple[bytes, bytes]:
        """``(key, range_end)`` as the store's range arguments."""
        key = self.key.encode("utf-8")
        if self.prefix:
            return (key, prefix_range_end(key)) if key else (b"\0", b"\0")
        if self.range_end is None:
            return key, b""
        return key, self.range_end.encode("utf-8")

    def to_wire(self) -> list[object]:
        return [self.key, self.range_end, self.prefix]

    @staticmethod
    def from_wire(raw: object) -> KeyRange:
        if not isinstance(raw, list) or len(raw) != 3:
            raise InvalidCommand("a range must be [key, range_end, prefix]")
        key, range_end, prefix = raw
        if not isinstance(key, str) or not (range_end is None or isinstance(range_end, str)):
            raise InvalidCommand("a range's key and range_end must be strings")
        return KeyRange(key=key, range_end=range_end, prefix=prefix)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidCommand(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _check_count(name: str, value: object, *, limit: int = _SEQ_MAX) -> None:
    if type(value) is not int or not 0 <= value <= limit:
        raise InvalidCommand(f"{name} must be an integer from 0 to {limit}, not {value!r}")


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidCommand(f"{name} must be true or false")


# ----------------------------------------------------------------------------- commands


def _check_time(time_ms: object) -> None:
    if type(time_ms) is not int or not 0 <= time_ms <= _SEQ_MAX:
        raise InvalidCommand(f"time_ms must be a non-negative integer, not {time_ms!r}")


def _check_lease_id(lease_id: object, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if type(lease_id) is not int or not low <= lease_id <= MAX_LEASE_ID:
        raise InvalidCommand(f"lease id must be an integer from {low} to 2**63-1, not {lease_id!r}")


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Put:
    """Set ``key`` to ``value``."""

    op: ClassVar[str] = "put"
    key: str
    value: JSONValue
    time_ms: int
    session: Session | None = None
    lease: int = 0
    """The lease to attach the key to (0: none; the key leaves any lease it had)."""

    def __post_init__(self) -> None:
        check_key(self.key)
        check_value(self.value)
        _check_time(self.time_ms)
        _check_lease_id(self.lease, allow_zero=True)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Delete:
    """Remove ``key``; fails with ``"not found"`` if it is absent."""

    op: ClassVar[str] = "delete"
    key: str
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Cas:
    """Set ``key`` to ``value`` if its current value is ``expect``.

    ``expect=ABSENT`` succeeds only if the key does not exist; ``expect=None``
    only if it holds JSON ``null``.
    """

    op: ClassVar[str] = "cas"
    key: str
    expect: JSONValue | Absent
    value: JSONValue
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        if self.expect is not ABSENT:
            check_value(self.expect)
        check_value(self.value)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class MultiPut:
    """Set every key of ``pairs`` at once (one entry, one revision: all or nothing)."""

    op: ClassVar[str] = "multi_put"
    pairs: Mapping[str, JSONValue]
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pairs, Mapping):
            raise InvalidCommand("multi_put pairs must be a mapping of key to value")
        for key, value in self.pairs.items():
            check_key(key)
            check_value(value)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Get:
    """Read ``key`` through the log (the fallback when ReadIndex is unavailable)."""

    op: ClassVar[str] = "get"
    key: str
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Range:
    """Read a key range through the log; the fields mean what
    :meth:`KVStateMachine.range`'s arguments mean."""

    op: ClassVar[str] = "range"
    range: KeyRange
    time_ms: int
    revision: int = 0
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False
    sort_order: str = "none"
    sort_target: str = "key"
    session: Session | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.range, KeyRange):
            raise InvalidCommand("range must be a KeyRange")
        _check_count("revision", self.revision)
        _check_count("limit", self.limit)
        _check_flag("keys_only", self.keys_only)
        _check_flag("count_only", self.count_only)
        _check_choice("sort_order", self.sort_order, SORT_ORDERS)
        _check_choice("sort_target", self.sort_target, SORT_TARGETS)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRange:
    """Remove every key of ``range`` (one revision if it removed any)."""

    op: ClassVar[str] = "delete_range"
    range: KeyRange
    time_ms: int
    prev_kv: bool = False
    session: Session | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.range, KeyRange):
            raise InvalidCommand("range must be a KeyRange")
        _check_flag("prev_kv", self.prev_kv)
        _check_time(self.time_ms)


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
class Compact:
    """Drop the history below ``revision`` (reads below it fail as compacted)."""

    op: ClassVar[str] = "compact"
    revision: int
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        if type(self.revision) is not int or not 1 <= self.revision <= _SEQ_MAX:
            raise InvalidCommand(f"revision must be an integer >= 1, not {self.revision!r}")
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm:
    """Raise or clear the NOSPACE alarm (proposed by the leader, never by clients):
    while it is raised, writes that add data are refused."""

    op: ClassVar[str] = "alarm"
    active: bool
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_flag("active", self.active)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseGrant:
    """Create a lease of ``ttl_s`` seconds.

    ``id=0``: the state machine assigns one (the entry's index, or the next
    free id above it); ``id > 0``: the client's choice. The node raises
    ``ttl_s`` to its minimum TTL before proposing (the replica does not know
    the election timeout).
    """

    op: ClassVar[str] = "lease_grant"
    id: int
    ttl_s: int
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_lease_id(self.id, allow_zero=True)
        if type(self.ttl_s) is not int or not 1 <= self.ttl_s <= MAX_LEASE_TTL_S:
            raise InvalidCommand(
                f"lease ttl must be an integer from 1 to {MAX_LEASE_TTL_S} seconds, "
                f"not {self.ttl_s!r}"
            )
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRevoke:
    """Remove a lease and delete every key attached to it, in one revision.

    ``expired=True`` marks the revoke the leader's lessor proposed because the
    lease's TTL ran out (the effect is the same).
    """

    op: ClassVar[str] = "lease_revoke"
    id: int
    time_ms: int
    expired: bool = False
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_lease_id(self.id)
        _check_flag("expired", self.expired)
        _check_time(self.time_ms)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseCheckpoint:
    """Record the remaining time of leases, as the leader measured it:
    ``(id, remaining_ms)`` pairs (ids of leases that are gone are ignored).
    Proposed by the leader's lessor, never by clients; changes no revision."""

    op: ClassVar[str] = "lease_checkpoint"
    checkpoints: tuple[tuple[int, int], ...]
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoints, tuple):
            raise InvalidCommand("checkpoints must be a list of [id, remaining_ms]")
        if len(self.checkpoints) > MAX_LEASE_CHECKPOINTS:
            raise InvalidCommand(
                f"too many checkpoints: {len(self.checkpoints)}; "
                f"the limit is {MAX_LEASE_CHECKPOINTS}"
            )
        for pair in self.checkpoints:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise InvalidCommand("a checkpoint must be [id, remaining_ms]")
            _check_lease_id(pair[0])
            _check_count("remaining_ms", pair[1])
        _check_time(self.time_ms)


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


Command: TypeAlias = (
    Put
    | Delete
    | Cas
    | MultiPut
    | Get
    | Range
    | DeleteRange
    | Txn
    | Compact
    | Alarm
    | LeaseGrant
    | LeaseRevoke
    | LeaseCheckpoint
    | EtcdTxn
)


# ----------------------------------------------------------------------------- encoding


def _range_fields(body: dict[str, Any], cmd: Range) -> None:
    body["range"] = cmd.range.to_wire()
    body["revision"] = cmd.revision
    body["limit"] = cmd.limit
    body["keys_only"] = cmd.keys_only
    body["count_only"] = cmd.count_only
    body["sort"] = [cmd.sort_order, cmd.sort_target]


def _txn_op_to_wire(op: TxnOp) -> list[object]:
    if isinstance(op, TxnPut):
        if op.lease:
            return ["put", op.key, op.value, op.lease]
        return ["put", op.key, op.value]
    if isinstance(op, TxnDelete):
        return ["delete", op.range.to_wire(), op.prev_kv]
    return ["range", op.range.to_wire(), op.limit, op.keys_only, op.count_only]


def _txn_op_from_wire(raw: object) -> TxnOp:
    if not isinstance(raw, list) or not raw:
        raise InvalidCommand("a transaction op must be a list")
    kind = raw[0]
    if kind == "put" and len(raw) in (3, 4):
        return TxnPut(key=raw[1], value=raw[2], lease=raw[3] if len(raw) == 4 else 0)
    if kind == "delete" and len(raw) == 3:
        return TxnDelete(range=KeyRange.from_wire(raw[1]), prev_kv=raw[2])
    if kind == "range" and len(raw) == 5:
        return TxnRange(
            range=KeyRange.from_wire(raw[1]), limit=raw[2], keys_only=raw[3], count_only=raw[4]
        )
    raise InvalidCommand(f"unknown transaction op {str(raw)[:60]}")


def encode_command(command: Command, *, time_ms: int | None = None) -> bytes:
    """Serialize a command for a log entry (msgpack).

    The command was validated when it was constructed. ``time_ms``, if given,
    is recorded instead of ``command.time_ms`` (the leader stamping a forwarded
    command, without building and validating it again).

    Raises:
        InvalidCommand: ``time_ms`` is not a valid log time, or the command
            cannot be encoded.
    """
    if time_ms is not None:
        _check_time(time_ms)
    body: dict[str, Any] = {"op": command.op}
    if isinstance(command, MultiPut):
        body["pairs"] = dict(command.pairs)
    elif isinstance(command, Put | Delete | Cas | Get):
        body["key"] = command.key
    if isinstance(command, Put | Cas):
        body["value"] = command.value
    if isinstance(command, Put) and command.lease:
        body["lease"] = command.lease  # absent for no lease: old entries read alike
    if isinstance(command, Cas):
        body["expect_absent"] = command.expect is ABSENT
        body["expect"] = None if command.expect is ABSENT else command.expect
    elif isinstance(command, Range):
        _range_fields(body, command)
    elif isinstance(command, DeleteRange):
        body["range"] = command.range.to_wire()
        body["prev_kv"] = command.prev_kv
    elif isinstance(command, Txn):
        body["compares"] = [[c.range.to_wire(), c.target, c.cmp, c.value] for c in command.compares]
        body["success"] = [_txn_op_to_wire(op) for op in command.success]
        body["failure"] = [_txn_op_to_wire(op) for op in command.failure]
    elif isinstance(command, Compact):
        body["revision"] = command.revision
    elif isinstance(command, Alarm):
        body["active"] = command.active
    elif isinstance(command, LeaseGrant):
        body["id"] = command.id
        body["ttl_s"] = command.ttl_s
    elif isinstance(command, LeaseRevoke):
        body["id"] = command.id
        if command.expired:
            body["expired"] = True
    elif isinstance(command, LeaseCheckpoint):
        body["checkpoints"] = [list(pair) for pair in command.checkpoints]
    elif isinstance(command, EtcdTxn):
        body["txn"] = _etcd_txn_to_wire(command.compares, command.success, command.failure)
    body["time_ms"] = command.time_ms if time_ms is None else time_ms
    if command.session is not None:
        body["session"] = [command.session.client_id, command.session.seq]
        if command.session.owner is not None:
            # A field of its own: a decoder that predates owners ignores it.
            body["session_owner"] = command.session.owner
    try:
        data: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate
        raise InvalidCommand(f"cannot encode command: {exc}") from exc
    return data


def _field(fields: dict[str, Any], name: str) -> Any:
    """A field of a decoded command, or None; the dataclasses validate its type."""
    return fields.get(name)


def _tuple(raw: object, name: str) -> list[Any]:
    if not isinstance(raw, list):
        raise InvalidCommand(f"{name} must be a list")
    return raw


def decode_command(data: bytes) -> Command:
    """Parse bytes written by :func:`encode_command` (of any released version).

    Raises:
        InvalidCommand: if ``data`` is not a valid command.
    """
    try:
        body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise InvalidCommand(f"not msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidCommand("command is not a map")
    fields: dict[str, Any] = body
    op = fields.get("op")
    time_ms = _field(fields, "time_ms")
    raw_session = _field(fields, "session")
    owner = _field(fields, "session_owner")
    session: Session | None = None
    if raw_session is not None:
        if not isinstance(raw_session, list) or len(raw_session) != 2:
            raise InvalidCommand("session must be [client_id, seq]")
        session = Session(client_id=raw_session[0], seq=raw_session[1], owner=owner)
    elif owner is not None:
        raise InvalidCommand("session_owner without a session")
    if op == "put":
        return Put(
            key=_field(fields, "key"),
            value=_field(fields, "value"),
            time_ms=time_ms,
            session=session,
            lease=fields.get("lease", 0),
        )
    if op == "delete":
        return Delete(key=_field(fields, "key"), time_ms=time_ms, session=session)
    if op == "cas":
        expect_absent = _field(fields, "expect_absent")
        if not isinstance(expect_absent, bool):
            raise InvalidCommand("cas needs expect_absent")
        return Cas(
            key=_field(fields, "key"),
            expect=ABSENT if expect_absent else _field(fields, "expect"),
            value=_field(fields, "value"),
            time_ms=time_ms,
            session=session,
        )
    if op == "multi_put":
        return MultiPut(pairs=_field(fields, "pairs"), time_ms=time_ms, session=session)
    if op == "get":
        return Get(key=_field(fields, "key"), time_ms=time_ms, session=session)
    if op == "range":
        sort = _tuple(_field(fields, "sort"), "sort")
        if len(sort) != 2:
            raise InvalidCommand("sort must be [order, target]")
        return Range(
            range=KeyRange.from_wire(_field(fields, "range")),
            revision=_field(fields, "revision"),
            limit=_field(fields, "limit"),
            keys_only=_field(fields, "keys_only"),
            count_only=_field(fields, "count_only"),
            sort_order=sort[0],
            sort_target=sort[1],
            time_ms=time_ms,
            session=session,
        )
    if op == "delete_range":
        return DeleteRange(
            range=KeyRange.from_wire(_field(fields, "range")),
            prev_kv=_field(fields, "prev_kv"),
            time_ms=time_ms,
            session=session,
        )
    if op == "txn":
        compares = []
        for raw in _tuple(_field(fields, "compares"), "compares"):
            if not isinstance(raw, list) or len(raw) != 4:
                raise InvalidCommand("a compare must be [range, target, op, value]")
            compares.append(
                Compare(range=KeyRange.from_wire(raw[0]), target=raw[1], cmp=raw[2], value=raw[3])
            )
        return Txn(
            compares=tuple(compares),
            success=tuple(_txn_op_from_wire(r) for r in _tuple(_field(fields, "success"), "s")),
            failure=tuple(_txn_op_from_wire(r) for r in _tuple(_field(fields, "failure"), "f")),
            time_ms=time_ms,
            session=session,
        )
    if op == "compact":
        return Compact(revision=_field(fields, "revision"), time_ms=time_ms, session=session)
    if op == "alarm":
        return Alarm(active=_field(fields, "active"), time_ms=time_ms, session=session)
    if op == "lease_grant":
        return LeaseGrant(
            id=_field(fields, "id"), ttl_s=_field(fields, "ttl_s"), time_ms=time_ms, session=session
        )
    if op == "lease_revoke":
        return LeaseRevoke(
            id=_field(fields, "id"),
            expired=fields.get("expired", False),
            time_ms=time_ms,
            session=session,
        )
    if op == "lease_checkpoint":
        pairs = []
        for raw in _tuple(_field(fields, "checkpoints"), "checkpoints"):
            if not isinstance(raw, list) or len(raw) != 2:
                raise InvalidCommand("a checkpoint must be [id, remaining_ms]")
            pairs.append((raw[0], raw[1]))
        return LeaseCheckpoint(checkpoints=tuple(pairs), time_ms=time_ms, session=session)
    if op == "etcd_txn":
        txn = _etcd_op_from_wire(["t", *_tuple(_field(fields, "txn"), "txn")])
        assert isinstance(txn, StoreTxnOp)
        return EtcdTxn(
            compares=txn.compares,
            success=txn.success,
            failure=txn.failure,
            time_ms=time_ms,
            session=session,
        )
    raise InvalidCommand(f"unknown operation {op!r}")


# ----------------------------------------------------------------------------- etcd ops
#
# An EtcdTxn's wire form: [compares, success, failure], each a list; a compare
# is [key, range_end, target, result, operand] (enums as their etcd numbers),
# an op a list tagged "r" (range), "p" (put), "d" (delete) or "t" (nested txn).


def _etcd_txn_to_wire(
    compares: tuple[StoreCompare, ...], success: tuple[Op, ...], failure: tuple[Op, ...]
) -> list[object]:
    return [
        [[c.key, c.range_end, c.target.value, c.result.value, c.operand] for c in compares],
        [_etcd_op_to_wire(op) for op in success],
        [_etcd_op_to_wire(op) for op in failure],
    ]


def _etcd_op_to_wire(op: Op) -> list[object]:
    if isinstance(op, PutOp):
        return ["p", op.key, op.value, op.lease, op.prev_kv, op.ignore_value, op.ignore_lease]
    if isinstance(op, DeleteRangeOp):
        return ["d", op.key, op.range_end, op.prev_kv]
    if isinstance(op, RangeOp):
        return [
            "r",
            op.key,
            op.range_end,
            op.revision,
            op.limit,
            op.keys_only,
            op.count_only,
            op.sort_order.value,
            op.sort_target.value,
            op.min_mod_revision,
            op.max_mod_revision,
            op.min_create_revision,
            op.max_create_revision,
        ]
    return ["t", *_etcd_txn_to_wire(op.compares, op.success, op.failure)]


def _bytes(raw: object) -> bytes:
    if not isinstance(raw, bytes):
        raise InvalidCommand("an etcd key or value must be bytes")
    return raw


def _int(raw: object) -> int:
    if type(raw) is not int or not _INT_MIN <= raw <= _SEQ_MAX:
        raise InvalidCommand("an etcd revision, limit or lease must be a 64-bit integer")
    return raw


def _bool(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise InvalidCommand("an etcd flag must be true or false")
    return raw


def _enum(kind: type[enum.Enum], raw: object) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise InvalidCommand(f"bad {kind.__name__} {raw!r}") from None


def _etcd_compare_from_wire(raw: object) -> StoreCompare:
    if not isinstance(raw, list) or len(raw) != 5:
        raise InvalidCommand("an etcd compare must be [key, range_end, target, result, operand]")
    target = _enum(CompareTarget, raw[2])
    operand = _bytes(raw[4]) if target is CompareTarget.VALUE else _int(raw[4])
    return StoreCompare(
        key=_bytes(raw[0]),
        range_end=_bytes(raw[1]),
        target=target,
        result=_enum(CompareResult, raw[3]),
        operand=operand,
    )


def _etcd_op_from_wire(raw: object, depth: int = 0) -> Op:
    if not isinstance(raw, list) or not raw:
        raise InvalidCommand("an etcd op must be a non-empty list")
    kind = raw[0]
    if kind == "p" and len(raw) == 7:
        return PutOp(
            key=_bytes(raw[1]),
            value=_bytes(raw[2]),
            lease=_int(raw[3]),
            prev_kv=_bool(raw[4]),
            ignore_value=_bool(raw[5]),
            ignore_lease=_bool(raw[6]),
        )
    if kind == "d" and len(raw) == 4:
        return DeleteRangeOp(key=_bytes(raw[1]), range_end=_bytes(raw[2]), prev_kv=_bool(raw[3]))
    if kind == "r" and len(raw) == 13:
        return RangeOp(
            key=_bytes(raw[1]),
            range_end=_bytes(raw[2]),
            revision=_int(raw[3]),
            limit=_int(raw[4]),
            keys_only=_bool(raw[5]),
            count_only=_bool(raw[6]),
            sort_order=_enum(SortOrder, raw[7]),
            sort_target=_enum(SortTarget, raw[8]),
            min_mod_revision=_int(raw[9]),
            max_mod_revision=_int(raw[10]),
            min_create_revision=_int(raw[11]),
            max_create_revision=_int(raw[12]),
        )
    if kind == "t" and len(raw) == 4:
        if depth > MAX_VALUE_DEPTH:
            raise InvalidCommand(f"etcd transactions nested deeper than {MAX_VALUE_DEPTH}")
        compares, success, failure = (_tuple(part, "an etcd txn part") for part in raw[1:])
        return StoreTxnOp(
            compares=tuple(_etcd_compare_from_wire(c) for c in compares),
            success=tuple(_etcd_op_from_wire(op, depth + 1) for op in success),
            failure=tuple(_etcd_op_from_wire(op, depth + 1) for op in failure),
        )
    raise InvalidCommand(f"unknown etcd op {str(raw)[:60]}")
