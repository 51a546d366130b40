"""Snapshots: one from the leader that does not decode is never persisted, and
encoding one never stalls the event loop (issue 15, item 9).

Before, a follower wrote the received snapshot to disk and only then decoded
it: an image it could not read then failed every restart of the node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import raftkv.server.node.runtime as node_module
from raftkv.replica.kv import KVStateMachine, Put, encode_command
from tests.cluster.harness import InProcCluster, eventually
from tests.security.conftest import run


def _put(i: int) -> bytes:
    return encode_command(Put(key=f"k{i}", value=i, time_ms=1))


def test_an_undecodable_snapshot_is_not_persisted(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path, snapshot_entries=20) as c:
            leader = await c.leader()
            lagging = next(n for n in c.nodes if n != leader)
            c.hub.isolate(lagging)
            node = c.nodes[leader]
            for i in range(60):
                await node.propose(_put(i))
            storage = node._storage
            assert storage is not None
            await eventually(
                lambda: node._snapshots.job is None and storage.snapshot().metadata.index >= 60,
                "the leader's last snapshot written and adopted",
            )
            assert storage.first_index() > 2  # compacted
            # A sender bug: the leader's snapshot image is not a snapshot.
            good = storage.snapshot()
            storage._snapshot = dataclasses.replace(good, data=b"\xc1 not a snapshot")
            follower = c.nodes[lagging]
            before = {f.index for f in follower._storage.snapshot_store.files()}  # type: ignore[union-attr]
            c.hub.heal()
            assert follower._driver_done is not None
            await asyncio.wait_for(asyncio.shield(follower._driver_done), 10)
            after = {f.index for f in follower._storage.snapshot_store.files()}  # type: ignore[union-attr]
            assert after == before, "the undecodable image reached the disk"
            assert not follower.is_live()
            # The node restarts from what it had (no error reading its disk);
            # once the sender of the bad image is gone it catches up from another.
            applied = follower.applied_index
            await c.stop_node(leader)
            await c.stop_node(lagging)
            await c.start_node(lagging)
            assert c.nodes[lagging].applied_index >= applied
            await c.start_node(leader)
            new_leader = await c.leader(timeout=10)
            target = c.nodes[new_leader].applied_index
            for n in c.nodes.values():
                await n.wait_applied(target, timeout=10)
            images = {n.state_machine.snapshot() for n in c.nodes.values()}
            assert len(images) == 1

    run(main())


class _SlowImage(KVStateMachine):
    """A KV store whose snapshot encoding blocks until the test lets it go."""

    release = threading.Event()
    started = threading.Event()

    def snapshot_later(self) -> Callable[[], bytes]:
        encode = super().snapshot_later()

        def slow() -> bytes:
            self.started.set()
            self.release.wait(timeout=10)
            return encode()

        return slow

    def snapshot(self) -> bytes:  # what a node that snapshots on its loop calls
        self.started.set()
        self.release.wait(timeout=10)
        return super().snapshot()


def test_the_loop_serves_while_a_snapshot_is_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots are encoded and written off the event loop (issue 15, item 9):
    while one is in progress the node still commits writes and serves reads."""
    monkeypatch.setattr(node_module, "default_state_machine", _SlowImage)
    _SlowImage.release.clear()
    _SlowImage.started.clear()

    async def main() -> None:
        async with InProcCluster(tmp_path, snapshot_entries=20) as c:
            leader = await c.leader()
            node = c.nodes[leader]
            i = 0
            while not _SlowImage.started.is_set():
                await node.propose(_put(i))
                i += 1
            try:
                # The image is being encoded (and blocked there): the node goes on.
                for j in range(30):
                    await asyncio.wait_for(node.propose(_put(1000 + j)), 2.0)
                await asyncio.wait_for(node.read_barrier(), 2.0)
                assert node.state_machine.read("k1029").value == 1029  # type: ignore[attr-defined]
            finally:
                _SlowImage.release.set()
            storage = node._storage
            assert storage is not None
            await eventually(lambda: storage.first_index() > 2, "compacted after adoption")
            assert storage.snapshot().metadata.index >= 20

    run(main())
