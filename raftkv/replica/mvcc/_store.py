"""The MVCC store: :class:`MVCCStore`, with its single-key writes and the change feed.

Rule: this class adds no state; its fields and invariants are
:class:`~raftkv.replica.mvcc._state._StoreState`'s, and the reads,
transactions, compaction and wire form come from its bases (the package
docstring lists them). The writes here each make one revision.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Any, cast

from raftkv.replica.mvcc._compaction import _Compaction
from raftkv.replica.mvcc._errors import CompactedError, EmptyKeyError
from raftkv.replica.mvcc._txn import _Transactions
from raftkv.replica.mvcc._values import EVENT_DELETE, EVENT_PUT, Event, KeyValue
from raftkv.replica.mvcc._versions import (
    _by_mod_revision,
    _make_kv,
    _new,
    _revision_then_key,
    _Version,
)
from raftkv.replica.mvcc._wire import _WireForm


class MVCCStore(_Transactions, _Compaction, _WireForm):
    """An in-memory multi-version key space with etcd v3's semantics (see the package rules).

    Not thread-safe; a replica applies to it from one place.
    """

    __slots__ = ()

    def put(
        self, key: bytes, value: bytes, lease: int = 0, *, prev_kv: bool = True
    ) -> tuple[int, KeyValue | None]:
        """Set ``key`` to ``value`` in a new revision (etcd's ``Put``).

        Args:
            key: the key (not empty).
            value: its new value.
            lease: the lease to attach it to (0: none).
            prev_kv: whether to return the previous version; ``False`` saves
                building it on a path that does not need it.

        Returns:
            The new revision and the key's previous live version (``None`` if it
            was absent, or not asked for).

        Raises:
            EmptyKeyError: ``key`` is empty.
        """
        revision, prev = self._put(key, value, lease)
        if prev is None or not prev_kv:
            return revision, None
        return revision, _make_kv(key, prev)

    def put_found(self, key: bytes, value: bytes, lease: int = 0) -> tuple[int, bool]:
        """:meth:`put` without building the previous version: the new revision
        and whether ``key`` was live before (the single-key write's hot path).

        Raises:
            EmptyKeyError: ``key`` is empty.
        """
        revision, prev = self._put(key, value, lease)
        return revision, prev is not None

    def _put(self, key: bytes, value: bytes, lease: int) -> tuple[int, _Version | None]:
        if not key:
            raise EmptyKeyError()
        revision = self._revision + 1
        prev = self._write_put(key, value, lease, revision)
        self._revision = revision
        self._feed_key = key
        self._feed_revision = revision
        return revision, prev

    def delete_range(self, key: bytes, range_end: bytes = b"") -> tuple[int, tuple[KeyValue, ...]]:
        """Delete ``key`` or a range of keys (etcd's ``DeleteRange``).

        ``range_end`` is as for :meth:`range`. Deleting nothing does not move the
        revision.

        Returns:
            The store's revision afterwards and the deleted versions in key order.

        Raises:
            EmptyKeyError: ``key`` is empty.
        """
        if not key:
            raise EmptyKeyError()
        found = self._collect(key, range_end, None)
        if not found:
            return self._revision, ()
        revision = self._revision + 1
        for k, _ in found:
            self._write_tombstone(k, revision)
        self._revision = revision
        self._feed_key = None
        self._feed = [k for k, _ in found]
        self._feed_revision = revision
        return revision, tuple(_make_kv(k, v) for k, v in found)

    # ------------------------------------------------------------------ change feed

    def last_written(self) -> tuple[int, tuple[bytes, ...]] | None:
        """The current revision and the keys written at it, in write order, if
        this store object wrote it (``None`` in a fresh or restored store until
        its first write)."""
        if self._feed_revision != self._revision:
            return None
        if self._feed_key is not None:
            return self._revision, (self._feed_key,)
        return self._revision, tuple(self._feed)

    def last_events(self) -> tuple[int, tuple[Event, ...]] | None:
        """The events of the current revision, in key order, with ``prev_kv``
        (``None`` as for :meth:`last_written`)."""
        written = self.last_written()
        if written is None:
            return None
        revision, keys = written
        entries = self._entries
        events: list[Event] = []
        for key in sorted(keys):
            entry = entries[key]
            if isinstance(entry, list):
                events.append(self._event(key, entry, len(entry) - 1))
            else:
                events.append(self._event(key, [entry], 0))
        return revision, tuple(events)

    def _event(self, key: bytes, versions: list[_Version], i: int) -> Event:
        """The event of ``versions[i]``; its ``prev_kv`` unless compaction dropped it."""
        v = versions[i]
        prev_kv = None
        if i > 0 and v[0] > self._compact_revision:
            p = versions[i - 1]
            if p[2]:
                prev_kv = _make_kv(key, p)
        ev: Any = _new(Event)
        ev.kind = EVENT_PUT if v[2] else EVENT_DELETE
        ev.kv = _make_kv(key, v)
        ev.prev_kv = prev_kv
        return cast(Event, ev)

    def events_between(
        self, key: bytes, range_end: bytes, start_revision: int, end_revision: int
    ) -> list[Event]:
        """Every change to a key or range at revisions ``start..end`` (both
        included; ``end`` is cut to the current revision), in revision order
        and within a revision in key order -- what a watcher from
        ``start_revision`` must see.

        ``range_end`` is as for :meth:`range`. The history is complete from the
        compact revision on: a change at the compact revision itself is kept
        (package rule 6), but without its ``prev_kv``.

        Raises:
            EmptyKeyError: ``key`` is empty.
            CompactedError: ``start_revision`` is below the compact revision.
        """
        if not key:
            raise EmptyKeyError()
        if start_revision < self._compact_revision:
            raise CompactedError(self._compact_revision)
        end_revision = min(end_revision, self._revision)
        if start_revision > end_revision:
            return []
        entries = self._entries
        if not range_end:
            keys: Iterable[bytes] = (key,) if key in entries else ()
        else:
            keys = self._index.irange(key, None if range_end == b"\0" else range_end)
        found: list[tuple[int, bytes, list[_Version], int]] = []
        for k in keys:
            entry = entries[k]
            if isinstance(entry, list):
                versions = entry
                i = bisect_right(versions, start_revision - 1, key=_by_mod_revision)
            else:
                versions = [entry]
                i = 0 if entry[0] >= start_revision else 1
            while i < len(versions) and versions[i][0] <= end_revision:
                found.append((versions[i][0], k, versions, i))
                i += 1
        found.sort(key=_revision_then_key)
        return [self._event(k, versions, i) for _, k, versions, i in found]

    def live_leases(self) -> list[tuple[bytes, int]]:
        """``(key, lease)`` of every live key attached to a lease, in key order."""
        out: list[tuple[bytes, int]] = []
        entries = self._entries
        for key in self._index:
            entry = entries[key]
            v = entry[-1] if isinstance(entry, list) else entry
            if v[2] and v[3]:
                out.append((key, v[3]))
        return out
