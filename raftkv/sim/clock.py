"""Virtual time and the event heap.

Rule: time is an integer number of microseconds that only moves when the next
event is popped. Events at the same instant run in the order they were
scheduled (ties broken by a sequence number), so a run never depends on how the
heap orders equal keys or on comparing callbacks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Micros = int
"""A point or span of virtual time, in microseconds."""

MICROS_PER_MS: Micros = 1_000
MICROS_PER_SECOND: Micros = 1_000_000


def ms(value: float) -> Micros:
    """``value`` milliseconds as :data:`Micros`."""
    return int(value * MICROS_PER_MS)


def seconds(value: float) -> Micros:
    """``value`` seconds as :data:`Micros`."""
    return int(value * MICROS_PER_SECOND)


class Clock:
    """A virtual clock with a heap of pending callbacks.

    Each heap item is ``(time, seq, callback, args)``; ``seq`` is unique, so the
    comparison never reaches the callback. :class:`raftkv.sim.network.Network`
    pushes its deliveries onto ``_heap`` directly, exactly as :meth:`schedule` does.
    """

    __slots__ = ("_now", "_seq", "_heap")

    def __init__(self) -> None:
        self._now: Micros = 0
        self._seq = 0
        # Invariant: every item's time is >= self._now.
        self._heap: list[tuple[Micros, int, Callable[..., None], tuple[Any, ...]]] = []

    @property
    def now(self) -> Micros:
        """The current virtual time."""
        return self._now

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, when: Micros, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` at virtual time ``when`` (not before now)."""
        if when < self._now:
            raise ValueError(f"cannot schedule in the past: {when} < {self._now}")
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, callback, args))

    def call_later(self, delay: Micros, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` after ``delay`` microseconds (0 = later this instant)."""
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        self._seq += 1
        heapq.heappush(self._heap, (self._now + delay, self._seq, callback, args))

    def schedule(self, delay: Micros, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        """:meth:`call_later` for hot paths: ``args`` as a tuple, ``delay`` trusted >= 0."""
        self._seq += 1
        heapq.heappush(self._heap, (self._now + delay, self._seq, callback, args))

    def next_time(self) -> Micros | None:
        """The time of the next event, or ``None`` if nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Run the next event; return ``False`` if there was none."""
        if not self._heap:
            return False
        when, _, callback, args = heapq.heappop(self._heap)
        self._now = when
        callback(*args)
        return True

    def run_until(self, deadline: Micros) -> int:
        """Run every event scheduled at or before ``deadline``; return how many ran.

        Afterwards ``now`` is ``deadline`` (time passes even with nothing to do).
        """
        heap = self._heap
        pop = heapq.heappop
        count = 0
        while heap:
            when, _, callback, args = item = pop(heap)
            if when > deadline:
                # Put it back: the order of the heap's items depends only on
                # their (time, seq) keys, so this changes nothing.
                heapq.heappush(heap, item)
                break
            self._now = when
            callback(*args)
            count += 1
        if deadline > self._now:
            self._now = deadline
        return count
