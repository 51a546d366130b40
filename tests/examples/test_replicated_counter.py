"""The state machine of ``examples/replicated_counter.py``, without a node."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from raftkv.replica.statemachine import StateMachine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "replicated_counter.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replicated_counter", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_counter_and_leased_lock() -> None:
    ex = load()
    assert isinstance(ex.CounterLockMachine(), StateMachine)
    sm: Any = ex.CounterLockMachine()
    log = [
        ex.incr("visits"),
        ex.incr("visits", 4),
        ex.acquire("job", "a", 1000, 10_000),
        ex.acquire("job", "b", 1000, 10_500),  # a still holds it
        ex.acquire("job", "b", 1000, 11_001),  # a's lease ran out (log time)
        ex.acquire("job", "a", 1000, 900),  # a leader with a slow clock: log time stays
        ex.release("job", "a"),  # not a's any more
        ex.release("job", "b"),
        b"garbage",
    ]
    results: list[Any] = [sm.apply(i, cmd) for i, cmd in enumerate(log, start=1)]
    assert [r.ok for r in results] == [True, True, True, False, True, False, False, True, False]
    assert results[1].value == 5 and results[3].value == "a" and results[5].value == "b"
    assert sm.counters == {"visits": 5} and sm.locks == {} and sm.log_time_ms == 11_001

    replica = ex.CounterLockMachine()
    for i, cmd in enumerate(log[:5], start=1):
        replica.apply(i, cmd)
    copy = ex.CounterLockMachine()
    copy.restore(replica.snapshot())
    assert copy.snapshot() == replica.snapshot()
    assert copy.locks == {"job": ("b", 12_001)}
