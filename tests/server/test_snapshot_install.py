"""A snapshot from the leader that does not decode is never persisted (issue 15, item 9).

Before, a follower wrote the received snapshot to disk and only then decoded
it: an image it could not read then failed every restart of the node.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from raftkv.server.kv import Put, encode_command
from tests.cluster.harness import InProcCluster
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
            assert storage is not None and storage.first_index() > 2  # compacted
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
