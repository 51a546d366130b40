"""Fault schedules: parsing, determinism, windows inside the run."""

from __future__ import annotations

import itertools
import random

import pytest

from raftkv.sim.faults import ALL_KINDS, FAULT_KINDS, generate_schedule, parse_faults


def test_parse_faults() -> None:
    assert parse_faults("all") == frozenset(ALL_KINDS) == frozenset(FAULT_KINDS) - {"hints"}
    assert parse_faults("all,churn") == frozenset(ALL_KINDS)
    assert parse_faults("all,hints") == frozenset(FAULT_KINDS)
    assert parse_faults("none") == frozenset()
    assert parse_faults("crash, loss") == {"crash", "loss"}
    with pytest.raises(ValueError, match="unknown fault kind"):
        parse_faults("crash,meteor")


def test_schedule_is_deterministic_and_ends_in_time() -> None:
    end = 20_000_000
    a = generate_schedule(random.Random(3), FAULT_KINDS, 5, end)
    b = generate_schedule(random.Random(3), FAULT_KINDS, 5, end)
    c = generate_schedule(random.Random(4), FAULT_KINDS, 5, end)
    assert a == b and a != c
    # "stress" is a per-seed profile, not a schedule of windows.
    assert {w.kind for w in a} == set(FAULT_KINDS) - {"stress"}
    assert all(0 < w.start < w.end <= end for w in a)
    # Windows of one lane never overlap.
    lanes: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for w in a:
        lanes.setdefault((w.kind, w.lane), []).append((w.start, w.end))
    for spans in lanes.values():
        spans.sort()
        assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans))
    # Five nodes get two crash lanes (a minority can be down at once).
    assert {w.lane for w in a if w.kind == "crash"} == {0, 1}


def test_only_requested_kinds() -> None:
    s = generate_schedule(random.Random(1), {"loss"}, 3, 10_000_000)
    assert s and {w.kind for w in s} == {"loss"} and all(0 < w.level <= 0.31 for w in s)
    assert generate_schedule(random.Random(1), set(), 3, 10_000_000) == []
