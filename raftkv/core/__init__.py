"""The sans-I/O Raft core.

Rule: nothing in this package performs I/O, reads a clock, uses global
randomness or depends on dict iteration order for its decisions. The driver
feeds it ticks and messages and carries out the :class:`Ready` it returns.
"""

from __future__ import annotations

from raftkv.core.confchange import ConfChangeError, Membership
from raftkv.core.config import Config
from raftkv.core.errors import (
    LogCompacted,
    LogUnavailable,
    NotLeader,
    ProposalDropped,
    RaftError,
    RaftKVError,
)
from raftkv.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
    describe_message,
)
from raftkv.core.progress import Progress, ProgressState
from raftkv.core.quorum import JointConfig, MajorityConfig, VoteResult
from raftkv.core.raft import Raft, RandomSource
from raftkv.core.rawnode import ProgressStatus, RawNode, Status
from raftkv.core.ready import Ready, describe_ready
from raftkv.core.storage import MemoryStorage, Storage
from raftkv.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Index,
    NodeId,
    ReadState,
    Role,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    Term,
    snapshot_checksum,
)

__all__ = [
    "ConfChange",
    "ConfChangeError",
    "ConfChangeSingle",
    "ConfChangeTransition",
    "ConfChangeType",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "Membership",
    "ProgressStatus",
    "ReadIndex",
    "ReadIndexResponse",
    "ReadState",
    "Snapshot",
    "SnapshotMetadata",
    "Status",
    "TimeoutNow",
    "AppendEntries",
    "AppendEntriesResponse",
    "Config",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "Index",
    "JointConfig",
    "LogCompacted",
    "LogUnavailable",
    "MajorityConfig",
    "MemoryStorage",
    "Message",
    "NodeId",
    "NotLeader",
    "Progress",
    "ProgressState",
    "ProposalDropped",
    "Raft",
    "RaftError",
    "RaftKVError",
    "RandomSource",
    "RawNode",
    "Ready",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "SoftState",
    "Storage",
    "Term",
    "VoteResult",
    "describe_message",
    "describe_ready",
    "snapshot_checksum",
]
