"""Simulated network: latency, loss, duplication, reordering, partitions."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from raftkv.sim.clock import Clock
from raftkv.sim.network import LinkParams, Network


def _net(
    params: LinkParams, seed: int = 1
) -> tuple[Clock, Network, list[tuple[int, str, str, Any]]]:
    clock = Clock()
    net = Network(clock, random.Random(seed), params)
    got: list[tuple[int, str, str, Any]] = []

    def handler_for(ep: str) -> Callable[[str, object], None]:
        return lambda src, payload: got.append((clock.now, src, ep, payload))

    for ep in ("a", "b", "c"):
        net.register(ep, handler_for(ep))
    return clock, net, got


def test_latency_is_base_plus_jitter() -> None:
    clock, net, got = _net(LinkParams(latency_us=1000, jitter_us=200))
    for i in range(500):
        net.send("a", "b", i, "M")
    clock.run_until(10**9)
    delays = [t for t, *_ in got]
    assert len(got) == 500 and min(delays) >= 1000
    mean_jitter = sum(d - 1000 for d in delays) / len(delays)
    assert 120 < mean_jitter < 300
    assert net.delivered["M"] == 500 and net.sent["M"] == 500


def test_zero_jitter_is_fifo_and_exact() -> None:
    clock, net, got = _net(LinkParams(latency_us=700, jitter_us=0))
    for i in range(10):
        net.send("a", "b", i, "M")
    clock.run_until(700)
    assert [p for *_, p in got] == list(range(10)) and {t for t, *_ in got} == {700}


def test_drop_everything_and_nothing() -> None:
    clock, net, got = _net(LinkParams(drop=1.0))
    for i in range(50):
        net.send("a", "b", i, "M")
    clock.run_until(10**9)
    assert got == [] and net.dropped["M"] == 50
    net.update_params(drop=0.0)
    net.send("a", "b", "x", "M")
    clock.run_until(10**10)
    assert len(got) == 1


def test_partial_loss_is_roughly_the_probability() -> None:
    clock, net, _ = _net(LinkParams(drop=0.3))
    for i in range(2000):
        net.send("a", "b", i, "M")
    clock.run_until(10**9)
    assert 0.25 < net.dropped["M"] / 2000 < 0.35
    assert net.dropped["M"] + net.delivered["M"] == 2000


def test_duplicates_are_counted_and_can_be_disabled() -> None:
    clock, net, got = _net(LinkParams(duplicate=1.0))
    net.send("a", "b", "x", "M")
    net.send("a", "b", "y", "N", duplicate=False)
    clock.run_until(10**9)
    assert sorted(p for *_, p in got) == ["x", "x", "y"]
    assert net.duplicated == {"M": 1} and net.delivered == {"M": 2, "N": 1}


def test_reorder_lets_later_messages_overtake() -> None:
    clock, net, got = _net(LinkParams(latency_us=100, jitter_us=0, reorder=0.5, reorder_us=10_000))
    for i in range(100):
        net.send("a", "b", i, "M")
    clock.run_until(10**9)
    order = [p for *_, p in got]
    assert sorted(order) == list(range(100)) and order != list(range(100))


def test_partition_blocks_directed_links_and_in_flight_messages() -> None:
    clock, net, got = _net(LinkParams(latency_us=100, jitter_us=0))
    net.send("a", "b", "in-flight", "M")
    net.block("a", "b")  # one-way: b -> a still works
    net.send("a", "b", "blocked", "M")
    net.send("b", "a", "reverse", "M")
    clock.run_until(1000)
    assert [p for *_, p in got] == ["reverse"]
    assert net.dropped["M"] == 2
    net.heal()
    net.partition([["a"], ["b", "c"]])
    assert net.blocked == {("a", "b"), ("b", "a"), ("a", "c"), ("c", "a")}
    net.send("b", "c", "same-side", "M")
    clock.run_until(2000)
    assert got[-1][3] == "same-side"


def test_down_endpoints_receive_nothing() -> None:
    clock, net, got = _net(LinkParams())
    net.down.add("b")
    net.send("a", "b", "x", "M")
    clock.run_until(10**9)
    assert got == [] and net.dropped["M"] == 1


def test_same_seed_same_schedule() -> None:
    def run(seed: int) -> list[tuple[int, str, str, Any]]:
        clock, net, got = _net(LinkParams(drop=0.1, duplicate=0.1, reorder=0.2), seed)
        for i in range(200):
            net.send("a", "bc"[i % 2], i, "M")
        clock.run_until(10**9)
        return got

    assert run(5) == run(5) and run(5) != run(6)


def test_per_link_override() -> None:
    clock, net, got = _net(LinkParams(latency_us=100, jitter_us=0))
    net.set_link("a", "c", LinkParams(latency_us=5000, jitter_us=0))
    net.send("a", "c", "slow", "M")
    net.send("a", "b", "fast", "M")
    clock.run_until(10**9)
    assert [(t, p) for t, _, _, p in got] == [(100, "fast"), (5000, "slow")]
