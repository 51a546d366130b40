"""Membership and leadership transfer through RaftNode, in process (InMemoryHub)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from raftkv.server.kv import Put, encode_command
from tests.cluster.harness import InProcCluster


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_transfer_leadership_via_api(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            leader = await c.leader()
            target = next(n for n in c.nodes if n != leader)
            other = next(n for n in c.nodes if n not in (leader, target))
            # Sent to a follower: forwarded to the leader, which hands over.
            url = f"{c.url(other)}/v1/leader/transfer"
            async with aiohttp.ClientSession() as s, s.post(url, json={"to": target}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["leader"] == target
            assert await c.leader() == target
        finally:
            await c.stop()

    run(main())


def test_remove_member_then_writes_continue(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            leader = await c.leader()
            # Membership changes wait until the leader committed an entry of its term.
            await c.nodes[leader].propose(encode_command(Put(key="a", value=1, time_ms=1)))
            victim = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                async with s.delete(f"{c.url(leader)}/v1/members/{victim}") as r:
                    assert r.status == 200, await r.text()
                await c.stop_node(victim)
                async with s.get(f"{c.url(leader)}/v1/members") as r:
                    body = await r.json()
                    assert victim not in body["voters"] and victim not in body["members"]
                # Two voters left, both up: still a quorum.
                async with s.put(f"{c.url(leader)}/v1/kv/b", json=2) as r:
                    assert r.status == 200, await r.text()
                async with s.post(f"{c.url(leader)}/v1/members", json={"id": "x"}) as r:
                    assert r.status == 400
        finally:
            await c.stop()

    run(main())
