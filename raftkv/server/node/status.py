"""Views of a running node: what ``GET /v1/status`` shows.

Rule: a view is built in one go on the event loop's thread, from the core and
the replica as they are between two loop steps, so its fields agree with each
other; it is a frozen value that nothing writes back through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raftkv.core.rawnode import RawNode
from raftkv.core.types import Index, NodeId, Role, Term
from raftkv.replica.membership import Member

__all__ = ["NodeStatus"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """A consistent view of the node for ``GET /v1/status``."""

    node_id: NodeId
    role: str
    term: Term
    leader: NodeId | None
    commit_index: Index
    applied_index: Index
    last_index: Index
    members: dict[str, dict[str, str]]
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    progress: dict[str, dict[str, Any]] | None
    store: dict[str, Any] | None = None
    """The KV store's revisions, size, quota and alarm (:mod:`~raftkv.server.node.quota`);
    None for another state machine."""

    @staticmethod
    def of(
        node_id: NodeId,
        raw: RawNode,
        *,
        applied_index: Index,
        members: Mapping[NodeId, Member],
        store: dict[str, Any] | None = None,
    ) -> NodeStatus:
        """The view of ``raw`` and the replica's ``applied_index``, ``members``
        and ``store`` fields now."""
        conf = raw.status().conf_state
        voters = tuple(sorted({*conf.voters, *conf.voters_outgoing}))
        return NodeStatus(
            node_id=node_id,
            role=raw.role.value,
            term=raw.term,
            leader=raw.leader,
            commit_index=raw.commit_index,
            applied_index=applied_index,
            last_index=raw.last_index,
            members={n: m.to_json() for n, m in sorted(members.items())},
            voters=voters,
            learners=conf.learners,
            progress=_progress(raw),
            store=store,
        )

    def to_json(self) -> dict[str, Any]:
        body = {
            "id": self.node_id,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "last_index": self.last_index,
            "members": self.members,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "progress": self.progress,
        }
        if self.store is not None:
            body.update(self.store)
        return body


def _progress(raw: RawNode) -> dict[str, dict[str, Any]] | None:
    """The leader's view of each follower's log; None on a follower."""
    if raw.role is not Role.LEADER:
        return None
    return {
        n: {"match": pr.match, "next": pr.next, "state": pr.state}
        for n, pr in raw.status().progress.items()
    }
