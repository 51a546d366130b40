"""Leadership transfer (dissertation §3.10).

The leader stops accepting proposals, brings the target's log up to date, and
sends it TimeoutNow; the target starts an election at once (skipping PreVote,
and with ``RequestVote.transfer`` so voters inside the CheckQuorum lease still
answer). If the transfer does not finish within an election timeout the leader
aborts it and accepts proposals again.
"""

from __future__ import annotations

import pytest

from raftkv.core import (
    AppendEntriesResponse,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    NotLeader,
    ProposalDropped,
    RaftError,
    RequestVote,
    Role,
    TimeoutNow,
)
from tests.core.harness import Harness, nid

N1, N2, N3, N4 = (nid(i) for i in range(1, 5))


def cluster(**cfg: object) -> Harness:
    h = Harness(3, **cfg)
    h.elect(1)
    h.propose(1, b"a")
    h.stabilize()
    return h


def test_transfer_to_up_to_date_follower():
    """§3.10: an up-to-date target gets TimeoutNow at once, wins the next term,
    and the old leader becomes its follower -- even though CheckQuorum's lease
    would make the voters ignore an ordinary candidate."""
    h = cluster()
    term = h.node(1).term
    mark = len(h.delivered)
    h.node(1).transfer_leadership(N2)
    h.stabilize()
    after = h.delivered[mark:]
    assert isinstance(after[0], TimeoutNow) and (after[0].sender, after[0].to) == (N1, N2)
    votes = [m for m in after if isinstance(m, RequestVote)]
    assert votes and all(m.transfer and not m.pre_vote for m in votes)
    assert h.node(2).role is Role.LEADER and h.node(2).term == term + 1
    assert h.node(1).role is Role.FOLLOWER and h.node(1).leader == N2
    assert h.node(3).leader == N2
    assert h.leaders() == [N2]
    assert h.node(1).status().lead_transferee is None
    idx = h.propose(2, b"b")
    h.stabilize()
    assert h.node(1).commit_index == idx


def test_transfer_to_lagging_follower_catches_it_up_first():
    """§3.10 step 2: the leader replicates to the target until its log matches,
    and only then sends TimeoutNow; the target's log wins the election."""
    h = cluster()
    h.isolate(3)
    for k in range(5):
        h.propose(1, b"m%d" % k)
    h.stabilize()
    last = h.node(1).last_index
    assert h.node(3).last_index < last
    h.heal()
    mark = len(h.delivered)
    h.node(1).transfer_leadership(N3)
    assert h.node(1).status().lead_transferee == N3
    h.stabilize()
    after = h.delivered[mark:]
    timeout_at = next(i for i, m in enumerate(after) if isinstance(m, TimeoutNow))
    caught_up = next(
        i
        for i, m in enumerate(after)
        if isinstance(m, AppendEntriesResponse) and m.sender == N3 and m.index == last
    )
    assert caught_up < timeout_at
    assert h.node(3).role is Role.LEADER
    assert h.node(3).entries(1, last + 1) == h.node(1).entries(1, last + 1)


def test_proposals_are_refused_during_the_transfer():
    """§3.10: "the prior leader stops accepting new client requests" while the
    transfer is under way, and so are configuration changes."""
    h = cluster()
    h.isolate(3)  # TimeoutNow cannot arrive: the transfer stays pending
    h.node(1).transfer_leadership(N3)
    h.stabilize()
    assert h.node(1).role is Role.LEADER
    with pytest.raises(ProposalDropped):
        h.propose(1, b"x")
    with pytest.raises(ProposalDropped):
        h.node(1).propose_batch([b"x", b"y"])
    with pytest.raises(ProposalDropped):
        h.node(1).propose_conf_change(
            ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, N4),))
        )


def test_transfer_aborts_after_an_election_timeout_if_target_unreachable():
    """§3.10: "if the transfer does not complete within an election timeout, the
    prior leader aborts the transfer and resumes accepting client requests"."""
    h = cluster()
    h.isolate(3)
    h.node(1).transfer_leadership(N3)
    timeout = h.raft(1).election_timeout
    for _ in range(timeout - 1):
        h.tick(1)
        h.stabilize()
    with pytest.raises(ProposalDropped):  # not yet
        h.propose(1, b"early")
    h.tick(1)
    h.stabilize()
    assert h.node(1).role is Role.LEADER
    assert h.node(1).status().lead_transferee is None
    idx = h.propose(1, b"late")
    h.stabilize()
    assert h.node(1).commit_index == idx
    h.heal()
    h.stabilize()
    assert h.leaders() == [N1] and h.node(3).role is Role.FOLLOWER


def test_transfer_to_a_non_voter_raises():
    """§3.10: only a voter can be handed leadership (a learner cannot win)."""
    h = cluster()
    # n4 joins as a learner via a snapshot carrying the configuration.
    h.compact(1, h.node(1).applied_index)
    h.add_node(4)
    h.node(1).propose_conf_change(
        ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, N4),))
    )
    h.stabilize()
    assert h.node(1).status().conf_state.learners == (N4,)
    with pytest.raises(RaftError):
        h.node(1).transfer_leadership(N4)
    with pytest.raises(RaftError):
        h.node(1).transfer_leadership(nid(9))
    assert h.node(1).status().lead_transferee is None
    h.propose(1, b"still leader")  # nothing was started


def test_only_the_leader_can_transfer():
    """§3.10: the transfer is run by the current leader."""
    h = cluster()
    with pytest.raises(NotLeader):
        h.node(2).transfer_leadership(N3)


def test_timeout_now_waits_for_a_committed_conf_change_to_be_applied():
    """TimeoutNow goes through the same guard as an election timeout (etcd: a
    campaign of the transfer kind through hup): a follower whose log holds a
    committed but unapplied configuration change does not campaign, since it
    would count votes with a configuration about to change; once the change is
    applied, it does."""
    h = Harness(3)
    cc = ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, N4),))
    st = MemoryStorage(voters=(N1, N2, N3))
    st.append(
        [
            Entry(term=1, index=1, data=b"x"),
            Entry(term=1, index=2, data=cc.encode(), type=EntryType.CONF_CHANGE),
        ]
    )
    st.set_hard_state(HardState(term=1, vote=N1, commit=2))
    h.storage[N2] = st
    h.restart(N2)  # applied=0: entries 1 and 2 are committed, not yet applied
    assert h.node(2).commit_index == 2 and h.node(2).applied_index == 0

    h.node(2).step(TimeoutNow(term=1, sender=N1, to=N2))
    assert h.node(2).role is Role.FOLLOWER and h.node(2).term == 1

    assert h.process_ready(N2)  # applies both entries, the change among them
    assert h.node(2).applied_index == 2 and h.node(2).conf_state().learners == (N4,)
    h.node(2).step(TimeoutNow(term=1, sender=N1, to=N2))
    assert h.node(2).role is Role.CANDIDATE and h.node(2).term == 2
