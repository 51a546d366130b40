"""Membership changes on a running node (dissertation §4).

Rule: a new cluster's founding membership, the guards on proposing a
configuration change, making a committed one effective, and what a node does
when its membership switches (a removed leader steps down, the leader tracks
new members and forgets old ones) are functions here over one node's
:class:`~raftkv.core.raft.Raft` state. Which membership a change leads to is
pure maths in :mod:`raftkv.core.confchange`.

A configuration takes effect when its entry is applied (the driver calls
:func:`apply_conf_change`), not when it is appended, as in etcd.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raftkv.core.confchange import ConfChangeError, Membership
from raftkv.core.confchange import apply_conf_change as next_membership
from raftkv.core.errors import LogCompacted, NotLeader, ProposalDropped
from raftkv.core.progress import Progress
from raftkv.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Index,
    NodeId,
    Role,
)

if TYPE_CHECKING:
    from raftkv.core.raft import Raft

__all__ = [
    "apply_conf_change",
    "bootstrap",
    "has_unapplied_conf_change",
    "propose_conf_change",
    "switch_membership",
]

logger = logging.getLogger(__name__)


def bootstrap(r: Raft, peers: tuple[NodeId, ...]) -> None:
    """Start a brand-new cluster: the initial membership is entry 1 of the log.

    Every founding member writes the same committed entry (term 1, index 1),
    so a node that joins later learns the founding membership by replaying
    the log, exactly as it learns every later change (etcd does the same).
    """
    cc = ConfChange(
        changes=tuple(ConfChangeSingle(ConfChangeType.ADD_VOTER, p) for p in sorted(set(peers)))
    )
    r.term = 1
    r.log.append([Entry(term=1, index=1, data=cc.encode(), type=EntryType.CONF_CHANGE)])
    r.log.commit_to(1)
    # Already in force (the membership came from the same peers): it does
    # not block campaigning while it waits to be applied.
    r.bootstrap_index = 1


def propose_conf_change(r: Raft, cc: ConfChange) -> Index:
    """Append a configuration change; it takes effect when the driver applies it.

    Raises:
        NotLeader: this node is not the leader.
        ProposalDropped: another change is still pending, a transfer is under
            way, or no entry of this term is committed yet (a new leader must
            commit one first: the single-server change bug, Ongaro 2015).
        ConfChangeError: the change does not apply to the current membership.
    """
    if r.role is not Role.LEADER:
        raise NotLeader(r.leader)
    if r.lead_transferee is not None:
        raise ProposalDropped("leadership transfer in progress")
    if not r.may_change_membership():
        raise ProposalDropped("no entry of the current term is committed yet")
    if r.pending_conf_index > r.log.applied:
        raise ProposalDropped(f"configuration change at {r.pending_conf_index} is not applied yet")
    next_membership(r.membership, cc)  # validate now; raises ConfChangeError
    index = r.append_entries([Entry(term=0, index=0, data=cc.encode(), type=EntryType.CONF_CHANGE)])
    r.pending_conf_index = index
    return index


def apply_conf_change(r: Raft, cc: ConfChange, *, strict: bool = False) -> ConfState:
    """Make a committed configuration change effective (called while applying).

    A change that does not apply to the current membership changes nothing
    -- the same on every replica, since all apply the same log -- and the
    configuration is returned as it was; with ``strict`` that is reported
    by raising instead, so a driver can answer the change's proposer.

    Raises:
        ConfChangeError: with ``strict``, the change does not apply (nothing changed).
    """
    try:
        membership = next_membership(r.membership, cc)
    except ConfChangeError as exc:
        if strict:
            raise
        logger.warning("%s: ignoring committed configuration change: %s", r.node_id, exc)
        return r.conf_state()
    switch_membership(r, membership)
    if r.role is Role.LEADER and membership.auto_leave and membership.is_joint():
        # Leave the joint configuration as soon as it is in force (§4.3).
        index = r.append_entries(
            [Entry(term=0, index=0, data=ConfChange().encode(), type=EntryType.CONF_CHANGE)]
        )
        r.pending_conf_index = index
    return r.conf_state()


def switch_membership(r: Raft, membership: Membership) -> None:
    """Put ``membership`` in force (an applied change, or a restored snapshot's)."""
    r.membership = membership
    r.voters = membership.voters
    if r.role is not Role.LEADER:
        return
    if not r.is_voter(r.node_id):
        # Removed (or demoted) leader: step down now that the change is
        # committed; the remaining voters elect a new leader (§4.2.2).
        logger.debug("%s steps down: no longer a voter", r.node_id)
        r.become_follower(r.term, None)
        return
    members = membership.members() | {r.node_id}
    last = r.log.last_index()
    for node_id in sorted(members):
        if node_id not in r.prs:
            r.prs[node_id] = Progress(last + 1, r.config.max_inflight, recent_active=True)
    for node_id in [n for n in r.prs if n not in members]:
        del r.prs[node_id]
    if r.lead_transferee is not None and not r.is_voter(r.lead_transferee):
        r.lead_transferee = None
    # The quorum changed: commit what the new configuration allows, and tell
    # every member (new ones included) the leader's log and commit index.
    r.maybe_commit()
    r.pending_broadcast = True


def has_unapplied_conf_change(r: Raft) -> bool:
    """Whether a committed configuration change waits to be applied (such a node
    does not campaign: its configuration may be about to change)."""
    log = r.log
    if log.committed <= log.applied:
        return False
    lo = max(log.applied + 1, log.first_index(), r.bootstrap_index + 1)
    if lo > log.committed:
        return False
    try:
        entries = log.slice(lo, log.committed + 1)
    except LogCompacted:
        return False
    return any(e.type is EntryType.CONF_CHANGE for e in entries)
