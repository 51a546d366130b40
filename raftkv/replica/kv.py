"""The replicated key/value state machine: an MVCC key space with etcd's semantics,
client sessions, a space quota.

Rules:

1. **Pure and deterministic.** :meth:`KVStateMachine.apply` is a function of the
   state and the entry's bytes. It never reads a clock, an RNG or the environment,
   so replicas that apply the same log end in the same state and
   :meth:`~KVStateMachine.snapshot` returns the same bytes on each of them.
2. **Log time, not local time.** Every command carries ``time_ms``, assigned by the
   leader when it proposed the command. The state machine's clock is the largest
   ``time_ms`` applied so far (``log_time_ms``), so it never runs backwards even if
   a new leader's wall clock is behind the old one's.
3. **Revisions** (:mod:`raftkv.replica.mvcc`, etcd's): one store revision, 1 in a
   fresh store, +1 per command that changes something -- a put, a delete that
   finds a key, a transaction whose executed branch writes; every key has its
   ``create_revision``, ``mod_revision`` and ``version``; reads may ask for an
   older revision until compaction drops it. A multi-put and a transaction are
   one revision however many keys they write.
4. **Exactly-once writes** (Ongaro's dissertation §6.3; :mod:`raftkv.replica.sessions`).
   A command may carry a session ``(client_id, seq, owner)``. A command whose
   ``seq`` equals the session's last one is answered from the session's record
   without being applied again (:meth:`KVStateMachine.apply` says what such a
   replay carries); an older ``seq`` gets :data:`ERR_STALE_SEQUENCE`; another
   owner's command :data:`ERR_SESSION_OWNER`; a new session beyond the limits
   :data:`ERR_TOO_MANY_SESSIONS` / :data:`ERR_TOO_MANY_OWNER_SESSIONS`. A refused
   command changes nothing and is not recorded.
5. **Space quota.** While the NOSPACE alarm is raised (an :class:`Alarm` entry,
   proposed by the leader when the store's size passes ``--quota-bytes``),
   commands that would write a value -- a put, a successful CAS, a multi-put, a
   transaction whose executed branch puts -- are refused with :data:`ERR_NOSPACE`;
   reads, deletes and compaction still work. Everything is decided by entries,
   so every replica refuses alike.
6. **Bad input is a result, not an exception.** Commands are validated when built
   (:class:`InvalidCommand`, for the API to turn into a 400); bytes that fail to
   decode at apply time produce ``KVResult(ok=False, error="invalid command: ...")``
   on every replica alike. Only caller misuse of the state machine itself (indexes
   that do not increase) raises.
7. **Leases** (:mod:`raftkv.replica.leases`). A ``LeaseGrant`` entry creates a
   lease, a ``LeaseRevoke`` removes it and deletes its keys in one revision, a
   ``LeaseCheckpoint`` records the remaining times the leader measured. A put
   may name a lease (which must exist: :data:`ERR_LEASE_NOT_FOUND`); any write
   re-attaches the keys it touches to the lease their new version names (a
   delete to none). No replica times a lease: the leader's lessor
   (:mod:`raftkv.replica.lessor`) proposes the revoke of an expired one.
8. **Absent is not null.** A key may hold the JSON value ``null``; that is
   different from the key being absent. :data:`ABSENT` is the compare-and-set
   expectation "the key does not exist".

The store keeps keys as UTF-8 and values as compact JSON text
(:func:`~raftkv.replica.commands.json_text`); results carry :class:`Item`, whose
``value_json`` is that text and ``value`` the decoded JSON. The etcd v3 API
(:class:`EtcdTxn`) writes any bytes: a stored value that is not JSON text
(:func:`stored_json`) never equals a JSON value (a CAS or a value compare on
it fails), and the ``/v1`` API shows it base64-encoded (:attr:`Item.is_json`).

Snapshots are msgpack (version 4): the store's wire form, the sessions, the
leases ``(id, ttl_s, remaining_ms)``, the alarm, ``applied_index`` and
``log_time_ms``; the keys of each lease are rebuilt from the store. Versions 1
to 3 still restore, with no leases; 1 and 2 (a plain key/value map, written
before revisions) put their keys in one revision.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, cast

import msgpack

from raftkv.core.frozen import fast_init
from raftkv.replica.commands import (
    ABSENT,
    MAX_CLIENT_ID_CHARS,
    MAX_KEY_BYTES,
    MAX_TXN_OPS,
    MAX_VALUE_DEPTH,
    OWNER_CHARS,
    Absent,
    Alarm,
    Cas,
    Command,
    Compact,
    Compare,
    Delete,
    DeleteRange,
    EtcdTxn,
    Get,
    InvalidCommand,
    InvalidSnapshot,
    JSONValue,
    KeyRange,
    KVError,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    MultiPut,
    Put,
    Range,
    Session,
    Txn,
    TxnDelete,
    TxnOp,
    TxnPut,
    TxnRange,
    check_key,
    check_value,
    decode_command,
    encode_command,
    format_idempotency_key,
    json_equal,
    json_text,
    parse_idempotency_key,
)
from raftkv.replica.leases import LeaseTable
from raftkv.replica.mvcc import (
    CompactedError,
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    DeleteResult,
    Event,
    FutureRevisionError,
    KeyNotFoundError,
    KeyValue,
    MVCCError,
    MVCCStore,
    Op,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnResult,
)
from raftkv.replica.mvcc import Compare as StoreCompare
from raftkv.replica.mvcc import TxnOp as StoreTxnOp
from raftkv.replica.sessions import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_OWNER,
    DEFAULT_SESSION_TTL_MS,
    MAX_SESSION_SNAPSHOT_BYTES,
    Outcome,
    SessionRecord,
    SessionTable,
    decode_sessions,
)

__all__ = [
    # The command vocabulary (raftkv.replica.commands), re-exported: this module
    # is the KV store's public face.
    "ABSENT",
    "Absent",
    "JSONValue",
    "MAX_CLIENT_ID_CHARS",
    "MAX_KEY_BYTES",
    "MAX_TXN_OPS",
    "MAX_VALUE_DEPTH",
    "OWNER_CHARS",
    "DEFAULT_SESSION_TTL_MS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_OWNER",
    "MAX_SESSION_SNAPSHOT_BYTES",
    "KVError",
    "InvalidCommand",
    "InvalidSnapshot",
    "Session",
    "KeyRange",
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
    "EtcdTxn",
    "Command",
    "check_key",
    "check_value",
    "json_equal",
    "json_text",
    "encode_command",
    "decode_command",
    "parse_idempotency_key",
    "format_idempotency_key",
    # This module's own.
    "ERR_NOT_FOUND",
    "ERR_CONFLICT",
    "ERR_STALE_SEQUENCE",
    "ERR_INVALID_COMMAND",
    "ERR_SESSION_OWNER",
    "ERR_TOO_MANY_SESSIONS",
    "ERR_TOO_MANY_OWNER_SESSIONS",
    "ERR_NOSPACE",
    "ERR_COMPACTED",
    "ERR_FUTURE_REVISION",
    "ERR_LEASE_NOT_FOUND",
    "ERR_LEASE_EXISTS",
    "Item",
    "KVResult",
    "Listing",
    "Deleted",
    "PutDone",
    "TxnAnswer",
    "LeaseGranted",
    "LeaseRevoked",
    "EtcdAnswer",
    "Answer",
    "NotJSON",
    "NOT_JSON",
    "stored_json",
    "KVStateMachine",
]

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
ERR_NOSPACE: Final = "database space exceeded"
"""The NOSPACE alarm is raised: writes that add data are refused (etcd's message)."""
ERR_COMPACTED: Final = "required revision has been compacted"
ERR_FUTURE_REVISION: Final = "required revision is a future revision"
ERR_LEASE_NOT_FOUND: Final = "lease not found"
"""A put names a lease that does not exist, or a revoke one that does not (any more)."""
ERR_LEASE_EXISTS: Final = "lease already exists"
"""A grant names an id a lease already has."""

# Version 4: the MVCC store and the leases. 3: the MVCC store; 2: a plain map and
# sessions of outcomes; 1: sessions with cached results (their values are dropped
# on restore).
COMPACT_KEYS_PER_ENTRY: Final = 16
"""Keys of a compaction's physical pass freed per applied entry (about 0.15 ms with ten
versions per key)."""
_SNAPSHOT_VERSION: Final = 4
_SNAPSHOT_VERSIONS: Final = (1, 2, 3, 4)
_REFUSALS: Final = frozenset(
    {
        ERR_STALE_SEQUENCE,
        ERR_SESSION_OWNER,
        ERR_TOO_MANY_SESSIONS,
        ERR_TOO_MANY_OWNER_SESSIONS,
        ERR_NOSPACE,
        ERR_COMPACTED,
        ERR_FUTURE_REVISION,
        ERR_LEASE_NOT_FOUND,
        ERR_LEASE_EXISTS,
    }
)
_SORT_ORDERS: Final = {
    "none": SortOrder.NONE,
    "ascend": SortOrder.ASCEND,
    "descend": SortOrder.DESCEND,
}
_SORT_TARGETS: Final = {
    "key": SortTarget.KEY,
    "version": SortTarget.VERSION,
    "create_revision": SortTarget.CREATE,
    "mod_revision": SortTarget.MOD,
    "value": SortTarget.VALUE,
}
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


# ----------------------------------------------------------------------------- results


class NotJSON(enum.Enum):
    """Type of :data:`NOT_JSON`: a stored value that is not JSON text."""

    NOT_JSON = "not json"


NOT_JSON: Final = NotJSON.NOT_JSON


def _reject_constant(name: str) -> JSONValue:
    raise ValueError(f"{name} is not JSON")


# The decoder's C scanner (typeshed does not declare the attribute).
_scan_json: Final[Callable[[str, int], tuple[Any, int]]] = cast(
    Any, json.JSONDecoder(parse_constant=_reject_constant)
).scan_once
_JSON_SPACE: Final = " \t\n\r"


def stored_json(raw: bytes) -> JSONValue | NotJSON:
    """A stored value decoded as JSON, or :data:`NOT_JSON` if it is not JSON text
    in UTF-8 (the etcd API stores any bytes). ``NaN`` and ``Infinity`` are not JSON.

    The decoder's scanner is called directly: half the cost of ``json.loads``
    on the values ``/v1`` writes (compact, no surrounding space).
    """
    try:
        text = raw.decode("utf-8")
        start = 0 if text[:1] not in _JSON_SPACE else len(text) - len(text.lstrip(_JSON_SPACE))
        value, end = _scan_json(text, start)
    except (ValueError, StopIteration, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOT_JSON
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        return NOT_JSON
    result: JSONValue = value
    return result


# A JSON string of printable ASCII without escapes: what most /v1 values are.
_PLAIN_JSON_STRING: Final = re.compile(rb'"[^"\\\x00-\x1f\x7f-\xff]*"')


def is_json_text(raw: bytes) -> bool:
    """Whether ``raw`` is JSON text in UTF-8 (:func:`stored_json` is not
    :data:`NOT_JSON`), with a fast path for plain strings (a read checks every
    value it answers: the etcd API may have stored any bytes)."""
    if _PLAIN_JSON_STRING.fullmatch(raw):
        return True
    return stored_json(raw) is not NOT_JSON


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One key as the store holds it at some revision.

    Attributes:
        key: the key.
        value_json: its value as compact JSON text (``b""`` in a keys-only read).
        create_revision: the revision that (last) created the key.
        mod_revision: the revision of this version.
        version: 1 at creation, +1 per put since.
    """

    key: str
    value_json: bytes
    create_revision: int
    mod_revision: int
    version: int

    @property
    def value(self) -> JSONValue:
        """The decoded value (``None`` in a keys-only read, and for a value that
        is not JSON text: see :attr:`is_json`)."""
        if not self.value_json:
            return None
        value = stored_json(self.value_json)
        return None if value is NOT_JSON else value

    @property
    def is_json(self) -> bool:
        """Whether the value is JSON text (an etcd client may have stored any
        bytes, the empty value included); the ``/v1`` API shows another value
        as ``value_base64``."""
        return is_json_text(self.value_json)

    def to_json(self, *, keys_only: bool = False) -> dict[str, Any]:
        """The ``/v1`` API's form: key, value (unless keys-only; ``value_base64``
        if it is not JSON text) and revisions."""
        body: dict[str, Any] = {"key": self.key}
        if not keys_only and not self.is_json:
            body["value_base64"] = base64.b64encode(self.value_json).decode("ascii")
        elif not keys_only:
            body["value"] = self.value
        body["create_revision"] = self.create_revision
        body["mod_revision"] = self.mod_revision
        body["version"] = self.version
        return body

    @staticmethod
    def of(kv: KeyValue) -> Item:
        return Item(
            key=kv.key.decode("utf-8", "surrogateescape"),
            value_json=kv.value,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
        )


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class KVResult:
    """The outcome of a single-key command (or local read), or any command's error.

    Attributes:
        ok: whether the operation succeeded.
        index: the log index of the entry that produced this result (for a
            replayed write, the index of the original); for
            :meth:`KVStateMachine.read`, the applied index the read was served at.
        revision: the store's revision after the command (a write's own
            revision; for a replay, the original's; for a read, the current one).
        item: the key read (get / read), with its revisions.
        found: whether the key existed before the command (get, delete, cas, put).
        error: ``None`` on success, else one of the ``ERR_*`` constants, or a
            message starting with :data:`ERR_INVALID_COMMAND`.
        current: on a cas conflict, the key's current value (``None`` with
            ``found=False`` if the key is absent); ``None`` and not known when
            ``replayed``.
        replayed: the answer to a retry (a session's last ``seq`` again),
            rebuilt from the session's record; nothing was applied.
        compact_revision: with :data:`ERR_COMPACTED`, the revision the store is
            compacted to.
    """

    ok: bool
    index: int
    revision: int = 0
    item: Item | None = None
    found: bool = False
    error: str | None = None
    current: JSONValue = None
    replayed: bool = False
    compact_revision: int = 0

    @property
    def value(self) -> JSONValue:
        """The value read (get / read), or ``None``."""
        return None if self.item is None else self.item.value

    @property
    def executed(self) -> bool:
        """Whether the command was carried out at :attr:`index` (successfully or
        not): not a replay, not refused (sessions, quota, revisions), not undecodable."""
        return not self.replayed and (self.error is None or self.error not in _REFUSALS)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """The answer to a range read.

    Attributes:
        index: the log index it was served at (applied index, or the entry's).
        revision: the store's revision when it answered.
        items: the keys, sorted and cut to ``limit`` (empty with ``count_only``).
        count: how many keys are in the range at the read revision (before ``limit``).
        more: whether ``limit`` cut ``items``.
        replayed: a retried read through the log, read again.
    """

    index: int
    revision: int
    items: tuple[Item, ...]
    count: int
    more: bool
    replayed: bool = False

    ok: bool = True
    error: str | None = None

    @property
    def executed(self) -> bool:
        return not self.replayed


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Deleted:
    """The answer to a delete of a range (or, inside a transaction, of a key).

    Attributes:
        index, revision, replayed: as in :class:`KVResult`.
        deleted: how many keys it removed (unknown, 0, on a replay).
        prev: the removed keys as they were, if asked (``prev_kv``).
    """

    index: int
    revision: int
    deleted: int
    prev: tuple[Item, ...] = ()
    replayed: bool = False

    ok: bool = True
    error: str | None = None

    @property
    def executed(self) -> bool:
        return not self.replayed


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class PutDone:
    """A put's answer inside a transaction: the revision it wrote."""

    revision: int


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TxnAnswer:
    """The answer to a transaction.

    Attributes:
        index, revision, replayed: as in :class:`KVResult`.
        succeeded: whether every compare held (the success branch ran).
        responses: one per operation of the executed branch, in order (none on a
            replay: a retried transaction reports only whether it succeeded).
    """

    index: int
    revision: int
    succeeded: bool
    responses: tuple[PutDone | Deleted | Listing, ...] = ()
    replayed: bool = False

    ok: bool = True
    error: str | None = None

    @property
    def executed(self) -> bool:
        return not self.replayed


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseGranted:
    """The answer to a lease grant.

    Attributes:
        index, revision, replayed: as in :class:`KVResult` (a grant moves no revision).
        id: the lease's id (on a replay: the id the command named, 0 if it let
            the state machine choose -- propose grants with an id to retry them).
        ttl_s: its TTL in seconds.
    """

    index: int
    revision: int
    id: int
    ttl_s: int
    replayed: bool = False

    ok: bool = True
    error: str | None = None

    @property
    def executed(self) -> bool:
        return not self.replayed


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRevoked:
    """The answer to a lease revoke (a client's or an expiry).

    Attributes:
        index, revision, replayed: as in :class:`KVResult` (``revision`` is the
            revision that deleted the keys, if there were any).
        deleted: how many keys it deleted (0 on a replay).
    """

    index: int
    revision: int
    deleted: int
    replayed: bool = False

    ok: bool = True
    error: str | None = None

    @property
    def executed(self) -> bool:
        return not self.replayed


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdAnswer:
    """The answer to an :class:`EtcdTxn` (an etcd v3 API write).

    Attributes:
        index: the entry's log index.
        revision: the store's revision after it.
        result: the store's answer, byte for byte (``None`` on an error).
        error: ``None``, or :data:`ERR_NOSPACE`, :data:`ERR_NOT_FOUND` (a put
            with ``ignore_value``/``ignore_lease`` on an absent key),
            :data:`ERR_COMPACTED` / :data:`ERR_FUTURE_REVISION` (a range in the
            executed branch), or a message starting with
            :data:`ERR_INVALID_COMMAND`. Nothing was changed.
        compact_revision: with :data:`ERR_COMPACTED`, the store's compact revision.
    """

    index: int
    revision: int
    result: TxnResult | None = None
    error: str | None = None
    compact_revision: int = 0
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def executed(self) -> bool:
        return not self.replayed and (self.error is None or self.error not in _REFUSALS)


Answer: TypeAlias = (
    KVResult | Listing | Deleted | TxnAnswer | LeaseGranted | LeaseRevoked | EtcdAnswer
)
"""What :meth:`KVStateMachine.apply` returns."""


# ----------------------------------------------------------------------------- state machine


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
        self._sessions = SessionTable(
            ttl_ms=session_ttl_ms,
            max_sessions=max_sessions,
            max_sessions_per_owner=max_sessions_per_owner,
        )
        self._decoded = decode_cache
        self._store = MVCCStore()
        self._leases = LeaseTable()
        # Invariant: a key is attached to lease L in _leases iff its newest
        # version in _store is live with lease L (leases.py rule 2).
        self._restores = 0
        # Invariant: how many times restore() replaced the state.
        # Invariant: the NOSPACE alarm, as the last Alarm entry applied left it.
        self._alarm = False
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
        return self._sessions.ttl_ms

    @property
    def revision(self) -> int:
        """The store's current revision (1 in a fresh store)."""
        return self._store.revision

    @property
    def compact_revision(self) -> int:
        """The revision the store is compacted to (0: never)."""
        return self._store.compact_revision

    @property
    def size_bytes(self) -> int:
        """The store's size as the quota measures it (:attr:`MVCCStore.size_bytes`)."""
        return self._store.size_bytes

    @property
    def compacting(self) -> bool:
        """Whether a compaction's physical pass is unfinished (:meth:`compact_step`)."""
        return self._store.compacting

    def compact_step(self, budget: int) -> bool:
        """Free the old versions of up to ``budget`` keys of a compaction; whether
        work is left. Unobservable but in :attr:`size_bytes` and memory, so a
        node may call it whenever it is idle (:meth:`MVCCStore.compact_step`)."""
        return self._store.compact_step(budget)

    @property
    def alarm(self) -> bool:
        """Whether the NOSPACE alarm is raised (rule 5)."""
        return self._alarm

    @property
    def leases(self) -> LeaseTable:
        """The lease table (read it, never change it: only entries do)."""
        return self._leases

    @property
    def restores(self) -> int:
        """How many snapshots :meth:`restore` installed in this object (a
        watch hub re-syncs its watchers when it changes)."""
        return self._restores

    def last_events(self) -> tuple[int, tuple[Event, ...]] | None:
        """The current revision and its events (in key order, with ``prev_kv``)
        if an entry applied to this state machine since its last restore wrote
        it; else ``None``. Cheap until called: the store records only the keys
        a revision writes. A watch hub calls it after each applied entry and
        ignores revisions it has seen."""
        return self._store.last_events()

    def events_between(
        self, key: bytes, range_end: bytes, start_revision: int, end_revision: int
    ) -> list[Event]:
        """The store's :meth:`~raftkv.replica.mvcc.MVCCStore.events_between`.

        Raises:
            CompactedError: ``start_revision`` is below the compact revision.
        """
        return self._store.events_between(key, range_end, start_revision, end_revision)

    def sessions(self) -> dict[str, tuple[int, int]]:
        """``client_id -> (last seq, last active log time)``, sorted by client id."""
        return self._sessions.view()

    def read(self, key: str) -> KVResult:
        """Read ``key`` from local state (after a ReadIndex barrier, or stale).

        ``index`` is the applied index the value is current as of.
        """
        store = self._store
        kv = store.get(key.encode("utf-8"))
        if kv is None:
            return KVResult(
                ok=False, index=self._applied_index, revision=store.revision, error=ERR_NOT_FOUND
            )
        return KVResult(
            ok=True,
            index=self._applied_index,
            revision=store.revision,
            item=Item.of(kv),
            found=True,
        )

    def range(
        self,
        key_range: KeyRange,
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: str = "none",
        sort_target: str = "key",
    ) -> Listing:
        """Read a range from local state (after a ReadIndex barrier, or stale).

        Raises:
            CompactedError: ``revision`` is below the compaction point.
            FutureRevisionError: ``revision`` is above the current revision.
        """
        result = self._range(
            key_range, revision, limit, keys_only, count_only, sort_order, sort_target
        )
        return _listing(self._applied_index, result)

    def etcd_range(self, op: RangeOp) -> RangeResult:
        """An etcd v3 range read on raw bytes from local state (after a ReadIndex
        barrier, or stale): the store's own answer.

        Raises:
            InvalidRequestError: the empty key.
            RevisionError: ``op.revision`` is compacted or in the future.
        """
        result = self._store.execute(op)
        assert isinstance(result, RangeResult)
        return result

    def items(self) -> Iterator[tuple[str, JSONValue | NotJSON]]:
        """``(key, value)`` pairs in key order, at the current revision
        (:data:`NOT_JSON` for a value that is not JSON text)."""
        for kv in self._store.range(b"\0", b"\0").kvs:
            yield kv.key.decode("utf-8", "surrogateescape"), stored_json(kv.value)

    def __len__(self) -> int:
        return self._store.key_count

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store.get(key.encode("utf-8")) is not None

    # ------------------------------------------------------------------ StateMachine

    def apply(self, index: int, command: bytes) -> Answer:
        """Apply the committed entry at ``index``.

        Empty ``command`` bytes are the leader's no-op. Never raises for bad
        command bytes (see the module rules).

        A retry (the session's last ``seq`` again) is not applied; its result has
        ``replayed=True`` and the first attempt's ``ok``, ``error``, ``found``,
        ``index`` and ``revision`` (a transaction: ``succeeded``). A replayed
        conflict has no ``current`` (the value then was not kept, and the value
        now may match the expectation, which would contradict the conflict). A
        replayed read (get, range) reads again, at ``index`` (a read changes
        nothing, so answering it later is still linearizable).

        Raises:
            KVError: if ``index`` is not above :attr:`applied_index`.
        """
        if index <= self._applied_index:
            raise KVError(f"apply({index}) after index {self._applied_index}: must increase")
        self._applied_index = index
        if not command:
            return KVResult(ok=True, index=index, revision=self._store.revision)
        cache = self._decoded
        cmd = cache.get(command) if cache is not None else None
        if cmd is None:
            try:
                cmd = decode_command(command)
            except InvalidCommand as exc:
                return self._error(index, f"{ERR_INVALID_COMMAND}: {exc}")
            if cache is not None:
                cache[command] = cmd
        if self._store.compacting:
            # The physical half of a compaction, a slice per entry (the node
            # also runs slices while idle: compact_step).
            self._store.compact_step(COMPACT_KEYS_PER_ENTRY)
        if cmd.time_ms > self._log_time_ms:
            self._log_time_ms = cmd.time_ms
        sessions = self._sessions
        sessions.expire(self._log_time_ms)
        session = cmd.session
        if session is None:
            return self._execute(index, cmd)
        record = sessions.get(session.client_id)
        if record is None:
            full = sessions.refuse_new(session.owner)
            if full is not None:
                return self._error(
                    index, ERR_TOO_MANY_OWNER_SESSIONS if full else ERR_TOO_MANY_SESSIONS
                )
        elif record.owner != session.owner:
            # Before the sequence checks: another owner neither moves the session
            # nor learns anything of it (not even its sequence).
            return self._error(index, ERR_SESSION_OWNER)
        elif session.seq <= record.seq:
            # A retry (or a straggler): answer without applying again (§6.3).
            sessions.touch(session.client_id, record, self._log_time_ms)
            if session.seq == record.seq:
                return self._replay(index, record, cmd)
            return self._error(index, ERR_STALE_SEQUENCE)
        result = self._execute(index, cmd)
        if result.executed:
            self._record(session, index, cmd, result)
        return result

    def snapshot(self) -> bytes:
        """The whole state as deterministic msgpack."""
        return self.snapshot_later()()

    def snapshot_later(self) -> Callable[[], bytes]:
        """Capture the state now; the returned function encodes that capture as
        :meth:`snapshot` would have, and may run in another thread while
        :meth:`apply` goes on (``SnapshotsLater``).

        The capture is the store's :meth:`~raftkv.replica.mvcc.MVCCStore.capture`
        (a shallow copy) and the session records' wire form.
        """
        pack_store = self._store.capture()
        sessions = self._sessions.copy_wire()
        leases = self._leases.to_wire()
        header = (self._applied_index, self._log_time_ms, self._alarm)

        def encode() -> bytes:
            applied_index, log_time_ms, alarm = header
            body = {
                "version": _SNAPSHOT_VERSION,
                "applied_index": applied_index,
                "log_time_ms": log_time_ms,
                "alarm": alarm,
                "store": pack_store(),
                "sessions": sorted(sessions, key=lambda wire: str(wire[0])),
                "leases": leases,
            }
            return _pack_snapshot(body)

        return encode

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot; on error the state is unchanged.

        Reads versions 1 to 3 too (1 and 2: a plain key/value map, put into the
        store in one revision; version 1's cached session values are dropped;
        1 to 3 have no leases). Sessions
        beyond the caps are kept; new ones are refused until enough expire.

        Raises:
            InvalidSnapshot: if ``data`` was not produced by :meth:`snapshot`.
        """
        try:
            body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        except Exception as exc:  # msgpack raises many unrelated types on bad input
            raise InvalidSnapshot(f"not msgpack: {exc}") from exc
        if not isinstance(body, dict) or body.get("version") not in _SNAPSHOT_VERSIONS:
            raise InvalidSnapshot("not a raftkv KV snapshot (version 1 to 4)")
        version = body["version"]
        applied_index = body.get("applied_index")
        log_time_ms = body.get("log_time_ms")
        if type(applied_index) is not int or type(log_time_ms) is not int:
            raise InvalidSnapshot("snapshot needs integer applied_index and log_time_ms")
        alarm = body.get("alarm", False)
        if not isinstance(alarm, bool):
            raise InvalidSnapshot("snapshot alarm must be a boolean")
        store = _store_of(body, version)
        try:
            leases = LeaseTable.from_wire(
                body.get("leases", []) if version >= 4 else [], store.live_leases()
            )
        except ValueError as exc:
            raise InvalidSnapshot(f"bad leases: {exc}") from exc
        records = decode_sessions(body.get("sessions"), version)
        sessions = SessionTable(
            ttl_ms=self._sessions.ttl_ms,
            max_sessions=self._sessions.max_sessions,
            max_sessions_per_owner=self._sessions.max_sessions_per_owner,
        )
        sessions.restore(records)
        self._store = store
        self._leases = leases
        self._restores += 1
        self._sessions = sessions
        self._alarm = alarm
        self._applied_index = applied_index
        self._log_time_ms = log_time_ms

    # ------------------------------------------------------------------ internals

    def _error(self, index: int, error: str, **fields: Any) -> KVResult:
        return KVResult(ok=False, index=index, revision=self._store.revision, error=error, **fields)

    def _record(self, session: Session, index: int, cmd: Command, result: Answer) -> None:
        if isinstance(cmd, Get | Range):
            outcome = Outcome.READ
        elif isinstance(result, TxnAnswer):
            outcome = Outcome.OK if result.succeeded else Outcome.CONFLICT
        elif isinstance(result, KVResult) and result.error == ERR_NOT_FOUND:
            outcome = Outcome.NOT_FOUND
        elif isinstance(result, KVResult) and result.error == ERR_CONFLICT:
            outcome = Outcome.CONFLICT
        else:
            outcome = Outcome.OK
        found = result.found if isinstance(result, KVResult) else False
        self._sessions.record(
            session,
            index=index,
            revision=result.revision,
            outcome=outcome,
            found=found,
            log_time_ms=self._log_time_ms,
        )

    def _replay(self, index: int, record: SessionRecord, cmd: Command) -> Answer:
        """The answer to a retry of the session's last command (see :meth:`apply`)."""
        if record.outcome is Outcome.READ and isinstance(cmd, Get | Range):
            result = self._execute(index, cmd)
            if isinstance(result, Listing):
                return Listing(
                    index=result.index,
                    revision=result.revision,
                    items=result.items,
                    count=result.count,
                    more=result.more,
                    replayed=True,
                )
            assert isinstance(result, KVResult)
            return KVResult(
                ok=result.ok,
                index=result.index,
                revision=result.revision,
                item=result.item,
                found=result.found,
                error=result.error,
                replayed=True,
            )
        if isinstance(cmd, Txn):
            return TxnAnswer(
                index=record.index,
                revision=record.revision,
                succeeded=record.outcome is Outcome.OK,
                replayed=True,
            )
        if isinstance(cmd, DeleteRange):
            return Deleted(index=record.index, revision=record.revision, deleted=0, replayed=True)
        if isinstance(cmd, LeaseGrant):
            return LeaseGranted(
                index=record.index,
                revision=record.revision,
                id=cmd.id,
                ttl_s=cmd.ttl_s,
                replayed=True,
            )
        if isinstance(cmd, LeaseRevoke):
            return LeaseRevoked(
                index=record.index, revision=record.revision, deleted=0, replayed=True
            )
        return KVResult(
            ok=record.outcome in (Outcome.OK, Outcome.READ),
            index=record.index,
            revision=record.revision,
            found=record.found,
            error=_OUTCOME_ERRORS[record.outcome],
            replayed=True,
        )

    def _execute(self, index: int, cmd: Command) -> Answer:
        store = self._store
        if isinstance(cmd, Put):
            if self._alarm:
                return self._error(index, ERR_NOSPACE)
            if cmd.lease:
                return self._put_with_lease(index, cmd)
            key = cmd.key.encode("utf-8")
            revision, existed = store.put_found(key, json_text(cmd.value))
            if self._leases.attached_keys:
                self._leases.attach(key, 0)  # a plain put leaves the key's lease
            return KVResult(ok=True, index=index, revision=revision, found=existed)
        if isinstance(cmd, Get):
            result = self.read(cmd.key)
            return KVResult(
                ok=result.ok,
                index=index,
                revision=result.revision,
                item=result.item,
                found=result.found,
                error=result.error,
            )
        if isinstance(cmd, Delete):
            revision, deleted = store.delete_range(cmd.key.encode("utf-8"))
            if not deleted:
                return self._error(index, ERR_NOT_FOUND)
            if deleted[0].lease:
                self._leases.attach(deleted[0].key, 0)
            return KVResult(ok=True, index=index, revision=revision, found=True)
        if isinstance(cmd, Cas):
            return self._cas(index, cmd)
        if isinstance(cmd, MultiPut):
            if self._alarm:
                return self._error(index, ERR_NOSPACE)
            ops = [PutOp(key=k.encode("utf-8"), value=json_text(v)) for k, v in cmd.pairs.items()]
            txn = store.txn((), ops, ())
            self._sync_leases(False)
            return KVResult(ok=True, index=index, revision=txn.revision)
        if isinstance(cmd, Range):
            try:
                found = self._range(
                    cmd.range,
                    cmd.revision,
                    cmd.limit,
                    cmd.keys_only,
                    cmd.count_only,
                    cmd.sort_order,
                    cmd.sort_target,
                )
            except MVCCError as exc:
                return self._revision_error(index, exc)
            return _listing(index, found)
        if isinstance(cmd, DeleteRange):
            key, end = cmd.range.to_bytes()
            done = store.execute(DeleteRangeOp(key=key, range_end=end, prev_kv=cmd.prev_kv))
            assert isinstance(done, DeleteResult)
            if done.deleted:
                self._sync_leases(False)
            return _deleted(index, done)
        if isinstance(cmd, Txn):
            return self._txn(index, cmd)
        if isinstance(cmd, EtcdTxn):
            return self._etcd_txn(index, cmd)
        if isinstance(cmd, Compact):
            try:
                store.compact(cmd.revision)
            except MVCCError as exc:
                return self._revision_error(index, exc)
            return KVResult(ok=True, index=index, revision=store.revision)
        if isinstance(cmd, Alarm):
            self._alarm = cmd.active
            return KVResult(ok=True, index=index, revision=store.revision)
        return self._lease_command(index, cmd)

    def _put_with_lease(self, index: int, cmd: Put) -> KVResult:
        leases = self._leases
        if cmd.lease not in leases:
            return self._error(index, ERR_LEASE_NOT_FOUND)
        key = cmd.key.encode("utf-8")
        revision, prev = self._store.put(key, json_text(cmd.value), cmd.lease)
        leases.attach(key, cmd.lease)
        return KVResult(ok=True, index=index, revision=revision, found=prev is not None)

    def _lease_command(self, index: int, cmd: LeaseGrant | LeaseRevoke | LeaseCheckpoint) -> Answer:
        store = self._store
        leases = self._leases
        if isinstance(cmd, LeaseGrant):
            if self._alarm:
                return self._error(index, ERR_NOSPACE)
            lease_id = cmd.id or leases.free_id(index)
            if lease_id in leases:
                return self._error(index, ERR_LEASE_EXISTS)
            leases.grant(lease_id, cmd.ttl_s)
            return LeaseGranted(index=index, revision=store.revision, id=lease_id, ttl_s=cmd.ttl_s)
        if isinstance(cmd, LeaseRevoke):
            if cmd.id not in leases:
                return self._error(index, ERR_LEASE_NOT_FOUND)
            keys = leases.revoke(cmd.id)
            if keys:
                # One revision, keys in order (leases.revoke sorts them).
                store.txn((), [DeleteRangeOp(key=k) for k in keys], ())
            return LeaseRevoked(index=index, revision=store.revision, deleted=len(keys))
        leases.checkpoint(cmd.checkpoints)
        return KVResult(ok=True, index=index, revision=store.revision)

    def _sync_leases(self, force: bool) -> None:
        """After a write: attach each key the revision wrote to the lease its new
        version names (a delete's tombstone names none). Nothing to do while no
        key has a lease and the write attached none (``force``)."""
        leases = self._leases
        if not (force or leases.attached_keys):
            return
        written = self._store.last_written()
        if written is None:
            return
        for key in written[1]:
            kv = self._store.get(key)
            leases.attach(key, 0 if kv is None else kv.lease)

    def _cas(self, index: int, cmd: Cas) -> KVResult:
        store = self._store
        key = cmd.key.encode("utf-8")
        kv = store.get(key)
        if cmd.expect is ABSENT:
            matches = kv is None
        else:
            matches = kv is not None and _json_equal(stored_json(kv.value), cmd.expect)
        if not matches:
            current = None if kv is None else stored_json(kv.value)
            if current is NOT_JSON:
                current = None
            return self._error(index, ERR_CONFLICT, found=kv is not None, current=current)
        if self._alarm:
            return self._error(index, ERR_NOSPACE)
        revision, _ = store.put(key, json_text(cmd.value), prev_kv=False)
        if self._leases.attached_keys:
            self._leases.attach(key, 0)
        return KVResult(ok=True, index=index, revision=revision, found=kv is not None)

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

    def _range(
        self,
        key_range: KeyRange,
        revision: int,
        limit: int,
        keys_only: bool,
        count_only: bool,
        sort_order: str,
        sort_target: str,
    ) -> RangeResult:
        key, end = key_range.to_bytes()
        return self._store.range(
            key,
            end,
            revision=revision,
            limit=limit,
            keys_only=keys_only,
            count_only=count_only,
            sort_order=_SORT_ORDERS[sort_order],
            sort_target=_SORT_TARGETS[sort_target],
        )

    def _revision_error(self, index: int, exc: MVCCError) -> KVResult:
        if isinstance(exc, CompactedError):
            return self._error(index, ERR_COMPACTED, compact_revision=self._store.compact_revision)
        if isinstance(exc, FutureRevisionError):
            return self._error(index, ERR_FUTURE_REVISION)
        return self._error(index, f"{ERR_INVALID_COMMAND}: {exc}")


def _json_equal(stored: JSONValue | NotJSON, value: JSONValue) -> bool:
    """:func:`json_equal`; a value that is not JSON text equals no JSON value."""
    return stored is not NOT_JSON and json_equal(stored, value)


_OUTCOME_ERRORS: Final = {
    Outcome.OK: None,
    Outcome.NOT_FOUND: ERR_NOT_FOUND,
    Outcome.CONFLICT: ERR_CONFLICT,
    Outcome.READ: None,
}


def _pack_snapshot(body: dict[str, Any]) -> bytes:
    """``msgpack.packb(body)``, byte for byte, where ``body["store"]`` arrives
    already packed (:meth:`~raftkv.replica.mvcc.MVCCStore.capture`, which packs
    a chunk of keys per call so the node's event loop runs in between)."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(body))]
    for name, value in body.items():
        parts.append(packer.pack(name))
        parts.append(value if name == "store" else packer.pack(value))
    return b"".join(parts)


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


def _listing(index: int, result: RangeResult) -> Listing:
    return Listing(
        index=index,
        revision=result.revision,
        items=tuple(Item.of(kv) for kv in result.kvs),
        count=result.count,
        more=result.more,
    )


def _deleted(index: int, result: DeleteResult) -> Deleted:
    return Deleted(
        index=index,
        revision=result.revision,
        deleted=result.deleted,
        prev=tuple(Item.of(kv) for kv in result.prev_kvs),
    )


def _store_of(body: dict[str, Any], version: int) -> MVCCStore:
    """The store of a snapshot body (rebuilt from a plain map for versions 1-2).

    Raises:
        InvalidSnapshot: malformed.
    """
    if version >= 3:
        try:
            return MVCCStore.from_wire(body.get("store"))
        except MVCCError as exc:
            raise InvalidSnapshot(f"bad store: {exc}") from exc
    raw_data = body.get("data")
    if not isinstance(raw_data, list):
        raise InvalidSnapshot("snapshot needs a data list")
    ops = []
    try:
        for pair in raw_data:
            if not isinstance(pair, list) or len(pair) != 2:
                raise InvalidSnapshot("data items must be [key, value]")
            key = check_key(pair[0]).encode("utf-8")
            ops.append(PutOp(key=key, value=json_text(check_value(pair[1]))))
    except InvalidCommand as exc:
        raise InvalidSnapshot(str(exc)) from exc
    store = MVCCStore()
    if ops:
        try:
            store.txn((), ops, ())
        except MVCCError as exc:
            raise InvalidSnapshot(f"bad data: {exc}") from exc
    return store
