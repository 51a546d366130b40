"""Crash-stop: a node whose drive loop, WAL or snapshot store fails stops serving.

The node exposes the failure (``RaftNode.failed``), every route of both HTTP
paths answers 503 (the liveness probe included), and ``serve()`` re-raises it
as :class:`~raftkv.server.errors.NodeFailed` so that ``raftkv serve`` exits.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.core.rawnode import RawNode
from raftkv.server.config import ServerConfig
from raftkv.server.errors import NodeFailed
from raftkv.server.http import server as api_module
from raftkv.server.node import runtime as runtime_module
from raftkv.storage import wal as wal_module
from raftkv.storage.disk_storage import DiskStorage
from raftkv.storage.errors import StorageError
from tests.cluster.harness import InProcCluster, member_map, run

# Every route of the API, as (method, path, body); the first five are the fast path's.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/v1/status", None),
    ("GET", "/v1/health/live", None),
    ("GET", "/v1/health/ready", None),
    ("GET", "/v1/kv/a?consistency=stale", None),
    ("PUT", "/v1/kv/b", 2),
    ("POST", "/v1/kv/a/cas", {"expect": 1, "value": 3}),
    ("GET", "/v1/members", None),
    ("GET", "/v1/cluster", None),
    ("GET", "/metrics", None),
    ("GET", "/", None),
    ("POST", "/v1/leader/transfer", {"to": "n1"}),
]


async def _answers(url: str) -> dict[str, tuple[int, Any]]:
    out = {}
    async with aiohttp.ClientSession() as s:
        for method, path, body in ROUTES:
            async with s.request(method, url + path, json=body) as r:
                out[f"{method} {path}"] = (r.status, await r.read())
    return out


def _fail_saves(monkeypatch: pytest.MonkeyPatch) -> None:
    def save(*args: Any, **kwargs: Any) -> None:
        raise StorageError("WAL I/O error: no space left") from OSError(errno.ENOSPC, "ENOSPC")

    monkeypatch.setattr(DiskStorage, "save", save)  # slotted: patch the class


@pytest.mark.parametrize("fast", ["fast", "aiohttp"])
def test_storage_failure_fails_the_node_and_every_route_answers_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: str
) -> None:
    if fast == "aiohttp":
        monkeypatch.setenv("RAFTKV_NO_FAST_HTTP", "1")

    async def main() -> None:
        async with InProcCluster(tmp_path, n=1) as c:
            leader = await c.leader()
            node = c.nodes[leader]
            url = c.url(leader)
            async with aiohttp.ClientSession() as s, s.put(url + "/v1/kv/a", json=1) as r:
                assert r.status == 200
            assert not node.failed.done()
            _fail_saves(monkeypatch)
            async with aiohttp.ClientSession() as s, s.put(url + "/v1/kv/a", json=2) as r:
                assert r.status in (503, 504), await r.text()
            failure = await asyncio.wait_for(node.failed, 2)
            assert isinstance(failure, NodeFailed)
            assert isinstance(failure.__cause__, StorageError)
            assert not node.is_live()
            answers = await _answers(url)
            assert {k: v[0] for k, v in answers.items()} == {k: 503 for k in answers}, answers
            assert b"node failed" in answers["GET /v1/status"][1]

    run(main())


def test_ticker_failure_fails_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path, n=1) as c:
            leader = await c.leader()
            node = c.nodes[leader]

            def tick(self: RawNode) -> None:
                raise AssertionError("a broken invariant in tick")

            monkeypatch.setattr(RawNode, "tick", tick)  # slotted: patch the class
            failure = await asyncio.wait_for(node.failed, 2)
            assert isinstance(failure.__cause__, AssertionError)
            async with aiohttp.ClientSession() as s, s.get(c.url(leader) + "/v1/health/live") as r:
                assert r.status == 503

    run(main())


def _config(tmp_path: Path) -> ServerConfig:
    members = member_map(1)
    [(node_id, member)] = members.items()
    return ServerConfig(
        node_id=node_id,
        data_dir=str(tmp_path / node_id),
        raft_addr=member.raft,
        api_addr=member.api,
        initial_cluster=members,
        heartbeat_interval_ms=20,
        election_timeout_ms=200,
        fsync=True,
    )


@pytest.mark.parametrize("where", ["loop", "wal-thread"])
def test_serve_raises_when_a_wal_sync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A sync that raises fails the node, whether the loop ran it (a fast disk)
    or the WAL thread (a slow one, with asynchronous storage writes); serve()
    re-raises it at once, with the listener closed."""
    if where == "wal-thread":
        monkeypatch.setattr(runtime_module, "INLINE_SYNC_MAX_SECONDS", -1.0)
    config = _config(tmp_path)
    url = f"http://127.0.0.1:{config.api_addr[1]}"
    real_datasync = wal_module.datasync
    broken = False

    def datasync(fd: int) -> None:
        if broken:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_datasync(fd)

    monkeypatch.setattr(wal_module, "datasync", datasync)

    async def main() -> None:
        nonlocal broken
        stop = asyncio.Event()
        task = asyncio.create_task(api_module.serve(config, stop))
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    async with s.put(url + "/v1/kv/a", json=1) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the node never served a write")
            broken = True
            async with s.put(url + "/v1/kv/a", json=2) as r:
                assert r.status in (503, 504)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(NodeFailed) as info:
            await asyncio.wait_for(task, 2)
        assert loop.time() - start < 1.0
        assert "No space left on device" in str(info.value)
        assert not stop.is_set()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as s, s.get(url + "/v1/status"):
                pass

    run(main())


def test_a_broken_invariant_while_stepping_fails_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A core bug found while stepping a peer's message crash-stops the node
    (the transport would only close the link and reconnect)."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            node = c.nodes[follower]
            real_step = RawNode.step

            def step(self: RawNode, msg: Any) -> None:
                if self is node._raw:
                    raise AssertionError("a broken invariant in step")
                real_step(self, msg)

            monkeypatch.setattr(RawNode, "step", step)  # slotted: patch the class
            failure = await asyncio.wait_for(node.failed, 2)
            assert "stepping" in str(failure) and isinstance(failure.__cause__, AssertionError)
            assert not node.is_live()

    run(main())
