"""What every KV command is built of: keys, JSON values, sessions, key ranges,
the limits on them, and the errors for bad ones.

Rule: each check lives here once (:func:`check_key`, :func:`check_value`, the
``_check_*`` helpers); a command's ``__post_init__`` calls them, and raises
:class:`InvalidCommand` -- the API's 400 -- for anything they refuse.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Final, TypeAlias

from raftkv.core.errors import RaftKVError
from raftkv.core.frozen import fast_init
from raftkv.replica.leases import MAX_LEASE_ID
from raftkv.replica.mvcc import (
    prefix_range_end,
)

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


def _check_time(time_ms: object) -> None:
    if type(time_ms) is not int or not 0 <= time_ms <= _SEQ_MAX:
        raise InvalidCommand(f"time_ms must be a non-negative integer, not {time_ms!r}")


def _check_lease_id(lease_id: object, *, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if type(lease_id) is not int or not low <= lease_id <= MAX_LEASE_ID:
        raise InvalidCommand(f"lease id must be an integer from {low} to 2**63-1, not {lease_id!r}")
