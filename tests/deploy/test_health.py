"""/v1/health/ready means "a leader is known and this node caught up with it"."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.cluster.harness import InProcCluster, free_ports
from tests.deploy import DEPLOY_DIR


def test_ready_needs_a_live_leader_not_just_a_remembered_one(tmp_path: Path) -> None:
    async def main() -> None:
        # A long election timeout: the followers keep believing in the old
        # leader for seconds after it is gone.
        c = InProcCluster(tmp_path, heartbeat_ms=50, election_ms=3000)
        await c.start()
        try:
            leader = await c.leader(timeout=15)
            followers = [n for n in c.nodes if n != leader]
            async with aiohttp.ClientSession() as s:
                for n in c.nodes:
                    async with s.get(f"{c.url(n)}/v1/health/ready") as r:
                        body = await r.json()
                        assert r.status == 200, body
                        assert body["leader"] == leader
                        assert body["applied"] >= body["index"]
                await c.stop_node(leader)
                follower = followers[0]
                assert c.nodes[follower].leader == leader  # still remembered
                async with s.get(f"{c.url(follower)}/v1/health/ready") as r:
                    assert r.status == 503
                    assert "not ready" in (await r.json())["error"]
                async with s.get(f"{c.url(follower)}/v1/health/live") as r:
                    assert r.status == 200
        finally:
            await c.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_healthcheck_script_fails_when_nothing_listens() -> None:
    port = free_ports(1)[0]
    result = subprocess.run(
        [sys.executable, str(DEPLOY_DIR / "healthcheck.py")],
        env={"RAFTKV_API_ADDR": f"0.0.0.0:{port}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}/v1/health/live" in result.stderr
