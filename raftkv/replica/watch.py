"""Watches: every change to a key or a range, in order, from a revision (etcd's Watch).

Rules:

1. **Only what was applied.** A :class:`WatchHub` reads the state machine it
   is given after the driver applied entries (:meth:`WatchHub.applied`), so a
   watcher on any node -- a follower too -- sees committed changes only.
2. **In order, exactly once, whole revisions.** Each watcher has the first
   revision it has not been given. Every response holds all of the matching
   events of one revision (in key order), responses come in increasing
   revision order, and a revision is passed only once its events are queued.
   A watcher that resumes from the revision after the last one it saw gets
   exactly what it missed.
3. **Synced or catching up.** A watcher whose next revision is past the hub's
   cursor (:attr:`WatchHub.revision`, the last revision it dispatched) is
   *synced*: :meth:`WatchHub.applied` hands it the new revisions' events. One
   that starts in the past, or fell behind (a restore, several revisions
   applied between two calls), catches up from the store's history in bounded
   slices (:meth:`WatchHub.step`) and is synced once it reaches the cursor.
   History below the compact revision is gone: such a watcher is cancelled
   with ``compact_revision`` (:data:`CANCEL_COMPACTED`), and a client restarts
   from there.
4. **Progress never overtakes events.** :meth:`WatchHub.progress` tells a
   watcher "you have everything up to revision R" only when it is synced,
   nothing is waiting in its queue and R is not below its start revision - 1;
   R never decreases, also across a resume on another node.
5. **Bounded.** Events wait in a watcher's queue until :meth:`Watcher.take`;
   a watcher whose queue would pass ``max_pending_bytes`` is cancelled with a
   reason starting with :data:`CANCEL_SLOW` and its queue freed. Catching up
   pauses while a queue is half full, so only a synced watcher whose client
   stopped reading is ever cancelled for it.
6. **A cancel is the last response** (:class:`WatchResponse` with
   ``canceled=True`` and a reason), after the responses already queued (a slow
   watcher's queue is dropped: it resumes from the last revision it read); the
   hub forgets the watcher. A watcher that
   requires a leader is cancelled by :meth:`WatchHub.leader_lost` with
   :data:`CANCEL_NO_LEADER` -- the node calls it once it has been without a
   leader for an election timeout.

Pure: no clock, no I/O. The node runtime and the simulator drive the same hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from raftkv.replica.commands import KVError
from raftkv.replica.mvcc import EVENT_DELETE, EVENT_PUT, CompactedError, Event

__all__ = [
    "EVENT_PUT",
    "EVENT_DELETE",
    "Event",
    "FILTER_NO_PUT",
    "FILTER_NO_DELETE",
    "CANCEL_COMPACTED",
    "CANCEL_NO_LEADER",
    "CANCEL_SLOW",
    "DEFAULT_MAX_PENDING_BYTES",
    "EVENT_OVERHEAD_BYTES",
    "InvalidWatch",
    "WatchResponse",
    "WatchSource",
    "Watcher",
    "WatchHub",
]

FILTER_NO_PUT: Final = "noput"
"""Filter out put events (etcd's ``NOPUT``)."""
FILTER_NO_DELETE: Final = "nodelete"
"""Filter out delete events (etcd's ``NODELETE``)."""
_FILTERS: Final = frozenset({FILTER_NO_PUT, FILTER_NO_DELETE})

CANCEL_COMPACTED: Final = "compacted"
CANCEL_NO_LEADER: Final = "no leader"
CANCEL_SLOW: Final = "slow watcher"
DEFAULT_MAX_PENDING_BYTES: Final = 4 << 20
"""Default bound of a watcher's queue (rule 5)."""
EVENT_OVERHEAD_BYTES: Final = 64
"""What an event costs in a queue besides its keys and values (a stand-in)."""
DEFAULT_STEP_BUDGET: Final = 256
"""Revisions of history one :meth:`WatchHub.step` reads by default."""


class InvalidWatch(KVError, ValueError):
    """A watch request that cannot be served (empty key, unknown filter, bad revision)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchResponse:
    """What a watcher is told: events, progress, or its end.

    Attributes:
        watch_id: the watcher.
        revision: with events, the revision they belong to; with progress, the
            revision up to which the watcher has every event; on a cancel, the
            hub's cursor.
        events: every matching event of one revision, in key order.
        progress: a progress notification (no events).
        canceled: the watcher is over; nothing follows.
        cancel_reason: why (:data:`CANCEL_COMPACTED`, :data:`CANCEL_NO_LEADER`,
            ``"slow watcher: ..."``, or the reason given to :meth:`WatchHub.cancel`).
        compact_revision: with :data:`CANCEL_COMPACTED`, the store's compact
            revision: the earliest revision a new watch may start from.
    """

    watch_id: int
    revision: int
    events: tuple[Event, ...] = ()
    progress: bool = False
    canceled: bool = False
    cancel_reason: str = ""
    compact_revision: int = 0


class WatchSource(Protocol):
    """What a hub reads (:class:`~raftkv.replica.kv.KVStateMachine` is one)."""

    @property
    def revision(self) -> int: ...

    @property
    def compact_revision(self) -> int: ...

    @property
    def restores(self) -> int: ...

    def last_events(self) -> tuple[int, tuple[Event, ...]] | None: ...

    def events_between(
        self, key: bytes, range_end: bytes, start_revision: int, end_revision: int
    ) -> list[Event]: ...


class Watcher:
    """One watch: its range and options, and its queue of responses.

    Read-only outside the hub but for :meth:`take`.
    """

    __slots__ = (
        "id",
        "key",
        "range_end",
        "prev_kv",
        "filters",
        "require_leader",
        "max_pending_bytes",
        "canceled",
        "_next",
        "_pending",
        "_pending_bytes",
    )

    def __init__(
        self,
        watch_id: int,
        key: bytes,
        range_end: bytes,
        prev_kv: bool,
        filters: frozenset[str],
        require_leader: bool,
        max_pending_bytes: int,
        start_revision: int,
    ) -> None:
        self.id = watch_id
        self.key = key
        self.range_end = range_end
        self.prev_kv = prev_kv
        self.filters = filters
        self.require_leader = require_leader
        self.max_pending_bytes = max_pending_bytes
        self.canceled = False
        self._next = start_revision
        # Invariant: while catching up, the first revision not yet queued;
        # while synced, the watch's start (the hub's cursor + 1 is the next one).
        self._pending: list[WatchResponse] = []
        self._pending_bytes = 0
        # Invariant: the size of the events in _pending (rule 5).

    def __repr__(self) -> str:
        return (
            f"Watcher(id={self.id}, key={self.key!r}, range_end={self.range_end!r}, "
            f"pending={len(self._pending)}, canceled={self.canceled})"
        )

    @property
    def pending(self) -> int:
        """How many responses wait in the queue."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Size of the events waiting in the queue."""
        return self._pending_bytes

    def take(self) -> list[WatchResponse]:
        """Every response queued so far, oldest first; the queue is emptied."""
        pending = self._pending
        if not pending:
            return []
        self._pending = []
        self._pending_bytes = 0
        return pending

    def matches(self, key: bytes) -> bool:
        """Whether ``key`` is in the watched key or range (etcd's conventions)."""
        end = self.range_end
        if not end:
            return key == self.key
        if end == b"\0":
            return key >= self.key
        return self.key <= key < end


def _event_size(event: Event) -> int:
    kv = event.kv
    size = len(kv.key) + len(kv.value) + EVENT_OVERHEAD_BYTES
    prev = event.prev_kv
    if prev is not None:
        size += len(prev.key) + len(prev.value)
    return size


class WatchHub:
    """The watchers of one replica (see the module rules).

    Args:
        source: the state machine whose applied history is watched.
    """

    def __init__(self, source: WatchSource) -> None:
        self._source = source
        self._revision = source.revision
        # Invariant: every synced watcher has been given every matching event
        # up to _revision.
        self._restores = source.restores
        self._next_id = 1
        self._watchers: dict[int, Watcher] = {}
        self._keys: dict[bytes, dict[int, Watcher]] = {}
        self._ranges: dict[int, Watcher] = {}
        # Invariant: the synced watchers: single keys in _keys, ranges in _ranges.
        self._unsynced: dict[int, Watcher] = {}
        # Invariant: every watcher is in exactly one of _keys/_ranges/_unsynced.

    def __len__(self) -> int:
        return len(self._watchers)

    def __repr__(self) -> str:
        return (
            f"WatchHub(revision={self._revision}, watchers={len(self._watchers)}, "
            f"catching_up={len(self._unsynced)})"
        )

    @property
    def revision(self) -> int:
        """The hub's cursor: the last revision handed to the synced watchers."""
        return self._revision

    @property
    def catching_up(self) -> int:
        """How many watchers read history (:meth:`step` has work)."""
        return len(self._unsynced)

    def get(self, watch_id: int) -> Watcher | None:
        return self._watchers.get(watch_id)

    def synced(self, watch_id: int) -> bool:
        """Whether the watcher is open and synced: it has been given every
        matching event up to :attr:`revision` (once its queue is taken)."""
        return watch_id in self._watchers and watch_id not in self._unsynced

    # ------------------------------------------------------------------ watchers

    def create(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: frozenset[str] = frozenset(),
        require_leader: bool = False,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> Watcher:
        """Start a watch of ``key`` (``range_end`` as for a range read).

        Args:
            start_revision: the first revision to report (0: the next one, after
                the current state). Below the compact revision, the watcher
                comes back cancelled (:data:`CANCEL_COMPACTED`).
            prev_kv: events carry the key's previous version.
            filters: :data:`FILTER_NO_PUT`, :data:`FILTER_NO_DELETE`.
            require_leader: :meth:`leader_lost` cancels it.
            max_pending_bytes: bound of its queue (rule 5).

        Raises:
            InvalidWatch: an empty key, an unknown filter, a negative revision
                or a bound below 1.
        """
        if not key:
            raise InvalidWatch("a watch needs a key")
        if not filters <= _FILTERS:
            raise InvalidWatch(f"unknown watch filter(s): {', '.join(sorted(filters - _FILTERS))}")
        if start_revision < 0:
            raise InvalidWatch("start_revision must be >= 0")
        if max_pending_bytes < 1:
            raise InvalidWatch("max_pending_bytes must be >= 1")
        self.applied()
        start = start_revision or self._revision + 1
        w = Watcher(
            self._next_id,
            key,
            range_end,
            prev_kv,
            filters,
            require_leader,
            max_pending_bytes,
            start,
        )
        self._next_id += 1
        self._watchers[w.id] = w
        if start > self._revision:
            self._add_synced(w)
        else:
            self._unsynced[w.id] = w
            compact = self._source.compact_revision
            if start < compact:
                self._cancel(w, CANCEL_COMPACTED, compact_revision=compact)
        return w

    def cancel(self, watch_id: int, reason: str) -> bool:
        """End a watch with a cancel response carrying ``reason``; whether it existed."""
        w = self._watchers.get(watch_id)
        if w is None:
            return False
        self._cancel(w, reason)
        return True

    def close(self, watch_id: int) -> bool:
        """Forget a watch without a response (its client is gone); whether it existed."""
        w = self._watchers.get(watch_id)
        if w is None:
            return False
        self._remove(w)
        w.canceled = True
        w.take()
        return True

    def leader_lost(self) -> int:
        """Cancel every watcher that requires a leader (:data:`CANCEL_NO_LEADER`);
        how many there were."""
        lost = [w for w in self._watchers.values() if w.require_leader]
        for w in sorted(lost, key=_watch_id):
            self._cancel(w, CANCEL_NO_LEADER)
        return len(lost)

    # ------------------------------------------------------------------ driving

    def applied(self) -> None:
        """Hand the revisions applied since the last call to the synced watchers.

        Call it after every applied entry: the new revision's events come from
        the state machine's feed. After several revisions at once (a batch) they
        are read back from the history, a scan of the store; after a restore
        every watcher catches up from its next revision (:meth:`step`).
        """
        source = self._source
        if source.restores != self._restores:
            self._restored()
            return
        current = source.revision
        if current <= self._revision:
            return
        if not self._watchers or (not self._keys and not self._ranges):
            self._revision = current
            return
        got = source.last_events() if current == self._revision + 1 else None
        if got is not None and got[0] == current:
            self._dispatch(current, got[1])
            self._revision = current
            return
        try:
            events = source.events_between(b"\0", b"\0", self._revision + 1, current)
        except CompactedError:
            # Compacted inside the batch: every synced watcher catches up (or is
            # cancelled) on its own.
            self._unsync_all()
            self._revision = current
            return
        i = 0
        while i < len(events):
            revision = events[i].kv.mod_revision
            j = i
            while j < len(events) and events[j].kv.mod_revision == revision:
                j += 1
            self._dispatch(revision, events[i:j])
            i = j
        self._revision = current

    def step(self, budget: int = DEFAULT_STEP_BUDGET) -> bool:
        """Let catching-up watchers read up to ``budget`` revisions of history in
        all; whether any is still catching up."""
        self.applied()
        source = self._source
        for w in sorted(self._unsynced.values(), key=_watch_id):
            if budget <= 0:
                break
            if w._pending_bytes * 2 > w.max_pending_bytes:
                continue  # let its client drain the queue first
            lo = w._next
            hi = min(self._revision, lo + budget - 1)
            if lo <= hi:
                try:
                    events = source.events_between(w.key, w.range_end, lo, hi)
                except CompactedError as exc:
                    self._cancel(w, CANCEL_COMPACTED, compact_revision=exc.compact_revision)
                    continue
                budget -= hi - lo + 1
                stopped = self._queue_history(w, events)
                if w.canceled:
                    continue
                w._next = hi + 1 if stopped is None else stopped
            if w._next > self._revision:
                del self._unsynced[w.id]
                self._add_synced(w)
        return bool(self._unsynced)

    def progress(self) -> None:
        """Queue a progress response at :attr:`revision` for every synced watcher
        with an empty queue (rule 4)."""
        self.applied()
        revision = self._revision
        for w in sorted(self._watchers.values(), key=_watch_id):
            if w.id in self._unsynced or w._pending or w._next > revision + 1:
                # Catching up, events waiting, or starting later than the next
                # revision (a resume on a node that lags: its revision would be
                # older than what the client already has).
                continue
            w._pending.append(WatchResponse(watch_id=w.id, revision=revision, progress=True))

    # ------------------------------------------------------------------ internals

    def _add_synced(self, w: Watcher) -> None:
        if w.range_end:
            self._ranges[w.id] = w
        else:
            self._keys.setdefault(w.key, {})[w.id] = w

    def _remove(self, w: Watcher) -> None:
        self._watchers.pop(w.id, None)
        if self._unsynced.pop(w.id, None) is not None:
            return
        if self._ranges.pop(w.id, None) is not None:
            return
        by_key = self._keys.get(w.key)
        if by_key is not None:
            by_key.pop(w.id, None)
            if not by_key:
                del self._keys[w.key]

    def _cancel(
        self, w: Watcher, reason: str, *, compact_revision: int = 0, drop: bool = False
    ) -> None:
        """End ``w``: its cancel response follows what is queued (or replaces it: ``drop``)."""
        self._remove(w)
        w.canceled = True
        if drop:
            w._pending = []
            w._pending_bytes = 0
        w._pending.append(
            WatchResponse(
                watch_id=w.id,
                revision=self._revision,
                canceled=True,
                cancel_reason=reason,
                compact_revision=compact_revision,
            )
        )

    def _unsync_all(self) -> None:
        """Every synced watcher goes back to catching up, from its next revision."""
        synced = [*self._ranges.values(), *(w for d in self._keys.values() for w in d.values())]
        self._ranges.clear()
        self._keys.clear()
        for w in synced:
            w._next = max(w._next, self._revision + 1)
            self._unsynced[w.id] = w

    def _restored(self) -> None:
        """A snapshot replaced the state: everyone catches up from history."""
        self._restores = self._source.restores
        self._unsync_all()
        self._revision = max(self._revision, self._source.revision)
        compact = self._source.compact_revision
        for w in sorted(self._unsynced.values(), key=_watch_id):
            if w._next < compact:
                self._cancel(w, CANCEL_COMPACTED, compact_revision=compact)

    def _dispatch(self, revision: int, events: tuple[Event, ...] | list[Event]) -> None:
        """Give one revision's events to the synced watchers they match."""
        got: dict[int, list[Event]] = {}
        keys = self._keys
        if keys:
            for ev in events:
                by_key = keys.get(ev.kv.key)
                if by_key is not None:
                    for wid in by_key:
                        got.setdefault(wid, []).append(ev)
        for wid, w in self._ranges.items():
            for ev in events:
                if w.matches(ev.kv.key):
                    got.setdefault(wid, []).append(ev)
        for wid in sorted(got):
            w = self._watchers[wid]
            if w._next > revision:
                continue  # starts later
            self._queue(w, revision, got[wid])

    def _queue(self, w: Watcher, revision: int, events: list[Event]) -> bool:
        """Queue one revision's matching events; False if the watcher was cancelled."""
        if w.filters:
            if FILTER_NO_PUT in w.filters:
                events = [e for e in events if e.kind != EVENT_PUT]
            if FILTER_NO_DELETE in w.filters:
                events = [e for e in events if e.kind != EVENT_DELETE]
            if not events:
                return True
        if not w.prev_kv:
            events = [
                e if e.prev_kv is None else Event(kind=e.kind, kv=e.kv, prev_kv=None)
                for e in events
            ]
        size = sum(_event_size(e) for e in events)
        if w._pending_bytes + size > w.max_pending_bytes:
            self._cancel(
                w,
                f"{CANCEL_SLOW}: {w._pending_bytes + size} bytes of events pending, "
                f"limit {w.max_pending_bytes}",
                drop=True,
            )
            return False
        w._pending.append(WatchResponse(watch_id=w.id, revision=revision, events=tuple(events)))
        w._pending_bytes += size
        return True

    def _queue_history(self, w: Watcher, events: list[Event]) -> int | None:
        """Queue history, revision by revision, until the queue is half full:
        the revision it stopped at, or None if it queued everything."""
        half = w.max_pending_bytes // 2
        i = 0
        while i < len(events):
            revision = events[i].kv.mod_revision
            j = i
            while j < len(events) and events[j].kv.mod_revision == revision:
                j += 1
            if w._pending and w._pending_bytes > half:
                return revision
            if not self._queue(w, revision, events[i:j]):
                return None  # cancelled: one revision is more than the bound
            i = j
        return None


def _watch_id(w: Watcher) -> int:
    return w.id
