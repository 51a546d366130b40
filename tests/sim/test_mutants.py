"""Mutation tests: every deliberately broken Raft must be caught by the checkers.

Each mutant in :mod:`raftkv.sim.mutants` breaks one rule of the paper. A test
sweeps seeds in order (all faults on, so the per-seed ``stress`` profile varies
timing and batching) and asserts that some seed within the bound ends in a
violation reported by a safety checker -- never by the core tripping over its
own assertions, and never by a Python error.

A control test runs the correct :class:`raftkv.core.Raft` through the same
sweep prefix, so a "catch" cannot come from the simulator itself being broken.
"""

from __future__ import annotations

import pytest

from raftkv.core import AppendEntries, Entry, Raft
from raftkv.sim.faults import parse_faults
from raftkv.sim.invariants import CHECKERS, Invariants, InvariantViolation, Violation
from raftkv.sim.mutants import MUTANTS, CommitsPastMatch
from raftkv.sim.runner import SimConfig, run_simulation
from tests.core.harness import Harness, nid

SWEEP = range(1, 81)
"""Seeds tried, in order, before a mutant counts as not caught."""
DURATION = 10.0
"""Virtual seconds per seed."""

SAFETY_CHECKERS = frozenset(CHECKERS) | {"linearizability"}


def first_violation(
    raft_class: type[Raft], seeds: range = SWEEP, *, nodes: int = 5
) -> Violation | None:
    for seed in seeds:
        result = run_simulation(
            SimConfig(
                seed=seed,
                nodes=nodes,
                duration=DURATION,
                faults=parse_faults("all"),
                raft_class=raft_class,
            )
        )
        if result.violation is not None:
            return result.violation
    return None


def assert_caught(name: str, expected: set[str]) -> Violation:
    violation = first_violation(MUTANTS[name])
    assert violation is not None, f"mutant {name} survived seeds {SWEEP.start}-{SWEEP.stop - 1}"
    assert violation.checker in SAFETY_CHECKERS, violation.describe()
    assert violation.checker in expected, violation.describe()
    return violation


def test_correct_raft_passes_the_sweep_prefix() -> None:
    assert first_violation(Raft, range(1, 11)) is None


def test_mutant_votes_twice_is_caught() -> None:
    """§5.2: two votes in one term let two candidates win the same term."""
    assert_caught("votes-twice", {"election-safety"})


def test_mutant_no_up_to_date_check_is_caught() -> None:
    """§5.4.1: a candidate missing committed entries wins and overwrites them."""
    assert_caught(
        "no-up-to-date-check",
        {"leader-completeness", "state-machine-safety", "durability", "log-matching"},
    )


def test_mutant_leader_overwrites_log_is_caught() -> None:
    """Leader Append-Only (§5.3): a leader rewriting its own uncommitted suffix."""
    assert_caught("leader-overwrites-log", {"leader-append-only", "log-matching"})


def test_mutant_acks_before_persist_is_caught() -> None:
    """Figure 2 ("before responding to RPCs"): an acknowledged entry lost in a crash."""
    assert_caught(
        "acks-before-persist",
        {"durability", "leader-completeness", "state-machine-safety", "log-matching"},
    )


def test_mutant_counts_own_vote_early_is_caught() -> None:
    """Figure 2 for the candidate's own vote: it counts once durable.

    Only a single voter can win on its own vote alone -- a candidate's
    RequestVotes leave after the persist, so peers' votes always come later --
    so the sweep runs one-node clusters. Election safety checks that a new
    leader's vote for itself is on its disk.
    """
    violation = first_violation(MUTANTS["counts-own-vote-early"], range(1, 11), nodes=1)
    assert violation is not None, "mutant counts-own-vote-early survived"
    assert violation.checker == "election-safety", violation.describe()
    assert "not durable" in violation.message


def test_correct_raft_passes_the_single_voter_sweep_prefix() -> None:
    assert first_violation(Raft, range(1, 11), nodes=1) is None


def test_mutant_truncates_matching_suffix_is_caught() -> None:
    """Figure 2 receiver step 3: a delayed AppendEntries erases acknowledged entries."""
    assert_caught(
        "truncates-matching-suffix",
        {"durability", "leader-completeness", "state-machine-safety", "log-matching"},
    )


def test_mutant_commits_past_match_is_caught() -> None:
    """Figure 2 receiver step 5: commit = min(leaderCommit, index of last *new* entry).

    Caught in the sweep through heartbeats: they prove no match, so a follower
    told the leader's whole commit index commits its own stale suffix.
    """
    assert_caught(
        "commits-past-match",
        {"leader-completeness", "state-machine-safety", "durability", "log-matching"},
    )


@pytest.mark.slow
def test_mutant_commits_previous_term_is_caught() -> None:
    """§5.4.2, Figure 8: committing a previous-term entry by counting replicas.

    Caught in the sweep thanks to the ``churn`` fault, which strings together
    Figure 8's schedule: leaders cut off with entries nobody else has, one of
    them back in office replicating its old entries, crashed before its own
    entry reaches a majority, and the other back to win the next election.
    That takes luck: the first catching seed is 321 (about 90 s of sweeping),
    so this runs with the slow tests; the default suite replays the figure
    exactly (the next test but one).
    """
    violation = first_violation(MUTANTS["commits-previous-term"], range(1, 501))
    assert violation is not None, "mutant commits-previous-term survived seeds 1-500"
    assert violation.checker in {
        "leader-completeness",
        "state-machine-safety",
        "durability",
        "log-matching",
    }, violation.describe()


def test_mutant_commits_past_match_via_append_entries_in_a_constructed_scenario() -> None:
    """The AppendEntries half of ``commits-past-match``, which sweeps never reach.

    The precondition -- a follower accepting an AppendEntries whose entries all
    match while its log continues with stale entries the leader does not have
    -- never arises in the simulator: fast backtracking lands the leader's
    probe exactly on the first divergent entry, so the first AppendEntries a
    follower accepts either truncates its stale suffix or ends past it. We
    therefore deliver, directly, a message a leader of term 3 may send (its
    next index for the follower at 2, one entry per message) and feed what the
    nodes apply to the simulator's State Machine Safety checker.
    """

    def run(raft_class: type[Raft]) -> Violation | None:
        h = Harness(3, raft_class=raft_class, check_quorum=False)
        # n1 leads term 3 with [1:1, 2:1, 3:3, 4:3], committed through 4; n3 holds a
        # stale entry 3:2 from a term-2 leader that never committed it.
        h.load(1, [1, 1, 3, 3], term=3, commit=4)
        h.load(3, [1, 1, 2], term=3)
        inv = Invariants(h.ids, seed=0, now=lambda: 0)
        leader_log = h.node(1).entries(1, 5)
        msg = AppendEntries(
            term=3,
            sender=nid(1),
            to=nid(3),
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(term=1, index=2, data=b"1/2"),),
            commit=4,
        )
        h.node(3).step(msg)
        h.process_ready(nid(3))
        try:
            for e in leader_log:
                inv.on_apply(nid(1), e)
            for e in h.applied[nid(3)]:
                inv.on_apply(nid(3), e)
        except InvariantViolation as exc:
            return exc.violation
        return None

    assert run(Raft) is None
    violation = run(CommitsPastMatch)
    assert violation is not None
    assert violation.checker == "state-machine-safety", violation.describe()


def test_mutant_commits_previous_term_is_caught_in_figure8() -> None:
    """§5.4.2, Figure 8, replayed exactly (the sweep above finds it by chance).

    We replay the figure exactly -- (c) S1,
    leader of term 4, has its term-2 entry on a majority but its own no-op only
    locally; (d) S1 crashes and S5 is elected with a term-3 entry at index 2 --
    and feed what every node applies to the simulator's State Machine Safety
    checker. The correct leader never commits index 2 in (c), so nothing
    conflicts.
    """
    from tests.core.test_raft_paper import _figure8_c

    def run(raft_class: type[Raft]) -> Violation | None:
        h = _figure8_c(raft_class)
        h.drop_if = None
        h.isolate(1)
        h.isolated.discard(nid(5))
        for _ in range(2):  # term 4 may be taken; S5 then wins term 5
            h.node(5).campaign()
            h.stabilize()
        inv = Invariants(h.ids, seed=0, now=lambda: 0)
        try:
            for node_id in h.ids:
                for e in h.applied[node_id]:
                    inv.on_apply(node_id, e)
        except InvariantViolation as exc:
            return exc.violation
        return None

    assert run(Raft) is None
    violation = run(MUTANTS["commits-previous-term"])
    assert violation is not None
    assert violation.checker == "state-machine-safety", violation.describe()
