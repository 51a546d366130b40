"""Elections: campaigns, PreVote, votes and CheckQuorum (paper §5.2, §5.4.1;
dissertation §9.6).

Rule: every step of an election -- whether to campaign, the PreVote round and
the real one, granting and counting votes, the leader's CheckQuorum and the
follower's lease against disruptive candidates -- is a function here over one
node's :class:`~raftkv.core.raft.Raft` state. The role switches
(``become_*``), the term rules of Figure 2 and the two predicates a vote rests
on (:meth:`~raftkv.core.raft.Raft.can_vote_for`,
:meth:`~raftkv.core.raft.Raft.log_is_up_to_date`) stay on :class:`Raft`, where
a test subclass can break one of them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raftkv.core.membership import has_unapplied_conf_change
from raftkv.core.messages import RequestVote, RequestVoteResponse
from raftkv.core.quorum import VoteResult
from raftkv.core.types import NodeId, Role

if TYPE_CHECKING:
    from raftkv.core.raft import Raft

__all__ = [
    "campaign",
    "check_quorum_active",
    "handle_request_vote",
    "handle_vote_response",
    "hup",
    "in_lease",
    "record_vote",
    "report_unreachable",
]

logger = logging.getLogger(__name__)

# In CPython 3.11 an attribute of an Enum class costs several times a global lookup.
_PRE_CANDIDATE = Role.PRE_CANDIDATE


def hup(r: Raft, *, transfer: bool = False) -> None:
    """The election timer fired, a campaign was requested, or (``transfer``)
    the leader handed leadership over with TimeoutNow.

    The one guard for every campaign: a leader, a non-voter, or a node with
    a committed configuration change not yet applied does not campaign. A
    transfer skips PreVote: the leader asked for this election (§3.10).
    """
    if r.role is Role.LEADER:
        return
    if not r.is_voter(r.node_id):
        return
    if has_unapplied_conf_change(r):
        # Our configuration may be about to change; campaigning with the old
        # one could count the wrong voters.
        logger.debug("%s does not campaign: a configuration change is unapplied", r.node_id)
        return
    if transfer:
        campaign(r, pre_vote=False, transfer=True)
    elif r.config.pre_vote:
        campaign(r, pre_vote=True)
    else:
        campaign(r, pre_vote=False)


def campaign(r: Raft, *, pre_vote: bool, transfer: bool = False) -> None:
    """Start a PreVote round (the term untouched) or a real election (§5.2)."""
    if pre_vote:
        r.become_pre_candidate()
        vote_term = r.term + 1
        # A PreVote promises nothing durable: our own counts at once.
        if record_vote(r, r.node_id, True, pre_vote=True):
            return
    else:
        r.become_candidate()
        vote_term = r.term
        if r.vote_for_self():
            return
    last_index = r.log.last_index()
    last_term = r.log.last_term()
    for peer in r.peers():
        msg = RequestVote(
            term=vote_term,
            sender=r.node_id,
            to=peer,
            last_log_index=last_index,
            last_log_term=last_term,
            pre_vote=pre_vote,
            transfer=transfer,
        )
        r.send(msg)


def record_vote(r: Raft, voter: NodeId, granted: bool, *, pre_vote: bool) -> bool:
    """Count a vote; act on the result. True if the election ended."""
    r.votes.setdefault(voter, granted)
    result = r.voters.vote_result(r.votes)
    if result is VoteResult.WON:
        if pre_vote:
            campaign(r, pre_vote=False)
        else:
            r.become_leader()
            r.broadcast_append()
        return True
    if result is VoteResult.LOST:
        r.become_follower(r.term, None)
        return True
    return False


def handle_vote_response(r: Raft, msg: RequestVoteResponse) -> None:
    """A (pre-)candidate counts an answer of the round it is in."""
    expecting_pre = r.role is _PRE_CANDIDATE
    if msg.pre_vote != expecting_pre:
        return
    record_vote(r, msg.sender, msg.granted, pre_vote=expecting_pre)


def handle_request_vote(r: Raft, msg: RequestVote) -> None:
    """RequestVote receiver (Figure 2): grant at most one vote per term, and only
    to a candidate whose log is at least as up to date as ours (§5.4.1)."""
    if r.can_vote_for(msg) and r.log_is_up_to_date(msg):
        r.send(
            RequestVoteResponse(
                term=msg.term,
                sender=r.node_id,
                to=msg.sender,
                granted=True,
                pre_vote=msg.pre_vote,
            )
        )
        if not msg.pre_vote:
            r.election_elapsed = 0
            r.vote = msg.sender
    else:
        r.send(
            RequestVoteResponse(
                term=r.term,
                sender=r.node_id,
                to=msg.sender,
                granted=False,
                pre_vote=msg.pre_vote,
            )
        )


def in_lease(r: Raft) -> bool:
    """CheckQuorum's lease: a leader was heard from within the minimum election
    timeout, so a disruptive candidate's RequestVote is ignored (§9.6)."""
    return (
        r.config.check_quorum and r.leader is not None and r.election_elapsed < r.election_timeout
    )


def check_quorum_active(r: Raft) -> bool:
    """CheckQuorum: did a quorum talk to us this election timeout? Resets the marks."""
    active = {r.node_id}
    for node_id, pr in r.prs.items():
        if node_id == r.node_id:
            continue
        if pr.take_recent_active():
            active.add(node_id)
    return r.voters.has_quorum(active)


def report_unreachable(r: Raft, peer: NodeId) -> bool:
    """A hint from outside the protocol: ``peer``'s process is gone.

    A transport reports it when ``peer``'s address refuses connections (its
    process died; the host and network still answer). Only a voting
    follower whose leader is ``peer`` acts on it, and only with PreVote and
    CheckQuorum on and lease reads off: it forgets the leader, so it no
    longer turns candidates away as within the leader's lease, and lets its
    election timer fire after ``1 + rank`` ticks, ``rank`` being its place
    among the other voters in id order, so that the survivors do not all
    campaign at once. Safety never rests on timing: a false hint costs one
    PreVote round, refused by every node that still hears from the leader,
    and the leader's next heartbeat restores the follower. Lease reads do
    rest on followers not voting within the lease, so they disable this.

    Returns ``True`` if the hint was acted on.
    """
    cfg = r.config
    if (
        r.role is not Role.FOLLOWER
        or peer != r.leader
        or peer == r.node_id
        or not (cfg.pre_vote and cfg.check_quorum)
        or cfg.read_only != "safe"
        or not r.is_voter(r.node_id)
    ):
        return False
    others = sorted(v for v in r.voters.ids() if v != peer)
    delay = 1 + others.index(r.node_id)
    r.leader = None
    r.election_elapsed = max(r.election_elapsed, r.randomized_election_timeout - delay)
    logger.debug("%s: leader %s unreachable, campaigning in %d ticks", r.node_id, peer, delay)
    return True
