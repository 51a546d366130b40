"""Under the simulator: membership changes, snapshots, ReadIndex reads and
session retries, all while partitions, crashes, loss and duplication go on.

The sweep checks that the runs are clean *and* that they exercised what they
claim to (InstallSnapshot, leader removal, joint changes, transfers, follower
reads, retried writes); the bug-injection tests show the new checkers
(``at-most-once``, ``membership``) catch real bugs in the whole pipeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

import raftkv.sim.cluster as sim_cluster
from raftkv.core import ConfChange, ConfState, Raft
from raftkv.replica.kv import KVStateMachine
from raftkv.replica.sessions import SessionTable
from raftkv.sim.faults import parse_faults
from raftkv.sim.runner import SimConfig, SimResult, format_summary, run_simulation

COMPLETE = {"membership": True, "snapshot_every": 20, "reads": True, "retries": 2}
FAULTS = parse_faults("partition,crash,loss,dup,reorder,stress")
"""Every fault but ``churn``, whose constant leader changes starve the operator."""


def run(seed: int, **kw: object) -> SimResult:
    options: dict[str, object] = {"nodes": 5, "faults": FAULTS, **COMPLETE, **kw}
    return run_simulation(SimConfig(seed=seed, **options))  # type: ignore[arg-type]


def test_sweep_with_every_fault_and_feature_is_clean() -> None:
    for seed in range(101, 111):
        result = run(seed, duration=10.0, faults=parse_faults("all"))
        assert result.violation is None, result.violation.describe()
        assert result.converged, format_summary(result)


def test_sweep_with_every_feature_is_clean_and_covers_the_features() -> None:
    totals: Counter[str] = Counter()
    installed_runs = 0
    for seed in range(1, 17):
        result = run(seed, duration=12.0)
        assert result.violation is None, result.violation.describe()
        assert result.converged, format_summary(result)
        assert result.verdicts["linearizability"] == "ok"
        totals.update(result.cluster)
        installed_runs += result.cluster.get("snapshots_installed", 0) > 0
    # Snapshots are small and frequent, so most runs need InstallSnapshot.
    assert installed_runs > 8, installed_runs
    assert totals["conf_changes_applied"] > 100
    for action in ("add_learner", "promote", "remove", "remove_leader", "replace", "transfer"):
        assert totals["operator_" + action] > 0, action
    assert totals["nodes_added"] > 0 and totals["nodes_retired"] > 0
    assert totals["reads_served"] > 1000
    assert totals["client_retries"] > 0


def test_same_seed_same_trace_with_every_feature() -> None:
    a = run(5, duration=6.0, trace=True)
    b = run(5, duration=6.0, trace=True)
    assert a.trace_sha256 is not None and a.trace_sha256 == b.trace_sha256
    assert format_summary(a) == format_summary(b)
    assert run(6, duration=6.0, trace=True).trace_sha256 != a.trace_sha256


def test_summary_reports_the_features() -> None:
    text = format_summary(run(3, duration=6.0))
    assert "membership snapshots=20 reads retries=2" in text.splitlines()[0]
    for row in ("membership", "snapshots", "reads"):
        assert any(line.strip().startswith(row + " ") for line in text.splitlines()), row


def test_reads_go_through_read_index_not_the_log() -> None:
    result = run_simulation(SimConfig(seed=2, nodes=3, duration=6.0, reads=True))
    assert result.violation is None
    served = result.cluster.get("reads_served", 0)
    gets = sum(1 for op in result.history if op.kind == "get" and op.status == "ok")
    assert served > 0 and gets > 0 and served >= gets


class _SnapshotWithoutSessions(KVStateMachine):
    """Bug planted in the replica layer -- the code the servers run: the
    snapshot image leaves out the session table (§6.3)."""

    def snapshot_later(self) -> Callable[[], bytes]:
        saved = self._sessions
        self._sessions = SessionTable()
        try:
            return super().snapshot_later()
        finally:
            self._sessions = saved


def test_snapshot_without_sessions_is_caught_by_at_most_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node restored from such a snapshot executes a retried write a second time."""
    monkeypatch.setattr(sim_cluster, "KVStateMachine", _SnapshotWithoutSessions)
    for seed in range(1, 41):
        result = run_simulation(
            SimConfig(
                seed=seed,
                nodes=5,
                duration=10.0,
                faults=FAULTS,
                reads=True,
                retries=2,
                snapshot_every=20,
            )
        )
        if result.violation is not None:
            assert result.violation.checker == "at-most-once", result.violation.describe()
            return
    pytest.fail("a snapshot without the session table went unnoticed for 40 seeds")


class _IgnoresRemovals(Raft):
    """Bug: a follower applies additions but ignores removals."""

    def apply_conf_change(self, cc: ConfChange, *, strict: bool = False) -> ConfState:
        if not self.is_leader() and any(c.type.value == "remove-node" for c in cc.changes):
            return self.conf_state()
        return super().apply_conf_change(cc, strict=strict)

    def is_leader(self) -> bool:
        return self.role.value == "leader"


def test_diverging_configurations_are_caught_by_membership() -> None:
    for seed in range(1, 21):
        result = run(seed, duration=10.0, raft_class=_IgnoresRemovals)
        if result.violation is not None:
            assert result.violation.checker == "membership", result.violation.describe()
            return
    pytest.fail("followers ignoring removals went unnoticed for 20 seeds")


def test_a_single_node_cluster_grows_under_the_operator() -> None:
    """The operator on a one-voter cluster (it used to pick a voter to replace
    among none and crash): it adds learners, promotes them, and stays safe."""
    totals: Counter[str] = Counter()
    for seed in range(1, 9):
        result = run(seed, nodes=1, duration=10.0, faults=parse_faults("crash,loss"))
        assert result.violation is None, result.violation.describe()
        totals.update(result.cluster)
    assert totals["operator_add_learner"] > 0 and totals["operator_promote"] > 0
