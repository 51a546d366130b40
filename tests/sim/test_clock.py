"""Virtual clock: ordering, tie-breaking and run_until."""

from __future__ import annotations

import pytest

from raftkv.sim.clock import Clock, ms, seconds


def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    clock = Clock()
    seen: list[tuple[int, str]] = []
    clock.call_at(30, lambda: seen.append((clock.now, "c")))
    clock.call_at(10, lambda: seen.append((clock.now, "a1")))
    clock.call_at(10, lambda: seen.append((clock.now, "a2")))
    clock.call_at(20, lambda: seen.append((clock.now, "b")))
    clock.call_at(10, lambda: seen.append((clock.now, "a3")))
    assert clock.run_until(100) == 5
    assert seen == [(10, "a1"), (10, "a2"), (10, "a3"), (20, "b"), (30, "c")]
    assert clock.now == 100


def test_callbacks_can_schedule_at_the_same_instant() -> None:
    clock = Clock()
    seen: list[str] = []

    def first() -> None:
        seen.append("first")
        clock.call_later(0, seen.append, "same-instant")

    clock.call_at(5, first)
    clock.call_at(5, seen.append, "second")
    clock.run_until(5)
    assert seen == ["first", "second", "same-instant"]


def test_run_until_leaves_later_events() -> None:
    clock = Clock()
    seen: list[int] = []
    for t in (1, 2, 3, 4):
        clock.call_at(t, seen.append, t)
    clock.run_until(2)
    assert seen == [1, 2] and len(clock) == 2 and clock.next_time() == 3
    assert clock.step() and seen == [1, 2, 3]
    clock.run_until(10)
    assert not clock.step()


def test_no_scheduling_in_the_past() -> None:
    clock = Clock()
    clock.run_until(10)
    with pytest.raises(ValueError):
        clock.call_at(5, lambda: None)
    with pytest.raises(ValueError):
        clock.call_later(-1, lambda: None)


def test_units() -> None:
    assert ms(1.5) == 1_500 and seconds(2) == 2_000_000
