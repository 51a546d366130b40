"""Mutation tests of issue 16: the replicated store under ``--txn``.

Each mutant in :data:`raftkv.sim.mutants.REPLICA_MUTANTS` and
:data:`~raftkv.sim.mutants.CLUSTER_MUTANTS` breaks one rule of the store or of
its read path -- in the replica layer the servers run, or in the simulated
nodes' read path. A test sweeps seeds in order with every fault on and the
multi-key workload, until the revision checker (:mod:`raftkv.history.revisions`)
reports a violation, and fails if none does within the bound. A control runs
the correct code through the same seeds.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from raftkv.cli import main
from raftkv.sim.faults import parse_faults
from raftkv.sim.invariants import Violation
from raftkv.sim.mutants import CLUSTER_MUTANTS, REPLICA_MUTANTS, plant
from raftkv.sim.runner import SimConfig, run_simulation

SWEEP = range(1, 31)
"""Seeds tried, in order, before a mutant counts as not caught."""
DURATION = 10.0
ALL = parse_faults("all")


def first_violation(name: str | None, seeds: range = SWEEP) -> tuple[int, Violation] | None:
    for seed in seeds:
        config = SimConfig(seed=seed, duration=DURATION, faults=ALL, txn=True)
        if name is not None:
            config = plant(name, config)
        result = run_simulation(config)
        if result.violation is not None:
            return seed, result.violation
    return None


def assert_caught(
    name: str, *, expect: str | tuple[str, ...], checkers: tuple[str, ...] = ("revisions",)
) -> None:
    """The mutant is caught by one of ``checkers`` with a message containing
    ``expect`` (one of them: which symptom a checker meets first depends on
    the schedule)."""
    found = first_violation(name)
    assert found is not None, f"mutant {name} survived seeds {SWEEP.start}-{SWEEP.stop - 1}"
    _, violation = found
    assert violation.checker in checkers, violation.describe()
    wanted = (expect,) if isinstance(expect, str) else expect
    assert any(w in violation.message for w in wanted), violation.describe()


def test_the_correct_store_passes_the_sweep_prefix() -> None:
    assert first_violation(None, range(1, 9)) is None
    reads = [plant("range-reads-without-read-index", SimConfig(seed=s)).reads for s in (1, 2)]
    assert reads == [True, True]


def test_range_reads_without_read_index_are_caught() -> None:
    """§6.4: a node answering a range from its own applied state serves a
    revision older than a write that had already returned to another client."""
    assert_caught("range-reads-without-read-index", expect="out of real-time order")


def test_a_compare_holding_on_one_key_of_a_range_is_caught() -> None:
    """etcd: a compare over a range holds only if it holds for every key."""
    # The wrong branch shows as a different outcome, or as a write where the
    # model's failed branch changes nothing.
    assert_caught("txn-compare-any-key", expect=("succeeded differs", "answered as a write"))


def test_a_read_only_transaction_that_bumps_the_revision_is_caught() -> None:
    assert_caught("read-only-txn-bumps-revision", expect="was made by no operation")


def test_a_compaction_that_drops_the_newest_version_is_caught() -> None:
    # A key whose newest version is gone reads wrong: the single-key history
    # (linearizability) or the revision model may see it first.
    assert_caught(
        "compaction-drops-newest-version",
        expect=("revision", "NOT linearizable"),
        checkers=("revisions", "linearizability"),
    )


def test_every_store_mutant_has_a_test() -> None:
    assert set(REPLICA_MUTANTS) | set(CLUSTER_MUTANTS) == {
        "range-reads-without-read-index",
        "txn-compare-any-key",
        "read-only-txn-bumps-revision",
        "compaction-drops-newest-version",
    }


@pytest.mark.parametrize("name", ["txn-compare-any-key", "range-reads-without-read-index"])
def test_mutant_option_shows_the_violation_and_a_replay(name: str, tmp_path: object) -> None:
    found = first_violation(name)
    assert found is not None
    seed, _ = found
    args = ["sim", "--seed", str(seed), "--time", str(DURATION), "--mutant", name]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "VIOLATION revisions" in result.output
    assert "revisions=VIOLATED" in result.output
    replay = next(line for line in result.output.splitlines() if "replay:" in line)
    assert f"--txn --mutant {name}" in replay, replay
