"""The ``hints`` fault: the transport's "leader unreachable" hint in the simulator.

A real node is told a peer is gone when its address refuses connections
(:meth:`raftkv.core.RawNode.report_unreachable`). The simulator delivers that
hint to every live node shortly after each crash, and in its windows tells
random followers, falsely, that their live leader is gone. Safety must hold
either way, and a core that misuses the hint must be caught.
"""

from __future__ import annotations

from raftkv.core import NodeId, Raft, Role
from raftkv.sim.faults import parse_faults
from raftkv.sim.runner import SimConfig, SimResult, run_simulation

ALL_AND_HINTS = parse_faults("all,hints")


def run(seed: int, **kw: object) -> SimResult:
    return run_simulation(SimConfig(seed=seed, **kw))  # type: ignore[arg-type]


def test_all_faults_with_hints_stay_safe() -> None:
    counts: dict[str, int] = {}
    for seed in range(1, 7):
        result = run(seed, nodes=5, duration=12, faults=ALL_AND_HINTS)
        assert result.violation is None, result.violation.describe()
        for k, v in result.faults.items():
            counts[k] = counts.get(k, 0) + v
    # Both kinds of hint were delivered and acted on.
    assert counts.get("hint-crash", 0) > 0 and counts.get("hint-false", 0) > 0, counts


def test_true_hints_shorten_failover() -> None:
    """Leader crash -> next leader: much sooner with the hints than without."""

    def mean_failover_us(faults: str) -> float:
        total = count = 0
        for seed in range(1, 6):
            result = run(seed, nodes=3, duration=20, faults=parse_faults(faults))
            assert result.violation is None, result.violation.describe()
            total += result.cluster.get("failover_us", 0)
            count += result.cluster.get("failovers", 0)
        assert count >= 5
        return total / count

    without, with_hints = mean_failover_us("crash"), mean_failover_us("crash,hints")
    # An election timeout is 10-20 ticks; a hinted follower campaigns within 1-2.
    assert with_hints < without / 2, (with_hints, without)


class SeizesOnHint(Raft):
    """Broken: a follower told its leader is gone takes office without an election."""

    def report_unreachable(self, peer: NodeId) -> bool:
        if self.role is Role.FOLLOWER and peer == self.leader and self.is_voter(self.node_id):
            self.become_pre_candidate()
            self.become_leader()
            return True
        return False


def test_a_core_that_misuses_the_hint_is_caught() -> None:
    for seed in range(1, 21):
        result = run(seed, nodes=5, duration=10, faults=ALL_AND_HINTS, raft_class=SeizesOnHint)
        if result.violation is not None:
            assert result.violation.checker == "election-safety", result.violation.describe()
            return
    raise AssertionError("a leader seizing office on a hint survived 20 seeds")
