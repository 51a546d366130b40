"""The launcher against real ``raftkv serve`` processes: start, ready, stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.launch import LocalCluster, ServeOptions, loopback_members
from tests.cluster.harness import http

pytestmark = pytest.mark.cluster


def test_a_local_cluster_starts_serves_and_stops_cleanly(tmp_path: Path) -> None:
    c = LocalCluster(
        loopback_members(3),
        tmp_path / "data",
        ServeOptions(heartbeat_interval_ms=50, election_timeout_ms=500, fsync=False),
        log_dir=tmp_path / "logs",
    )
    c.start()
    try:
        c.wait_ready(timeout=60)
        code, body = http("PUT", c.urls()[1] + "/v1/kv/x", 1)
        assert code == 200, body
        leaders = {http("GET", url + "/v1/status")[1]["leader"] for url in c.urls()}
        assert len(leaders) == 1 and leaders <= set(c.members)
    finally:
        codes = c.stop(grace=30)
    assert codes == {"n1": 0, "n2": 0, "n3": 0}, [
        p.read_text()[-2000:] for p in (tmp_path / "logs").iterdir()
    ]
