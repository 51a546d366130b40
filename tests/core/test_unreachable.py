"""RawNode.report_unreachable: a follower told its leader's process is gone campaigns early.

The hint comes from outside the protocol (the transport saw the leader's
address refuse connections), so these tests check both halves: it speeds up
failover when true, and when false it neither disrupts a live leader nor
breaks anything else.
"""

from __future__ import annotations

from raftkv.core import Role

from .harness import Harness
from .test_scenarios import run_until_leader


def _steady(n: int = 3, **kw: object) -> tuple[Harness, str]:
    h = Harness(n, seed=3, **kw)  # type: ignore[arg-type]
    leader = run_until_leader(h)
    h.propose(leader, b"x")
    h.stabilize()
    return h, leader


def _ticks_until_leader(h: Harness, among: set[str], limit: int = 100) -> int:
    for t in range(1, limit + 1):
        h.tick_all()
        h.stabilize()
        if any(x in among for x in h.leaders()):
            return t
    raise AssertionError("no leader")


def test_hinted_followers_elect_within_a_few_ticks() -> None:
    h, old = _steady(3)
    h.isolate(old)
    survivors = [x for x in h.ids if x != old]
    for x in survivors:
        assert h.nodes[x].report_unreachable(old)
        assert h.nodes[x].leader is None
    # Without the hint an election needs at least election_tick (10) ticks.
    ticks = _ticks_until_leader(h, set(survivors))
    assert ticks <= 3, ticks
    # The lowest-ranked survivor goes first (the isolated old leader still
    # believes it leads until CheckQuorum steps it down).
    assert [x for x in h.leaders() if x != old] == [sorted(survivors)[0]]


def test_without_hint_failover_takes_an_election_timeout() -> None:
    h, old = _steady(3)
    h.isolate(old)
    survivors = [x for x in h.ids if x != old]
    assert _ticks_until_leader(h, set(survivors)) >= 10


def test_false_hint_does_not_disrupt_a_live_leader() -> None:
    h, leader = _steady(3)
    term = h.node(leader).term
    hinted = sorted(x for x in h.ids if x != leader)[0]
    assert h.nodes[hinted].report_unreachable(leader)
    for _ in range(30):
        h.tick_all()
        h.stabilize()
    # The other follower still heard from the leader and refused the PreVote;
    # the leader's heartbeats restored the hinted follower.
    assert h.leaders() == [leader]
    assert h.node(leader).term == term
    assert h.nodes[hinted].leader == leader and h.nodes[hinted].role is Role.FOLLOWER
    h.propose(leader, b"after")
    h.stabilize()
    assert [e.data for e in h.applied[hinted] if e.data][-1] == b"after"


def test_false_hint_on_every_follower_costs_one_election_at_most() -> None:
    """If every follower is fooled, they elect one of them: safe, one term more."""
    h, leader = _steady(3)
    term = h.node(leader).term
    for x in h.ids:
        if x != leader:
            h.nodes[x].report_unreachable(leader)
    for _ in range(30):
        h.tick_all()
        h.stabilize()
    assert len(h.leaders()) == 1
    assert h.node(h.leaders()[0]).term <= term + 1


def test_hint_ignored_unless_it_names_the_followers_leader() -> None:
    h, leader = _steady(3)
    a, b = sorted(x for x in h.ids if x != leader)
    assert not h.nodes[a].report_unreachable(b)  # not its leader
    assert not h.nodes[leader].report_unreachable(a)  # a leader has no leader
    assert not h.nodes[a].report_unreachable(a)
    assert h.nodes[a].leader == leader


def test_hint_ignored_with_lease_reads_or_without_prevote_and_checkquorum() -> None:
    for kw in (
        {"read_only": "lease"},
        {"pre_vote": False},
        {"check_quorum": False},
    ):
        h, leader = _steady(3, **kw)
        follower = next(x for x in h.ids if x != leader)
        assert not h.nodes[follower].report_unreachable(leader), kw
        assert h.nodes[follower].leader == leader, kw


def test_five_nodes_rank_spreads_the_campaigns() -> None:
    h, old = _steady(5)
    h.isolate(old)
    survivors = sorted(x for x in h.ids if x != old)
    for x in survivors:
        h.nodes[x].report_unreachable(old)
    # Rank r campaigns after 1 + r ticks: after one tick only the first has.
    h.tick_all()
    candidates = [x for x in survivors if h.node(x).role is not Role.FOLLOWER]
    assert candidates == [survivors[0]], candidates
    h.stabilize()
    assert [x for x in h.leaders() if x != old] == [survivors[0]]
