"""What a replica knows about the cluster's members beyond the core's ConfState.

Rule 1: the decisions here are replicated state. Whether a committed
configuration change is applied (:meth:`MembershipBook.refuse`) depends only on
the change, its log index and what earlier entries recorded, so every replica
decides alike, and the same on every replay of the log.

Rule 2: the book holds two things:

- the **address book**, ``node id -> Member`` (peer and API addresses), carried
  in the context of the configuration change that added the member; founding
  members' addresses come from ``--initial-cluster``;
- the **removed ids**, ``node id -> index`` of the entry whose application took
  the id out of the configuration (etcd's removed-member store). A removed id
  is never added again: a node re-added under an id it had before may have
  lost the vote it cast in the current term with its disk.

It also records the **founders**: the members the founding entry (log entry
1) made, the same on every replica; the etcd API derives the cluster id from
them, as etcd does from its initial members. None where the log did not start
with a founding entry (a data dir from before log-based bootstrap).

Rule 3: ids and addresses follow :mod:`raftkv.limits` (one table for every
layer), and a membership has at most :data:`~raftkv.limits.MAX_MEMBERS` ids.

This module does no I/O: the server saves :meth:`MembershipBook.to_json` in
``members.json``; snapshots carry :meth:`MembershipBook.to_wire`.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raftkv.core.types import ConfChange, ConfChangeType, ConfState, Index, NodeId
from raftkv.limits import (
    MAX_MEMBERS,
    NODE_ID_RULE,
    HostPort,
    format_host_port,
    is_node_id,
    parse_host_port,
)

__all__ = [
    "InvalidMember",
    "Member",
    "MembershipBook",
    "Refusal",
    "RefusalKind",
    "member_context",
]


def member_context(node_id: NodeId, member: Member) -> bytes:
    """The context of a configuration change that gives ``node_id`` the
    addresses ``member``: what :meth:`MembershipBook.applied` reads back."""
    return json.dumps({node_id: member.to_json()}, sort_keys=True).encode()


class InvalidMember(ValueError):
    """A member's addresses (or id) do not follow :mod:`raftkv.limits`."""


@dataclass(frozen=True, slots=True)
class Member:
    """Where one member listens: its peer (Raft) address and its HTTP API address."""

    raft: HostPort
    api: HostPort

    def api_url(self, *, scheme: str = "http") -> str:
        host = self.api[0]
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.api[1]}"

    def to_json(self) -> dict[str, str]:
        return {"raft_addr": format_host_port(self.raft), "api_addr": format_host_port(self.api)}

    @staticmethod
    def from_json(obj: object) -> Member:
        """Parse ``{"raft_addr": "h:p", "api_addr": "h:p"}``.

        Raises:
            InvalidMember: a field is missing or malformed.
        """
        if not isinstance(obj, dict):
            raise InvalidMember("member must be an object with raft_addr and api_addr")
        raft, api = obj.get("raft_addr"), obj.get("api_addr")
        if not isinstance(raft, str) or not isinstance(api, str):
            raise InvalidMember("member needs string fields raft_addr and api_addr")
        try:
            return Member(
                parse_host_port(raft, what="raft_addr"), parse_host_port(api, what="api_addr")
            )
        except ValueError as exc:
            raise InvalidMember(str(exc)) from None


class RefusalKind(enum.Enum):
    """Why a committed configuration change was not applied."""

    REMOVED_ID = "removed id"
    """It adds an id removed earlier (ids are never reused)."""
    BAD_ID = "bad id"
    """An id breaks :data:`~raftkv.limits.NODE_ID_RULE`."""
    TOO_MANY = "too many members"
    """The membership would exceed :data:`~raftkv.limits.MAX_MEMBERS`."""
    CORE = "refused by the core"
    """The core refused it (it does not apply to the membership it has)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A configuration change that was committed but not applied, and why.

    Every replica refuses it alike; the entry still counts as applied.
    """

    kind: RefusalKind
    message: str
    node_id: NodeId | None = None


class MembershipBook:
    """The address book and the removed ids of one replica (module rules).

    Args:
        members: the addresses known before any entry is applied (a founding
            member's ``--initial-cluster``; empty in the simulator).
    """

    __slots__ = ("members", "removed", "founders")

    def __init__(self, members: Mapping[NodeId, Member] | None = None) -> None:
        self.members: dict[NodeId, Member] = dict(members or {})
        # Invariant: only grows; an id's index is the same on every replica.
        self.removed: dict[NodeId, Index] = {}
        self.founders: tuple[NodeId, ...] | None = None

    # ------------------------------------------------------------------ decisions

    def refuse(self, cc: ConfChange, index: Index, current: ConfState) -> Refusal | None:
        """Why the change committed at ``index`` may not be applied, or None.

        Checked when the change is applied, on every replica alike; a node
        checks the same rules before proposing (the removed ids and
        :func:`refuse_members`), so a refusal here takes a proposer that did
        not (an older version) or a membership that changed since.
        """
        reused = self.reused_ids(cc, index)
        if reused:
            return Refusal(
                kind=RefusalKind.REMOVED_ID,
                message=f"it adds removed id(s) {','.join(reused)}",
                node_id=reused[0],
            )
        return refuse_members(cc, current.members())

    def reused_ids(self, cc: ConfChange, index: Index) -> list[NodeId]:
        """The ids ``cc`` (the entry at ``index``) would add although they were removed.

        Only removals at lower indices count, which makes the answer the same
        on every replica and on every replay of the log, even when the book
        knows of later removals (a node that restarts re-applies the entries
        after its snapshot with ``members.json`` loaded).
        """
        return [
            c.node_id
            for c in cc.changes
            if c.type is not ConfChangeType.REMOVE_NODE
            and self.removed.get(c.node_id, index) < index
        ]

    # ------------------------------------------------------------------ recording

    def applied(self, cc: ConfChange, index: Index, before: ConfState, after: ConfState) -> None:
        """Record a change the core applied at ``index`` (``before`` -> ``after``)."""
        # Ids that left the configuration (a removal, or leaving a joint
        # configuration that removed them).
        for node_id in sorted(set(before.members()) - set(after.members())):
            self.removed.setdefault(node_id, index)
        if index == 1:  # the founding entry (the core writes it; in force already)
            self.founders = tuple(
                sorted(c.node_id for c in cc.changes if c.type is ConfChangeType.ADD_VOTER)
            )
        addrs: dict[str, Any] = {}
        if cc.context:
            try:
                obj = json.loads(cc.context)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                addrs = obj
        for change in cc.changes:
            if change.type is ConfChangeType.REMOVE_NODE:
                self.members.pop(change.node_id, None)
                continue
            info = addrs.get(change.node_id, addrs)
            # No (valid) addresses in the context: keep what we know.
            with contextlib.suppress(InvalidMember):
                self.members[change.node_id] = Member.from_json(info)

    def merge_removed(self, removed: Mapping[NodeId, Index]) -> None:
        """Add removed ids learned from a snapshot or ``members.json`` (lowest index wins)."""
        for node_id, index in removed.items():
            if index < self.removed.get(node_id, index + 1):
                self.removed[node_id] = index

    # ------------------------------------------------------------------ encoding

    def to_wire(self) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
        """``(members, removed)`` as plain data, sorted (snapshots, ``members.json``)."""
        return (
            {n: m.to_json() for n, m in sorted(self.members.items())},
            dict(sorted(self.removed.items())),
        )

    def to_json(self) -> str:
        """The text of ``members.json``."""
        members, removed = self.to_wire()
        return json.dumps({"members": members, "removed": removed})

    @staticmethod
    def parse_members(obj: object) -> dict[NodeId, Member]:
        """An address book as stored by :meth:`to_wire`.

        Raises:
            InvalidMember: malformed, or an id breaks the rule.
        """
        if not isinstance(obj, dict):
            raise InvalidMember("members must be an object of id -> addresses")
        members: dict[NodeId, Member] = {}
        for node_id, info in obj.items():
            if not is_node_id(node_id):
                raise InvalidMember(f"bad member id {str(node_id)[:80]!r}: must be {NODE_ID_RULE}")
            members[NodeId(node_id)] = Member.from_json(info)
        return members

    @staticmethod
    def parse_members_ids(obj: object) -> list[NodeId]:
        """A list of member ids (the founders) as a snapshot stores it.

        Raises:
            InvalidMember: malformed, or an id breaks the rule.
        """
        if not isinstance(obj, list) or not all(is_node_id(n) for n in obj):
            raise InvalidMember(f"malformed member ids: {str(obj)[:200]}")
        return [NodeId(n) for n in obj]

    @staticmethod
    def parse_removed(obj: object) -> dict[NodeId, Index]:
        """Removed ids as stored by :meth:`to_wire`.

        Raises:
            InvalidMember: malformed.
        """
        if not isinstance(obj, dict) or not all(
            isinstance(n, str) and n and type(i) is int and i > 0 for n, i in obj.items()
        ):
            raise InvalidMember(f"malformed removed ids: {str(obj)[:200]}")
        return {NodeId(n): i for n, i in obj.items()}


def refuse_members(cc: ConfChange, members: Sequence[NodeId]) -> Refusal | None:
    """Why ``cc`` may not add its ids to ``members`` (:mod:`raftkv.limits`), or None."""
    added = {c.node_id for c in cc.changes if c.type is not ConfChangeType.REMOVE_NODE}
    for node_id in sorted(added):
        if not is_node_id(node_id):
            return Refusal(
                kind=RefusalKind.BAD_ID,
                message=f"bad member id {str(node_id)[:80]!r}: must be {NODE_ID_RULE}",
                node_id=node_id,
            )
    if len(added | set(members)) > MAX_MEMBERS:
        return Refusal(
            kind=RefusalKind.TOO_MANY,
            message=f"a cluster has at most {MAX_MEMBERS} members (voters and learners)",
        )
    return None
