"""Prometheus metrics of one node, in a per-node registry.

Rule: the runtime updates these from its event loop; nothing reads them back
to make decisions. A per-node :class:`CollectorRegistry` keeps several nodes in
one process (tests) from colliding.

The metrics updated per message, per request or per Ready are
:class:`LoopCounter` and :class:`LoopHistogram`: plain numbers that only the
event loop's thread touches, turned into Prometheus families when scraped.
prometheus_client's own take a mutex per update, which cost a lone client's
write about 40 µs of the leader's CPU across the twenty-odd updates it makes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["NodeMetrics", "LoopCounter", "LoopHistogram", "CONTENT_TYPE"]

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
        self.proposals = LoopCounter(
            "raftkv_proposals", "Proposals made on this node.", node_id, registry=r
        )
        self.forwarded = LoopCounter(
            "raftkv_forwarded_writes",
            "Writes this node forwarded to the leader over the peer link.",
            node_id,
            registry=r,
        )
        self.proposals_failed = Counter(
            "raftkv_proposals_failed",
            "Proposals that failed (lost, dropped or timed out).",
            ["node", "reason"],
            registry=r,
        )
        self.fsync_seconds = LoopHistogram(
            "raftkv_fsync_seconds",
            "Latency of one WAL sync (one per Ready that must sync).",
            node_id,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.ready_entries = LoopHistogram(
            "raftkv_ready_entries",
            "Entries persisted per Ready (group commit batch size).",
            node_id,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=r,
        )
        self._sent = _MessageCounter(
            "raftkv_messages_sent", "Raft messages sent, by type.", node_id, registry=r
        )
        self._received = _MessageCounter(
            "raftkv_messages_received", "Raft messages received, by type.", node_id, registry=r
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
        self._reads = LoopCounter(
            "raftkv_reads",
            "Reads served, by how: read_index_leader / read_index_follower "
            "(linearizable, ReadIndex), stale.",
            node_id,
            ("path",),
            registry=r,
        )
        self._http_requests = LoopCounter(
            "raftkv_http_requests",
            "HTTP requests by route and status.",
            node_id,
            ("route", "status"),
            registry=r,
        )
        self.http_refused = Counter(
            "raftkv_http_refused",
            "HTTP requests refused before any work: reason is unauthenticated (401), "
            "forbidden (403), too_large (413) or overloaded (503).",
            ["node", "reason"],
            registry=r,
        )
        self._node = node_id
        self._http: _HttpCollector | None = None
        self.set_role("follower")

    def watch_transport(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Export the peer transport's counters (read at scrape time) as
        ``raftkv_transport_events_total{event=...}``: auth_failures, decode_errors,
        dropped_bad_sender, ... (see :class:`~raftkv.transport.base.TransportStats`).
        """
        self.registry.register(_TransportCollector(self._node, stats))

    def watch_http(self, events: Mapping[str, int], open_connections: Callable[[], int]) -> None:
        """Export the HTTP server's connection counters (read at scrape time):
        ``raftkv_http_connections`` (open now) and
        ``raftkv_http_connection_events_total{event=...}`` -- accepted, handed_off,
        refused (beyond --max-connections, answered 503), refused_unanswered,
        tls_failed, timeout_head/body/idle/write (closed at a deadline). A later
        call replaces the source (an API server restarted on the same node)."""
        if self._http is None:
            self._http = _HttpCollector(self._node)
            self.registry.register(self._http)
        self._http.events = events
        self._http.open_connections = open_connections

    def watch_store(
        self,
        *,
        revision: Callable[[], int],
        compact_revision: Callable[[], int],
        size_bytes: Callable[[], int],
        quota_bytes: Callable[[], int],
        nospace: Callable[[], int],
    ) -> None:
        """Export the KV store's gauges, read at scrape time: ``raftkv_store_revision``,
        ``_compact_revision``, ``_size_bytes`` (the logical size the quota
        measures), ``_quota_bytes`` and ``_nospace_alarm`` (1 while raised)."""
        gauges = (
            ("revision", "The store's revision (etcd's header revision).", revision),
            (
                "compact_revision",
                "The revision the store is compacted to (0: never).",
                compact_revision,
            ),
            ("size_bytes", "The store's logical size, which --quota-bytes limits.", size_bytes),
            ("quota_bytes", "The space quota (--quota-bytes).", quota_bytes),
            ("nospace_alarm", "1 while the NOSPACE alarm is raised (writes refused).", nospace),
        )
        for name, doc, read in gauges:
            gauge = Gauge(f"raftkv_store_{name}", doc, ["node"], registry=self.registry)
            gauge.labels(node=self._node).set_function(read)

    def watch_watches_and_leases(
        self, *, watchers: Callable[[], int], leases: Callable[[], int]
    ) -> None:
        """Export, read at scrape time, ``raftkv_watchers`` (open watch streams
        on this node) and ``raftkv_leases`` (leases in this node's replica)."""
        for name, doc, read in (
            ("watchers", "Open watches (streams) on this node.", watchers),
            ("leases", "Leases in this node's replica.", leases),
        ):
            gauge = Gauge(f"raftkv_{name}", doc, ["node"], registry=self.registry)
            gauge.labels(node=self._node).set_function(read)

    def refused(self, reason: str) -> None:
        self.http_refused.labels(node=self._node, reason=reason).inc()

    def set_role(self, role: str) -> None:
        for name in _ROLES:
            self._role.labels(node=self._node, role=name).set(1 if name == role else 0)
        self.is_leader.set(1 if role == "leader" else 0)

    # The counters below run on the hot path (see the module docstring).

    def sent(self, msgs: Iterable[object]) -> None:
        """Count ``msgs`` as sent, by type."""
        self._sent.count(msgs)

    def received(self, msgs: Iterable[object]) -> None:
        """Count ``msgs`` as received, by type."""
        self._received.count(msgs)

    def failed(self, reason: str) -> None:
        self.proposals_failed.labels(node=self._node, reason=reason).inc()

    def read(self, path: str) -> None:
        self._reads.inc((path,))

    def http(self, route: str, status: int) -> None:
        self._http_requests.inc((route, status))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TransportCollector(Collector):
    """Reads the transport's monotonic counters when Prometheus scrapes."""

    def __init__(self, node_id: str, stats: Callable[[], Mapping[str, int]]) -> None:
        self._node = node_id
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "raftkv_transport_events",
            "Peer transport counters: auth_failures (refused handshakes, TLS failures), "
            "decode_errors (bad frames; each closes its connection), dropped_bad_sender, "
            "frames/messages in and out, drops, connects and accepts.",
            labels=["node", "event"],
        )
        for event, value in sorted(self._stats().items()):
            family.add_metric([self._node, event], value)
        yield family


class _HttpCollector(Collector):
    """Reads the HTTP server's connection counters when Prometheus scrapes."""

    def __init__(self, node_id: str) -> None:
        self._node = node_id
        self.events: Mapping[str, int] = {}
        self.open_connections: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "raftkv_http_connections",
            "HTTP connections open (counted against --max-connections).",
            labels=["node"],
        )
        gauge.add_metric([self._node], self.open_connections())
        yield gauge
        family = CounterMetricFamily(
            "raftkv_http_connection_events",
            "HTTP connections: accepted, handed_off (to aiohttp), refused (beyond "
            "--max-connections: answered 503), refused_unanswered (closed at once), "
            "tls_failed, timeout_head/body/idle/write (closed at a deadline).",
            labels=["node", "event"],
        )
        for event, value in sorted(self.events.items()):
            family.add_metric([self._node, event], value)
        yield family


class LoopCounter(Collector):
    """A counter family that only the node's event loop updates: a dict of
    numbers by label values, no lock; a Prometheus family when scraped.

    ``inc(key)`` takes the values of ``labels`` (after ``node``) as a tuple,
    ``()`` when there are none; values are shown with ``str()``.
    """

    def __init__(
        self,
        name: str,
        doc: str,
        node_id: str,
        labels: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._doc = doc
        self._node = node_id
        self._labels = ["node", *labels]
        self.values: dict[tuple[object, ...], float] = {}
        registry.register(self)

    def inc(self, key: tuple[object, ...] = (), n: float = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) + n

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labels)
        for key, value in sorted(self.values.items(), key=lambda kv: tuple(map(str, kv[0]))):
            family.add_metric([self._node, *map(str, key)], value)
        return [family]


class _MessageCounter(LoopCounter):
    """Messages by type: counted by class, named when scraped."""

    def __init__(self, name: str, doc: str, node_id: str, *, registry: CollectorRegistry) -> None:
        self._by_class: dict[type, int] = {}  # first: registering collects
        super().__init__(name, doc, node_id, ("type",), registry=registry)

    def count(self, msgs: Iterable[object]) -> None:
        by_class = self._by_class
        for m in msgs:
            cls = type(m)
            by_class[cls] = by_class.get(cls, 0) + 1

    def collect(self) -> list[Metric]:
        self.values = {(cls.__name__,): n for cls, n in self._by_class.items()}
        return super().collect()


class LoopHistogram(Collector):
    """A histogram that only the node's event loop updates (see :class:`LoopCounter`)."""

    def __init__(
        self,
        name: str,
        doc: str,
        node_id: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._doc = doc
        self._node = node_id
        self._bounds = tuple(buckets)
        # counts[i]: observations in (bounds[i-1], bounds[i]]; the last, above every bound.
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=["node"])
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        family.add_metric([self._node], buckets, self._sum)
        return [family]
