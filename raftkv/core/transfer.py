"""Leadership transfer (dissertation §3.10).

Rule: a transfer's whole life is here, as functions over the leader's
:class:`~raftkv.core.raft.Raft` state: it starts (``lead_transferee`` set,
proposals refused), sends TimeoutNow once the target's log matches the
leader's, and is aborted after an election timeout or when the target stops
being a voter. The target campaigns at once, skipping PreVote
(:func:`raftkv.core.election.hup` with ``transfer``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raftkv.core.election import hup
from raftkv.core.errors import NotLeader, RaftError
from raftkv.core.messages import TimeoutNow
from raftkv.core.progress import Progress
from raftkv.core.types import NodeId, Role

if TYPE_CHECKING:
    from raftkv.core.raft import Raft

__all__ = [
    "abort_transfer",
    "handle_timeout_now",
    "maybe_send_timeout_now",
    "send_timeout_now",
    "transfer_leadership",
]

logger = logging.getLogger(__name__)


def transfer_leadership(r: Raft, to: NodeId) -> None:
    """Hand leadership to ``to``: catch it up, then tell it to campaign.

    Proposals are refused until the transfer completes or is aborted after
    an election timeout.

    Raises:
        NotLeader: this node is not the leader.
        RaftError: ``to`` is not a voter.
    """
    if r.role is not Role.LEADER:
        raise NotLeader(r.leader)
    if to == r.node_id:
        return
    if not r.is_voter(to) or to not in r.prs:
        raise RaftError(f"cannot transfer leadership to {to}: not a voter")
    if r.lead_transferee == to:
        return
    r.lead_transferee = to
    r.election_elapsed = 0
    pr = r.prs[to]
    if pr.match == r.log.last_index():
        send_timeout_now(r, to)
    else:
        r.send_append(to, pr)


def maybe_send_timeout_now(r: Raft, to: NodeId, pr: Progress) -> None:
    """``to`` acknowledged entries or a snapshot: if it is the transfer's target
    and now holds the leader's whole log, tell it to campaign."""
    if to == r.lead_transferee and pr.match == r.log.last_index():
        send_timeout_now(r, to)


def send_timeout_now(r: Raft, to: NodeId) -> None:
    r.send(TimeoutNow(term=r.term, sender=r.node_id, to=to))


def abort_transfer(r: Raft) -> None:
    """An election timeout passed and the transfer has not completed."""
    if r.lead_transferee is not None:
        logger.debug("%s aborts transfer to %s", r.node_id, r.lead_transferee)
        r.lead_transferee = None


def handle_timeout_now(r: Raft, msg: TimeoutNow) -> None:
    """The target's side: campaign now, without PreVote."""
    logger.debug("%s asked to campaign by %s (leadership transfer)", r.node_id, msg.sender)
    hup(r, transfer=True)
