"""Membership changes as pure functions (dissertation §4; etcd's ``confchange``).

Rule: :func:`apply_conf_change` maps (membership, change) to a new membership or
raises :class:`ConfChangeError`; it never mutates and never knows about logs,
terms or messages. Joint consensus (§4.3) is the general mechanism: a change of
more than one voter enters a joint configuration (old and new voters must both
agree) that is left by a second, empty change. A change of at most one voter is
applied directly (§4.1, single-server changes).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.core.errors import RaftError
from raftkv.core.quorum import JointConfig, MajorityConfig
from raftkv.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    NodeId,
)


class ConfChangeError(RaftError):
    """The change cannot be applied to the current membership."""


@dataclass(frozen=True, slots=True)
class Membership:
    """Who votes and who learns.

    Invariants: learners are disjoint from both voter halves; ``learners_next``
    are outgoing voters that become learners when the joint config is left.
    """

    voters: JointConfig
    learners: frozenset[NodeId] = frozenset()
    learners_next: frozenset[NodeId] = frozenset()
    auto_leave: bool = False

    @classmethod
    def from_conf_state(cls, cs: ConfState) -> Membership:
        return cls(
            voters=JointConfig(
                MajorityConfig(frozenset(cs.voters)), MajorityConfig(frozenset(cs.voters_outgoing))
            ),
            learners=frozenset(cs.learners),
            learners_next=frozenset(cs.learners_next),
            auto_leave=cs.auto_leave,
        )

    def to_conf_state(self) -> ConfState:
        return ConfState(
            voters=tuple(sorted(self.voters.incoming.voters)),
            learners=tuple(sorted(self.learners)),
            voters_outgoing=tuple(sorted(self.voters.outgoing.voters)),
            learners_next=tuple(sorted(self.learners_next)),
            auto_leave=self.auto_leave,
        )

    def is_joint(self) -> bool:
        return bool(self.voters.outgoing.voters)

    def members(self) -> frozenset[NodeId]:
        return self.voters.ids() | self.learners | self.learners_next


def apply_conf_change(m: Membership, cc: ConfChange) -> Membership:
    """The membership after ``cc``.

    With the AUTO transition a change that alters at most one voter is applied
    directly; anything larger enters a joint configuration that is left
    automatically.

    Raises:
        ConfChangeError: leaving a joint config that is not joint, entering one
            while joint, or a result with no voters.
    """
    if cc.leaves_joint():
        if not m.is_joint():
            raise ConfChangeError("cannot leave a joint configuration: not in one")
        return Membership(
            voters=JointConfig(m.voters.incoming),
            learners=m.learners | m.learners_next,
            learners_next=frozenset(),
            auto_leave=False,
        )
    if m.is_joint():
        raise ConfChangeError("configuration is joint: leave it before another change")
    outgoing = m.voters.incoming.voters
    if not outgoing:
        # Bootstrap: with no voters yet there is no old majority to protect,
        # so the initial configuration is applied directly.
        incoming, learners, _ = _apply_singles(set(), set(m.learners), cc.changes, frozenset())
        if not incoming:
            raise ConfChangeError("the initial configuration needs at least one voter")
        return Membership(
            voters=JointConfig(MajorityConfig(frozenset(incoming))), learners=frozenset(learners)
        )
    if cc.transition is ConfChangeTransition.AUTO:
        incoming, learners, _ = _apply_singles(
            set(outgoing), set(m.learners), cc.changes, frozenset()
        )
        if len(set(outgoing) ^ incoming) <= 1:
            if not incoming:
                raise ConfChangeError("removing every voter is not allowed")
            return Membership(
                voters=JointConfig(MajorityConfig(frozenset(incoming))),
                learners=frozenset(learners),
            )
    incoming, learners, learners_next = _apply_singles(
        set(outgoing), set(m.learners), cc.changes, outgoing
    )
    if not incoming:
        raise ConfChangeError("removing every voter is not allowed")
    return Membership(
        voters=JointConfig(MajorityConfig(frozenset(incoming)), MajorityConfig(outgoing)),
        learners=frozenset(learners),
        learners_next=frozenset(learners_next),
        auto_leave=cc.transition is not ConfChangeTransition.JOINT_EXPLICIT,
    )


def _apply_singles(
    incoming: set[NodeId],
    learners: set[NodeId],
    changes: tuple[ConfChangeSingle, ...],
    outgoing: frozenset[NodeId],
) -> tuple[set[NodeId], set[NodeId], set[NodeId]]:
    learners_next: set[NodeId] = set()
    for c in changes:
        node = c.node_id
        if not node:
            raise ConfChangeError("empty node id in configuration change")
        if c.type is ConfChangeType.ADD_VOTER:
            learners.discard(node)
            learners_next.discard(node)
            incoming.add(node)
        elif c.type is ConfChangeType.ADD_LEARNER:
            incoming.discard(node)
            if node in outgoing:
                # Still a voter of the outgoing half until the joint config is left.
                learners.discard(node)
                learners_next.add(node)
            else:
                learners.add(node)
        else:
            incoming.discard(node)
            learners.discard(node)
            learners_next.discard(node)
    return incoming, learners, learners_next
