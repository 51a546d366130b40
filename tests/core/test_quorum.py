"""Quorum arithmetic against brute force (paper §5.2 votes, §5.3 commitment,
dissertation §4.3 joint consensus)."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core import JointConfig, MajorityConfig, NodeId, VoteResult

IDS = [NodeId(f"n{i}") for i in range(1, 8)]

voter_sets = st.sets(st.sampled_from(IDS), min_size=0, max_size=7).map(frozenset)


def majorities(voters: frozenset) -> list[frozenset]:
    q = len(voters) // 2 + 1
    return [frozenset(c) for c in combinations(sorted(voters), q)]


def brute_committed(voters: frozenset, acked: dict) -> int:
    """The largest index i such that some majority all acknowledged >= i."""
    if not voters:
        return 1 << 62
    return max(min(acked.get(v, 0) for v in m) for m in majorities(voters))


def brute_vote(voters: frozenset, votes: dict) -> VoteResult:
    if not voters:
        return VoteResult.WON
    q = len(voters) // 2 + 1
    yes = sum(1 for v in voters if votes.get(v) is True)
    possible = sum(1 for v in voters if votes.get(v) is not False)
    if yes >= q:
        return VoteResult.WON
    if possible < q:
        return VoteResult.LOST
    return VoteResult.PENDING


acked_maps = st.dictionaries(st.sampled_from(IDS), st.integers(0, 20))
vote_maps = st.dictionaries(st.sampled_from(IDS), st.booleans())


@settings(max_examples=100, deadline=None)
@given(voters=voter_sets.filter(bool), acked=acked_maps)
def test_majority_committed_index_is_brute_force(voters, acked):
    """Paper §5.3: the commit point is the largest index stored on a majority."""
    assert MajorityConfig(voters).committed_index(acked) == brute_committed(voters, acked)


@settings(max_examples=100, deadline=None)
@given(voters=voter_sets, votes=vote_maps)
def test_majority_vote_result_is_brute_force(voters, votes):
    """Paper §5.2: won with a majority of grants, lost once a majority is impossible."""
    assert MajorityConfig(voters).vote_result(votes) == brute_vote(voters, votes)


@settings(max_examples=100, deadline=None)
@given(inc=voter_sets.filter(bool), out=voter_sets, acked=acked_maps)
def test_joint_committed_index_needs_both_halves(inc, out, acked):
    """Dissertation §4.3: in joint consensus an entry is committed only when a
    majority of *both* the old and the new configuration store it."""
    expected = brute_committed(inc, acked)
    if out:
        expected = min(expected, brute_committed(out, acked))
    assert JointConfig(MajorityConfig(inc), MajorityConfig(out)).committed_index(acked) == expected


@settings(max_examples=100, deadline=None)
@given(inc=voter_sets, out=voter_sets, votes=vote_maps)
def test_joint_vote_needs_both_halves(inc, out, votes):
    """Dissertation §4.3: a joint election is won only if both halves are won, and lost
    as soon as either is lost."""
    r1, r2 = brute_vote(inc, votes), brute_vote(out, votes)
    if VoteResult.LOST in (r1, r2):
        expected = VoteResult.LOST
    elif r1 is r2 is VoteResult.WON:
        expected = VoteResult.WON
    else:
        expected = VoteResult.PENDING
    assert JointConfig(MajorityConfig(inc), MajorityConfig(out)).vote_result(votes) == expected


@settings(max_examples=80, deadline=None)
@given(inc=voter_sets, out=voter_sets, members=st.sets(st.sampled_from(IDS)))
def test_has_quorum(inc, out, members):
    """Dissertation §9.6 (CheckQuorum) uses has_quorum over both halves."""

    def maj(vs):
        return not vs or len(vs & members) >= len(vs) // 2 + 1

    assert JointConfig(MajorityConfig(inc), MajorityConfig(out)).has_quorum(members) == (
        maj(inc) and maj(out)
    )


def test_examples():
    c = JointConfig.of((IDS[0], IDS[1], IDS[2]))
    assert c.committed_index({IDS[0]: 5, IDS[1]: 3, IDS[2]: 1}) == 3
    assert c.committed_index({IDS[0]: 5}) == 0
    assert c.vote_result({IDS[0]: True}) is VoteResult.PENDING
    assert c.vote_result({IDS[0]: True, IDS[2]: True}) is VoteResult.WON
    assert c.vote_result({IDS[1]: False, IDS[2]: False}) is VoteResult.LOST
    # An even-sized cluster needs more than half: 2 of 4 is not enough.
    c4 = JointConfig.of(tuple(IDS[:4]))
    assert c4.committed_index({IDS[0]: 9, IDS[1]: 9}) == 0
    assert c4.vote_result({IDS[0]: True, IDS[1]: True, IDS[2]: False}) is VoteResult.PENDING
    assert (
        c4.vote_result({IDS[0]: True, IDS[1]: True, IDS[2]: False, IDS[3]: False})
        is VoteResult.LOST
    )
    # Joint: the old half blocks the commit.
    j = JointConfig(MajorityConfig(frozenset(IDS[:3])), MajorityConfig(frozenset(IDS[3:6])))
    assert j.committed_index({IDS[0]: 7, IDS[1]: 7, IDS[2]: 7, IDS[3]: 2}) == 0
    assert j.ids() == frozenset(IDS[:6])
