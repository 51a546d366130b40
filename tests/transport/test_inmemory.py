"""InMemoryTransport: the test twin keeps the Transport contract (order, drops, partitions)."""

from __future__ import annotations

import asyncio

import pytest

from raftkv.core.messages import Heartbeat, Message
from raftkv.core.types import NodeId
from raftkv.transport import InMemoryHub, TransportClosed


def hb(src: str, dst: str, commit: int) -> Heartbeat:
    return Heartbeat(term=1, sender=NodeId(src), to=NodeId(dst), commit=commit)


def commits(msgs: list[Message]) -> list[int]:
    return [m.commit for m in msgs if isinstance(m, Heartbeat)]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_delivers_in_order_asynchronously_and_respects_partitions() -> None:
    async def main() -> None:
        hub = InMemoryHub()
        inbox: dict[str, list[Message]] = {"a": [], "b": [], "c": []}
        nodes = {n: hub.transport(NodeId(n), inbox[n].extend) for n in inbox}
        for t in nodes.values():
            await t.start()

        nodes["a"].send([hb("a", "b", 1), hb("a", "c", 1), hb("a", "b", 2)])
        assert inbox["b"] == []  # delivery is asynchronous, never inside send()
        await _settle()
        assert commits(inbox["b"]) == [1, 2]
        assert commits(inbox["c"]) == [1]

        hub.block(NodeId("a"), NodeId("b"))
        nodes["a"].send([hb("a", "b", 3)])
        nodes["b"].send([hb("b", "a", 3)])
        nodes["a"].send([hb("a", "c", 3)])
        await _settle()
        assert commits(inbox["b"]) == [1, 2]
        assert inbox["a"] == []
        assert commits(inbox["c"]) == [1, 3]

        # Cutting a link also loses what is in flight on it.
        hub.heal()
        nodes["a"].send([hb("a", "b", 4)])
        hub.partition([NodeId("a")], [NodeId("b"), NodeId("c")])
        await _settle()
        assert commits(inbox["b"]) == [1, 2]
        nodes["b"].send([hb("b", "c", 5)])
        await _settle()
        assert commits(inbox["c"]) == [1, 3, 5]

        hub.heal()
        nodes["a"].send([hb("a", "b", 6)])
        await _settle()
        assert commits(inbox["b"]) == [1, 2, 6]
        for t in nodes.values():
            await t.stop()

    asyncio.run(main())


def test_drops_forged_senders_unknown_peers_and_stopped_nodes() -> None:
    async def main() -> None:
        hub = InMemoryHub()
        got: list[Message] = []
        a = hub.transport(NodeId("a"), lambda m: None, peers=[NodeId("b")])
        b = hub.transport(NodeId("b"), got.extend)
        await a.start()
        await b.start()
        a.send([hb("x", "b", 1), hb("a", "b", 2), hb("a", "zz", 3)])
        await _settle()
        assert commits(got) == [2]
        assert b.stats.dropped_bad_sender == 1
        assert a.stats.dropped_unroutable == 1
        await b.stop()
        a.send([hb("a", "b", 4)])
        await _settle()
        assert commits(got) == [2]
        with pytest.raises(TransportClosed):
            b.send([hb("b", "a", 1)])
        await a.stop()

    asyncio.run(main())
