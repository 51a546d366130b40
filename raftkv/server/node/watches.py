"""Watches on this node: the replica's watch hub, fed and timed by the runtime.

Rule 1: the hub (:class:`~raftkv.replica.watch.WatchHub`, pure) decides what
each watcher gets; this part only drives it, on the event loop's thread: it is
fed after every applied entry (:meth:`Watches.applied`), so a watcher sees
only applied, committed events, on a follower too; it is given catch-up work
in bounded steps (:meth:`Watches.step`, scheduled while watchers are behind
and on every tick); it is asked for progress notifications every
``progress_interval_s``; and it cancels the watchers that require a leader
once this node has had none for an election timeout.

Rule 2: a watcher's responses wait in the hub (bounded per watcher: a watcher
over its limit is cancelled with a reason, never allowed to grow the node's
memory) until its reader -- one HTTP stream -- takes them. The reader is woken
after each batch of applied entries and each step; it writes what it took and
waits again, so a slow reader slows nobody but itself.

Rule 3: crash-stop. An exception from the hub is a broken invariant: on the
drive loop or the ticker it stops the node as theirs do; in a step scheduled
on its own it calls ``fail``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from raftkv.replica.kv import KVStateMachine
from raftkv.replica.statemachine import StateMachine
from raftkv.replica.watch import InvalidWatch, Watcher, WatchHub, WatchResponse
from raftkv.server.errors import BadRequest, NodeStopped, TooManyWatchers

__all__ = [
    "Watches",
    "WatchStream",
    "CATCH_UP_BUDGET",
    "REASON_STOPPING",
    "REASON_FAILED",
]

logger = logging.getLogger(__name__)

CATCH_UP_BUDGET: Final = 256
"""Revisions of history read per catch-up step (one loop turn; others run between)."""
REASON_STOPPING: Final = "node stopping"
REASON_FAILED: Final = "node failed"


class WatchStream:
    """One watcher, read by one HTTP stream (or one of a gRPC Watch stream's).

    Args:
        watches: the node's watches (closing the stream closes the watcher).
        watcher: the hub's watcher.
        progress_notify: whether the reader wants progress notifications.
        ready: the event to set when the hub may have responses (several
            watchers read by one reader share theirs); default: its own.
    """

    __slots__ = ("watcher", "progress_notify", "_watches", "_ready", "_ended")

    def __init__(
        self,
        watches: Watches,
        watcher: Watcher,
        *,
        progress_notify: bool,
        ready: asyncio.Event | None = None,
    ) -> None:
        self.watcher = watcher
        self.progress_notify = progress_notify
        self._watches = watches
        self._ready = ready if ready is not None else asyncio.Event()
        # The reader went away, or the node stopped: no more responses.
        self._ended = False

    @property
    def watch_id(self) -> int:
        return self.watcher.id

    def wake(self) -> None:
        """The hub may have responses for this watcher."""
        self._ready.set()

    def end(self) -> None:
        """The reader is gone (its connection closed): wake it to finish."""
        self._ended = True
        self._ready.set()

    @property
    def ended(self) -> bool:
        """The reader went away, or the node stopped."""
        return self._ended

    def take(self) -> list[WatchResponse]:
        """The responses waiting, without waiting (progress only if wanted)."""
        return [
            r for r in self.watcher.take() if not r.progress or r.events or self.progress_notify
        ]

    def progress_revision(self) -> int | None:
        """The revision up to which this watcher has been given every event --
        the hub's cursor -- if it is synced and its queue is empty; else None
        (a progress answer now could overtake events)."""
        return self._watches.progress_revision(self)

    async def responses(self, timeout: float) -> list[WatchResponse] | None:
        """The responses waiting (at least one), ``[]`` when none came within
        ``timeout`` seconds, or None once the stream ended."""
        while True:
            self._ready.clear()
            taken = self.take()
            if taken:
                return taken
            if self._ended:
                return None
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []

    def close(self) -> None:
        """Close the watcher (idempotent): the reader is done with it."""
        self._ended = True
        self._watches.close(self)


class Watches:
    """The node's watchers: the hub, its readers and its timers.

    Args:
        state_machine: the replica's state machine (watches need the KV store's).
        election_timeout_s: how long without a leader before watchers that
            require one are cancelled.
        progress_interval_s: how often watchers get a progress notification.
        buffer_bytes: responses a watcher may have waiting for its reader.
        max_watchers: open watchers at most; one more is refused.
        fail: crash-stop the node (a broken invariant in a scheduled step).
    """

    __slots__ = (
        "_hub",
        "_streams",
        "_election_timeout_s",
        "_progress_interval_s",
        "_buffer_bytes",
        "_max_watchers",
        "_fail",
        "_leaderless_since",
        "_next_progress",
        "_step_scheduled",
        "_stopped",
    )

    def __init__(
        self,
        state_machine: StateMachine,
        *,
        election_timeout_s: float,
        progress_interval_s: float,
        buffer_bytes: int,
        max_watchers: int,
        fail: Callable[[str, BaseException], None],
    ) -> None:
        self._hub = WatchHub(state_machine) if isinstance(state_machine, KVStateMachine) else None
        # Invariant: one stream per open watcher of the hub, by watch id.
        self._streams: dict[int, WatchStream] = {}
        self._election_timeout_s = election_timeout_s
        self._progress_interval_s = progress_interval_s
        self._buffer_bytes = buffer_bytes
        self._max_watchers = max_watchers
        self._fail = fail
        self._leaderless_since: float | None = None
        self._next_progress = time.monotonic() + progress_interval_s
        self._step_scheduled = False
        self._stopped = False

    def __len__(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------------ readers

    def open(
        self,
        key: bytes,
        range_end: bytes,
        *,
        start_revision: int,
        prev_kv: bool,
        filters: frozenset[str],
        progress_notify: bool,
        require_leader: bool,
        ready: asyncio.Event | None = None,
    ) -> WatchStream:
        """A new watcher of ``[key, range_end)`` from ``start_revision`` (0: the next);
        ``ready`` as for :class:`WatchStream`.

        Raises:
            BadRequest: this node's state machine has no watches, or the hub
                refuses the arguments.
            NodeStopped: the node stops.
            TooManyWatchers: ``max_watchers`` are open.
        """
        hub = self._hub
        if hub is None:
            raise BadRequest("this node's state machine has no watches")
        if self._stopped:
            raise NodeStopped("node is not serving")
        if len(self._streams) >= self._max_watchers:
            raise TooManyWatchers(
                f"too many watchers: this node serves {self._max_watchers} (--max-watchers)"
            )
        try:
            watcher = hub.create(
                key,
                range_end,
                start_revision=start_revision,
                prev_kv=prev_kv,
                filters=filters,
                require_leader=require_leader,
                max_pending_bytes=self._buffer_bytes,
            )
        except InvalidWatch as exc:
            raise BadRequest(str(exc)) from None
        stream = WatchStream(self, watcher, progress_notify=progress_notify, ready=ready)
        self._streams[watcher.id] = stream
        self._schedule_step()  # a watcher from an old revision catches up now
        return stream

    def close(self, stream: WatchStream) -> None:
        if self._streams.pop(stream.watch_id, None) is not None and self._hub is not None:
            self._hub.close(stream.watch_id)

    def progress_revision(self, stream: WatchStream) -> int | None:
        """:meth:`WatchStream.progress_revision`."""
        hub = self._hub
        if hub is None:
            return None
        hub.applied()
        if not hub.synced(stream.watch_id) or stream.watcher.pending:
            return None
        return hub.revision

    # ------------------------------------------------------------------ the runtime's calls

    def applied(self) -> None:
        """An entry was applied (on the drive loop; an exception stops the node)."""
        if self._hub is not None:
            self._hub.applied()

    def flush(self) -> None:
        """A batch of entries was applied (or a snapshot installed): wake the readers."""
        if self._streams:
            for stream in self._streams.values():
                stream.wake()
            if self._hub is not None and self._hub.catching_up:
                self._schedule_step()

    def tick(self, now: float, leader_known: bool) -> None:
        """The ticker's turn: progress notifications, leader loss, catch-up work.

        Raises:
            Exception: a broken invariant in the hub (the ticker stops the node).
        """
        if leader_known:
            self._leaderless_since = None
        elif self._leaderless_since is None:
            self._leaderless_since = now
        hub = self._hub
        if hub is None or not self._streams:
            return
        woken = False
        since = self._leaderless_since
        if since is not None and now - since >= self._election_timeout_s:
            woken = hub.leader_lost() > 0
        if now >= self._next_progress:
            self._next_progress = now + self._progress_interval_s
            hub.progress()
            woken = True
        if hub.catching_up:
            hub.step(CATCH_UP_BUDGET)
            woken = True
        if woken:
            for stream in list(self._streams.values()):
                stream.wake()

    def stop(self, reason: str = REASON_STOPPING) -> None:
        """The node stops (or failed): every watcher is cancelled with ``reason``
        (its reader writes it and ends).

        Also on a failed node: a hub that raises here is logged, and the
        readers end without a reason.
        """
        self._stopped = True
        hub = self._hub
        for watch_id, stream in list(self._streams.items()):
            try:
                if hub is not None:
                    hub.cancel(watch_id, reason)
            except Exception:
                logger.exception("cancelling watch %d failed", watch_id)
            stream.end()

    # ------------------------------------------------------------------ catch-up

    def _schedule_step(self) -> None:
        if not self._step_scheduled and not self._stopped:
            self._step_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_step)

    def _scheduled_step(self) -> None:
        self._step_scheduled = False
        hub = self._hub
        if hub is None or self._stopped:
            return
        try:
            more = hub.step(CATCH_UP_BUDGET)
        except Exception as exc:  # a broken invariant in the hub: crash-stop
            self._fail("watch catch-up", exc)
            return
        for stream in list(self._streams.values()):
            stream.wake()
        if more:
            self._schedule_step()
