"""``GET /v1/watch``'s JSON: the query to a watch's arguments, responses to lines.

Rule 1: no I/O and no node, as :mod:`raftkv.server.kvjson`: a malformed query
raises :class:`~raftkv.server.errors.BadRequest` (400) before any watcher exists.

Rule 2: one response is one line of JSON (``\\n``-terminated, no newline
inside): ``{"watch_id", "revision", "events": [...]}`` plus ``"progress": true``
for a progress notification, ``"canceled": true, "cancel_reason"`` (and
``"compact_revision"`` when the next revision was compacted) for the last
line. The first line is ``{"watch_id", "created": true, "revision"}``, with
the store's revision when the watcher was made. An event is
``{"type": "put"|"delete", "kv": {...}, "prev_kv"?: {...}}``; a kv is
``{"key", "value", "create_revision", "mod_revision", "version", "lease"}``
(a delete's kv has only ``key`` and ``mod_revision``, etcd's tombstone). A
value leaves as it is stored: its compact JSON text is spliced in
(kvjson's Rule 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Final

from raftkv.replica.commands import KeyRange
from raftkv.replica.mvcc import KeyValue
from raftkv.replica.watch import Event, WatchResponse
from raftkv.server.errors import BadRequest
from raftkv.server.kvjson import _check_range, _flag_param, _params, revision_param

__all__ = ["WATCH_FILTERS", "WatchQuery", "watch_query", "created_line", "response_line"]

WATCH_FILTERS: Final = frozenset({"noput", "nodelete"})
_WATCH_PARAMS: Final = frozenset(
    {
        "prefix",
        "key",
        "range_end",
        "start_revision",
        "prev_kv",
        "progress_notify",
        "filters",
        "require_leader",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchQuery:
    """``GET /v1/watch``'s parameters, checked."""

    range: KeyRange
    start_revision: int
    prev_kv: bool
    progress_notify: bool
    filters: frozenset[str]
    require_leader: bool


def watch_query(pairs: Iterable[tuple[str, str]], *, max_key_bytes: int) -> WatchQuery:
    """Parse the query: ``prefix=P`` or ``key=K[&range_end=E]``, ``start_revision``
    (0 or absent: the next revision), ``prev_kv``, ``progress_notify``,
    ``filters=noput,nodelete``, ``require_leader`` (default true).

    Raises:
        BadRequest, InvalidCommand: a parameter is unknown, repeated or invalid.
    """
    params = _params(pairs, _WATCH_PARAMS)
    prefix, key, end = params.get("prefix"), params.get("key"), params.get("range_end")
    if prefix is not None and key is not None:
        raise BadRequest("give prefix=P or key=K[&range_end=E], not both")
    if prefix is not None:
        if end is not None:
            raise BadRequest("range_end goes with key=K, not with prefix=P")
        key_range = KeyRange(key=prefix, prefix=True)
    elif key is not None:
        key_range = KeyRange(key=key, range_end=end)
    else:
        raise BadRequest("give prefix=P, or key=K with an optional range_end=E")
    filters = frozenset(f for f in params.get("filters", "").split(",") if f)
    unknown = filters - WATCH_FILTERS
    if unknown:
        raise BadRequest(
            f"unknown filter {sorted(unknown)[0][:40]!r}; filters are noput and nodelete"
        )
    start = params.get("start_revision")
    return WatchQuery(
        range=_check_range(key_range, max_key_bytes),
        start_revision=revision_param(start, "start_revision") if start is not None else 0,
        prev_kv=_flag_param(params, "prev_kv"),
        progress_notify=_flag_param(params, "progress_notify"),
        filters=filters,
        require_leader=_flag_param({"require_leader": "true", **params}, "require_leader"),
    )


def _text(data: bytes) -> bytes:
    return encode_basestring_ascii(data.decode("utf-8", "surrogateescape")).encode("ascii")


def _kv(kv: KeyValue) -> bytes:
    if not kv.version:  # a delete's tombstone: the key and the revision that deleted it
        return b'{"key": %s, "mod_revision": %d}' % (_text(kv.key), kv.mod_revision)
    return (
        b'{"key": %s, "value": %s, "create_revision": %d, "mod_revision": %d, '
        b'"version": %d, "lease": %d}'
        % (
            _text(kv.key),
            kv.value,
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease,
        )
    )


def _event(event: Event) -> bytes:
    out = b'{"type": "%s", "kv": %s' % (event.kind.encode("ascii"), _kv(event.kv))
    if event.prev_kv is not None:
        out += b', "prev_kv": ' + _kv(event.prev_kv)
    return out + b"}"


def created_line(watch_id: int, revision: int) -> bytes:
    """The first line of a stream: the watcher exists; the store is at ``revision``."""
    return b'{"watch_id": %d, "created": true, "revision": %d}\n' % (watch_id, revision)


def response_line(response: WatchResponse) -> bytes:
    """One response as one line (Rule 2)."""
    out = b'{"watch_id": %d, "revision": %d, "events": [%s]' % (
        response.watch_id,
        response.revision,
        b", ".join(_event(e) for e in response.events),
    )
    if response.progress:
        out += b', "progress": true'
    if response.canceled:
        out += b', "canceled": true, "cancel_reason": ' + _text(
            response.cancel_reason.encode("utf-8")
        )
        if response.compact_revision:
            out += b', "compact_revision": %d' % response.compact_revision
    return out + b"}\n"
