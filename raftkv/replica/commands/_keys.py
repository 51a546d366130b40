"""The commands on keys and the key space: put, delete, compare-and-set,
multi-put, get, range, delete-range, compaction and the NOSPACE alarm.

Rule: each validates its fields when built (``__post_init__``), with the
checks of :mod:`._values`, so a decoded command is as checked as a new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from raftkv.core.frozen import fast_init
from raftkv.replica.commands._values import (
    _SEQ_MAX,
    ABSENT,
    SORT_ORDERS,
    SORT_TARGETS,
    Absent,
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
