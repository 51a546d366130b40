"""A watch's position and its stream's lines, without I/O.

Rules:

1. ``GET /v1/watch`` answers a stream of JSON lines (docs/api.md): a
   ``created`` line, then one line per response -- events of whole revisions,
   a progress notification, or a cancellation -- and empty lines that only
   show the stream is alive. :meth:`WatchCursor.feed` reads one line.
2. The cursor holds the next revision the caller has not seen: after events up
   to revision R, or a progress notification at R, it is R + 1. A new stream
   (after a dropped connection, a node that lost its leader, a slow-watcher
   cancellation, a leader change) starts at that revision, so the caller sees
   every event once, in order, without a gap; an event below it (which a
   correct server never sends) is dropped rather than delivered twice.
3. A cancellation because the next revision was compacted is final
   (:class:`~raftkv.client.errors.Compacted`, with the compaction point); every
   other cancellation, and every lost stream, is retried from the cursor.

Standard library only; :class:`~raftkv.client.Client` and
:class:`~raftkv.client.AsyncClient` perform the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from raftkv.client._requests import Request, _query, _range_params
from raftkv.client.errors import BadRequest, Compacted, JSONValue
from raftkv.client.results import WatchEvent, WatchResponse

__all__ = ["WATCH_FILTERS", "WatchCursor", "StreamLost"]

WATCH_FILTERS: Final = ("noput", "nodelete")
"""Event kinds a watch can leave out (etcd's ``NOPUT``/``NODELETE``)."""

IDLE_TIMEOUT_S: Final = 30.0
"""A stream with no line (not even an empty one) for this long is dead: the
server writes an empty line at least every 10 seconds (docs/api.md)."""


class StreamLost(Exception):
    """The stream ended without a final answer: open another from the cursor."""


@dataclass(slots=True, kw_only=True)
class WatchCursor:
    """Where a watch is, and how to (re)open its stream.

    Attributes:
        params: the range and options, as query pairs (without ``start_revision``).
        next_revision: the first revision not yet delivered to the caller;
            0 until the first ``created`` line says where "now" is.
        watch_id: the server's id of the current stream's watcher (for messages).
    """

    params: list[tuple[str, str]]
    next_revision: int = 0
    watch_id: int | None = None
    _describe: str = field(default="watch")

    @staticmethod
    def of(
        *,
        prefix: str | None,
        key: str | None,
        range_end: str | None,
        start_revision: int,
        prev_kv: bool,
        filters: Sequence[str],
        progress_notify: bool,
    ) -> WatchCursor:
        """Check the arguments (as :meth:`raftkv.client.Client.watch` takes them).

        Raises:
            BadRequest: not exactly one of ``prefix`` and ``key``, a negative
                ``start_revision``, an unknown filter.
        """
        params = _range_params(prefix, key, range_end)
        if isinstance(start_revision, bool) or not isinstance(start_revision, int):
            raise BadRequest(f"start_revision must be an integer, not {start_revision!r}")
        if start_revision < 0:
            raise BadRequest(f"start_revision must be >= 0, not {start_revision}")
        for name in filters:
            if name not in WATCH_FILTERS:
                raise BadRequest(f"unknown filter {name!r}; filters are {', '.join(WATCH_FILTERS)}")
        if prev_kv:
            params.append(("prev_kv", "true"))
        if filters:
            params.append(("filters", ",".join(sorted(set(filters)))))
        if progress_notify:
            params.append(("progress_notify", "true"))
        what = f"watch prefix {prefix!r}" if prefix is not None else f"watch {key!r}"
        return WatchCursor(params=params, next_revision=start_revision, _describe=what)

    def request(self) -> Request:
        """The request that opens a stream from :attr:`next_revision`."""
        params = list(self.params)
        if self.next_revision:
            params.append(("start_revision", str(self.next_revision)))
        return Request(op=self._describe, method="GET", path="/v1/watch" + _query(params))

    def feed(self, line: bytes) -> WatchResponse | None:
        """Read one line of the stream: the response to hand to the caller
        (events not seen yet, or a progress notification), or None.

        Raises:
            Compacted: the watch's next revision was compacted (final).
            StreamLost: the server cancelled the stream for another reason
                (no leader, a slow watcher, the node stopping): open another.
        """
        text = line.strip()
        if not text:
            return None  # the stream is alive
        try:
            body = json.loads(text)
        except ValueError:
            raise StreamLost(f"not a JSON line: {text[:80]!r}") from None
        if not isinstance(body, dict):
            raise StreamLost(f"not a JSON object: {text[:80]!r}")
        revision = _int(body.get("revision"))
        watch_id = body.get("watch_id")
        if isinstance(watch_id, int):
            self.watch_id = watch_id
        if body.get("created") is True:
            if self.next_revision == 0:
                self.next_revision = revision + 1
            return None
        if body.get("canceled") is True:
            reason = str(body.get("cancel_reason") or "canceled")
            compact_revision = _int(body.get("compact_revision"))
            if compact_revision:
                raise Compacted(
                    f"{self._describe}: revision {self.next_revision} is compacted "
                    f"(compacted to {compact_revision})",
                    compact_revision=compact_revision,
                    revision=revision or None,
                )
            raise StreamLost(f"{self._describe}: canceled by the server: {reason}")
        raw_events = body.get("events")
        events = tuple(
            WatchEvent.of(e)
            for e in (raw_events if isinstance(raw_events, list) else ())
            if _mod_revision(e) >= self.next_revision
        )
        # A progress notification older than what was delivered says nothing new.
        progress = body.get("progress") is True and revision + 1 >= self.next_revision
        if revision + 1 > self.next_revision:
            self.next_revision = revision + 1
        if not events and not progress:
            return None  # every event was delivered already
        return WatchResponse(revision=revision, events=events, progress=progress)


def _int(value: JSONValue) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _mod_revision(event: JSONValue) -> int:
    kv = event.get("kv") if isinstance(event, dict) else None
    return _int(kv.get("mod_revision")) if isinstance(kv, dict) else 0
