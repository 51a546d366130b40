"""Raft RPCs as immutable values.

Rule: one frozen, slotted dataclass per message kind, never dicts. Every message
carries ``term``, ``sender`` and ``to``; the core never sends anything itself --
messages are collected into :class:`raftkv.core.Ready` for the driver to deliver.

Requests and responses are separate classes (paper Figure 2 names them
AppendEntries and RequestVote; PreVote, dissertation §9.6, is a RequestVote with
``pre_vote=True``). Heartbeats are separate from AppendEntries, as in etcd, so a
heartbeat never occupies the replication window and can carry a ReadIndex context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from raftkv.core.frozen import fast_init
from raftkv.core.types import ConfState, Entry, Index, NodeId, Term


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries:
    """Leader -> follower: replicate ``entries`` after (prev_log_index, prev_log_term)."""

    term: Term
    sender: NodeId
    to: NodeId
    prev_log_index: Index
    prev_log_term: Term
    entries: tuple[Entry, ...]
    commit: Index


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse:
    """Follower -> leader.

    On success, ``index`` is the last index known to match the leader (the last
    entry of the request). On rejection, ``index`` is the request's
    ``prev_log_index`` and (``hint_index``, ``hint_term``) is the follower's
    fast-backtracking hint: the largest index at or below the request's
    ``prev_log_index`` whose term is at most ``prev_log_term``, and its term.
    """

    term: Term
    sender: NodeId
    to: NodeId
    index: Index
    reject: bool = False
    hint_index: Index = 0
    hint_term: Term = 0


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Leader -> follower: assert leadership and propagate the commit index.

    ``commit`` is never above what the follower is known to hold, so a follower
    can always apply it directly.
    """

    term: Term
    sender: NodeId
    to: NodeId
    commit: Index
    context: bytes = b""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse:
    """Follower -> leader: the follower is alive and accepts this leader."""

    term: Term
    sender: NodeId
    to: NodeId
    context: bytes = b""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    """Candidate -> voter (paper §5.2); a PreVote when ``pre_vote`` is true.

    For a PreVote ``term`` is the term the sender *would* campaign in; the
    sender has not incremented its own term.
    """

    term: Term
    sender: NodeId
    to: NodeId
    last_log_index: Index
    last_log_term: Term
    pre_vote: bool = False
    transfer: bool = False
    """Sent because the leader handed over leadership (TimeoutNow, §3.10); voters
    grant it even while they believe in a current leader."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    """Voter -> candidate."""

    term: Term
    sender: NodeId
    to: NodeId
    granted: bool
    pre_vote: bool = False


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """Leader -> follower: one chunk of a snapshot (paper §7, Figure 13).

    Chunks are sent in order starting at ``offset`` 0; ``done`` marks the last.
    ``total`` is the full size of the snapshot data, so a follower can resume.
    ``checksum`` is the CRC-32 of the whole data
    (:func:`raftkv.core.types.snapshot_checksum`), the same in every chunk: the
    follower checks the assembled data against it before restoring, and
    continues a transfer only with chunks of the same sender, term, snapshot
    and checksum.
    """

    term: Term
    sender: NodeId
    to: NodeId
    snapshot_index: Index
    snapshot_term: Term
    conf_state: ConfState
    offset: int
    data: bytes
    done: bool
    total: int = 0
    checksum: int


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshotResponse:
    """Follower -> leader: the follower holds ``offset`` bytes of the snapshot.

    With ``done`` the snapshot is installed and durable, so the follower's log
    matches the leader's up to ``snapshot_index``. With ``reject`` the follower
    cannot continue from the chunk it got and the leader restarts from
    ``offset``.
    """

    term: Term
    sender: NodeId
    to: NodeId
    snapshot_index: Index
    offset: int
    done: bool = False
    reject: bool = False


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leader -> transfer target: start an election now (dissertation §3.10)."""

    term: Term
    sender: NodeId
    to: NodeId


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndex:
    """Follower -> leader: ask for a read index for ``context`` (dissertation §6.4)."""

    term: Term
    sender: NodeId
    to: NodeId
    context: bytes


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse:
    """Leader -> follower: reads for ``context`` are safe once ``index`` is applied."""

    term: Term
    sender: NodeId
    to: NodeId
    index: Index
    context: bytes


Message: TypeAlias = (
    AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | RequestVote
    | RequestVoteResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
    | ReadIndex
    | ReadIndexResponse
)
"""Any message the core consumes or produces."""


def describe_message(msg: Message) -> str:
    """One stable line of text for ``msg``, used by golden tests and traces."""
    head = f"{msg.sender}->{msg.to} {type(msg).__name__} term={msg.term}"
    if isinstance(msg, AppendEntries):
        ents = " ".join(f"{e.term}/{e.index}" for e in msg.entries)
        return (
            f"{head} prev={msg.prev_log_term}/{msg.prev_log_index} "
            f"commit={msg.commit} entries=[{ents}]"
        )
    if isinstance(msg, AppendEntriesResponse):
        if msg.reject:
            return f"{head} reject index={msg.index} hint={msg.hint_term}/{msg.hint_index}"
        return f"{head} index={msg.index}"
    if isinstance(msg, Heartbeat):
        return f"{head} commit={msg.commit}"
    if isinstance(msg, HeartbeatResponse):
        return head
    if isinstance(msg, RequestVote):
        kind = " pre" if msg.pre_vote else ""
        kind += " transfer" if msg.transfer else ""
        return f"{head}{kind} last={msg.last_log_term}/{msg.last_log_index}"
    if isinstance(msg, RequestVoteResponse):
        kind = " pre" if msg.pre_vote else ""
        return f"{head}{kind} {'granted' if msg.granted else 'rejected'}"
    if isinstance(msg, InstallSnapshot):
        return (
            f"{head} snapshot={msg.snapshot_term}/{msg.snapshot_index} "
            f"offset={msg.offset} len={len(msg.data)} crc={msg.checksum:08x}"
            f"{' done' if msg.done else ''}"
        )
    if isinstance(msg, InstallSnapshotResponse):
        flags = (" done" if msg.done else "") + (" reject" if msg.reject else "")
        return f"{head} snapshot={msg.snapshot_index} offset={msg.offset}{flags}"
    if isinstance(msg, TimeoutNow):
        return head
    if isinstance(msg, ReadIndex):
        return f"{head} context={msg.context.hex()}"
    return f"{head} index={msg.index} context={msg.context.hex()}"
