"""Prometheus metrics of one node, in a per-node registry.

Rule: the runtime updates these from its event loop; nothing reads them back
to make decisions. A per-node :class:`CollectorRegistry` keeps several nodes in
one process (tests) from colliding.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["NodeMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ROLES = ("follower", "pre-candidate", "candidate", "leader")


class NodeMetrics:
    """The collectors of one node."""

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"node": node_id}
        r = self.registry
        self.term = Gauge("raftkv_term", "Current Raft term.", ["node"], registry=r).labels(
            **labels
        )
        self._role = Gauge(
            "raftkv_role", "1 for the role this node plays.", ["node", "role"], registry=r
        )
        self.commit_index = Gauge(
            "raftkv_commit_index", "Highest committed log index.", ["node"], registry=r
        ).labels(**labels)
        self.applied_index = Gauge(
            "raftkv_applied_index", "Highest applied log index.", ["node"], registry=r
        ).labels(**labels)
        self.last_index = Gauge(
            "raftkv_last_index", "Last log index.", ["node"], registry=r
        ).labels(**labels)
        self.is_leader = Gauge(
            "raftkv_is_leader", "1 if this node is the leader.", ["node"], registry=r
        ).labels(**labels)
        self.proposals = Counter(
            "raftkv_proposals", "Proposals made on this node.", ["node"], registry=r
        ).labels(**labels)
        self.proposals_failed = Counter(
            "raftkv_proposals_failed",
            "Proposals that failed (lost, dropped or timed out).",
            ["node", "reason"],
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "raftkv_fsync_seconds",
            "Latency of one WAL sync (one per Ready that must sync).",
            ["node"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        ).labels(**labels)
        self.ready_entries = Histogram(
            "raftkv_ready_entries",
            "Entries persisted per Ready (group commit batch size).",
            ["node"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=r,
        ).labels(**labels)
        self._sent = Counter(
            "raftkv_messages_sent", "Raft messages sent, by type.", ["node", "type"], registry=r
        )
        self._received = Counter(
            "raftkv_messages_received",
            "Raft messages received, by type.",
            ["node", "type"],
            registry=r,
        )
        self.elections = Counter(
            "raftkv_elections",
            "Elections this node started (became candidate).",
            ["node"],
            registry=r,
        ).labels(**labels)
        self.leader_changes = Counter(
            "raftkv_leader_changes", "Times the known leader changed.", ["node"], registry=r
        ).labels(**labels)
        self.snapshots = Counter(
            "raftkv_snapshots", "Snapshots taken of the state machine.", ["node"], registry=r
        ).labels(**labels)
        self.snapshots_installed = Counter(
            "raftkv_snapshots_installed",
            "Snapshots received from a leader (InstallSnapshot) and installed.",
            ["node"],
            registry=r,
        ).labels(**labels)
        self._reads = Counter(
            "raftkv_reads",
            "Reads served, by how: read_index_leader / read_index_follower "
            "(linearizable, ReadIndex), forwarded (to the leader's API), stale.",
            ["node", "path"],
            registry=r,
        )
        self.http_requests = Counter(
            "raftkv_http_requests",
            "HTTP requests by route and status.",
            ["node", "route", "status"],
            registry=r,
        )
        self._node = node_id
        self.set_role("follower")

    def set_role(self, role: str) -> None:
        for name in _ROLES:
            self._role.labels(node=self._node, role=name).set(1 if name == role else 0)
        self.is_leader.set(1 if role == "leader" else 0)

    def sent(self, kind: str, n: int = 1) -> None:
        self._sent.labels(node=self._node, type=kind).inc(n)

    def received(self, kind: str, n: int = 1) -> None:
        self._received.labels(node=self._node, type=kind).inc(n)

    def failed(self, reason: str) -> None:
        self.proposals_failed.labels(node=self._node, reason=reason).inc()

    def read(self, path: str) -> None:
        self._reads.labels(node=self._node, path=path).inc()

    def http(self, route: str, status: int) -> None:
        self.http_requests.labels(node=self._node, route=route, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
