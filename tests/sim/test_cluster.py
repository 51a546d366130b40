"""The simulated cluster as a driver of the Ready contract (``raftkv.core.ready``)."""

from __future__ import annotations

import random

import pytest

from raftkv.core import NodeId, Raft, Role
from raftkv.sim.clock import Clock, seconds
from raftkv.sim.cluster import Cluster
from raftkv.sim.invariants import Invariants, InvariantViolation
from raftkv.sim.mutants import CountsOwnVoteEarly
from raftkv.sim.network import Network

N1 = NodeId("n1")


def one_node_cluster(raft_class: type[Raft] = Raft) -> tuple[Clock, Cluster, Invariants]:
    clock = Clock()
    network = Network(clock, random.Random("0/network"))
    invariants = Invariants((N1,), 0, lambda: clock.now)
    cluster = Cluster(
        seed=0,
        node_ids=(N1,),
        clock=clock,
        network=network,
        invariants=invariants,
        raft_class=raft_class,
    )
    cluster.start()
    return clock, cluster, invariants


def test_a_crash_before_the_vote_is_durable_leaves_no_leader() -> None:
    """A single voter crashes between ready() and the fsync of its new term and
    vote: it never led that term, and after the restart it campaigns from its
    durable term and leads only on a durable vote."""
    clock, cluster, invariants = one_node_cluster()
    node = cluster.nodes[N1]
    while not (node.raw is not None and node.raw.role is Role.CANDIDATE):
        assert clock.step()
    assert node.unpersisted, "the candidate's Ready waits for its fsync"
    rd = node.unpersisted[-1][0]
    assert rd.hard_state is not None and rd.hard_state.vote == N1
    term = rd.hard_state.term
    assert node.disk.durable_hard_state.term < term  # the fsync is still running
    cluster.crash(N1)
    assert term not in invariants.leaders
    assert node.disk.durable_hard_state.term < term

    cluster.restart(N1)
    assert node.raw is not None and node.raw.term < term
    clock.run_until(clock.now + seconds(5))
    assert node.raw.role is Role.LEADER
    hs = node.disk.durable_hard_state
    assert (hs.term, hs.vote) == (node.raw.term, N1)


def test_a_vote_counted_before_its_fsync_is_caught() -> None:
    """The mutant leads before the fsync of its vote; election safety says so."""
    clock, _, _ = one_node_cluster(CountsOwnVoteEarly)
    with pytest.raises(InvariantViolation, match=r"election-safety.*not durable"):
        clock.run_until(seconds(5))
