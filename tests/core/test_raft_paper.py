"""The rules of the Raft paper, one test per rule, each citing the section it guards.

"paper" is Ongaro & Ousterhout, "In Search of an Understandable Consensus
Algorithm" (2014); "dissertation" is Ongaro's PhD thesis (2014). Each test fails
if the rule it names is broken; a few also run a deliberately broken
``Raft`` subclass to show that they would notice.
"""

from __future__ import annotations

import random

import pytest

from raftkv.core import (
    AppendEntries,
    AppendEntriesResponse,
    Config,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    MemoryStorage,
    Raft,
    RawNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from tests.core.harness import Harness, nid

N1, N2, N3, N4, N5 = (nid(i) for i in range(1, 6))


# --------------------------------------------------------------------------- helpers


def step_own_vote(r: Raft) -> None:
    """Do what RawNode.advance does once the candidate's term and vote are durable:
    step its vote for itself (a message to itself that waits for persistence) in."""
    own = [m for m in r.msgs_after_persist if m.to == r.node_id]
    assert own, "no vote of its own waiting for persistence"
    r.msgs_after_persist = [m for m in r.msgs_after_persist if m.to != r.node_id]
    for m in own:
        r.step(m)


def new_raft(
    i: int,
    n: int = 3,
    *,
    terms: list[int] | tuple[int, ...] = (),
    term: int = 0,
    vote: int | None = None,
    commit: int = 0,
    rng: random.Random | None = None,
    raft_class: type[Raft] = Raft,
    **cfg: object,
) -> Raft:
    """A Raft node whose stable storage holds a log with ``terms``."""
    ids = tuple(nid(k) for k in range(1, n + 1))
    st = MemoryStorage(voters=ids)
    st.append([Entry(term=t, index=k + 1, data=b"x") for k, t in enumerate(terms)])
    st.set_hard_state(HardState(term=term, vote=None if vote is None else nid(vote), commit=commit))
    config = Config(node_id=nid(i), peers=ids, **cfg)  # type: ignore[arg-type]
    return raft_class(config, st, rng or random.Random(0))


def take(r: Raft) -> list:
    """Drain every message the node produced (both queues)."""
    out = r.msgs + r.msgs_after_persist
    r.msgs, r.msgs_after_persist = [], []
    return out


def make_leader(r: Raft) -> None:
    r.become_candidate()
    r.become_leader()
    take(r)


def terms_of(r: Raft) -> list[int]:
    return [e.term for e in r.log.slice(1, r.log.last_index() + 1)]


def vote_responses(msgs: list) -> list[RequestVoteResponse]:
    return [m for m in msgs if isinstance(m, RequestVoteResponse)]


# --------------------------------------------------------------------------- §5.1 terms


def _higher_term_msgs() -> list:
    common = dict(term=5, sender=N2, to=N1)
    return [
        AppendEntries(prev_log_index=0, prev_log_term=0, entries=(), commit=0, **common),
        Heartbeat(commit=0, **common),
        RequestVote(last_log_index=0, last_log_term=0, **common),
        AppendEntriesResponse(index=0, **common),
        RequestVoteResponse(granted=False, **common),
        HeartbeatResponse(**common),
    ]


@pytest.mark.parametrize("role", ["follower", "pre-candidate", "candidate", "leader"])
@pytest.mark.parametrize("msg", _higher_term_msgs(), ids=lambda m: type(m).__name__)
def test_higher_term_makes_any_role_follower_and_adopts_term(role, msg):
    """Paper §5.1 / Figure 2 (all servers): if an RPC carries term T > currentTerm,
    set currentTerm = T and convert to follower."""
    r = new_raft(1, term=1, check_quorum=False)
    if role == "pre-candidate":
        r.become_pre_candidate()
    elif role == "candidate":
        r.become_candidate()
    elif role == "leader":
        make_leader(r)
    r.step(msg)
    assert r.term == 5
    assert r.role is Role.FOLLOWER
    if isinstance(msg, AppendEntries | Heartbeat):
        assert r.leader == N2
    else:
        assert r.leader is None
    assert r.hard_state().term == 5


def test_stale_append_entries_rejected_and_answered_with_current_term():
    """Paper §5.1 / Figure 2 (AppendEntries receiver 1): reply false if term <
    currentTerm; the reply carries currentTerm so the stale leader updates itself."""
    r = new_raft(2, terms=[1, 1], term=3)
    r.step(
        AppendEntries(
            term=2,
            sender=N1,
            to=N2,
            prev_log_index=2,
            prev_log_term=1,
            entries=(Entry(term=2, index=3),),
            commit=3,
        )
    )
    assert r.term == 3 and r.leader is None
    assert terms_of(r) == [1, 1]
    assert r.log.committed == 0
    replies = [m for m in take(r) if isinstance(m, AppendEntriesResponse)]
    assert len(replies) == 1 and replies[0].term == 3 and replies[0].to == N1

    # ... and the stale leader that receives that reply steps down.
    old = new_raft(1, terms=[1, 1], term=1)
    make_leader(old)
    old.step(replies[0])
    assert old.role is Role.FOLLOWER and old.term == 3


def test_stale_heartbeat_does_not_make_follower_accept_leader():
    """Paper §5.1: a message from an older term is not from a current leader."""
    r = new_raft(2, term=3)
    r.step(Heartbeat(term=2, sender=N1, to=N2, commit=0))
    assert r.leader is None and r.term == 3
    assert not any(isinstance(m, HeartbeatResponse) for m in take(r))


def test_stale_request_vote_not_granted():
    """Paper Figure 2 (RequestVote receiver 1): reply false if term < currentTerm."""
    r = new_raft(2, term=3)
    r.step(RequestVote(term=2, sender=N3, to=N2, last_log_index=5, last_log_term=2))
    assert r.vote is None and r.term == 3
    assert not any(m.granted for m in vote_responses(take(r)))


def test_stale_vote_responses_not_counted():
    """Paper §5.1/§5.2: votes granted in an older term do not count in this one."""
    r = new_raft(1, n=5, term=1, pre_vote=False)
    r.hup()  # candidate at term 2
    assert r.role is Role.CANDIDATE and r.term == 2
    for voter in (N2, N3):
        r.step(RequestVoteResponse(term=1, sender=voter, to=N1, granted=True))
    assert r.role is Role.CANDIDATE


# --------------------------------------------------------------------------- §5.2 elections


def test_randomized_election_timeout_in_range_and_from_injected_rng():
    """Paper §5.2: election timeouts are chosen randomly from a fixed interval;
    here [election_tick, 2*election_tick), drawn from the injected RNG only."""
    seen = set()
    for seed in range(300):
        r = new_raft(1, rng=random.Random(seed), election_tick=10)
        assert 10 <= r.randomized_election_timeout < 20
        seen.add(r.randomized_election_timeout)
    assert seen == set(range(10, 20))  # the whole interval is used

    # The same seed gives the same timeout (the RNG is the only source).
    a = new_raft(1, rng=random.Random(7))
    b = new_raft(1, rng=random.Random(7))
    assert a.randomized_election_timeout == b.randomized_election_timeout

    class Fixed:
        def __init__(self, value):
            self.value = value
            self.calls = []

        def randrange(self, start, stop):
            self.calls.append((start, stop))
            return start + self.value

    rng = Fixed(3)
    r = new_raft(1, rng=rng, election_tick=10, pre_vote=False)  # type: ignore[arg-type]
    assert rng.calls and all(c == (0, 10) for c in rng.calls)
    assert r.randomized_election_timeout == 13
    for _ in range(12):
        r.tick()
    assert r.role is Role.FOLLOWER
    r.tick()
    assert r.role is Role.CANDIDATE


def test_follower_times_out_and_campaigns():
    """Paper §5.2: a follower that hears nothing for an election timeout increments
    its term, votes for itself and sends RequestVote to every other server."""
    r = new_raft(1, n=3, terms=[1, 1], term=1, pre_vote=False)
    for _ in range(r.randomized_election_timeout):
        r.tick()
    assert r.role is Role.CANDIDATE
    assert r.term == 2 and r.vote == N1
    reqs = [m for m in r.msgs_after_persist if isinstance(m, RequestVote)]
    assert sorted(m.to for m in reqs) == [N2, N3]
    assert all(m.term == 2 and (m.last_log_index, m.last_log_term) == (2, 1) for m in reqs)
    assert not r.msgs  # the RequestVotes promise a durable term and self-vote


def test_follower_heartbeats_postpone_election():
    """Paper §5.2: a follower remains one as long as it receives valid RPCs."""
    r = new_raft(2, term=1, pre_vote=False)
    for _ in range(100):
        r.tick()
        r.step(Heartbeat(term=1, sender=N1, to=N2, commit=0))
    assert r.role is Role.FOLLOWER and r.term == 1


def test_candidate_times_out_and_starts_new_election():
    """Paper §5.2: if no one wins, the candidate times out and starts a new election
    with a new term."""
    r = new_raft(1, n=3, pre_vote=False)
    r.hup()
    assert r.term == 1
    for _ in range(r.randomized_election_timeout):
        r.tick()
    assert r.role is Role.CANDIDATE and r.term == 2


@pytest.mark.parametrize(
    ("size", "granted", "rejected", "role"),
    [
        (1, [], [], Role.LEADER),
        (3, [2], [], Role.LEADER),
        (3, [], [2], Role.CANDIDATE),
        (3, [], [2, 3], Role.FOLLOWER),
        (5, [2], [], Role.CANDIDATE),
        (5, [2, 3], [], Role.LEADER),
        (5, [2], [3, 4], Role.CANDIDATE),
        (5, [2], [3, 4, 5], Role.FOLLOWER),
    ],
)
def test_candidate_election_outcome(size, granted, rejected, role):
    """Paper §5.2: a candidate wins with votes from a majority of the full cluster,
    and returns to follower once a majority has refused."""
    r = new_raft(1, n=size, pre_vote=False)
    r.hup()
    step_own_vote(r)
    for v in granted:
        r.step(RequestVoteResponse(term=1, sender=nid(v), to=N1, granted=True))
    for v in rejected:
        r.step(RequestVoteResponse(term=1, sender=nid(v), to=N1, granted=False))
    assert r.role is role
    assert r.term == 1


def test_candidate_becomes_follower_on_append_from_new_leader_same_term():
    """Paper §5.2: a candidate that receives AppendEntries from a leader whose term is
    at least its own recognises the leader and returns to follower."""
    r = new_raft(1, n=3, pre_vote=False)
    r.hup()
    r.step(
        AppendEntries(
            term=1,
            sender=N2,
            to=N1,
            prev_log_index=0,
            prev_log_term=0,
            entries=(Entry(term=1, index=1),),
            commit=0,
        )
    )
    assert r.role is Role.FOLLOWER and r.leader == N2 and r.term == 1
    assert r.vote == N1  # the vote in this term is kept


def test_one_vote_per_term():
    """Paper §5.2: each server votes for at most one candidate in a given term,
    first-come-first-served; re-asking by the same candidate is granted again
    (a lost response must not cost the candidate its vote)."""
    r = new_raft(2, n=3, check_quorum=False)
    ask = lambda sender: RequestVote(  # noqa: E731
        term=1, sender=nid(sender), to=N2, last_log_index=0, last_log_term=0
    )
    r.step(ask(1))
    assert [m.granted for m in vote_responses(take(r))] == [True]
    assert r.vote == N1
    r.step(ask(3))
    assert [m.granted for m in vote_responses(take(r))] == [False]
    assert r.vote == N1
    r.step(ask(1))
    assert [m.granted for m in vote_responses(take(r))] == [True]


def test_no_vote_while_knowing_a_leader_in_this_term():
    """Paper §5.2 (one vote per term): a follower that follows a leader in term T has
    accepted it and must not help elect another leader in T."""
    r = new_raft(2, n=3, term=1, check_quorum=False)
    r.step(Heartbeat(term=1, sender=N1, to=N2, commit=0))
    take(r)
    r.step(RequestVote(term=1, sender=N3, to=N2, last_log_index=9, last_log_term=1))
    assert [m.granted for m in vote_responses(take(r))] == [False]
    assert r.vote is None


def test_vote_is_persisted_before_reply():
    """Paper Figure 2: votedFor is updated on stable storage before responding; the
    Ready carries the vote in HardState with must_sync, and the reply is only in
    messages_after_persist."""
    ids = (N1, N2, N3)
    st = MemoryStorage(voters=ids)
    node = RawNode(Config(node_id=N2, peers=ids), st, random.Random(0))
    node.step(RequestVote(term=1, sender=N1, to=N2, last_log_index=0, last_log_term=0))
    rd = node.ready()
    assert rd.hard_state == HardState(term=1, vote=N1, commit=0)
    assert rd.must_sync
    assert rd.messages == ()
    assert [type(m) for m in rd.messages_after_persist] == [RequestVoteResponse]
    assert rd.messages_after_persist[0].granted


def test_message_queues_by_kind_through_an_election_and_replication():
    """Paper Figure 2 / dissertation §10.2.1: RequestVote, RequestVoteResponse,
    AppendEntriesResponse and HeartbeatResponse promise durable state, so they
    appear only in messages_after_persist; a leader's AppendEntries and Heartbeat
    may go out before its own disk write, so they are in messages."""
    h = Harness(3, pre_vote=False)
    seen_now: set[type] = set()
    seen_after: set[type] = set()
    orig = h.process_ready

    def spy(node_id):
        node = h.nodes[node_id]
        if not node.has_ready():
            return False
        rd = node.ready()
        seen_now.update(type(m) for m in rd.messages)
        seen_after.update(type(m) for m in rd.messages_after_persist)
        h.queue.extend(rd.messages)
        if rd.entries:
            h.storage[node_id].append(list(rd.entries))
        if rd.hard_state is not None:
            h.storage[node_id].set_hard_state(rd.hard_state)
        h.queue.extend(rd.messages_after_persist)
        h.applied[node_id].extend(rd.committed_entries)
        node.advance(rd)
        return True

    h.process_ready = spy  # type: ignore[method-assign]
    h.elect(1)
    h.propose(1, b"a")
    h.stabilize()
    h.tick(1, 1)
    h.stabilize()
    h.process_ready = orig  # type: ignore[method-assign]
    assert seen_now == {AppendEntries, Heartbeat}
    assert seen_after == {
        RequestVote,
        RequestVoteResponse,
        AppendEntriesResponse,
        HeartbeatResponse,
    }


@pytest.mark.parametrize("pre_vote", [False, True], ids=["stale-append", "stale-prevote"])
def test_responses_to_stale_messages_wait_for_persisted_term(pre_vote):
    """Paper Figure 2: currentTerm is "updated on stable storage before responding to
    RPCs". A node that has just adopted term 2 (not yet persisted) and answers a
    stale term-1 message with its term 2 must queue that answer after persist."""
    ids = (N1, N2, N3)
    st = MemoryStorage(voters=ids)
    node = RawNode(
        Config(node_id=N2, peers=ids, check_quorum=True, pre_vote=True), st, random.Random(0)
    )
    # Adopt term 2 through a RequestVote (no leader known, so no lease).
    node.step(RequestVote(term=2, sender=N3, to=N2, last_log_index=0, last_log_term=0))
    if pre_vote:
        node.step(
            RequestVote(term=1, sender=N1, to=N2, last_log_index=0, last_log_term=0, pre_vote=True)
        )
    else:
        node.step(
            AppendEntries(
                term=1, sender=N1, to=N2, prev_log_index=0, prev_log_term=0, entries=(), commit=0
            )
        )
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 2 and rd.must_sync
    leaked = [m for m in rd.messages if m.term == 2]
    assert leaked == [], f"term 2 revealed before it is durable: {leaked}"


# --------------------------------------------------------------------------- §5.4.1


@pytest.mark.parametrize(
    ("last_term", "last_index", "granted"),
    [
        (3, 1, True),  # higher last term wins even with a shorter log
        (2, 3, True),  # same last term, same length
        (2, 4, True),  # same last term, longer log
        (2, 2, False),  # same last term, shorter log
        (1, 10, False),  # lower last term loses even with a longer log
        (0, 0, False),  # empty log
    ],
)
def test_election_restriction_up_to_date_check(last_term, last_index, granted):
    """Paper §5.4.1: a voter denies its vote if its own log is more up to date:
    compare last terms, then lengths."""
    r = new_raft(2, terms=[1, 1, 2], term=2, check_quorum=False)
    r.step(
        RequestVote(term=3, sender=N1, to=N2, last_log_index=last_index, last_log_term=last_term)
    )
    assert [m.granted for m in vote_responses(take(r))] == [granted]
    assert r.term == 3  # the term is adopted either way
    assert r.vote == (N1 if granted else None)


def test_election_restriction_mutant_is_caught():
    """The up-to-date test above fails against a Raft that skips §5.4.1."""

    class NoRestriction(Raft):
        def log_is_up_to_date(self, msg):
            return True

    r = new_raft(2, terms=[1, 1, 2], term=2, check_quorum=False, raft_class=NoRestriction)
    r.step(RequestVote(term=3, sender=N1, to=N2, last_log_index=10, last_log_term=1))
    assert [m.granted for m in vote_responses(take(r))] == [True]  # the unsafe answer


def test_prevote_also_applies_up_to_date_check():
    """Dissertation §9.6: a PreVote is granted only if the real vote would be."""
    r = new_raft(2, terms=[1, 1, 2], term=2, check_quorum=False)
    r.step(RequestVote(term=3, sender=N1, to=N2, last_log_index=10, last_log_term=1, pre_vote=True))
    assert [m.granted for m in vote_responses(take(r))] == [False]
    r.step(RequestVote(term=3, sender=N1, to=N2, last_log_index=3, last_log_term=2, pre_vote=True))
    assert [m.granted for m in vote_responses(take(r))] == [True]
    assert r.term == 2 and r.vote is None  # a PreVote changes nothing durable


# --------------------------------------------------------------------------- §8 / §5.4.2


def test_leader_appends_noop_of_its_term_on_taking_office():
    """Paper §8 (and §5.4.2): a new leader commits a blank no-op entry of its own
    term at the start of its term, so it learns which entries are committed."""
    h = Harness(3)
    h.elect(1)
    r = h.raft(1)
    last = r.log.slice(r.log.last_index(), r.log.last_index() + 1)[0]
    assert last.term == r.term and last.data == b"" and last.index == 1
    assert h.log_terms(2) == h.log_terms(3) == [1]
    assert h.node(1).commit_index == 1


# --------------------------------------------------------------------------- §5.3 replication


def _append(term, prev, prev_term, entries, commit=0, to=N2):
    return AppendEntries(
        term=term,
        sender=N1,
        to=to,
        prev_log_index=prev,
        prev_log_term=prev_term,
        entries=tuple(Entry(term=t, index=i, data=b"new") for i, t in entries),
        commit=commit,
    )


def _replies(r):
    return [m for m in take(r) if isinstance(m, AppendEntriesResponse)]


@pytest.mark.parametrize(
    ("prev", "prev_term"),
    [(3, 1), (2, 2), (5, 2)],
    ids=["missing-prev", "term-mismatch", "far-beyond"],
)
def test_append_consistency_check_rejects(prev, prev_term):
    """Paper §5.3 / Figure 2 (AppendEntries receiver 2): reply false if the log does
    not contain an entry at prevLogIndex whose term matches prevLogTerm."""
    r = new_raft(2, terms=[1, 1], term=2)
    r.step(_append(2, prev, prev_term, [(prev + 1, 2)], commit=prev + 1))
    (reply,) = _replies(r)
    assert reply.reject and reply.index == prev and reply.term == 2
    assert terms_of(r) == [1, 1]
    assert r.log.committed == 0


def test_append_conflicting_suffix_replaced():
    """Paper §5.3 / Figure 2 (receiver 3-4): if an existing entry conflicts with a new
    one (same index, different terms), delete it and all that follow; append new."""
    r = new_raft(2, terms=[1, 1, 2, 2, 2], term=2)
    r.step(_append(3, 2, 1, [(3, 3), (4, 3)]))
    (reply,) = _replies(r)
    assert not reply.reject and reply.index == 4
    assert terms_of(r) == [1, 1, 3, 3]


def test_append_matching_entries_not_truncated_by_reordered_older_message():
    """Paper Figure 2 (receiver 3): only a *conflicting* entry truncates the log; an
    older, duplicated AppendEntries whose entries all match must not erase the
    entries that follow them."""
    r = new_raft(2, term=1)
    r.step(_append(1, 0, 0, [(1, 1), (2, 1), (3, 1), (4, 1)]))
    take(r)
    r.step(_append(1, 0, 0, [(1, 1), (2, 1)]))  # the older message, delivered late
    (reply,) = _replies(r)
    assert not reply.reject and reply.index == 2
    assert terms_of(r) == [1, 1, 1, 1]


def test_append_commit_is_min_of_leader_commit_and_last_new_entry():
    """Paper Figure 2 (receiver 5): if leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry). Entries past the last new one may
    be stale leftovers of another leader and must not be committed."""
    r = new_raft(2, term=1)
    r.step(_append(1, 0, 0, [(1, 1), (2, 1)], commit=5))
    assert r.log.committed == 2

    # The follower holds stale entries 3-4 of term 2; the term-3 leader has committed
    # its own index 4, but this message only proves the follower matches up to 2.
    r = new_raft(2, terms=[1, 1, 2, 2], term=2)
    r.step(_append(3, 1, 1, [(2, 1)], commit=4))
    assert r.log.committed == 2
    assert terms_of(r) == [1, 1, 2, 2]

    # An empty AppendEntries proves a match up to prev only.
    r = new_raft(2, terms=[1, 1, 2, 2], term=2)
    r.step(_append(3, 1, 1, [], commit=4))
    assert r.log.committed == 1


# --------------------------------------------------------------------------- fast backtracking

FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize(
    ("follower", "hint"),
    [("a", (9, 6)), ("b", (4, 4)), ("e", (7, 4)), ("f", (10, 3))],
)
def test_rejection_carries_conflict_hint(follower, hint):
    """Paper §5.3 (optimization, p. 7-8): a rejecting follower tells the leader where
    its log may match: the largest index <= prevLogIndex with term <= prevLogTerm."""
    r = new_raft(2, terms=FIG7_FOLLOWERS[follower], term=7)
    r.step(_append(8, 10, 6, [(11, 8)]))
    (reply,) = _replies(r)
    assert reply.reject
    assert (reply.hint_index, reply.hint_term) == hint


def test_leader_uses_hint_to_skip_a_whole_term():
    """Paper §5.3: with the hint the leader bypasses all conflicting entries of a term
    in one round trip instead of one entry at a time."""
    r = new_raft(1, terms=FIG7_LEADER, term=7)
    make_leader(r)  # term 8, no-op at 11
    pr = r.prs[N2]
    pr.sent_entries(None)  # the probe for prev=10 is out
    r.step(
        AppendEntriesResponse(
            term=8, sender=N2, to=N1, index=10, reject=True, hint_index=10, hint_term=3
        )
    )  # follower (f)
    (probe,) = [m for m in take(r) if isinstance(m, AppendEntries)]
    assert (probe.prev_log_index, probe.prev_log_term) == (3, 1)


@pytest.mark.parametrize("follower", sorted(FIG7_FOLLOWERS))
def test_figure7_followers_brought_in_line(follower):
    """Paper §5.3, Figure 7: whatever the follower's log ((a)-(f): missing entries,
    extra uncommitted entries, or both), the term-8 leader forces it to duplicate
    its own log, with few rejections thanks to the hints."""
    h = Harness(7, pre_vote=False)
    # n1 is the term-8 leader-to-be; n2 is the follower under test; n3-n5 have the
    # leader's log (to vote for it); n6-n7 are down.
    h.load(1, FIG7_LEADER, term=7)
    h.load(2, FIG7_FOLLOWERS[follower], term=7)
    for i in (3, 4, 5):
        h.load(i, FIG7_LEADER, term=6)
    h.isolate(6)
    h.isolate(7)
    h.elect(1)
    assert h.node(1).term == 8
    h.stabilize()
    assert h.log_terms(2) == [*FIG7_LEADER, 8]
    assert h.stored_terms(2) == [*FIG7_LEADER, 8]
    rejected = sum(
        1
        for m in h.delivered
        if isinstance(m, AppendEntriesResponse) and m.reject and m.sender == N2
    )
    assert rejected <= 2


def test_figure7_all_followers_at_once():
    """Paper Figure 7 as drawn: a term-8 leader and followers (a)-(f). The leader wins
    with votes from (a), (b), (e), (f) (§5.4.1: (c) and (d) refuse) and brings every
    log in line with its own."""
    h = Harness(7, pre_vote=False)
    h.load(1, FIG7_LEADER, term=7)
    for i, name in enumerate(sorted(FIG7_FOLLOWERS), start=2):
        h.load(i, FIG7_FOLLOWERS[name], term=7)
    h.elect(1)
    votes = {m.sender: m.granted for m in h.delivered if isinstance(m, RequestVoteResponse)}
    assert votes == {
        N2: True,
        nid(3): True,
        nid(4): False,
        nid(5): False,
        nid(6): True,
        nid(7): True,
    }
    for i in range(2, 8):
        assert h.log_terms(i) == [*FIG7_LEADER, 8]
    assert h.rejections(1) <= 4  # (a), (b), (e), (f): one each
    assert all(h.node(i).commit_index == 11 for i in range(1, 8))


# --------------------------------------------------------------------------- Figure 8


def _figure8_c(raft_class: type[Raft] = Raft) -> Harness:
    """Paper Figure 8 (c): S1 is leader in term 4 and has replicated its term-2 entry
    at index 2 to S2 and S3, so the leader knows it is on a majority; its term-4
    no-op at index 3 is only on S1. S5 holds a term-3 entry at index 2."""
    h = Harness(5, pre_vote=False, check_quorum=False, max_entries_per_msg=1, raft_class=raft_class)
    h.load(1, [1, 2], term=3)
    h.load(2, [1], term=2)
    h.load(3, [1], term=3, vote=5)
    h.load(4, [1], term=3, vote=5)
    h.load(5, [1, 3], term=3, vote=5)
    # S5 is down while S1 campaigns; S4 votes but gets no entries; S2 and S3 get
    # index 2 (after rejecting the first probe) but not index 3.
    h.isolate(5)
    h.drop_if = lambda m: (
        isinstance(m, AppendEntries)
        and (
            m.to == nid(4)
            or (
                m.to in (nid(2), nid(3))
                and any(e.index >= 3 for e in m.entries)
                and h.node(m.to).last_index >= 2
            )
        )
    )
    h.elect(1)
    h.stabilize()
    assert h.node(1).term == 4
    assert h.log_terms(1) == [1, 2, 4]
    assert h.log_terms(2) == [1, 2]
    assert h.log_terms(3) == [1, 2]
    assert h.log_terms(4) == [1]
    assert h.log_terms(5) == [1, 3]
    return h


def test_figure8_leader_does_not_commit_previous_term_entry_by_counting():
    """Paper §5.4.2, Figure 8 (c): the term-2 entry at index 2 is on a majority (S1,
    S2, S3) but must not be committed: only entries of the leader's current term
    are committed by counting replicas."""
    h = _figure8_c()
    prs = h.node(1).progress()
    # The leader knows index 2 is stored on a majority: itself, S2 and S3.
    assert (prs[N1].match, prs[N2].match, prs[nid(3)].match) == (3, 2, 2)
    assert all(h.node(i).commit_index == 0 for i in range(1, 6))
    assert all(not h.applied[nid(i)] for i in range(1, 6))


def test_figure8_mutant_counting_replicas_is_caught():
    """The Figure 8 test fails against a leader that commits by counting replicas."""

    class CountsReplicas(Raft):
        def maybe_commit(self):
            acked = {k: pr.match for k, pr in self.prs.items()}
            index = self.voters.committed_index(acked)
            if index > self.log.committed:
                self.log.commit_to(index)
                return True
            return False

    h = _figure8_c(CountsReplicas)
    assert h.node(1).commit_index >= 2  # the unsafe commit the real test forbids


def test_figure8_d_uncommitted_entry_is_overwritten():
    """Paper Figure 8 (d): S1 crashes; S5 is elected in term 5 with votes from S2, S3,
    S4 and overwrites index 2 everywhere. This is only safe because (c) did not
    commit index 2."""
    h = _figure8_c()
    h.drop_if = None
    h.isolate(1)
    h.isolated.discard(nid(5))
    h.node(5).campaign()
    h.stabilize()
    if h.node(5).role is not Role.LEADER:  # term 4 was taken; try again in term 5
        h.node(5).campaign()
        h.stabilize()
    assert h.node(5).role is Role.LEADER and h.node(5).term == 5
    for i in (2, 3, 4, 5):
        assert h.log_terms(i)[:2] == [1, 3]
        assert h.node(i).commit_index == 3
    # Index 2 of term 2 was never applied anywhere.
    for i in range(1, 6):
        assert all(e.term != 2 for e in h.applied[nid(i)])


def test_figure8_e_current_term_entry_commits_and_s5_cannot_win():
    """Paper Figure 8 (e): once S1 replicates an entry of its own term (index 3) on a
    majority, index 2 is committed with it; S5 can then no longer be elected."""
    h = _figure8_c()
    h.drop_if = None
    h.tick(1, 1)  # heartbeat: the followers answer, the leader sends them index 3
    h.stabilize()
    assert h.log_terms(2) == h.log_terms(3) == [1, 2, 4]
    assert h.node(1).commit_index == 3
    assert [(e.term, e.index) for e in h.applied[N1]] == [(1, 1), (2, 2), (4, 3)]
    h.isolate(1)
    h.isolated.discard(nid(5))
    for _ in range(3):
        h.node(5).campaign()
        h.stabilize()
        assert h.node(5).role is not Role.LEADER
    h.node(2).campaign()
    h.stabilize()
    assert h.node(2).role is Role.LEADER
    for i in (2, 3, 4, 5):
        assert h.log_terms(i)[:3] == [1, 2, 4]


# --------------------------------------------------------------------------- commitment


def _leader_with_proposal(n: int):
    """A leader in REPLICATE with every follower, holding an unsent proposal."""
    h = Harness(n)
    h.elect(1)
    h.stabilize()
    idx = h.propose(1, b"cmd")
    leader = h.node(1)
    rd = leader.ready()  # AppendEntries go out; the leader's own write is pending
    assert [e.index for e in rd.entries] == [idx]
    h.queue.extend(rd.messages)
    return h, leader, rd, idx


def _ack_from(h: Harness, *followers: int) -> None:
    ids = {nid(f) for f in followers}
    h.deliver(lambda m: m.to in ids)  # followers receive their AppendEntries
    for f in followers:
        h.process_ready(nid(f))
    h.deliver(lambda m: m.sender in ids and m.to == N1)  # and the leader their acks


def test_leader_own_entry_counts_only_once_persisted():
    """Paper §5.3 / dissertation §10.2.1: an entry is committed once it is *stored*
    on a majority; the leader may send before writing to its own disk, but its own
    copy counts only after the write. 3 nodes: one follower ack + an unpersisted
    leader copy is 1 of 3: not committed; after the leader's advance(): committed."""
    h, leader, rd, idx = _leader_with_proposal(3)
    _ack_from(h, 2)
    assert leader.progress()[N2].match == idx
    assert leader.commit_index == idx - 1
    h.storage[N1].append(list(rd.entries))
    leader.advance(rd)
    assert leader.commit_index == idx


def test_majority_of_followers_commits_without_leader_copy():
    """Paper §5.3: a majority is a majority; with 3 nodes, two follower acks commit
    even before the leader's own write completes."""
    h, leader, rd, idx = _leader_with_proposal(3)
    _ack_from(h, 2, 3)
    assert leader.commit_index == idx
    h.storage[N1].append(list(rd.entries))
    leader.advance(rd)


def test_five_nodes_need_three_copies():
    """Paper §5.3: commit needs a majority of the full configuration (3 of 5)."""
    h, leader, rd, idx = _leader_with_proposal(5)
    h.storage[N1].append(list(rd.entries))
    leader.advance(rd)
    _ack_from(h, 2)
    assert leader.commit_index == idx - 1
    _ack_from(h, 3)
    assert leader.commit_index == idx


def test_committed_entries_reach_followers_and_are_applied_in_order():
    """Paper §5.3: once the leader learns an entry is committed, later AppendEntries
    (or heartbeats) carry the commit index, and followers apply entries in order."""
    h = Harness(3)
    h.elect(1)
    for k in range(5):
        h.propose(1, f"c{k}".encode())
    h.stabilize()
    for i in (1, 2, 3):
        assert [e.data for e in h.applied[nid(i)]] == [b"", b"c0", b"c1", b"c2", b"c3", b"c4"]


# ---------------------------------------------------------------- §9.6 PreVote / CheckQuorum


def _run(h: Harness, ticks: int) -> None:
    for _ in range(ticks):
        h.tick_all()
        h.stabilize()


def test_prevote_partitioned_node_does_not_raise_its_term_nor_disrupt():
    """Dissertation §9.6 (PreVote): a partitioned server keeps timing out but, unable
    to win a PreVote, never increments its term; when it rejoins, the leader is not
    deposed and nobody's term changes."""
    h = Harness(3, pre_vote=True, check_quorum=True)
    h.elect(1)
    term = h.node(1).term
    h.isolate(3)
    _run(h, 100)
    assert h.node(3).term == term
    assert h.node(3).role is Role.PRE_CANDIDATE
    h.heal()
    _run(h, 30)
    assert h.leaders() == [N1]
    assert [h.node(i).term for i in (1, 2, 3)] == [term] * 3
    assert h.node(3).leader == N1


def test_without_prevote_rejoining_node_disrupts_the_leader():
    """Dissertation §9.6, the problem PreVote solves: without it the partitioned
    server increments its term at every timeout and, on rejoining, deposes the
    leader."""
    h = Harness(3, pre_vote=False, check_quorum=False)
    h.elect(1)
    term = h.node(1).term
    h.isolate(3)
    _run(h, 100)
    assert h.node(3).term > term + 3
    h.heal()
    _run(h, 60)
    assert h.node(1).term > term
    assert len(h.leaders()) == 1 and h.node(h.leaders()[0]).term > term


def test_checkquorum_leader_steps_down_without_quorum():
    """Dissertation §9.6 (CheckQuorum): a leader that has not heard from a majority
    within an election timeout steps down."""
    h = Harness(3, check_quorum=True)
    h.elect(1)
    _run(h, 50)
    assert h.leaders() == [N1]  # a connected leader stays
    h.isolate(1)
    et = h.raft(1).config.election_tick
    h.tick(1, et - 1)
    assert h.node(1).role is Role.LEADER
    h.tick(1, et + 1)
    assert h.node(1).role is Role.FOLLOWER
    assert h.node(1).term == 1 and h.node(1).leader is None


def test_without_checkquorum_isolated_leader_stays_leader():
    """Contrast for §9.6: without CheckQuorum nothing makes a cut-off leader step down."""
    h = Harness(3, check_quorum=False)
    h.elect(1)
    h.isolate(1)
    h.tick(1, 100)
    assert h.node(1).role is Role.LEADER


def test_lease_ignores_higher_term_request_vote():
    """Dissertation §9.6: a server that heard from a current leader within the
    minimum election timeout neither updates its term nor grants its vote."""
    r = new_raft(2, term=1, check_quorum=True, pre_vote=False)
    r.step(Heartbeat(term=1, sender=N1, to=N2, commit=0))
    take(r)
    ask = RequestVote(term=2, sender=N3, to=N2, last_log_index=0, last_log_term=0)
    r.step(ask)
    assert r.term == 1 and r.vote is None and r.leader == N1
    assert vote_responses(take(r)) == []
    for _ in range(r.election_timeout):
        r.tick()  # the lease expires without news from the leader
    r.step(ask)
    assert r.term == 2 and r.vote == N3


def test_without_checkquorum_no_lease():
    """Contrast: without CheckQuorum a higher-term RequestVote is honoured at once."""
    r = new_raft(2, term=1, check_quorum=False, pre_vote=False)
    r.step(Heartbeat(term=1, sender=N1, to=N2, commit=0))
    r.step(RequestVote(term=2, sender=N3, to=N2, last_log_index=0, last_log_term=0))
    assert r.term == 2 and r.vote == N3


def test_prevote_round_then_real_election():
    """Dissertation §9.6: a PreVote asks for term+1 without changing the term; only
    after a majority grants it does the node become a candidate."""
    r = new_raft(1, n=3, term=1, pre_vote=True)
    r.hup()
    assert r.role is Role.PRE_CANDIDATE and r.term == 1 and r.vote is None
    reqs = [m for m in take(r) if isinstance(m, RequestVote)]
    assert all(m.pre_vote and m.term == 2 for m in reqs)
    r.step(RequestVoteResponse(term=2, sender=N2, to=N1, granted=True, pre_vote=True))
    assert r.role is Role.CANDIDATE and r.term == 2 and r.vote == N1
    reqs = [m for m in take(r) if isinstance(m, RequestVote)]
    assert reqs and all(not m.pre_vote and m.term == 2 for m in reqs)


# --------------------------------------------------------------------------- flow control


def _replicating(n: int = 3, **kw) -> Harness:
    h = Harness(n, **kw)
    h.elect(1)
    h.stabilize()
    for i in range(2, n + 1):
        assert h.node(1).progress()[nid(i)].state == "replicate"
    return h


def _appends(msgs, to=N2):
    return [m for m in msgs if isinstance(m, AppendEntries) and m.to == to]


def test_max_inflight_bounds_unacknowledged_appends():
    """Dissertation §10.2.1 (pipelining) with flow control: in REPLICATE the leader
    keeps at most max_inflight AppendEntries unacknowledged per follower."""
    h = _replicating(max_inflight=3)
    for k in range(6):
        h.propose(1, f"p{k}".encode())
        h.process_ready(N1)
    held = _appends(h.queue)
    assert len(held) == 3
    assert [len(m.entries) for m in held] == [1, 1, 1]
    # One acknowledgement frees one slot; the rest goes out in one message.
    first = held[0]
    h.queue = [first]
    h.deliver()
    h.process_ready(N2)
    h.queue = [m for m in h.queue if m.to == N1]
    h.deliver()
    h.process_ready(N1)
    more = _appends(h.queue)
    assert len(more) == 1
    assert [e.index for e in more[0].entries] == [5, 6, 7]


def test_probe_sends_one_append_at_a_time():
    """Progress PROBE: until the follower answers, the leader has at most one
    AppendEntries outstanding to it, however many proposals arrive."""
    h = Harness(3)
    h.node(1).campaign()
    for _ in range(6):
        h.process_ready(N1)
        h.deliver(lambda m: not isinstance(m, AppendEntries))
        for i in (2, 3):
            h.process_ready(nid(i))
    assert h.node(1).role is Role.LEADER
    assert h.node(1).progress()[N2].state == "probe"
    for k in range(5):
        h.propose(1, f"p{k}".encode())
        h.process_ready(N1)
    assert len(_appends(h.queue)) == 1


def test_burst_of_proposals_is_one_append_per_follower():
    """Batching: proposals made between two ready() calls leave as a single
    AppendEntries per follower."""
    h = _replicating(5)
    for k in range(10):
        h.propose(1, f"p{k}".encode())
    rd = h.node(1).ready()
    for i in range(2, 6):
        (m,) = _appends(rd.messages, to=nid(i))
        assert len(m.entries) == 10
    h.node(1).advance(rd)


def test_max_entries_per_msg_respected():
    """Flow control: no AppendEntries carries more than max_entries_per_msg entries,
    and all entries still arrive."""
    h = _replicating(max_entries_per_msg=3)
    for k in range(10):
        h.propose(1, f"p{k}".encode())
    h.stabilize()
    sizes = [len(m.entries) for m in h.delivered if isinstance(m, AppendEntries)]
    assert max(sizes) == 3
    assert h.log_terms(2) == h.log_terms(1) and len(h.log_terms(2)) == 11


def test_max_size_per_msg_respected():
    """Flow control: AppendEntries stay within max_size_per_msg bytes unless a
    single entry is larger."""
    h = _replicating(max_size_per_msg=100)
    for _k in range(8):
        h.propose(1, b"x" * 20)  # size 36 each: two per message
    h.propose(1, b"y" * 200)  # larger than the limit: still sent, alone
    h.stabilize()
    for m in h.delivered:
        if isinstance(m, AppendEntries) and len(m.entries) > 1:
            assert sum(e.size() for e in m.entries) <= 100
    assert max(len(m.entries) for m in h.delivered if isinstance(m, AppendEntries)) == 2
    assert h.log_terms(3) == h.log_terms(1) and len(h.log_terms(3)) == 10


def test_lost_append_in_full_window_is_retried():
    """Paper §5.3: "if network packets are lost, the leader retries AppendEntries
    RPCs indefinitely ... until all followers eventually store all log entries".
    With a window of one, losing the single in-flight AppendEntries must not stall
    replication to that follower for good: heartbeats must lead to a retry."""
    h = _replicating(max_inflight=1)
    h.propose(1, b"lost")
    h.process_ready(N1)
    h.queue = [m for m in h.queue if m.to != N2]  # the append to n2 is lost
    h.stabilize()
    for _ in range(30):
        h.tick(1)
        h.stabilize()
    assert h.log_terms(2) == h.log_terms(1)
