"""Quorum arithmetic: commit indexes and vote results over sets of voters.

Rule: pure functions of id sets and per-id values; nothing here knows about
terms, logs or messages. A :class:`JointConfig` (dissertation §4.3, joint
consensus) needs a majority of *both* halves; with an empty outgoing half it is
an ordinary majority.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from raftkv.core.types import Index, NodeId


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class MajorityConfig:
    """A set of voters decided by simple majority."""

    voters: frozenset[NodeId]

    def committed_index(self, acked: Mapping[NodeId, Index]) -> Index:
        """The largest index acknowledged by a majority (paper §5.3).

        Voters missing from ``acked`` count as having acknowledged index 0. An
        empty configuration commits everything (it imposes no constraint), which
        lets :class:`JointConfig` ignore an empty half.
        """
        n = len(self.voters)
        if n == 0:
            return _UNBOUNDED
        # Sort acknowledged indexes descending; the majority-th largest is the
        # highest index that a majority has reached.
        get = acked.get
        values = sorted([get(v, 0) for v in self.voters], reverse=True)
        return values[n // 2]

    def vote_result(self, votes: Mapping[NodeId, bool]) -> VoteResult:
        """WON once a majority granted, LOST once a majority cannot be reached."""
        n = len(self.voters)
        if n == 0:
            return VoteResult.WON
        granted = rejected = 0
        for v in self.voters:
            vote = votes.get(v)
            if vote is True:
                granted += 1
            elif vote is False:
                rejected += 1
        quorum = n // 2 + 1
        if granted >= quorum:
            return VoteResult.WON
        if n - rejected < quorum:
            return VoteResult.LOST
        return VoteResult.PENDING

    def has_quorum(self, members: frozenset[NodeId] | set[NodeId]) -> bool:
        """Whether ``members`` contains a majority of this configuration."""
        if not self.voters:
            return True
        return len(self.voters & members) >= len(self.voters) // 2 + 1


_UNBOUNDED: Index = 1 << 62


@dataclass(frozen=True, slots=True)
class JointConfig:
    """Two majority configurations that must both agree (``outgoing`` may be empty)."""

    incoming: MajorityConfig
    outgoing: MajorityConfig = MajorityConfig(frozenset())

    @classmethod
    def of(cls, voters: tuple[NodeId, ...] | frozenset[NodeId]) -> JointConfig:
        return cls(MajorityConfig(frozenset(voters)))

    def ids(self) -> frozenset[NodeId]:
        return self.incoming.voters | self.outgoing.voters

    def committed_index(self, acked: Mapping[NodeId, Index]) -> Index:
        idx = min(self.incoming.committed_index(acked), self.outgoing.committed_index(acked))
        return 0 if idx == _UNBOUNDED else idx

    def vote_result(self, votes: Mapping[NodeId, bool]) -> VoteResult:
        r1 = self.incoming.vote_result(votes)
        r2 = self.outgoing.vote_result(votes)
        if r1 == r2:
            return r1
        if VoteResult.LOST in (r1, r2):
            return VoteResult.LOST
        return VoteResult.PENDING

    def has_quorum(self, members: frozenset[NodeId] | set[NodeId]) -> bool:
        return self.incoming.has_quorum(members) and self.outgoing.has_quorum(members)
