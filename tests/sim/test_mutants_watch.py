"""Mutation tests of issue 17: watches and leases under ``--watches`` / ``--leases``.

Each mutant in :data:`raftkv.sim.mutants.WATCH_MUTANTS` and
:data:`~raftkv.sim.mutants.LEASE_MUTANTS` breaks one rule of the replica layer's
watch hub or lessor, on every node. A test sweeps seeds in order with every
fault on until the watch or lease checker reports a violation, and fails if
none does within the bound. A control runs the correct code through the same
kind of seeds.
"""

from __future__ import annotations

from raftkv.sim.faults import parse_faults
from raftkv.sim.invariants import Violation
from raftkv.sim.mutants import LEASE_MUTANTS, WATCH_MUTANTS, plant
from raftkv.sim.runner import SimConfig, run_simulation

SWEEP = range(1, 31)
"""Seeds tried, in order, before a mutant counts as not caught."""
DURATION = 10.0
ALL = parse_faults("all")


def first_violation(name: str | None, seeds: range = SWEEP) -> tuple[int, Violation] | None:
    for seed in seeds:
        config = SimConfig(seed=seed, duration=DURATION, faults=ALL, watches=True, leases=True)
        if name is not None:
            config = plant(name, config)
        result = run_simulation(config)
        if result.violation is not None:
            return seed, result.violation
    return None


def assert_caught(name: str, *, checker: str, expect: str) -> None:
    found = first_violation(name)
    assert found is not None, f"mutant {name} survived seeds {SWEEP.start}-{SWEEP.stop - 1}"
    _, violation = found
    assert violation.checker == checker, violation.describe()
    assert expect in violation.message, violation.describe()


def test_the_correct_hub_and_lessor_pass_the_sweep_prefix() -> None:
    assert first_violation(None, range(1, 9)) is None


def test_a_watch_that_skips_events_across_a_reconnect_is_caught() -> None:
    assert_caught("watch-skips-on-resume", checker="watch", expect="a gap")


def test_a_progress_notification_ahead_of_a_pending_event_is_caught() -> None:
    assert_caught("progress-ahead-of-events", checker="watch", expect="progress overtook events")


def test_a_follower_expiring_leases_on_its_own_clock_is_caught() -> None:
    assert_caught("follower-expires-leases", checker="lease", expect="did not lead")


def test_a_new_leader_that_does_not_extend_leases_is_caught() -> None:
    assert_caught("leader-does-not-extend-leases", checker="lease", expect="an election timeout")


def test_every_watch_and_lease_mutant_has_a_test() -> None:
    assert set(WATCH_MUTANTS) | set(LEASE_MUTANTS) == {
        "watch-skips-on-resume",
        "progress-ahead-of-events",
        "follower-expires-leases",
        "leader-does-not-extend-leases",
    }


def test_planting_turns_on_what_a_mutant_needs() -> None:
    base = SimConfig(seed=1)
    assert plant("watch-skips-on-resume", base).watches
    assert plant("follower-expires-leases", base).leases
