"""The node's lock-free counters and histograms render as Prometheus's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from raftkv.core.messages import AppendEntries, Heartbeat
from raftkv.server.metrics import LoopHistogram, NodeMetrics


def _lines(text: bytes, prefix: str) -> list[str]:
    return [line for line in text.decode().splitlines() if line.startswith(prefix)]


def test_counters_by_label_and_by_message_type() -> None:
    m = NodeMetrics("n1")
    m.http("/v1/kv", 200)
    m.http("/v1/kv", 200)
    m.http("/v1/kv", 404)
    m.read("stale")
    m.proposals.inc()
    hb = Heartbeat(term=1, sender="n1", to="n2", commit=0)  # type: ignore[arg-type]
    ae = AppendEntries(
        term=1, sender="n1", to="n2", prev_log_index=0, prev_log_term=0, entries=(), commit=0
    )  # type: ignore[arg-type]
    m.sent([hb, hb, ae])
    text = m.render()
    assert _lines(text, "raftkv_http_requests_total") == [
        'raftkv_http_requests_total{node="n1",route="/v1/kv",status="200"} 2.0',
        'raftkv_http_requests_total{node="n1",route="/v1/kv",status="404"} 1.0',
    ]
    assert _lines(text, "raftkv_reads_total") == ['raftkv_reads_total{node="n1",path="stale"} 1.0']
    assert _lines(text, "raftkv_proposals_total") == ['raftkv_proposals_total{node="n1"} 1.0']
    assert _lines(text, "raftkv_messages_sent_total") == [
        'raftkv_messages_sent_total{node="n1",type="AppendEntries"} 1.0',
        'raftkv_messages_sent_total{node="n1",type="Heartbeat"} 2.0',
    ]


def test_histogram_matches_prometheus_clients_own() -> None:
    buckets = (0.001, 0.01, 0.1)
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LoopHistogram("h", "doc", "n1", buckets=buckets, registry=ours_registry)
    theirs = Histogram("h", "doc", ["node"], buckets=buckets, registry=theirs_registry)
    for v in (0.0005, 0.001, 0.002, 0.05, 0.1, 3.0):
        ours.observe(v)
        theirs.labels(node="n1").observe(v)
    assert _lines(generate_latest(ours_registry), "h_") == [
        line
        for line in _lines(generate_latest(theirs_registry), "h_")
        if not line.startswith("h_created")
    ]
