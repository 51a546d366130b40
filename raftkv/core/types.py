"""Plain value types shared by every part of the core.

Rule: this module holds data only -- no behaviour beyond trivial helpers, and
nothing that knows about roles or messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType, TypeAlias

NodeId = NewType("NodeId", str)
Term: TypeAlias = int
Index: TypeAlias = int


class Role(enum.Enum):
    """The role a node plays in its current term (paper §5.1, dissertation §9.6)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryType(enum.Enum):
    """What an entry's ``data`` means to the layer that applies it."""

    NORMAL = 0
    """Opaque application command (an empty payload is a leader's no-op)."""
    CONF_CHANGE = 1
    """A membership change (reserved for the membership work)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry (paper Figure 2: "log[]")."""

    term: Term
    index: Index
    data: bytes = b""
    type: EntryType = EntryType.NORMAL

    def size(self) -> int:
        """Approximate encoded size in bytes, used for batching limits."""
        return len(self.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before dependent messages leave the node.

    Paper Figure 2: ``currentTerm`` and ``votedFor``; ``commit`` is persisted too
    so a restarted node can re-apply committed entries without waiting for a leader.
    """

    term: Term = 0
    vote: NodeId | None = None
    commit: Index = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote is None and self.commit == 0


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting; never persisted."""

    leader: NodeId | None
    role: Role


@dataclass(frozen=True, slots=True)
class ConfState:
    """The cluster membership recorded with a snapshot or at bootstrap."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
