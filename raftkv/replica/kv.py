"""The replicated key/value state machine: commands, results, sessions, snapshots.

Rules:

1. **Pure and deterministic.** :meth:`KVStateMachine.apply` is a function of the
   state and the entry's bytes. It never reads a clock, an RNG or the environment,
   so replicas that apply the same log end in the same state and
   :meth:`~KVStateMachine.snapshot` returns the same bytes on each of them.
2. **Log time, not local time.** Every command carries ``time_ms``, assigned by the
   leader when it proposed the command. The state machine's clock is the largest
   ``time_ms`` applied so far (``log_time_ms``), so it never runs backwards even if
   a new leader's wall clock is behind the old one's.
3. **Exactly-once writes** (Ongaro's dissertation §6.3). A command may carry a
   session ``(client_id, seq, owner)``. The session table remembers, per client,
   the highest ``seq`` applied, the *outcome* of that command (success, not
   found or conflict; its index; whether the key existed) -- never a value --,
   its owner and the log time it was last active. A command whose ``seq`` equals
   the last one is answered from that outcome without being applied again
   (:meth:`KVStateMachine.apply` says what such a replay carries); an older
   ``seq`` gets the ``"stale sequence"`` error. A session expires when
   ``log_time_ms - last_active_ms > session_ttl_ms``, checked at apply time, so
   every replica expires the same sessions at the same entry. Sessions are
   created implicitly by a client's first command: a retry that arrives after its
   session expired is indistinguishable from a new client and is applied again,
   so the TTL must exceed any client's retry deadline by far.
4. **Bounded sessions.** A session belongs to the ``owner`` it was created with
   (``None``: none); a command of another owner is refused
   (:data:`ERR_SESSION_OWNER`) and changes nothing. A command that would create a
   session beyond ``max_sessions`` in total, or ``max_sessions_per_owner`` for its
   owner, is refused (:data:`ERR_TOO_MANY_SESSIONS`,
   :data:`ERR_TOO_MANY_OWNER_SESSIONS`); existing sessions keep working. A
   session costs at most :data:`MAX_SESSION_SNAPSHOT_BYTES` of a snapshot. These
   limits and the TTL decide what is applied, so every replica must use the same
   values: they are constants of the release (the defaults below), not options.
5. **Bad input is a result, not an exception.** Commands are validated when built
   (:class:`InvalidCommand`, for the API to turn into a 400); bytes that fail to
   decode at apply time produce ``KVResult(ok=False, error="invalid command: ...")``
   on every replica alike. Only caller misuse of the state machine itself (indexes
   that do not increase) raises.
6. **Absent is not null.** A key may hold the JSON value ``null``; that is
   different from the key being absent. :data:`ABSENT` is the compare-and-set
   expectation "the key does not exist"; ``expect=None`` means "the key holds null".
   (The HTTP API maps ``"expect": null`` to :data:`ABSENT`.)

Keys are non-empty strings of at most :data:`MAX_KEY_BYTES` bytes of UTF-8 with no
control characters. Values are JSON values: ``None``, ``bool``, ``int`` (64-bit),
finite ``float``, ``str``, ``list`` and ``dict`` with string keys. Values returned
by :meth:`KVStateMachine.read` and in results are shared with the store: callers
must not mutate them.

Commands and snapshots are msgpack. Snapshots list keys and sessions sorted, and
hold ``applied_index`` and ``log_time_ms``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final, TypeAlias

import msgpack

from raftkv.core.errors import RaftKVError

__all__ = [
    "JSONValue",
    "Absent",
    "ABSENT",
    "MAX_KEY_BYTES",
    "MAX_VALUE_DEPTH",
    "DEFAULT_SESSION_TTL_MS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_OWNER",
    "MAX_SESSION_SNAPSHOT_BYTES",
    "OWNER_CHARS",
    "ERR_NOT_FOUND",
    "ERR_CONFLICT",
    "ERR_STALE_SEQUENCE",
    "ERR_INVALID_COMMAND",
    "ERR_SESSION_OWNER",
    "ERR_TOO_MANY_SESSIONS",
    "ERR_TOO_MANY_OWNER_SESSIONS",
    "KVError",
    "InvalidCommand",
    "InvalidSnapshot",
    "Session",
    "Put",
    "Delete",
    "Cas",
    "MultiPut",
    "Get",
    "Command",
    "KVResult",
    "KVStateMachine",
    "encode_command",
    "decode_command",
    "check_key",
    "check_value",
    "json_equal",
    "parse_idempotency_key",
    "format_idempotency_key",
]

JSONValue: TypeAlias = bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"] | None

MAX_KEY_BYTES: Final = 1024
"""Longest key, in bytes of UTF-8."""
MAX_VALUE_DEPTH: Final = 64
"""Deepest nesting of lists/objects allowed in a value."""
MAX_CLIENT_ID_CHARS: Final = 128
DEFAULT_SESSION_TTL_MS: Final = 10 * 60 * 1000
DEFAULT_MAX_SESSIONS: Final = 100_000
"""Most client sessions alive at once, in total (at most ~17 MB of a snapshot)."""
DEFAULT_MAX_SESSIONS_PER_OWNER: Final = 10_000
"""Most client sessions alive at once with the same owner (client token)."""
MAX_SESSION_SNAPSHOT_BYTES: Final = 177
"""The most one session adds to a snapshot: its msgpack array of a 128-character
client id (130), seq, last-active time and index (9 each), outcome and found (1
each) and a 16-character owner (17), plus the array's own header (1)."""
OWNER_CHARS: Final = 16
"""Length of a session owner: lowercase hex digits."""

ERR_NOT_FOUND: Final = "not found"
ERR_CONFLICT: Final = "conflict"
ERR_STALE_SEQUENCE: Final = "stale sequence"
ERR_INVALID_COMMAND: Final = "invalid command"
ERR_SESSION_OWNER: Final = "session belongs to another client token"
"""The command's client id names a session created by another owner (token)."""
ERR_TOO_MANY_SESSIONS: Final = "too many client sessions"
"""Creating the command's session would exceed ``max_sessions``."""
ERR_TOO_MANY_OWNER_SESSIONS: Final = "too many client sessions for this client token"
"""Creating the command's session would exceed ``max_sessions_per_owner``."""

# Version 2: sessions hold outcomes, never values (version 1 cached whole results,
# values included; restore() still reads it and drops the values).
_SNAPSHOT_VERSION: Final = 2
_SNAPSHOT_VERSIONS: Final = (1, 2)
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


# ----------------------------------------------------------------------------- sessions


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


# ----------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class Put:
    """Set ``key`` to ``value``."""

    op: ClassVar[str] = "put"
    key: str
    value: JSONValue
    time_ms: int
    session: Session | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        check_value(self.value)
        _check_time(self.time_ms)


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


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiPut:
    """Set every key of ``pairs`` at once (one entry, so all or nothing)."""

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


Command: TypeAlias = Put | Delete | Cas | MultiPut | Get


def _check_time(time_ms: object) -> None:
    if type(time_ms) is not int or not 0 <= time_ms <= _SEQ_MAX:
        raise InvalidCommand(f"time_ms must be a non-negative integer, not {time_ms!r}")


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
    else:
        body["key"] = command.key
    if isinstance(command, Put | Cas):
        body["value"] = command.value
    if isinstance(command, Cas):
        body["expect_absent"] = command.expect is ABSENT
        body["expect"] = None if command.expect is ABSENT else command.expect
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


def decode_command(data: bytes) -> Command:
    """Parse bytes written by :func:`encode_command`.

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
    raise InvalidCommand(f"unknown operation {op!r}")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True, kw_only=True)
class KVResult:
    """The outcome of one command (or local read).

    Attributes:
        ok: whether the operation succeeded.
        index: the log index of the entry that produced this result (for a
            replayed write, the index of the original); for
            :meth:`KVStateMachine.read`, the applied index the read was served at.
        value: the value read (get / read).
        found: whether the key existed before the command (get, delete, cas, put).
        error: ``None`` on success, else :data:`ERR_NOT_FOUND`,
            :data:`ERR_CONFLICT`, :data:`ERR_STALE_SEQUENCE`,
            :data:`ERR_SESSION_OWNER`, :data:`ERR_TOO_MANY_SESSIONS`,
            :data:`ERR_TOO_MANY_OWNER_SESSIONS`, or a message starting with
            :data:`ERR_INVALID_COMMAND`.
        current: on a cas conflict, the key's current value (``None`` with
            ``found=False`` if the key is absent); ``None`` and not known when
            ``replayed``.
        replayed: the answer to a retry (a session's last ``seq`` again),
            rebuilt from the session's record; nothing was applied.
    """

    ok: bool
    index: int
    value: JSONValue = None
    found: bool = False
    error: str | None = None
    current: JSONValue = None
    replayed: bool = False

    @property
    def executed(self) -> bool:
        """Whether the command was carried out at :attr:`index` (successfully or
        not): not a replay, not refused by the session table, not undecodable."""
        return not self.replayed and (
            self.error is None or self.error in (ERR_NOT_FOUND, ERR_CONFLICT)
        )


# ----------------------------------------------------------------------------- state machine


class _Outcome(enum.IntEnum):
    """What a session remembers of its last command (its snapshot code)."""

    OK = 0
    NOT_FOUND = 1
    CONFLICT = 2
    READ = 3  # a get: a retry reads again


_OUTCOME_ERRORS: Final = {
    _Outcome.OK: None,
    _Outcome.NOT_FOUND: ERR_NOT_FOUND,
    _Outcome.CONFLICT: ERR_CONFLICT,
    _Outcome.READ: None,
}


@dataclass(slots=True)
class _SessionRecord:
    """A client session: its last command's ``seq`` and outcome, never a value."""

    seq: int
    index: int  # of the entry that applied ``seq``
    outcome: _Outcome
    found: bool  # the key existed before that command
    last_active_ms: int
    owner: str | None

    def to_wire(self, client_id: str) -> list[Any]:
        return [
            client_id,
            self.seq,
            self.last_active_ms,
            self.index,
            int(self.outcome),
            self.found,
            self.owner,
        ]

    @classmethod
    def from_wire(cls, item: object) -> tuple[str, _SessionRecord]:
        """A version-2 snapshot item.

        Raises:
            InvalidSnapshot, InvalidCommand: not one.
        """
        if not isinstance(item, list) or len(item) != 7:
            raise InvalidSnapshot(
                "session items must be [id, seq, last_active, index, outcome, found, owner]"
            )
        cid, seq, last_active, index, outcome, found, owner = item
        Session(client_id=cid, seq=seq, owner=owner)  # validates
        if type(last_active) is not int or type(index) is not int:
            raise InvalidSnapshot("session last_active and index must be integers")
        if type(outcome) is not int or not isinstance(found, bool):
            raise InvalidSnapshot("session outcome must be an integer and found a boolean")
        try:
            code = _Outcome(outcome)
        except ValueError:
            raise InvalidSnapshot(f"unknown session outcome {outcome}") from None
        return cid, cls(seq, index, code, found, last_active, owner)

    @classmethod
    def from_wire_v1(cls, item: object) -> tuple[str, _SessionRecord]:
        """A version-1 snapshot item ``[id, seq, last_active, cached result]``: its
        outcome is kept, the values in the cached result are dropped.

        Raises:
            InvalidSnapshot, InvalidCommand: not one.
        """
        if not isinstance(item, list) or len(item) != 4:
            raise InvalidSnapshot("session items must be [id, seq, last_active, result]")
        cid, seq, last_active, raw = item
        Session(client_id=cid, seq=seq)  # validates
        if type(last_active) is not int:
            raise InvalidSnapshot("session last_active must be an integer")
        if not isinstance(raw, list) or len(raw) != 6:
            raise InvalidSnapshot("cached result must be a list of 6 items")
        ok, index, value, found, error, _current = raw
        if not isinstance(ok, bool) or not isinstance(found, bool) or type(index) is not int:
            raise InvalidSnapshot("cached result has bad ok/index/found")
        if ok and error is None:
            # Only a get's result held a value; a retried get reads again.
            outcome = _Outcome.OK if value is None else _Outcome.READ
        elif not ok and error == ERR_NOT_FOUND:
            outcome = _Outcome.NOT_FOUND
        elif not ok and error == ERR_CONFLICT:
            outcome = _Outcome.CONFLICT
        else:
            raise InvalidSnapshot(f"cached result has an unknown error {error!r}")
        return cid, cls(seq, index, outcome, found, last_active, None)


class KVStateMachine:
    """The key/value store replicated by raftkv; implements ``StateMachine``.

    Every argument decides what is applied: every replica must use the same values
    (the server uses the defaults).

    Args:
        session_ttl_ms: how long (in log time) a client session lives after its
            last command.
        max_sessions: most sessions alive at once; a command that would create
            one more is refused with :data:`ERR_TOO_MANY_SESSIONS`.
        max_sessions_per_owner: most sessions alive at once with the same (not
            ``None``) owner; beyond: :data:`ERR_TOO_MANY_OWNER_SESSIONS`.
        decode_cache: a dict shared by the replicas of one process (the
            simulator's), so each command's bytes are decoded once rather than
            once per replica. Decoded commands are immutable values.
    """

    def __init__(
        self,
        *,
        session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_sessions_per_owner: int = DEFAULT_MAX_SESSIONS_PER_OWNER,
        decode_cache: dict[bytes, Command] | None = None,
    ) -> None:
        if session_ttl_ms <= 0:
            raise ValueError("session_ttl_ms must be positive")
        if max_sessions <= 0 or max_sessions_per_owner <= 0:
            raise ValueError("max_sessions and max_sessions_per_owner must be positive")
        self._session_ttl_ms = session_ttl_ms
        self._max_sessions = max_sessions
        self._max_sessions_per_owner = max_sessions_per_owner
        self._decoded = decode_cache
        # Invariant: a value is never changed in place, only replaced or removed
        # (snapshot_later's shallow copy relies on it).
        self._data: dict[str, JSONValue] = {}
        # Invariant: ordered by last_active_ms, non-decreasing (oldest first), so
        # expiry pops from the front.
        self._sessions: dict[str, _SessionRecord] = {}
        # Invariant: owner -> how many records of _sessions have it (> 0; no None).
        self._owner_sessions: dict[str, int] = {}
        # Invariant: the index of the last entry passed to apply() (or restored).
        self._applied_index = 0
        # Invariant: the largest time_ms of any command applied (or restored).
        self._log_time_ms = 0

    # ------------------------------------------------------------------ inspection

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied or restored."""
        return self._applied_index

    @property
    def log_time_ms(self) -> int:
        """The state machine's clock: the largest ``time_ms`` applied so far."""
        return self._log_time_ms

    @property
    def session_ttl_ms(self) -> int:
        return self._session_ttl_ms

    def sessions(self) -> dict[str, tuple[int, int]]:
        """``client_id -> (last seq, last active log time)``, sorted by client id."""
        return {cid: (rec.seq, rec.last_active_ms) for cid, rec in sorted(self._sessions.items())}

    def read(self, key: str) -> KVResult:
        """Read ``key`` from local state (after a ReadIndex barrier, or stale).

        ``index`` is the applied index the value is current as of.
        """
        if key in self._data:
            return KVResult(ok=True, index=self._applied_index, value=self._data[key], found=True)
        return KVResult(ok=False, index=self._applied_index, error=ERR_NOT_FOUND)

    def items(self) -> Iterator[tuple[str, JSONValue]]:
        """``(key, value)`` pairs in key order."""
        for key in sorted(self._data):
            yield key, self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    # ------------------------------------------------------------------ StateMachine

    def apply(self, index: int, command: bytes) -> KVResult:
        """Apply the committed entry at ``index``.

        Empty ``command`` bytes are the leader's no-op. Never raises for bad
        command bytes (see the module rules).

        A retry (the session's last ``seq`` again) is not applied; its result has
        ``replayed=True`` and, for a write, the first attempt's ``ok``, ``error``,
        ``found`` and ``index``. A replayed conflict has no ``current`` (the
        value then was not kept, and the value now may match the expectation,
        which would contradict the conflict). A replayed get reads the key again,
        at ``index`` (a get changes nothing, so answering it later is still
        linearizable).

        Raises:
            KVError: if ``index`` is not above :attr:`applied_index`.
        """
        if index <= self._applied_index:
            raise KVError(f"apply({index}) after index {self._applied_index}: must increase")
        self._applied_index = index
        if not command:
            return KVResult(ok=True, index=index)
        cache = self._decoded
        cmd = cache.get(command) if cache is not None else None
        if cmd is None:
            try:
                cmd = decode_command(command)
            except InvalidCommand as exc:
                return KVResult(ok=False, index=index, error=f"{ERR_INVALID_COMMAND}: {exc}")
            if cache is not None:
                cache[command] = cmd
        self._advance_time(cmd.time_ms)
        session = cmd.session
        if session is None:
            return self._execute(index, cmd)
        cid = session.client_id
        record = self._sessions.get(cid)
        if record is None:
            refusal = self._refuse_new_session(session.owner)
            if refusal is not None:
                return KVResult(ok=False, index=index, error=refusal)
            if session.owner is not None:
                self._owner_sessions[session.owner] = self._owner_sessions.get(session.owner, 0) + 1
        elif record.owner != session.owner:
            # Before the sequence checks: another owner neither moves the session
            # nor learns anything of it (not even its sequence).
            return KVResult(ok=False, index=index, error=ERR_SESSION_OWNER)
        elif session.seq <= record.seq:
            # A retry (or a straggler): answer without applying again (§6.3).
            self._touch(cid, record)
            if session.seq == record.seq:
                return self._replay(index, record, cmd)
            return KVResult(ok=False, index=index, error=ERR_STALE_SEQUENCE)
        result = self._execute(index, cmd)
        if isinstance(cmd, Get):
            outcome = _Outcome.READ
        elif result.error == ERR_NOT_FOUND:
            outcome = _Outcome.NOT_FOUND
        elif result.error == ERR_CONFLICT:
            outcome = _Outcome.CONFLICT
        else:
            outcome = _Outcome.OK
        self._sessions.pop(cid, None)  # re-inserted last: the newest activity
        self._sessions[cid] = _SessionRecord(
            seq=session.seq,
            index=index,
            outcome=outcome,
            found=result.found,
            last_active_ms=self._log_time_ms,
            owner=session.owner,
        )
        return result

    def snapshot(self) -> bytes:
        """The whole state as deterministic msgpack (keys and sessions sorted)."""
        return self.snapshot_later()()

    def snapshot_later(self) -> Callable[[], bytes]:
        """Capture the state now; the returned function encodes that capture as
        :meth:`snapshot` would have, and may run in another thread while
        :meth:`apply` goes on (``SnapshotsLater``).

        The capture is a shallow copy of the key space (a C-level dict copy,
        about 20 ms per million keys) and of the session records: values are
        never changed in place, only replaced, so the copy stays as of now.
        """
        data = self._data.copy()
        sessions = [rec.to_wire(cid) for cid, rec in self._sessions.items()]
        applied_index, log_time_ms = self._applied_index, self._log_time_ms

        def encode() -> bytes:
            body = {
                "version": _SNAPSHOT_VERSION,
                "applied_index": applied_index,
                "log_time_ms": log_time_ms,
                "data": [[key, data[key]] for key in sorted(data)],
                "sessions": sorted(sessions, key=lambda wire: str(wire[0])),
            }
            encoded: bytes = msgpack.packb(body, use_bin_type=True)
            return encoded

        return encode

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot; on error the state is unchanged.

        Reads version 1 too (sessions with cached results; their values are
        dropped). Sessions beyond the caps are kept; new ones are refused until
        enough expire.

        Raises:
            InvalidSnapshot: if ``data`` was not produced by :meth:`snapshot`.
        """
        try:
            body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # msgpack raises many unrelated types on bad input
            raise InvalidSnapshot(f"not msgpack: {exc}") from exc
        if not isinstance(body, dict) or body.get("version") not in _SNAPSHOT_VERSIONS:
            raise InvalidSnapshot("not a raftkv KV snapshot (version 1 or 2)")
        read_session = (
            _SessionRecord.from_wire if body["version"] == 2 else _SessionRecord.from_wire_v1
        )
        applied_index = body.get("applied_index")
        log_time_ms = body.get("log_time_ms")
        if type(applied_index) is not int or type(log_time_ms) is not int:
            raise InvalidSnapshot("snapshot needs integer applied_index and log_time_ms")
        raw_data = body.get("data")
        raw_sessions = body.get("sessions")
        if not isinstance(raw_data, list) or not isinstance(raw_sessions, list):
            raise InvalidSnapshot("snapshot needs data and sessions lists")
        try:
            store: dict[str, JSONValue] = {}
            for pair in raw_data:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise InvalidSnapshot("data items must be [key, value]")
                store[check_key(pair[0])] = check_value(pair[1])
            records = [read_session(item) for item in raw_sessions]
        except InvalidCommand as exc:
            raise InvalidSnapshot(str(exc)) from exc
        records.sort(key=lambda r: (r[1].last_active_ms, r[0]))  # restore the invariant
        sessions = dict(records)
        if len(sessions) != len(records):
            raise InvalidSnapshot("a client id appears twice in the sessions")
        owners: dict[str, int] = {}
        for record in sessions.values():
            if record.owner is not None:
                owners[record.owner] = owners.get(record.owner, 0) + 1
        self._data = store
        self._sessions = sessions
        self._owner_sessions = owners
        self._applied_index = applied_index
        self._log_time_ms = log_time_ms

    # ------------------------------------------------------------------ internals

    def _advance_time(self, time_ms: int) -> None:
        """Move log time forward (never back) and expire idle sessions."""
        if time_ms > self._log_time_ms:
            self._log_time_ms = time_ms
        horizon = self._log_time_ms - self._session_ttl_ms
        while self._sessions:
            cid, record = next(iter(self._sessions.items()))
            if record.last_active_ms >= horizon:
                break
            del self._sessions[cid]
            if record.owner is not None:
                left = self._owner_sessions.pop(record.owner) - 1
                if left:
                    self._owner_sessions[record.owner] = left

    def _refuse_new_session(self, owner: str | None) -> str | None:
        """The error that refuses a new session of ``owner``, or None to create it."""
        if len(self._sessions) >= self._max_sessions:
            return ERR_TOO_MANY_SESSIONS
        if owner is not None and self._owner_sessions.get(owner, 0) >= self._max_sessions_per_owner:
            return ERR_TOO_MANY_OWNER_SESSIONS
        return None

    def _touch(self, cid: str, record: _SessionRecord) -> None:
        """Mark a session active now (last in the expiry order)."""
        record.last_active_ms = self._log_time_ms
        del self._sessions[cid]
        self._sessions[cid] = record

    def _replay(self, index: int, record: _SessionRecord, cmd: Command) -> KVResult:
        """The answer to a retry of the session's last command (see :meth:`apply`)."""
        if record.outcome is _Outcome.READ and isinstance(cmd, Get):
            return replace(self._execute(index, cmd), replayed=True)
        return KVResult(
            ok=record.outcome in (_Outcome.OK, _Outcome.READ),
            index=record.index,
            found=record.found,
            error=_OUTCOME_ERRORS[record.outcome],
            replayed=True,
        )

    def _execute(self, index: int, cmd: Command) -> KVResult:
        if isinstance(cmd, Put):
            found = cmd.key in self._data
            self._data[cmd.key] = cmd.value
            return KVResult(ok=True, index=index, found=found)
        if isinstance(cmd, Delete):
            if self._data.pop(cmd.key, ABSENT) is ABSENT:
                return KVResult(ok=False, index=index, error=ERR_NOT_FOUND)
            return KVResult(ok=True, index=index, found=True)
        if isinstance(cmd, Cas):
            found = cmd.key in self._data
            current = self._data.get(cmd.key)
            if cmd.expect is ABSENT:
                matches = not found
            else:
                matches = found and json_equal(current, cmd.expect)
            if not matches:
                return KVResult(
                    ok=False, index=index, found=found, error=ERR_CONFLICT, current=current
                )
            self._data[cmd.key] = cmd.value
            return KVResult(ok=True, index=index, found=found)
        if isinstance(cmd, MultiPut):
            self._data.update(cmd.pairs)
            return KVResult(ok=True, index=index)
        if cmd.key in self._data:
            return KVResult(ok=True, index=index, value=self._data[cmd.key], found=True)
        return KVResult(ok=False, index=index, error=ERR_NOT_FOUND)
