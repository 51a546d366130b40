"""RaftNode in process: three nodes over an InMemoryHub, --no-fsync, tmp data dirs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from raftkv.core.types import Role
from raftkv.replica.kv import KVResult
from raftkv.server.errors import NoLeader, OutcomeUnknown, ProposalLost
from tests.cluster.harness import InProcCluster, eventually, put_cmd, run


def test_three_nodes_elect_and_replicate(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            leader = await c.leader()
            node = c.nodes[leader]
            results = await asyncio.gather(*(node.propose(put_cmd(f"k{i}", i)) for i in range(50)))
            assert all(isinstance(r, KVResult) and r.ok for r in results)
            # Results carry distinct, increasing indexes in proposal order.
            indexes = [r.index for r in results]  # type: ignore[attr-defined]
            assert indexes == sorted(indexes) and len(set(indexes)) == 50
            # Every replica applies the same entries and ends in the same state.
            for _ in range(100):
                if all(n.applied_index >= indexes[-1] for n in c.nodes.values()):
                    break
                await asyncio.sleep(0.02)
            snaps = {n.node_id: n.state_machine.snapshot() for n in c.nodes.values()}
            assert len(set(snaps.values())) == 1, "replicas diverged"
        finally:
            await c.stop()

    run(main())


def test_follower_proposal_is_refused_with_leader_hint(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            with pytest.raises(NoLeader) as info:
                await c.nodes[follower].propose(put_cmd("a", 1))
            assert info.value.leader == leader
        finally:
            await c.stop()

    run(main())


def test_no_quorum_times_out_or_refuses(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            leader = await c.leader()
            c.hub.isolate(leader)
            # Within the election timeout the old leader still accepts proposals
            # but cannot commit them: the outcome is unknown (504), never success.
            with pytest.raises((OutcomeUnknown, NoLeader, ProposalLost)):
                await c.nodes[leader].propose(put_cmd("lost", 1), timeout=0.5)
            # CheckQuorum: it steps down after an election timeout.
            for _ in range(100):
                if c.nodes[leader].status().role != Role.LEADER.value:
                    break
                await asyncio.sleep(0.02)
            assert c.nodes[leader].status().role != Role.LEADER.value
            with pytest.raises(NoLeader):
                await c.nodes[leader].propose(put_cmd("x", 1))
            with pytest.raises(NoLeader):
                await c.nodes[leader].read_barrier(timeout=0.5)
        finally:
            await c.stop()

    run(main())


def test_restart_replays_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            leader = await c.leader()
            for i in range(10):
                await c.nodes[leader].propose(put_cmd(f"k{i}", i))
            before = c.nodes[leader].state_machine.snapshot()
            for node_id in list(c.nodes):
                await c.stop_node(node_id)
            c.hub = type(c.hub)()
            for node_id in c.members:
                await c.start_node(node_id)
            leader = await c.leader()
            await c.nodes[leader].read_barrier()
            assert c.nodes[leader].state_machine.snapshot() == before
        finally:
            await c.stop()

    run(main())


def test_snapshot_and_compaction_then_restart(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path, snapshot_entries=20)
        await c.start()
        try:
            leader = await c.leader()
            for i in range(60):
                await c.nodes[leader].propose(put_cmd(f"k{i}", i))
            node = c.nodes[leader]

            def compacted() -> bool:
                taken = node.metrics.registry.get_sample_value(
                    "raftkv_snapshots_total", {"node": leader}
                )
                storage = node._storage
                return bool(taken and taken >= 2 and storage and storage.first_index() > 1)

            await eventually(compacted, "two snapshots taken and the log compacted")
            before = node.state_machine.snapshot()
            await c.stop_node(leader)
            await c.start_node(leader)
            restarted = c.nodes[leader]
            assert restarted.applied_index >= 40  # restored from the snapshot file
            await c.leader()
            await restarted.wait_applied(61, timeout=5)
            assert restarted.state_machine.snapshot() == before
        finally:
            await c.stop()

    run(main())


def test_api_forwarding_in_process(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            await c.leader()
            async with aiohttp.ClientSession() as s:
                for i, node_id in enumerate(c.nodes):
                    async with s.put(f"{c.url(node_id)}/v1/kv/key{i}", json={"v": i}) as r:
                        assert r.status == 200, await r.text()
                        assert (await r.json())["ok"] is True
                for node_id in c.nodes:
                    for i in range(3):
                        async with s.get(f"{c.url(node_id)}/v1/kv/key{i}") as r:
                            assert r.status == 200
                            body = await r.json()
                            assert body["value"] == {"v": i} and body["key"] == f"key{i}"
        finally:
            await c.stop()

    run(main())


def test_api_503_without_quorum(tmp_path: Path) -> None:
    async def main() -> None:
        c = InProcCluster(tmp_path)
        await c.start()
        try:
            leader = await c.leader()
            for node_id in list(c.nodes):
                if node_id != leader:
                    await c.stop_node(node_id)
            survivor = c.nodes[leader]
            for _ in range(100):
                if survivor.leader is None:
                    break
                await asyncio.sleep(0.02)
            assert survivor.leader is None
            async with aiohttp.ClientSession() as s:
                async with s.put(f"{c.url(leader)}/v1/kv/a", json=1) as r:
                    assert r.status == 503
                    assert await r.json() == {"error": "no leader", "leader": None}
                async with s.get(f"{c.url(leader)}/v1/kv/a") as r:
                    assert r.status == 503
                    assert (await r.json())["leader"] is None
                async with s.get(f"{c.url(leader)}/v1/health/ready") as r:
                    assert r.status == 503
                async with s.get(f"{c.url(leader)}/v1/health/live") as r:
                    assert r.status == 200
        finally:
            await c.stop()

    run(main())
