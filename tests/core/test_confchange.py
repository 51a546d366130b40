"""Properties of the pure membership function (dissertation §4.1, §4.3).

``apply_conf_change`` is checked against random change sequences: every
membership it returns satisfies the invariants of :class:`Membership`, and the
changes it refuses are exactly the ones §4 forbids.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core import (
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Membership,
    NodeId,
)
from raftkv.core.confchange import apply_conf_change

IDS = [NodeId(f"n{i}") for i in range(1, 7)]
AUTO = ConfChangeTransition.AUTO
EXPLICIT = ConfChangeTransition.JOINT_EXPLICIT
IMPLICIT = ConfChangeTransition.JOINT_IMPLICIT

singles = st.builds(ConfChangeSingle, st.sampled_from(list(ConfChangeType)), st.sampled_from(IDS))
changes = st.builds(
    ConfChange,
    changes=st.lists(singles, min_size=0, max_size=4).map(tuple),
    transition=st.sampled_from(list(ConfChangeTransition)),
)
start = st.sets(st.sampled_from(IDS), min_size=1, max_size=5).map(
    lambda vs: Membership.from_conf_state(ConfState(voters=tuple(sorted(vs))))
)


def c(*pairs: tuple[ConfChangeType, str], transition=AUTO) -> ConfChange:
    return ConfChange(
        changes=tuple(ConfChangeSingle(t, NodeId(n)) for t, n in pairs), transition=transition
    )


def simple(*voters: str, learners: tuple[str, ...] = ()) -> Membership:
    return Membership.from_conf_state(ConfState(voters=voters, learners=learners))


def check_invariants(m: Membership) -> None:
    incoming, outgoing = m.voters.incoming.voters, m.voters.outgoing.voters
    assert incoming, "a configuration always has a voter"
    assert not (m.learners & (incoming | outgoing)), "learners are disjoint from voters"
    assert not (m.learners_next & incoming), "learners_next are not incoming voters"
    assert m.learners_next <= outgoing, "learners_next are outgoing voters"
    assert not (m.learners & m.learners_next)
    assert m.is_joint() == bool(outgoing), "joint iff the outgoing half is non-empty"
    if not m.is_joint():
        assert not m.learners_next and not m.auto_leave
    assert Membership.from_conf_state(m.to_conf_state()) == m


def voter_delta(before: Membership, after: Membership) -> int:
    return len(before.voters.incoming.voters ^ after.voters.incoming.voters)


@settings(max_examples=300, deadline=None)
@given(start, st.lists(changes, min_size=1, max_size=12))
def test_random_change_sequences_preserve_membership_invariants(m, ccs):
    """§4.1/§4.3: whatever sequence of changes is accepted, the invariants hold,
    and each accepted change has the shape §4 prescribes."""
    check_invariants(m)
    for cc in ccs:
        try:
            nxt = apply_conf_change(m, cc)
        except ConfChangeError:
            continue
        check_invariants(nxt)
        if cc.leaves_joint():
            # Leaving restores a simple configuration of the incoming voters;
            # demoted voters become learners.
            assert m.is_joint() and not nxt.is_joint()
            assert nxt.voters.incoming == m.voters.incoming
            assert nxt.learners == m.learners | m.learners_next
        else:
            assert not m.is_joint()
            if nxt.is_joint():
                # §4.3: C_old,new keeps the old voters as the outgoing half.
                assert nxt.voters.outgoing == m.voters.incoming
                assert nxt.auto_leave == (cc.transition is not EXPLICIT)
            else:
                # §4.1: only AUTO changes of at most one voter skip joint consensus.
                assert cc.transition is AUTO and voter_delta(m, nxt) <= 1
            if cc.transition is AUTO and voter_delta(m, nxt) > 1:
                assert nxt.is_joint()
        m = nxt


@settings(max_examples=200, deadline=None)
@given(start, changes)
def test_entering_then_leaving_joint_equals_the_incoming_config(m, cc):
    """§4.3: C_old,new followed by the leave step yields exactly C_new."""
    try:
        joint = apply_conf_change(m, cc)
    except ConfChangeError:
        return
    if not joint.is_joint():
        return
    left = apply_conf_change(joint, ConfChange())
    assert left.voters.ids() == joint.voters.incoming.voters
    assert left.learners == joint.learners | joint.learners_next
    assert not left.is_joint() and not left.learners_next and not left.auto_leave


@settings(max_examples=200, deadline=None)
@given(start, changes)
def test_a_joint_configuration_accepts_only_the_leave_step(m, cc):
    """§4.3: no new change may start while C_old,new is in force."""
    joint = apply_conf_change(m, c((ConfChangeType.ADD_LEARNER, "n9"), transition=EXPLICIT))
    assert joint.is_joint()
    if cc.leaves_joint():
        assert not apply_conf_change(joint, cc).is_joint()
    else:
        with pytest.raises(ConfChangeError):
            apply_conf_change(joint, cc)


# --------------------------------------------------------------------------- error cases


def test_leaving_when_not_joint_is_an_error():
    """§4.3: there is nothing to leave in a simple configuration."""
    with pytest.raises(ConfChangeError):
        apply_conf_change(simple("n1", "n2", "n3"), ConfChange())


def test_removing_every_voter_is_an_error():
    """§4.1: a configuration without voters could never elect or commit."""
    m = simple("n1")
    with pytest.raises(ConfChangeError):
        apply_conf_change(m, c((ConfChangeType.REMOVE_NODE, "n1")))
    with pytest.raises(ConfChangeError):
        apply_conf_change(m, c((ConfChangeType.ADD_LEARNER, "n1")))
    with pytest.raises(ConfChangeError):
        apply_conf_change(
            simple("n1", "n2"),
            c(
                (ConfChangeType.REMOVE_NODE, "n1"),
                (ConfChangeType.REMOVE_NODE, "n2"),
                transition=EXPLICIT,
            ),
        )


def test_empty_node_id_is_an_error():
    """§4.1: every change names the server it adds or removes."""
    with pytest.raises(ConfChangeError):
        apply_conf_change(simple("n1"), c((ConfChangeType.ADD_VOTER, "")))


# --------------------------------------------------------------------------- examples


def test_single_voter_change_is_simple_and_multi_voter_change_is_joint():
    """§4.1 vs §4.3: one voter changes directly; two go through C_old,new."""
    m = simple("n1", "n2", "n3")
    one = apply_conf_change(m, c((ConfChangeType.ADD_VOTER, "n4")))
    assert not one.is_joint() and one.voters.ids() == {"n1", "n2", "n3", "n4"}
    add = ConfChangeType.ADD_VOTER
    two = apply_conf_change(m, c((add, "n4"), (add, "n5")))
    assert two.is_joint() and two.auto_leave
    assert two.voters.incoming.voters == {"n1", "n2", "n3", "n4", "n5"}
    assert two.voters.outgoing.voters == {"n1", "n2", "n3"}
    # Learner changes never touch a quorum: still simple.
    learn = ConfChangeType.ADD_LEARNER
    lrn = apply_conf_change(m, c((learn, "n4"), (learn, "n5")))
    assert not lrn.is_joint() and lrn.learners == {"n4", "n5"}


def test_demoting_a_voter_jointly_keeps_it_voting_until_leaving():
    """§4.3: a voter demoted to learner stays in C_old (learners_next) until the
    joint configuration is left."""
    m = simple("n1", "n2", "n3")
    joint = apply_conf_change(m, c((ConfChangeType.ADD_LEARNER, "n3"), transition=IMPLICIT))
    assert joint.voters.incoming.voters == {"n1", "n2"}
    assert joint.voters.outgoing.voters == {"n1", "n2", "n3"}
    assert joint.learners_next == {"n3"} and joint.learners == frozenset()
    left = apply_conf_change(joint, ConfChange())
    assert left.voters.ids() == {"n1", "n2"} and left.learners == {"n3"}


def test_promoting_a_learner_removes_it_from_learners():
    """§4.2.1: a caught-up learner is promoted; it is then a voter only."""
    m = simple("n1", "n2", "n3", learners=("n4",))
    nxt = apply_conf_change(m, c((ConfChangeType.ADD_VOTER, "n4")))
    assert "n4" in nxt.voters.ids() and nxt.learners == frozenset()
