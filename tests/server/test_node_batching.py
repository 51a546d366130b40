"""The node's hot path: group commit, and writes forwarded over the peer link."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.core.rawnode import RawNode
from raftkv.core.types import NodeId
from raftkv.replica.kv import KVResult, encode_command
from raftkv.server.config import ServerConfig
from raftkv.server.errors import OutcomeUnknown
from raftkv.storage import wal as wal_module
from tests.cluster.harness import InProcCluster, put_cmd, run


class FsyncCluster(InProcCluster):
    """The in-process cluster with fsync on (the harness turns it off)."""

    def config(self, node_id: NodeId, state: str = "new") -> ServerConfig:
        return dataclasses.replace(super().config(node_id, state), fsync=True)


def _wal_of(fd: int) -> Path:
    """The WAL directory of a segment file's descriptor."""
    return Path(os.readlink(f"/proc/self/fd/{fd}")).parent


def test_group_commit_one_sync_for_all_proposals_that_arrive_during_a_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 writes proposed one by one over ~0.1 s while each sync takes 50 ms: a
    handful of syncs, not 50 -- everything written while a sync runs is covered
    by the next one."""
    syncs: Counter[Path] = Counter()
    slow: set[Path] = set()
    lock = threading.Lock()
    real_datasync = wal_module.datasync

    def slow_counted_datasync(fd: int) -> None:
        wal_dir = _wal_of(fd)
        with lock:
            syncs[wal_dir] += 1
        if wal_dir in slow:
            time.sleep(0.05)  # in the WAL thread; the loop runs on
        real_datasync(fd)

    async def main() -> None:
        c = FsyncCluster(tmp_path, heartbeat_ms=50, election_ms=1000)
        await c.start()
        try:
            leader = await c.leader()
            node = c.nodes[leader]
            wal_dir = tmp_path / leader / "wal"
            slow.add(wal_dir)
            monkeypatch.setattr(wal_module, "datasync", slow_counted_datasync)
            tasks = []
            for i in range(50):
                tasks.append(asyncio.create_task(node.propose(put_cmd(f"k{i}", i))))
                await asyncio.sleep(0.002)
            results = await asyncio.gather(*tasks)
            assert all(isinstance(r, KVResult) and r.ok for r in results)
            assert 1 <= syncs[wal_dir] <= 8, syncs
            # Every Ready with entries was written: the batches add up to the writes.
            entries = node.metrics.ready_entries.collect()[0].samples
            total = next(s.value for s in entries if s.name.endswith("_sum"))
            assert total >= 50
        finally:
            monkeypatch.undo()
            await c.stop()

    run(main())


def test_a_slow_disk_is_synced_in_the_wal_thread_while_the_next_readys_are_handled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast disk is synced by the event loop's own thread, one Ready at a time,
    at any load. Once the recent syncs average over INLINE_SYNC_MAX_SECONDS,
    by the WAL thread, with asynchronous storage writes (core/ready.py): while
    a slow sync runs, the loop keeps turning and the node keeps handling
    Readys (new entries written and sent before the earlier ones' sync ends);
    the writes all commit and apply. Back on the loop's thread once the disk
    is fast again."""
    threads: list[str] = []
    delay = 0.0
    real_datasync = wal_module.datasync
    most_unpersisted = 0
    real_accept = RawNode.accept

    def recorded_datasync(fd: int) -> None:
        if _wal_of(fd) == leader_wal:
            threads.append(threading.current_thread().name)
            if delay:
                time.sleep(delay)  # a slow disk
        real_datasync(fd)

    def recorded_accept(self: RawNode, rd: Any) -> None:
        nonlocal most_unpersisted
        real_accept(self, rd)
        if self.node_id == leader:
            most_unpersisted = max(most_unpersisted, self.unpersisted())

    async def main() -> None:
        nonlocal delay, leader, leader_wal, most_unpersisted
        c = FsyncCluster(tmp_path, heartbeat_ms=50, election_ms=1000)
        await c.start()
        try:
            leader = await c.leader()
            leader_wal = tmp_path / leader / "wal"
            node = c.nodes[leader]
            loop_thread = threading.current_thread().name
            wal_thread = f"raftkv-wal-{leader}"
            monkeypatch.setattr(wal_module, "datasync", recorded_datasync)
            monkeypatch.setattr(RawNode, "accept", recorded_accept)
            # Fast: 32 clients at once, every sync on the loop's thread.
            await asyncio.gather(*(node.propose(put_cmd(f"a{i}", i)) for i in range(32)))
            assert threads and set(threads) == {loop_thread}, threads
            assert most_unpersisted == 1  # each Ready persisted before the next
            threads.clear()
            delay = 0.02
            for i in range(6):  # the average rises past the limit within a few syncs
                await node.propose(put_cmd(f"b{i}", i))
            assert threads[0] == loop_thread and threads[-1] == wal_thread, threads
            delay = 0.05
            most_unpersisted = 0
            ticks = 0

            async def count() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0)
                    ticks += 1

            counter = asyncio.create_task(count())
            tasks = []
            for i in range(20):
                tasks.append(asyncio.create_task(node.propose(put_cmd(f"c{i}", i))))
                await asyncio.sleep(0.005)
            results = await asyncio.gather(*tasks)
            counter.cancel()
            assert all(isinstance(r, KVResult) and r.ok for r in results)
            assert ticks > 100, ticks
            # Readys were accepted while an earlier one waited for its sync.
            assert most_unpersisted >= 2, most_unpersisted
            # The disk is fast again: the average falls, and the loop syncs on
            # its own thread again.
            delay = 0.0
            threads.clear()
            for i in range(400):  # ~25 fast syncs bring the average down; more under load
                await node.propose(put_cmd(f"d{i}", i))
                if threads and threads[-1] == loop_thread:
                    break
            assert threads[0] == wal_thread and threads[-1] == loop_thread, threads
        finally:
            monkeypatch.undo()
            await c.stop()

    leader = NodeId("")
    leader_wal = Path()
    run(main())


def test_follower_forwards_writes_over_the_peer_link(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                for i in range(5):
                    async with s.put(f"{c.url(follower)}/v1/kv/f{i}", json=i) as r:
                        assert r.status == 200, await r.text()
                        body = await r.json()
                        assert body["ok"] is True and body["leader"] == leader
                        assert r.headers["X-Raftkv-Leader"] == leader
                # A failed write's answer is relayed as the leader gave it.
                async with s.post(
                    f"{c.url(follower)}/v1/kv/f0/cas", json={"expect": 99, "value": 1}
                ) as r:
                    assert r.status == 409
                    assert (await r.json())["current"] == 0
                async with s.get(f"{c.url(leader)}/v1/kv/f4") as r:
                    assert (await r.json())["value"] == 4
            forwarded = c.nodes[follower].metrics.forwarded.values[()]
            assert forwarded == 6  # over the peer link, not HTTP

    run(main())


def test_forwarded_write_outcome_is_unknown_when_the_leader_changes(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            c.hub.isolate(leader)  # the request never arrives; a new leader is elected
            with pytest.raises(OutcomeUnknown):
                await c.nodes[follower].forward(put_cmd("x", 1), timeout=10)

    run(main())


def test_concurrent_linearizable_reads_share_read_index_requests(tmp_path: Path) -> None:
    def read_index_requests(node: Any) -> float:
        family = node.metrics._sent.collect()[0]
        return sum(
            s.value
            for s in family.samples
            if s.labels.get("type") == "ReadIndex" and s.name.endswith("_total")
        )

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = c.nodes[next(n for n in c.nodes if n != leader)]
            index = (await c.nodes[leader].propose(put_cmd("r", 1))).index  # type: ignore[attr-defined]
            before = read_index_requests(follower)
            indexes = await asyncio.gather(*(follower.read_barrier() for _ in range(40)))
            assert all(i >= index for i in indexes)
            assert follower.state_machine.read("r").value == 1  # type: ignore[attr-defined]
            # 40 reads, one ReadIndex round trip for the first and one for the
            # rest (they arrived while the first was in flight): not 40.
            assert read_index_requests(follower) - before <= 3

    run(main())


def test_forwards_of_one_loop_turn_share_one_send(tmp_path: Path) -> None:
    """Ten writes forwarded in one loop turn leave the follower in one send, and
    the leader's ten answers (applied by one or two Readies) in one send each."""
    from raftkv.transport.forward import ForwardRequest, ForwardResponse

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            sends: dict[str, list[int]] = {follower: [], leader: []}
            kinds = {follower: ForwardRequest, leader: ForwardResponse}
            for node_id in (follower, leader):
                transport = c.nodes[node_id]._transport
                assert transport is not None
                real = transport.send

                def counting(msgs: Any, real: Any = real, node_id: str = node_id) -> None:
                    n = sum(isinstance(m, kinds[node_id]) for m in msgs)
                    if n:
                        sends[node_id].append(n)
                    real(msgs)

                transport.send = counting  # type: ignore[method-assign]
            node = c.nodes[follower]
            answers = await asyncio.gather(*(node.forward(put_cmd(f"b{i}", i)) for i in range(10)))
            assert [status for status, _ in answers] == [200] * 10
            assert sends[follower] == [10]
            assert sum(sends[leader]) == 10 and len(sends[leader]) <= 2, sends

    run(main())


def test_leader_answers_forwarded_writes_from_callbacks(tmp_path: Path) -> None:
    """The leader's forward handler replies once per payload -- at once for a bad
    one or a follower, after the apply for a write -- and starts no task."""
    import json

    from raftkv.replica.kv import Get

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            handler = c.nodes[leader].forward_handler
            assert handler is not None
            replies: list[tuple[int, dict[str, Any]]] = []

            def reply(status: int, body: bytes) -> None:
                replies.append((status, json.loads(body)))

            tasks_before = len(asyncio.all_tasks())
            handler(put_cmd("cb", 1), reply)
            handler(encode_command(Get(key="cb", time_ms=1)), reply)
            handler(b"\xc1 not msgpack", reply)
            assert len(asyncio.all_tasks()) == tasks_before
            assert [r[0] for r in replies] == [400, 400]  # answered at once
            for _ in range(100):
                if len(replies) == 3:
                    break
                await asyncio.sleep(0.01)
            status, body = replies[2]
            assert status == 200 and body["ok"] is True and body["leader"] == leader
            follower_handler = c.nodes[follower].forward_handler
            assert follower_handler is not None
            follower_handler(put_cmd("cb", 2), reply)
            assert replies[3] == (503, {"error": "not the leader", "leader": leader})
            assert len(replies) == 4

    run(main())


def test_index_and_term_gauges_are_current_when_scraped(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            node = c.nodes[leader]
            for i in range(3):
                await node.propose(put_cmd(f"g{i}", i))
            text = node.metrics.render().decode()
            raw = node._raw
            assert raw is not None
            for name, value in [
                ("raftkv_term", raw.term),
                ("raftkv_commit_index", raw.commit_index),
                ("raftkv_applied_index", node.applied_index),
                ("raftkv_last_index", raw.last_index),
            ]:
                assert f'{name}{{node="{leader}"}} {float(value)}' in text, (name, value)
            assert node.applied_index >= 4  # the founding entry, a no-op, three writes

    run(main())
