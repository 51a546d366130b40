"""What the KV state machine answers: the results of its commands and reads,
their error texts, and the stored values read back as JSON.

Rule: an answer is a frozen value, the same on every replica for the same
entry (package rule 1); an error is one of the ``ERR_*`` texts (or starts with
:data:`ERR_INVALID_COMMAND`), decided by the state machine, never by the API.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, cast

from raftkv.core.frozen import fast_init
from raftkv.replica.commands import (
    JSONValue,
    json_equal,
)
from raftkv.replica.mvcc import (
    DeleteResult,
    KeyValue,
    RangeResult,
    TxnResult,
)

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


def _json_equal(stored: JSONValue | NotJSON, value: JSONValue) -> bool:
    """:func:`json_equal`; a value that is not JSON text equals no JSON value."""
    return stored is not NOT_JSON and json_equal(stored, value)


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
