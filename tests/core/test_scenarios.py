"""Whole-cluster scenarios on the synchronous harness (no simulator, no time).

Each test cites the paper section whose guarantee it exercises.
"""

from __future__ import annotations

import pytest

from raftkv.core import AppendEntriesResponse, NotLeader, RequestVote, RequestVoteResponse, Role
from tests.core.harness import Harness, nid


def run(h: Harness, ticks: int) -> None:
    for _ in range(ticks):
        h.tick_all()
        h.stabilize()


def run_until_leader(h: Harness, max_ticks: int = 500, among=None) -> str:
    among = set(among or h.ids)
    for _ in range(max_ticks):
        h.tick_all()
        h.stabilize()
        leaders = [n for n in h.leaders() if n in among]
        if leaders:
            return leaders[0]
    raise AssertionError("no leader elected")


def assert_committed_prefixes_agree(h: Harness) -> None:
    """Paper §5.4.3 (State Machine Safety): applied sequences are prefixes of one another."""
    seqs = [[(e.index, e.term, e.data) for e in h.applied[n]] for n in h.ids]
    longest = max(seqs, key=len)
    for s in seqs:
        assert s == longest[: len(s)]


@pytest.mark.parametrize("n", [3, 5])
def test_initial_election(n):
    """Paper §5.2: from a cold start, randomized timeouts elect exactly one leader,
    which every node recognises."""
    h = Harness(n, seed=n)
    leader = run_until_leader(h)
    run(h, 5)
    assert h.leaders() == [leader]
    term = h.node(leader).term
    for node_id in h.ids:
        assert h.nodes[node_id].leader == leader
        assert h.nodes[node_id].term == term
    # The leader's no-op is committed everywhere (§8).
    assert all(h.nodes[x].commit_index == 1 for x in h.ids)


@pytest.mark.parametrize("seed", range(5))
def test_election_safety_across_seeds(seed):
    """Paper §5.2, Election Safety: at most one leader per term, whatever the timing."""
    h = Harness(5, seed=seed, pre_vote=False, check_quorum=False)
    leaders_by_term: dict[int, set[str]] = {}
    for _ in range(200):
        h.tick_all()
        h.stabilize()
        for x in h.leaders():
            leaders_by_term.setdefault(h.nodes[x].term, set()).add(x)
        if h.leaders() and h.net_rng.random() < 0.1:
            h.isolate(h.leaders()[0])  # force further elections
        if h.net_rng.random() < 0.05:
            h.heal()
    assert all(len(v) == 1 for v in leaders_by_term.values())
    assert len(leaders_by_term) >= 2


def test_reelection_after_leader_loss():
    """Paper §5.2: when the leader fails, followers time out and elect a new leader
    in a higher term; commands keep committing."""
    h = Harness(5, seed=1)
    old = run_until_leader(h)
    old_term = h.node(old).term
    h.propose(old, b"before")
    h.stabilize()
    h.isolate(old)
    new = run_until_leader(h, among=set(h.ids) - {old})
    assert new != old and h.node(new).term > old_term
    h.propose(new, b"after")
    h.stabilize()
    assert [e.data for e in h.applied[new] if e.data] == [b"before", b"after"]


def test_no_quorum_no_leader_and_no_commit():
    """Paper §5.2/§5.3: without a majority no candidate can win and no entry can be
    committed."""
    h = Harness(5, seed=2)
    leader = run_until_leader(h)
    others = [x for x in h.ids if x != leader]
    # The leader keeps only one follower: 2 of 5.
    for x in others[1:]:
        h.isolate(x)
    idx = h.propose(leader, b"stuck")
    run(h, 5)
    assert h.nodes[leader].commit_index < idx
    run(h, 100)
    # CheckQuorum made it step down; nobody on either side can win.
    assert h.leaders() == []
    assert all(h.nodes[x].commit_index < idx for x in h.ids)
    assert all(b"stuck" not in [e.data for e in h.applied[x]] for x in h.ids)


def test_partitioned_old_leader_steps_down_and_uncommitted_entries_replaced():
    """Paper §5.3/§5.4: a deposed leader's uncommitted entries are overwritten by the
    new leader's log when it rejoins; they are never applied."""
    h = Harness(5, seed=3)
    old = run_until_leader(h)
    h.isolate(old)
    for k in range(3):
        h.propose(old, f"lost{k}".encode())
    h.stabilize()
    new = run_until_leader(h, among=set(h.ids) - {old})
    h.propose(new, b"kept")
    h.stabilize()
    h.heal()
    run(h, 30)
    assert h.leaders() == [new]
    assert h.node(old).role is Role.FOLLOWER and h.node(old).term == h.node(new).term
    assert h.log_terms(old) == h.log_terms(new)
    for x in h.ids:
        datas = [e.data for e in h.applied[x]]
        assert b"kept" in datas
        assert not any(d.startswith(b"lost") for d in datas)
    assert_committed_prefixes_agree(h)


def test_lagging_follower_with_conflicting_suffix_caught_up_quickly():
    """Paper §5.3 (fast backtracking): an old leader holding ~50 uncommitted entries
    of its term is brought in line with a handful of rejections, not ~50."""
    h = Harness(3, seed=4)
    h.elect(1)
    h.isolate(1)
    for k in range(50):
        h.propose(1, f"old{k}".encode())
    h.stabilize()
    new = run_until_leader(h, among={nid(2), nid(3)})
    for k in range(60):
        h.propose(new, f"new{k}".encode())
    h.stabilize()
    assert h.log_terms(1) == [1] * 51
    assert h.log_terms(new)[51:] == [h.node(new).term] * 11
    before = h.rejections(new)
    h.heal()
    run(h, 5)
    assert h.log_terms(1) == h.log_terms(new)
    assert h.rejections(new) - before <= 2


def test_follower_missing_entries_caught_up_quickly():
    """Paper §5.3: a follower that was down while ~50 entries were committed catches
    up with at most a couple of rejections."""
    h = Harness(3, seed=5)
    h.elect(1)
    h.isolate(3)
    for k in range(50):
        h.propose(1, f"c{k}".encode())
        h.stabilize()
    before = h.rejections(1)
    h.heal()
    run(h, 3)
    assert h.log_terms(3) == h.log_terms(1)
    assert h.rejections(1) - before <= 2
    assert len(h.applied[nid(3)]) == 51


@pytest.mark.parametrize("seed", range(3))
def test_churn_on_unreliable_network_converges(seed):
    """Paper §5 (Figure 3 guarantees) under message loss and leader churn: committed
    prefixes always agree; after healing, all logs converge and every node applies
    the same sequence."""
    h = Harness(5, seed=seed, drop_rate=0.25)
    proposed = 0
    for step in range(400):
        h.tick_all()
        h.stabilize()
        for x in h.leaders():
            if step % 3 == 0:
                h.propose(x, f"s{seed}-{proposed}".encode())
                proposed += 1
        assert_committed_prefixes_agree(h)
        terms = {}
        for x in h.leaders():
            assert h.nodes[x].term not in terms, "two leaders in one term"
            terms[h.nodes[x].term] = x
    h.drop_rate = 0.0
    leader = run_until_leader(h)
    h.propose(leader, b"final")
    run(h, 30)
    ref = h.log_terms(leader)
    for x in h.ids:
        assert h.log_terms(x) == ref
        assert h.nodes[x].commit_index == len(ref)
    assert_committed_prefixes_agree(h)
    assert len({len(h.applied[x]) for x in h.ids}) == 1
    assert proposed > 20


def test_restart_keeps_term_and_vote():
    """Paper Figure 2: currentTerm and votedFor are persistent; a restarted node keeps
    them and will not vote for a second candidate in the same term."""
    h = Harness(3, pre_vote=False, check_quorum=False)
    h.node(1).campaign()
    h.process_ready(nid(1))
    h.deliver(lambda m: m.to == nid(2))  # n2 gets n1's RequestVote
    h.process_ready(nid(2))
    assert h.storage[nid(2)].hard_state.vote == nid(1)
    h.restart(nid(2))
    r2 = h.raft(2)
    assert r2.term == 1 and r2.vote == nid(1)
    h.queue = []
    r2.step(RequestVote(term=1, sender=nid(3), to=nid(2), last_log_index=5, last_log_term=1))
    replies = [m for m in r2.msgs_after_persist if isinstance(m, RequestVoteResponse)]
    assert [m.granted for m in replies] == [False]


def test_restart_whole_cluster_recovers_log_and_commit():
    """Paper §5 / Figure 2: state on stable storage survives a full restart; the new
    leader re-establishes the commit index and nothing committed is lost."""
    h = Harness(3, seed=6)
    h.elect(1)
    for k in range(5):
        h.propose(1, f"c{k}".encode())
    h.stabilize()
    logs = {x: h.log_terms(x) for x in h.ids}
    for x in h.ids:
        h.restart(x)
        assert h.log_terms(x) == logs[x]
    leader = run_until_leader(h)
    run(h, 3)
    for x in h.ids:
        assert [e.data for e in h.applied[x]][1:6] == [f"c{k}".encode() for k in range(5)]
    with pytest.raises(NotLeader):
        h.propose(next(x for x in h.ids if x != leader), b"no")


def test_rejections_counted_only_from_appends():
    """Sanity for the harness: rejections() counts rejecting AppendEntriesResponses."""
    h = Harness(3)
    h.load(2, [1, 1, 2], term=2)
    h.elect(2)
    assert h.rejections(2) == sum(
        1 for m in h.delivered if isinstance(m, AppendEntriesResponse) and m.reject
    )
    assert h.rejections(2) >= 1
