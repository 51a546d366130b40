"""The ``/v1`` KV API's JSON: query strings and bodies to commands, results to answers.

Rule 1: no I/O and no node: requests come in as their query pairs and decoded
JSON bodies, answers go out as :data:`~raftkv.server.fasthttp.Answer` (status,
body bytes, headers). A malformed request raises
:class:`~raftkv.server.errors.BadRequest` or
:class:`~raftkv.replica.kv.InvalidCommand` (400), a value over the limit
:class:`~raftkv.server.errors.TooLarge` (413) -- before anything is proposed.

Rule 2: every error a command's result or a read can carry is mapped to its
status and body here, once, by comparing the ``ERR_*`` constants and the MVCC
error classes -- never by a message's prefix: not found 404, conflict and
stale sequence 409, another token's session 403, a full session table 429,
NOSPACE 507, a revision below the compaction point 410 (with
``compact_revision``), a future revision 400 (with the current ``revision``).

Rule 3: a stored value leaves as it is stored: its compact JSON text
(:attr:`~raftkv.replica.kv.Item.value_json`) is spliced into the answer, not
encoded again (the key read is the hottest route) -- once checked to be JSON
text: a value an etcd client stored that is not leaves base64-encoded, as
``value_base64`` instead of ``value``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Final

from raftkv.replica.commands import SORT_ORDERS, SORT_TARGETS
from raftkv.replica.kv import (
    ABSENT,
    ERR_COMPACTED,
    ERR_CONFLICT,
    ERR_FUTURE_REVISION,
    ERR_LEASE_EXISTS,
    ERR_LEASE_NOT_FOUND,
    ERR_NOSPACE,
    ERR_NOT_FOUND,
    ERR_SESSION_OWNER,
    ERR_STALE_SEQUENCE,
    ERR_TOO_MANY_OWNER_SESSIONS,
    ERR_TOO_MANY_SESSIONS,
    MAX_TXN_OPS,
    Cas,
    Command,
    Compact,
    Compare,
    Delete,
    Deleted,
    DeleteRange,
    Get,
    InvalidCommand,
    Item,
    KeyRange,
    KVResult,
    LeaseGrant,
    LeaseGranted,
    LeaseRevoke,
    LeaseRevoked,
    Listing,
    MultiPut,
    Put,
    PutDone,
    Range,
    Txn,
    TxnAnswer,
    TxnDelete,
    TxnOp,
    TxnPut,
    TxnRange,
    check_key,
)
from raftkv.replica.mvcc import CompactedError, RevisionError
from raftkv.replica.sessions import DEFAULT_SESSION_TTL_MS
from raftkv.server.errors import BadRequest, TooLarge
from raftkv.server.fasthttp import Answer
from raftkv.server.node.quota import ALARM_NOSPACE

__all__ = [
    "CONSISTENCY_LEVELS",
    "RangeQuery",
    "TxnParts",
    "check_key_limit",
    "check_value_size",
    "check_command_limits",
    "revision_param",
    "range_query",
    "delete_range_query",
    "txn_parts",
    "compact_revision",
    "lease_param",
    "lease_grant_fields",
    "read_answer",
    "listing_answer",
    "write_answer",
    "error_answer",
    "revision_error_answer",
    "nospace_answer",
]

CONSISTENCY_LEVELS: Final = ("linearizable", "stale")

_RANGE_PARAMS: Final = frozenset(
    {
        "prefix",
        "key",
        "range_end",
        "limit",
        "revision",
        "keys_only",
        "count_only",
        "sort_order",
        "sort_target",
        "consistency",
    }
)
_DELETE_PARAMS: Final = frozenset({"prefix", "key", "range_end", "prev_kv"})
_TXN_FIELDS: Final = frozenset({"compare", "success", "failure"})
_COMPARE_FIELDS: Final = frozenset({"key", "range_end", "prefix", "target", "op", "value"})
_RANGE_FIELDS: Final = frozenset({"key", "range_end", "prefix"})
_OP_FIELDS: Final = {
    "put": frozenset({"key", "value", "lease"}),
    "delete": _RANGE_FIELDS | {"prev_kv"},
    "range": _RANGE_FIELDS | {"limit", "keys_only", "count_only"},
}
_SESSION_OWNER_MESSAGE: Final = (
    f"{ERR_SESSION_OWNER}: this Idempotency-Key's client id was first used with another "
    "token; use a client id of your own"
)
_TOO_MANY_SESSIONS_ADVICE: Final = (
    ": no new client id (Idempotency-Key) is accepted until idle sessions expire "
    f"({DEFAULT_SESSION_TTL_MS // 60_000} minutes after their last write); "
    "existing client ids keep working"
)


def _answer(status: int, body: dict[str, Any]) -> Answer:
    return status, json.dumps(body).encode(), None


def _text(value: str) -> bytes:
    """A JSON string (ASCII, escaped) as bytes."""
    return encode_basestring_ascii(value).encode("ascii")


def _bool(value: bool) -> bytes:
    return b"true" if value else b"false"


# ----------------------------------------------------------------------------- limits


def check_key_limit(text: str, limit: int, what: str = "key") -> str:
    """``text`` if it is a valid key of at most ``limit`` bytes of UTF-8.

    Raises:
        BadRequest: it is not (the message starts with ``bad {what}``).
    """
    try:
        key = check_key(text)
    except InvalidCommand as exc:
        raise BadRequest(f"bad {what}: {exc}") from None
    if len(key.encode("utf-8")) > limit:
        raise BadRequest(f"bad {what}: longer than {limit} bytes of UTF-8")
    return key


def check_value_size(value: Any, raw_size: int, limit: int, what: str) -> None:
    """413 if ``value`` encodes to more than ``limit`` bytes; ``raw_size`` bounds that size
    from above (the body it came in), so small bodies skip the re-encoding.

    Raises:
        TooLarge: over the limit.
    """
    if raw_size <= limit:
        return
    try:
        size = len(json.dumps(value, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        return  # not JSON: the command's own validation answers 400
    if size > limit:
        raise TooLarge(f"{what} is {size} bytes of JSON; the limit is {limit}")


def _check_range(key_range: KeyRange, limit: int) -> KeyRange:
    """``key_range`` if its key and range end are within ``limit`` bytes.

    Raises:
        BadRequest: one is longer.
    """
    if key_range.key:
        check_key_limit(key_range.key, limit)
    end = key_range.range_end
    if end is not None and end != "\0":
        check_key_limit(end, limit, "range_end")
    return key_range


def check_command_limits(
    command: Command, *, max_key_bytes: int, max_value_bytes: int, max_multi_put_pairs: int
) -> None:
    """The size limits of the KV routes, for a command built elsewhere (a
    follower's, arriving as ``POST /v1/forward``).

    Raises:
        BadRequest: a key (or range end) over ``max_key_bytes``.
        TooLarge: a value over ``max_value_bytes``, or a multi-put over
            ``max_multi_put_pairs``.
    """
    pairs: list[tuple[str, Any]] = []
    values: list[Any] = []
    ranges: list[KeyRange] = []
    if isinstance(command, MultiPut):
        if len(command.pairs) > max_multi_put_pairs:
            raise TooLarge(
                f"{len(command.pairs)} pairs; the limit is {max_multi_put_pairs} per multi-put"
            )
        pairs = list(command.pairs.items())
    elif isinstance(command, Cas):
        pairs = [(command.key, command.value)]
        if command.expect is not ABSENT:
            values.append(command.expect)
    elif isinstance(command, Put):
        pairs = [(command.key, command.value)]
    elif isinstance(command, DeleteRange):
        ranges.append(command.range)
    elif isinstance(command, Txn):
        for compare in command.compares:
            ranges.append(compare.range)
            if compare.target == "value":
                values.append(compare.value)
        for op in (*command.success, *command.failure):
            if isinstance(op, TxnPut):
                pairs.append((op.key, op.value))
            else:
                ranges.append(op.range)
    elif isinstance(command, Delete | Get):
        check_key_limit(command.key, max_key_bytes)
    elif isinstance(command, Range):
        ranges.append(command.range)
    for key, value in pairs:
        check_key_limit(key, max_key_bytes)
        values.append(value)
    for key_range in ranges:
        _check_range(key_range, max_key_bytes)
    for value in values:
        check_value_size(value, max_value_bytes + 1, max_value_bytes, "value")


# ----------------------------------------------------------------------------- queries


def _params(pairs: Iterable[tuple[str, str]], allowed: frozenset[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise BadRequest(
                f"unknown parameter {name[:40]!r}; this route takes {', '.join(sorted(allowed))}"
            )
        if name in params:
            raise BadRequest(f"parameter {name!r} given more than once")
        params[name] = value
    return params


def _count_param(params: dict[str, str], name: str) -> int:
    text = params.get(name)
    if text is None:
        return 0
    return revision_param(text, name)


def revision_param(text: str, name: str = "revision") -> int:
    """A non-negative decimal integer from a query string (``revision``, ``limit``).

    Raises:
        BadRequest: it is not one.
    """
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise BadRequest(f"{name} must be a non-negative integer, not {text[:40]!r}")
    return int(text)


def _flag_param(params: dict[str, str], name: str) -> bool:
    text = params.get(name, "false")
    if text not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, not {text[:40]!r}")
    return text == "true"


def _choice_param(params: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    text = params.get(name, default)
    if text not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}, not {text[:40]!r}")
    return text


def _range_param(params: dict[str, str], max_key_bytes: int) -> KeyRange:
    """``prefix=P`` or ``key=K[&range_end=E]`` (etcd's conventions; ``prefix=`` is every key)."""
    prefix, key, end = params.get("prefix"), params.get("key"), params.get("range_end")
    if prefix is not None and key is not None:
        raise BadRequest("give prefix=P or key=K[&range_end=E], not both")
    if prefix is not None:
        if end is not None:
            raise BadRequest("range_end goes with key=K, not with prefix=P")
        return _check_range(KeyRange(key=prefix, prefix=True), max_key_bytes)
    if key is None:
        raise BadRequest("give prefix=P, or key=K with an optional range_end=E")
    return _check_range(KeyRange(key=key, range_end=end), max_key_bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeQuery:
    """``GET /v1/kv``'s parameters, checked."""

    range: KeyRange
    revision: int
    limit: int
    keys_only: bool
    count_only: bool
    sort_order: str
    sort_target: str
    consistency: str


def range_query(pairs: Iterable[tuple[str, str]], *, max_key_bytes: int) -> RangeQuery:
    """Parse ``GET /v1/kv``'s query.

    Raises:
        BadRequest, InvalidCommand: a parameter is unknown, repeated or invalid.
    """
    params = _params(pairs, _RANGE_PARAMS)
    return RangeQuery(
        range=_range_param(params, max_key_bytes),
        revision=_count_param(params, "revision"),
        limit=_count_param(params, "limit"),
        keys_only=_flag_param(params, "keys_only"),
        count_only=_flag_param(params, "count_only"),
        sort_order=_choice_param(params, "sort_order", SORT_ORDERS, "none"),
        sort_target=_choice_param(params, "sort_target", SORT_TARGETS, "key"),
        consistency=_choice_param(params, "consistency", CONSISTENCY_LEVELS, "linearizable"),
    )


def delete_range_query(
    pairs: Iterable[tuple[str, str]], *, max_key_bytes: int
) -> tuple[KeyRange, bool]:
    """Parse ``DELETE /v1/kv``'s query: the range and ``prev_kv``.

    Raises:
        BadRequest, InvalidCommand: a parameter is unknown, repeated or invalid.
    """
    params = _params(pairs, _DELETE_PARAMS)
    return _range_param(params, max_key_bytes), _flag_param(params, "prev_kv")


# ----------------------------------------------------------------------------- bodies


def _fields(obj: object, allowed: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} must be a JSON object")
    for name in obj:
        if name not in allowed:
            raise BadRequest(f"unknown field {str(name)[:40]!r} in {what}")
    return obj


def _json_range(obj: dict[str, Any], what: str, max_key_bytes: int) -> KeyRange:
    key = obj.get("key")
    if key is None:
        raise BadRequest(f"{what} needs a key")
    end = obj.get("range_end")
    if not isinstance(key, str) or not (end is None or isinstance(end, str)):
        raise BadRequest(f"{what}'s key and range_end must be strings")
    return _check_range(
        KeyRange(key=key, range_end=end, prefix=obj.get("prefix", False)), max_key_bytes
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnParts:
    """A transaction body, checked: what :class:`~raftkv.replica.kv.Txn` is built of."""

    compares: tuple[Compare, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...]


def _items(body: dict[str, Any], name: str) -> list[Any]:
    items = body.get(name, [])
    if not isinstance(items, list):
        raise BadRequest(f"{name} must be a list")
    if len(items) > MAX_TXN_OPS:
        raise BadRequest(f"too many {name}: {len(items)}; the limit is {MAX_TXN_OPS}")
    return items


def txn_parts(obj: object, *, raw_size: int, max_key_bytes: int, max_value_bytes: int) -> TxnParts:
    """Parse a ``POST /v1/txn`` body (docs/api.md); ``raw_size`` is the body's size.

    Raises:
        BadRequest, InvalidCommand: a bad shape, field, op or value.
        TooLarge: a value over ``max_value_bytes``.
    """
    body = _fields(obj, _TXN_FIELDS, "the transaction")
    compares = []
    for item in _items(body, "compare"):
        fields = _fields(item, _COMPARE_FIELDS, "a compare")
        if not {"key", "target", "op", "value"} <= fields.keys():
            raise BadRequest("a compare needs key, target, op and value (and range_end or prefix)")
        if fields["target"] == "value":
            check_value_size(fields["value"], raw_size, max_value_bytes, "compare value")
        compares.append(
            Compare(
                range=_json_range(fields, "a compare", max_key_bytes),
                target=fields["target"],
                cmp=fields["op"],
                value=fields["value"],
            )
        )
    branches = []
    for name in ("success", "failure"):
        ops: list[TxnOp] = []
        for item in _items(body, name):
            if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in _OP_FIELDS:
                raise BadRequest(
                    f"each operation of {name} must be an object with exactly one of "
                    "put, delete, range"
                )
            kind, raw = next(iter(item.items()))
            fields = _fields(raw, _OP_FIELDS[kind], f"a {kind}")
            if kind == "put":
                if not {"key", "value"} <= fields.keys():
                    raise BadRequest("a put needs key and value")
                key = check_key_limit(fields["key"], max_key_bytes)
                check_value_size(fields["value"], raw_size, max_value_bytes, f"value of {key!r}")
                ops.append(TxnPut(key=key, value=fields["value"], lease=fields.get("lease", 0)))
            elif kind == "delete":
                key_range = _json_range(fields, "a delete", max_key_bytes)
                ops.append(TxnDelete(range=key_range, prev_kv=fields.get("prev_kv", False)))
            else:
                ops.append(
                    TxnRange(
                        range=_json_range(fields, "a range", max_key_bytes),
                        limit=fields.get("limit", 0),
                        keys_only=fields.get("keys_only", False),
                        count_only=fields.get("count_only", False),
                    )
                )
        branches.append(tuple(ops))
    return TxnParts(compares=tuple(compares), success=branches[0], failure=branches[1])


def compact_revision(obj: object) -> int:
    """The revision of a ``POST /v1/compact`` body ``{"revision": R}``.

    Raises:
        BadRequest: another shape (:class:`~raftkv.replica.kv.Compact` checks the value).
    """
    body = _fields(obj, frozenset({"revision"}), "the body")
    if "revision" not in body:
        raise BadRequest('body must be {"revision": R}')
    revision: int = body["revision"]
    return revision


def lease_param(text: str, name: str = "lease") -> int:
    """A lease id from a path or query string (1..2**63-1).

    Raises:
        BadRequest: it is not one.
    """
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) < 2**63:
        raise BadRequest(
            f"{name} must be a lease id (an integer from 1 to 2**63-1), not {text[:40]!r}"
        )
    return int(text)


def lease_grant_fields(obj: object) -> tuple[int, int]:
    """``(ttl_s, id)`` of a ``POST /v1/leases`` body ``{"ttl": s[, "id": n]}``
    (id 0: the node picks one).

    Raises:
        BadRequest: another shape, or a TTL or id that is not a positive integer.
    """
    body = _fields(obj, frozenset({"ttl", "id"}), "the body")
    ttl, lease_id = body.get("ttl"), body.get("id", 0)
    if type(ttl) is not int or ttl < 1:
        raise BadRequest(f'body must be {{"ttl": seconds >= 1[, "id": n]}}; ttl is {ttl!r}')
    if type(lease_id) is not int or not 0 <= lease_id < 2**63:
        raise BadRequest(f"id must be a lease id (an integer from 1 to 2**63-1), not {lease_id!r}")
    return ttl, lease_id


# ----------------------------------------------------------------------------- answers


def _value_field(item: Item) -> bytes:
    """``"value": <JSON text>``, or ``"value_base64": "..."`` for a value that is
    not JSON text (an etcd client's bytes; docs/api.md)."""
    if item.is_json:
        return b'"value": ' + item.value_json
    return b'"value_base64": "' + base64.b64encode(item.value_json) + b'"'


def _item(item: Item) -> bytes:
    """One key as the API shows it; a keys-only read's item (empty text) has no value."""
    if not item.value_json:
        return b'{"key": %s, "create_revision": %d, "mod_revision": %d, "version": %d}' % (
            _text(item.key),
            item.create_revision,
            item.mod_revision,
            item.version,
        )
    return b'{"key": %s, %s, "create_revision": %d, "mod_revision": %d, "version": %d}' % (
        _text(item.key),
        _value_field(item),
        item.create_revision,
        item.mod_revision,
        item.version,
    )


def _items_json(items: tuple[Item, ...]) -> bytes:
    return b"[" + b", ".join(_item(item) for item in items) + b"]"


def _listing_fields(listing: Listing) -> bytes:
    return b'"kvs": %s, "count": %d, "more": %s' % (
        _items_json(listing.items),
        listing.count,
        _bool(listing.more),
    )


def read_answer(key: str, item: Item | None, *, index: int, revision: int) -> Answer:
    """``GET /v1/kv/{key}``: the key's value and revisions, or 404.

    ``index`` is the applied index the read was served at, ``revision`` the
    store's current revision.
    """
    if item is None:
        return _answer(
            404, {"error": ERR_NOT_FOUND, "key": key, "index": index, "revision": revision}
        )
    body = (
        b'{"key": %s, %s, "index": %d, "create_revision": %d, "mod_revision": %d, '
        b'"version": %d, "revision": %d}'
        % (
            _text(key),
            _value_field(item),
            index,
            item.create_revision,
            item.mod_revision,
            item.version,
            revision,
        )
    )
    return 200, body, None


def listing_answer(listing: Listing) -> Answer:
    """``GET /v1/kv``: ``{"kvs", "count", "more", "revision"}``."""
    return 200, b'{%s, "revision": %d}' % (_listing_fields(listing), listing.revision), None


def nospace_answer() -> Answer:
    """507: the NOSPACE alarm is raised (docs/api.md says why 507)."""
    return _answer(507, {"error": ERR_NOSPACE, "alarm": ALARM_NOSPACE})


def _compacted(compact_revision: int, revision: int) -> Answer:
    return _answer(
        410, {"error": ERR_COMPACTED, "compact_revision": compact_revision, "revision": revision}
    )


def _future(revision: int) -> Answer:
    return _answer(400, {"error": ERR_FUTURE_REVISION, "revision": revision})


def revision_error_answer(exc: RevisionError, revision: int) -> Answer:
    """A read's revision outside what the store keeps; ``revision`` is the current one."""
    if isinstance(exc, CompactedError):
        return _compacted(exc.compact_revision, revision)
    return _future(revision)


def error_answer(result: KVResult, key: str | None) -> Answer:
    """The answer to a command's error result (rule 2)."""
    error = result.error
    if error == ERR_NOT_FOUND:
        return _answer(
            404, {"error": error, "key": key, "index": result.index, "revision": result.revision}
        )
    if error == ERR_CONFLICT:
        body: dict[str, Any] = {
            "error": error,
            "key": key,
            "index": result.index,
            "revision": result.revision,
            "found": result.found,
        }
        if result.replayed:  # the first attempt's conflict; its value was not kept
            body["replayed"] = True
        else:
            body["current"] = result.current
        return _answer(409, body)
    if error == ERR_LEASE_NOT_FOUND:
        return _answer(404, {"error": error, "index": result.index, "revision": result.revision})
    if error == ERR_LEASE_EXISTS:
        return _answer(409, {"error": error, "index": result.index, "revision": result.revision})
    if error == ERR_STALE_SEQUENCE:
        return _answer(409, {"error": error, "index": result.index})
    if error == ERR_SESSION_OWNER:
        return _answer(403, {"error": _SESSION_OWNER_MESSAGE})
    if error in (ERR_TOO_MANY_SESSIONS, ERR_TOO_MANY_OWNER_SESSIONS):
        return _answer(429, {"error": f"{error}{_TOO_MANY_SESSIONS_ADVICE}"})
    if error == ERR_NOSPACE:
        return nospace_answer()
    if error == ERR_COMPACTED:
        return _compacted(result.compact_revision, result.revision)
    if error == ERR_FUTURE_REVISION:
        return _future(result.revision)
    if error is None:
        return _answer(500, {"error": "failed without an error"})
    # Every other error is, by KVResult's contract, an invalid command
    # (ERR_INVALID_COMMAND and the reason): the request itself was bad.
    return _answer(400, {"error": error})


def _deleted_fields(deleted: Deleted, prev_kv: bool) -> bytes:
    fields = b'"deleted": %d' % deleted.deleted
    if prev_kv:
        fields += b', "prev_kvs": ' + _items_json(deleted.prev)
    return fields


def _txn_responses(answer: TxnAnswer, command: Txn) -> bytes:
    branch = command.success if answer.succeeded else command.failure
    out = []
    for op, response in zip(branch, answer.responses, strict=True):
        if isinstance(response, PutDone):
            out.append(b'{"put": {"revision": %d}}' % response.revision)
        elif isinstance(response, Deleted):
            prev_kv = isinstance(op, TxnDelete) and op.prev_kv
            out.append(b'{"delete": {%s}}' % _deleted_fields(response, prev_kv))
        else:
            out.append(b'{"range": {%s}}' % _listing_fields(response))
    return b"[" + b", ".join(out) + b"]"


def write_answer(result: object, command: Command, leader: str) -> Answer:
    """The answer to a write ``command`` that ``leader`` applied with ``result``.

    Every success carries ``revision`` (the revision the write made, or the
    current one if it changed nothing; a replay: the original's) and ``index``.
    A retried transaction or delete-range (the same ``Idempotency-Key``) answers
    ``"replayed": true`` without what was not kept: a transaction's
    ``responses``, a delete's ``deleted`` count and ``prev_kvs``.
    """
    if isinstance(result, KVResult):  # the hot path first: put, delete, cas, multi-put
        if not result.ok:
            key = command.key if isinstance(command, Put | Delete | Cas | Get) else None
            return error_answer(result, key)
        fields = b'"ok": true, "index": %d, "revision": %d' % (result.index, result.revision)
        if isinstance(command, Compact):
            fields += b', "compact_revision": %d' % command.revision
        return 200, b'{%s, "leader": %s}' % (fields, _text(leader)), None
    if isinstance(result, LeaseGranted) and isinstance(command, LeaseGrant):
        body = b'{"id": %d, "ttl": %d, "revision": %d, "index": %d, "leader": %s}' % (
            result.id,
            result.ttl_s,
            result.revision,
            result.index,
            _text(leader),
        )
        return 200, body, None
    if isinstance(result, LeaseRevoked) and isinstance(command, LeaseRevoke):
        head = b'{"ok": true, "id": %d, "revision": %d, ' % (command.id, result.revision)
        tail = b'"index": %d, "leader": %s' % (result.index, _text(leader))
        if result.replayed:
            return 200, head + tail + b', "replayed": true}', None
        return 200, head + tail + b', "deleted": %d}' % result.deleted, None
    if isinstance(result, TxnAnswer) and isinstance(command, Txn):
        head = b'{"succeeded": %s, "revision": %d, ' % (_bool(result.succeeded), result.revision)
        tail = b'"index": %d, "leader": %s' % (result.index, _text(leader))
        if result.replayed:
            return 200, head + tail + b', "replayed": true}', None
        return 200, head + tail + b', "responses": %s}' % _txn_responses(result, command), None
    if isinstance(result, Deleted) and isinstance(command, DeleteRange):
        head = b'{"ok": true, "revision": %d, ' % result.revision
        tail = b'"index": %d, "leader": %s' % (result.index, _text(leader))
        if result.replayed:
            return 200, head + tail + b', "replayed": true}', None
        return 200, head + tail + b", %s}" % _deleted_fields(result, command.prev_kv), None
    return _answer(200, {"ok": True, "result": result, "leader": leader})
