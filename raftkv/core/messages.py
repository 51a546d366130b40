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

from raftkv.core.types import Entry, Index, NodeId, Term


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


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse:
    """Follower -> leader: the follower is alive and accepts this leader."""

    term: Term
    sender: NodeId
    to: NodeId
    context: bytes = b""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    """Voter -> candidate."""

    term: Term
    sender: NodeId
    to: NodeId
    granted: bool
    pre_vote: bool = False


Message: TypeAlias = (
    AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | RequestVote
    | RequestVoteResponse
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
        return f"{head}{kind} last={msg.last_log_term}/{msg.last_log_index}"
    kind = " pre" if msg.pre_vote else ""
    return f"{head}{kind} {'granted' if msg.granted else 'rejected'}"
