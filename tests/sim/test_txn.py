"""``raftkv sim --txn``: range reads, transactions, delete-range and compaction
under every fault, checked by their revisions (raftkv.history.revisions).

The default run takes a short slice of seeds; ``make sim-long`` runs the full
sweeps of issue 16 (seeds 1-1000, with and without membership, snapshots and
ReadIndex reads).
"""

from __future__ import annotations

from collections import Counter

import pytest

from raftkv.history.linearizability import OK
from raftkv.replica.kv import Compact, DeleteRange, Listing, Range, Txn
from raftkv.sim.faults import parse_faults
from raftkv.sim.runner import SimConfig, SimResult, format_summary, run_simulation

ALL = parse_faults("all")


def run(seed: int, **kw: object) -> SimResult:
    config = SimConfig(seed=seed, faults=ALL, txn=True, **kw)  # type: ignore[arg-type]
    return run_simulation(config)


def assert_ok(result: SimResult) -> None:
    assert result.violation is None, result.violation.describe()
    assert result.verdicts["revisions"] == "ok", result.verdicts
    assert result.verdicts["linearizability"] == "ok", result.verdicts


def test_quick_sweep_txn_all_faults() -> None:
    kinds: Counter[str] = Counter()
    for seed in range(1, 7):
        result = run(seed, duration=12)
        assert_ok(result)
        kinds.update(result.txn_ops)
    # Every kind of multi-key operation was answered, both transaction branches ran.
    for kind in ("range", "txn", "txn-failed", "txn-read-only", "delete_range", "compact"):
        assert kinds[kind] > 0, kinds
    assert kinds["txn"] > kinds["txn-failed"]


def test_quick_sweep_txn_membership_snapshots_reads() -> None:
    served = 0
    for seed in range(1, 4):
        result = run(seed, duration=12, membership=True, snapshot_every=20, reads=True, retries=2)
        assert_ok(result)
        served += result.cluster.get("reads_served", 0)
        assert result.cluster.get("snapshots_taken", 0) > 0
    assert served > 0


def test_ranges_through_read_index_are_checked() -> None:
    result = run(2, duration=12, reads=True, retries=2)
    assert_ok(result)
    ranges = [
        op.command
        for op in result.rev_history
        if isinstance(op.command, Range) and op.status == OK and isinstance(op.answer, Listing)
    ]
    assert ranges and any(cmd.revision for cmd in ranges)  # some at an older revision
    assert result.cluster["read_index"] > 0


def test_unknown_outcomes_are_placed_by_the_checker() -> None:
    """Without settling unknown outcomes from the nodes, the checker itself
    places the ``info`` writes that took effect."""
    placed = 0
    for seed in (1, 3):
        result = run(seed, duration=12, resolve_unknown=False)
        assert_ok(result)
        placed += result.revisions["unknown_placed"]
    assert placed > 0


def test_history_holds_every_kind_and_single_key_ops_keep_their_wgl_check() -> None:
    result = run(1, duration=12)
    assert_ok(result)
    commands = {type(op.command) for op in result.rev_history}
    assert {Range, Txn, DeleteRange, Compact} <= commands
    singles = {op.op_id for op in result.history}
    assert singles and singles < {op.op_id for op in result.rev_history}
    assert all(op.key.startswith("k") for op in result.history)


def test_txn_runs_are_reproducible_and_summarised() -> None:
    a = run(5, duration=6, trace=True)
    b = run(5, duration=6, trace=True)
    assert a.trace_sha256 == b.trace_sha256
    text = format_summary(a)
    assert text == format_summary(b)
    assert text.splitlines()[0].endswith(" txn")
    assert "multi-key ops" in text and "revisions=ok" in text


def test_without_txn_the_summary_has_no_revision_check() -> None:
    result = run_simulation(SimConfig(seed=1, duration=4, faults=ALL))
    assert "revisions" not in result.verdicts
    assert "multi-key ops" not in format_summary(result)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 101))
def test_long_sweep_txn(seed: int) -> None:
    assert_ok(run(seed, duration=30))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 51))
def test_long_sweep_txn_membership_snapshots_reads(seed: int) -> None:
    assert_ok(run(seed, duration=30, membership=True, snapshot_every=20, reads=True, retries=2))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 31))
def test_long_sweep_txn_unresolved_history(seed: int) -> None:
    assert_ok(run(seed, duration=20, resolve_unknown=False, reads=seed % 2 == 0))
