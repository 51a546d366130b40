"""Plain value types shared by every part of the core.

Rule: this module holds data only -- no behaviour beyond trivial helpers, and
nothing that knows about roles or messages.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass
from typing import NewType, TypeAlias

from raftkv.core.frozen import fast_init

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
    """A membership change: ``data`` is an encoded :class:`ConfChange` (see core/confchange.py)."""


@fast_init
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


@fast_init
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


@fast_init
@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting; never persisted."""

    leader: NodeId | None
    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfState:
    """Cluster membership: who votes, who only learns (dissertation §4, etcd's ConfState).

    While a joint configuration is in force (dissertation §4.3), decisions need a
    majority of ``voters`` *and* of ``voters_outgoing``. ``learners_next`` are
    voters of the outgoing half that become learners when the joint
    configuration is left. ``auto_leave`` asks the leader to propose leaving the
    joint configuration as soon as entering it has been applied.
    """

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    voters_outgoing: tuple[NodeId, ...] = ()
    learners_next: tuple[NodeId, ...] = ()
    auto_leave: bool = False

    def is_joint(self) -> bool:
        return bool(self.voters_outgoing)

    def members(self) -> tuple[NodeId, ...]:
        """Every node that receives replication, sorted."""
        return tuple(
            sorted(
                set(self.voters)
                | set(self.learners)
                | set(self.voters_outgoing)
                | set(self.learners_next)
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMetadata:
    """Where a snapshot sits in the log and the membership at that point."""

    index: Index = 0
    term: Term = 0
    conf_state: ConfState = ConfState()


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A state machine image covering the log up to ``metadata.index`` (§7)."""

    metadata: SnapshotMetadata = SnapshotMetadata()
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


def snapshot_checksum(data: bytes) -> int:
    """The CRC-32 of a snapshot's data (an unsigned 32-bit integer).

    InstallSnapshot carries it in every chunk, so that a follower can check
    the data it assembled before it restores it.
    """
    return zlib.crc32(data)


@fast_init
@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine applied ``index``.

    ``context`` is the caller's identifier from ``read_index(context)`` (§6.4).
    """

    index: Index
    context: bytes


class ConfChangeType(enum.Enum):
    ADD_VOTER = "add-voter"
    ADD_LEARNER = "add-learner"
    REMOVE_NODE = "remove-node"


@dataclass(frozen=True, slots=True)
class ConfChangeSingle:
    type: ConfChangeType
    node_id: NodeId


class ConfChangeTransition(enum.Enum):
    """How a multi-change configuration change is carried out."""

    AUTO = "auto"
    """Joint consensus when needed, left automatically (a single voter change is simple)."""
    JOINT_IMPLICIT = "joint-implicit"
    """Always joint, left automatically once entered."""
    JOINT_EXPLICIT = "joint-explicit"
    """Always joint; the caller proposes an empty change to leave it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfChange:
    """A membership change proposal (dissertation §4; etcd's ConfChangeV2).

    An empty ``changes`` tuple means "leave the current joint configuration".
    """

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: ConfChangeTransition = ConfChangeTransition.AUTO
    context: bytes = b""

    def leaves_joint(self) -> bool:
        return not self.changes

    def encode(self) -> bytes:
        """Deterministic bytes for an entry's ``data``."""
        parts = [self.transition.value, self.context.hex()]
        parts.extend(f"{c.type.value}:{c.node_id}" for c in self.changes)
        return "\n".join(parts).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Parse :meth:`encode` output. Raises ``ValueError`` on malformed data."""
        try:
            lines = data.decode().split("\n")
            transition = ConfChangeTransition(lines[0])
            context = bytes.fromhex(lines[1])
            changes = []
            for line in lines[2:]:
                kind, _, node = line.partition(":")
                if not node:
                    raise ValueError(f"malformed change {line!r}")
                changes.append(ConfChangeSingle(ConfChangeType(kind), NodeId(node)))
        except (UnicodeDecodeError, IndexError, ValueError) as exc:
            raise ValueError(f"malformed conf change: {exc}") from exc
        return cls(changes=tuple(changes), transition=transition, context=context)
