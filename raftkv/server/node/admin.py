"""Membership and leadership administration: adding, promoting and removing
members, moving leadership on request and before a leader stops.

Rule 1: a change is checked before it is proposed: an id this node knows was
removed is never added again, and ids and the member count follow
:mod:`raftkv.limits` (:func:`~raftkv.replica.membership.refuse_members`). The
replica checks again when the entry applies
(:meth:`~raftkv.replica.membership.MembershipBook.refuse`), since the
membership may have changed meanwhile. A
:class:`~raftkv.replica.membership.Refusal`, before proposing or when applied,
becomes the API's error in one place, :func:`refusal_error`.

Rule 2: a learner becomes a voter only once it holds 90 % of the leader's log
(etcd's rule), so promoting it does not stall commits while it catches up.

Rule 3: a leader that stops first hands over to the voter best placed to lead
(replicating, recently active, highest match; dissertation §3.10), so the
cluster does not sit out an election timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from raftkv.core.errors import NotLeader, ProposalDropped, RaftError
from raftkv.core.rawnode import RawNode
from raftkv.core.types import ConfChange, ConfChangeSingle, ConfChangeType, NodeId, Role
from raftkv.limits import format_host_port
from raftkv.replica.membership import (
    Member,
    Refusal,
    RefusalKind,
    member_context,
    refuse_members,
)
from raftkv.replica.replica import Replica
from raftkv.server.errors import (
    BadRequest,
    LearnerNotReady,
    MemberNotFound,
    MemberRemoved,
    NoLeader,
    OutcomeUnknown,
    RaftAddressTaken,
    ServerError,
)
from raftkv.server.node.proposals import Proposals

__all__ = ["Admin", "refusal_error"]

logger = logging.getLogger(__name__)


def refusal_error(refusal: Refusal) -> ServerError:
    """The API's error for a configuration change the replica refused."""
    if refusal.kind is RefusalKind.REMOVED_ID and refusal.node_id is not None:
        return MemberRemoved(refusal.node_id)
    if refusal.kind is RefusalKind.CORE:
        return BadRequest(f"membership change refused when applied: {refusal.message}")
    return BadRequest(refusal.message)


class Admin:
    """Proposes membership changes and leadership transfers for one node.

    Args:
        node_id: this node.
        replica: its replica (the applied membership and the address book).
        proposals: where a change's proposal waits for its entry to apply.
        core: the core while the node serves requests (raises
            :class:`~raftkv.server.errors.NodeStopped` otherwise).
        wake: wakes the drive loop (the core has something to send).
        election_timeout_s: the base election timeout; a requested transfer
            may take two by default, each step of a handover one.
        poll_s: how often a transfer checks for the new leader.
    """

    __slots__ = (
        "_node_id",
        "_replica",
        "_proposals",
        "_core",
        "_wake",
        "_election_timeout_s",
        "_poll_s",
    )

    def __init__(
        self,
        node_id: NodeId,
        replica: Replica,
        proposals: Proposals,
        *,
        core: Callable[[], RawNode],
        wake: Callable[[], None],
        election_timeout_s: float,
        poll_s: float,
    ) -> None:
        self._node_id = node_id
        self._replica = replica
        self._proposals = proposals
        self._core = core
        self._wake = wake
        self._election_timeout_s = election_timeout_s
        self._poll_s = poll_s

    async def add_member(self, node_id: NodeId, member: Member, *, learner: bool) -> object:
        """Propose adding ``node_id`` (its addresses travel in the change's context).

        Raises:
            MemberRemoved: ``node_id`` was a member once and was removed.
            RaftAddressTaken: another member has that Raft address.
            BadRequest: ``node_id`` is not a valid id (:mod:`raftkv.limits`), the
                cluster has :data:`~raftkv.limits.MAX_MEMBERS` members, or it is a
                learner being added as a voter (promote it instead).
        """
        self._refuse_removed(node_id)
        if not learner and node_id in self._replica.conf_state.learners:
            # Adding a learner as a voter would promote it without the
            # catch-up check promote_member makes.
            raise BadRequest(
                f"{node_id} is a learner: promote it (POST /v1/members/{node_id}/promote)"
                " once it has caught up"
            )
        self._refuse_taken_address(node_id, member)
        kind = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        context = member_context(node_id, member)
        cc = ConfChange(changes=(ConfChangeSingle(kind, node_id),), context=context)
        refusal = refuse_members(cc, self._replica.conf_state.members())
        if refusal is not None:
            raise refusal_error(refusal)
        return await self.propose_conf_change(cc)

    async def promote_member(self, node_id: NodeId) -> object:
        """Propose making the learner ``node_id`` a voter, once it has caught up (Rule 2).

        Raises:
            MemberRemoved: ``node_id`` was removed from the cluster.
            BadRequest: ``node_id`` is not a learner.
            LearnerNotReady: its log is too far behind the leader's (retry later).
        """
        raw = self._core()
        if raw.role is not Role.LEADER:
            raise NoLeader("not the leader", leader=raw.leader)
        self._refuse_removed(node_id)
        status = raw.status()
        if node_id not in status.conf_state.learners:
            raise BadRequest(f"{node_id} is not a learner")
        match = status.progress[node_id].match if node_id in status.progress else 0
        if match < raw.last_index * 0.9:
            raise LearnerNotReady(
                f"learner {node_id} is not caught up yet (match {match} of {raw.last_index})"
            )
        member = self._replica.book.members.get(node_id)
        context = member_context(node_id, member) if member else b""
        return await self.propose_conf_change(
            ConfChange(
                changes=(ConfChangeSingle(ConfChangeType.ADD_VOTER, node_id),), context=context
            )
        )

    async def update_member(self, node_id: NodeId, member: Member) -> object:
        """Propose new addresses for the member ``node_id`` (etcd's ``MemberUpdate``).

        The change re-adds the member in the role it has (a no-op for the
        configuration) with the new addresses in its context, so every replica
        updates its address book, ``members.json`` and peer links at the same
        log index. The member itself goes on listening where it did until it
        is restarted with the new addresses.

        Raises:
            NoLeader: this node is not the leader.
            MemberRemoved: ``node_id`` was removed from the cluster.
            MemberNotFound: ``node_id`` is not a member.
            RaftAddressTaken: another member has that Raft address.
        """
        raw = self._core()
        if raw.role is not Role.LEADER:
            raise NoLeader("not the leader", leader=raw.leader)
        self._refuse_removed(node_id)
        conf = self._replica.conf_state
        if node_id in conf.voters or node_id in conf.voters_outgoing:
            kind = ConfChangeType.ADD_VOTER
        elif node_id in conf.learners or node_id in conf.learners_next:
            kind = ConfChangeType.ADD_LEARNER
        else:
            raise MemberNotFound(node_id)
        self._refuse_taken_address(node_id, member)
        context = member_context(node_id, member)
        return await self.propose_conf_change(
            ConfChange(changes=(ConfChangeSingle(kind, node_id),), context=context)
        )

    def _refuse_taken_address(self, node_id: NodeId, member: Member) -> None:
        """Refuse a Raft address another member has: its peers would dial the
        wrong node (etcd: "Peer URLs already exists")."""
        for other, known in self._replica.book.members.items():
            if other != node_id and known.raft == member.raft:
                raise RaftAddressTaken(other, format_host_port(member.raft))

    def _refuse_removed(self, node_id: NodeId) -> None:
        """Refuse an id that was removed once, before anything is proposed."""
        if node_id in self._replica.book.removed:
            raise MemberRemoved(node_id)

    def removal_keeps_quorum(self, node_id: NodeId) -> bool:
        """Whether removing ``node_id`` leaves a quorum of recently active voters
        (etcd's strict reconfiguration check); True on a follower (the leader decides)."""
        raw = self._core()
        if raw.role is not Role.LEADER:
            return True
        status = raw.status()
        voters = set(status.conf_state.voters)
        if node_id not in voters:
            return True
        rest = voters - {node_id}
        active = sum(
            1
            for n in rest
            if n == self._node_id or (n in status.progress and status.progress[n].recent_active)
        )
        return active >= len(rest) // 2 + 1

    async def remove_member(self, node_id: NodeId) -> object:
        """Propose removing ``node_id``."""
        return await self.propose_conf_change(
            ConfChange(changes=(ConfChangeSingle(ConfChangeType.REMOVE_NODE, node_id),))
        )

    async def propose_conf_change(self, cc: ConfChange) -> object:
        """Propose ``cc`` as it is (no check of Rule 1 here); wait for it to apply.

        Returns:
            The new membership, ``{"voters": [...], "learners": [...]}``.

        Raises:
            NoLeader: this node is not the leader, or the core dropped the change.
            BadRequest: the core refuses the change, or the replica did when applying it.
        """
        raw = self._core()
        try:
            index = raw.propose_conf_change(cc)
        except NotLeader as exc:
            raise NoLeader("not the leader", leader=exc.leader) from exc
        except ProposalDropped as exc:
            raise NoLeader(f"membership change refused: {exc}", leader=raw.leader) from exc
        except RaftError as exc:  # ConfChangeError: does not apply to the membership
            raise BadRequest(f"membership change refused: {exc}") from exc
        return await self._proposals.wait(index, raw.term, None)

    async def transfer_leadership(self, to: NodeId, *, timeout: float | None) -> NodeId | None:
        """Ask the leader (this node) to hand over to ``to``; wait for a new leader.

        Raises:
            NoLeader: this node is not the leader.
            BadRequest: the core refuses the transfer (``to`` is not a voter).
            OutcomeUnknown: ``to`` did not become leader in time.
        """
        raw = self._core()
        if raw.role is not Role.LEADER:
            raise NoLeader("not the leader", leader=raw.leader)
        if to == self._node_id:
            return to
        try:
            raw.transfer_leadership(to)
        except NotLeader as exc:
            raise NoLeader("not the leader", leader=exc.leader) from exc
        except RaftError as exc:
            raise BadRequest(f"transfer refused: {exc}") from exc
        self._wake()
        limit = timeout if timeout is not None else 2 * self._election_timeout_s
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if raw.leader == to:
                return to
            await asyncio.sleep(self._poll_s)
        raise OutcomeUnknown(f"leadership did not move to {to} in time")

    async def hand_over(self, raw: RawNode) -> None:
        """Before this leader stops: hand leadership to the best voter (Rule 3).

        Waits (at most one election timeout) until another node leads, then
        (at most one more) for this node's pending proposals to resolve under
        the new leader. Does nothing if no voter can take over.
        """
        target = self._best_follower(raw)
        if target is None:
            return
        logger.info("transferring leadership before stopping", extra={"fields": {"to": target}})
        try:
            raw.transfer_leadership(target)
        except RaftError as exc:
            logger.info("leadership transfer refused: %s", exc)
            return
        self._wake()
        poll = self._poll_s
        timeout = self._election_timeout_s
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            raw.role is Role.LEADER or raw.leader in (None, self._node_id)
        ):
            await asyncio.sleep(poll)
        if raw.role is Role.LEADER:
            logger.warning("leadership transfer did not complete; stopping anyway")
            return
        logger.info("leadership handed over", extra={"fields": {"leader": raw.leader}})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proposals:
            await asyncio.sleep(poll)

    def _best_follower(self, raw: RawNode) -> NodeId | None:
        """The voter to hand over to: replicating and recently active, then highest match."""
        if raw.role is not Role.LEADER:
            return None
        status = raw.status()
        voters = set(status.conf_state.voters)
        candidates = [
            (p.state == "replicate", p.recent_active, p.match, n)
            for n, p in status.progress.items()
            if n != self._node_id and n in voters
        ]
        return NodeId(max(candidates)[3]) if candidates else None
