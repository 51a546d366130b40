"""The space quota on real nodes: the leader raises the NOSPACE alarm through the
log when the store passes ``--quota-bytes``, writes that add data get 507,
reads, deletes and compaction go on, and the alarm clears once compaction
brought the store back under the quota."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.replica.kv import (
    Alarm,
    Cas,
    Compact,
    Compare,
    Delete,
    DeleteRange,
    Get,
    KeyRange,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    MultiPut,
    Put,
    Range,
    Txn,
    TxnDelete,
    TxnPut,
    TxnRange,
)
from raftkv.server.config import ServerConfig
from raftkv.server.errors import ConfigError
from raftkv.server.node.quota import may_add_data
from tests.cluster.harness import eventually
from tests.security.conftest import HubCluster, run
from tests.server.test_api_store import call, leader_and_follower, q

QUOTA = 1000
VALUE = "v" * 300  # three of them pass the quota


def test_which_writes_may_add_data() -> None:
    every = KeyRange(key="", prefix=True)
    put, delete = TxnPut(key="a", value=1), TxnDelete(range=every)
    adding = [
        Put(key="a", value=1, time_ms=1),
        Cas(key="a", expect=1, value=2, time_ms=1),
        MultiPut(pairs={"a": 1}, time_ms=1),
        Txn(compares=(), success=(put,), failure=(), time_ms=1),
        Txn(compares=(), success=(), failure=(put,), time_ms=1),
        LeaseGrant(id=1, ttl_s=5, time_ms=1),
    ]
    freeing = [
        Delete(key="a", time_ms=1),
        DeleteRange(range=every, time_ms=1),
        Compact(revision=1, time_ms=1),
        Txn(
            compares=(Compare(range=every, target="version", cmp=">", value=0),),
            success=(delete, TxnRange(range=every)),
            failure=(TxnRange(range=every),),
            time_ms=1,
        ),
        Get(key="a", time_ms=1),
        Range(range=every, time_ms=1),
        Alarm(active=False, time_ms=1),
        LeaseRevoke(id=1, time_ms=1),
        LeaseCheckpoint(checkpoints=((1, 1000),), time_ms=1),
    ]
    assert [may_add_data(c) for c in adding] == [True] * len(adding)
    assert [may_add_data(c) for c in freeing] == [False] * len(freeing)


def test_quota_bytes_must_be_positive(tmp_path: Path) -> None:
    config = ServerConfig(
        node_id="n1",  # type: ignore[arg-type]
        data_dir=str(tmp_path),
        raft_addr=("127.0.0.1", 1),
        api_addr=("127.0.0.1", 2),
        quota_bytes=0,
    )
    with pytest.raises(ConfigError, match="--quota-bytes"):
        config.validate()
    assert ServerConfig.__dataclass_fields__["quota_bytes"].default == 2 * 1024**3


async def status(s: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    code, body = await call(s, "GET", f"{base}/v1/status")
    assert code == 200, body
    return body


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def test_nospace_alarm_refuses_writes_until_compaction_frees_space(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"quota_bytes": QUOTA}) as c:
            lead, follow, leader = await leader_and_follower(c)
            async with aiohttp.ClientSession() as s:
                st = await status(s, follow)
                assert (st["alarm"], st["quota_bytes"], st["size_bytes"]) == (None, QUOTA, 0)
                assert (st["revision"], st["compact_revision"]) == (1, 0)
                for i in range(3):
                    code, body = await call(s, "PUT", f"{follow}/v1/kv/k{i}", VALUE)
                    assert code == 200, body
                # The third put passed the quota: the leader raised the alarm.
                code, body = await call(s, "PUT", f"{follow}/v1/kv/k3", VALUE)
                assert code == 507, body
                assert body == {"error": "database space exceeded", "alarm": "NOSPACE"}
                for node in c.nodes.values():
                    await eventually(
                        lambda n=node: n.status().to_json()["alarm"] == "NOSPACE",
                        "every replica applied the alarm",
                    )
                st = await status(s, lead)
                assert st["alarm"] == "NOSPACE" and st["size_bytes"] > QUOTA
                text = c.nodes[leader].metrics.render().decode()
                assert metric(text, "raftkv_store_nospace_alarm") == 1.0
                assert metric(text, "raftkv_store_quota_bytes") == QUOTA
                assert metric(text, "raftkv_store_size_bytes") == st["size_bytes"]
                assert metric(text, "raftkv_store_revision") == st["revision"]
                # Every write that may add data is refused, on leader and follower.
                for base in (lead, follow):
                    refused = [
                        await call(s, "PUT", f"{base}/v1/kv/k0", 1),
                        await call(s, "POST", f"{base}/v1/kv", {"x": 1}),
                        await call(
                            s, "POST", f"{base}/v1/kv/k0/cas", {"expect": VALUE, "value": 1}
                        ),
                        await call(
                            s,
                            "POST",
                            f"{base}/v1/txn",
                            {"success": [{"put": {"key": "x", "value": 1}}]},
                        ),
                    ]
                    assert [code for code, _ in refused] == [507] * 4, refused
                # Reads work.
                code, body = await call(s, "GET", f"{follow}/v1/kv/k0")
                assert (code, body["value"]) == (200, VALUE)
                code, body = await call(s, "GET", f"{follow}/v1/kv{q(prefix='k')}")
                assert (code, body["count"]) == (200, 3)
                # Deletes work (a transaction that only deletes, too), then compaction.
                code, body = await call(s, "DELETE", f"{follow}/v1/kv/k0")
                assert code == 200, body
                txn = {"success": [{"delete": {"key": "k1"}}]}
                code, body = await call(s, "POST", f"{follow}/v1/txn", txn)
                assert (code, body["succeeded"]) == (200, True), body
                code, body = await call(s, "DELETE", f"{follow}/v1/kv{q(prefix='k')}")
                assert (code, body["deleted"]) == (200, 1), body
                st = await status(s, lead)
                assert st["alarm"] == "NOSPACE"  # deletes leave history: still over
                code, body = await call(
                    s, "POST", f"{follow}/v1/compact", {"revision": st["revision"]}
                )
                assert code == 200, body
                for node in c.nodes.values():
                    await eventually(
                        lambda n=node: n.status().to_json()["alarm"] is None,
                        "every replica applied the cleared alarm",
                    )
                st = await status(s, follow)
                assert st["size_bytes"] < QUOTA
                code, body = await call(s, "PUT", f"{follow}/v1/kv/k0", 1)
                assert code == 200, body
                text = c.nodes[leader].metrics.render().decode()
                assert metric(text, "raftkv_store_nospace_alarm") == 0.0

    run(main())


def test_a_leader_raises_the_alarm_for_a_store_already_over_its_quota(tmp_path: Path) -> None:
    """The quota was lowered at a restart: the new leader raises the alarm after
    applying its first entry, with no client write to trigger the check."""

    async def main() -> None:
        c = HubCluster(tmp_path)
        await c.start()
        try:
            lead, _, _ = await leader_and_follower(c)
            async with aiohttp.ClientSession() as s:
                code, body = await call(s, "PUT", f"{lead}/v1/kv/big", VALUE)
                assert code == 200, body
            leader = await c.leader()
            await c.nodes[leader].read_barrier()
            for node_id in list(c.nodes):
                await c.stop_node(node_id)
            c.overrides["quota_bytes"] = 100
            for node_id in c.members:
                await c.start_node(node_id)
            leader = await c.leader()
            await eventually(
                lambda: c.nodes[leader].status().to_json()["alarm"] == "NOSPACE",
                "the new leader raised the alarm",
            )
        finally:
            await c.stop()

    run(main())


def test_alarm_is_proposed_once_per_change(tmp_path: Path) -> None:
    """One Alarm entry per transition, however many entries apply meanwhile."""

    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"quota_bytes": 100}) as c:
            lead, _, leader = await leader_and_follower(c)
            node = c.nodes[leader]
            async with aiohttp.ClientSession() as s:
                results = await asyncio.gather(
                    *(call(s, "PUT", f"{lead}/v1/kv/k{i}", VALUE) for i in range(8))
                )
            assert {code for code, _ in results} <= {200, 507}
            await eventually(lambda: node.status().to_json()["alarm"] == "NOSPACE", "alarm")
            before = node.status().applied_index
            # Writes refused up front add no entries; nor does the quota check.
            async with aiohttp.ClientSession() as s:
                for i in range(5):
                    code, _ = await call(s, "PUT", f"{lead}/v1/kv/x{i}", 1)
                    assert code == 507
            await node.read_barrier()
            assert node.status().applied_index == before

    run(main())


def test_an_idle_leader_finishes_the_compaction_pass_and_clears_the_alarm(
    tmp_path: Path,
) -> None:
    """A compaction frees its history in slices, a few keys per applied entry; on
    an idle cluster (no entry after the compaction) the ticks run the rest of
    the pass, and then the alarm clears without any further write."""
    quota = 60_000

    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"quota_bytes": quota}) as c:
            lead, follow, leader = await leader_and_follower(c)
            async with aiohttp.ClientSession() as s:
                # 200 keys with two versions each: more keys than one entry frees.
                for version in range(2):
                    pairs = {f"h{i:03}": version for i in range(200)}
                    code, body = await call(s, "POST", f"{follow}/v1/kv", pairs)
                    assert code in (200, 507), body
                await eventually(
                    lambda: c.nodes[leader].status().to_json()["alarm"] == "NOSPACE",
                    "the leader raised the alarm",
                )
                code, body = await call(s, "DELETE", f"{follow}/v1/kv{q(prefix='h')}")
                assert code == 200, body
                st = await status(s, lead)
                code, body = await call(
                    s, "POST", f"{follow}/v1/compact", {"revision": st["revision"]}
                )
                assert code == 200, body
                # No write from here on: only ticks can finish the pass.
                await eventually(
                    lambda: c.nodes[leader].status().to_json()["alarm"] is None,
                    "the alarm cleared on an idle cluster",
                )
                assert (await status(s, lead))["size_bytes"] < quota

    run(main())


def test_auto_compaction_keeps_the_last_revisions(tmp_path: Path) -> None:
    """With --auto-compaction-retention N the leader compacts everything older
    than the last N revisions, through the log: every replica compacts at the
    same point, reads below it answer 410, reads within it still work."""

    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"auto_compaction_retention": 20}) as c:
            lead, follow, _leader = await leader_and_follower(c)
            async with aiohttp.ClientSession() as s:
                for i in range(60):
                    code, body = await call(s, "PUT", f"{follow}/v1/kv/k{i % 5}", i)
                    assert code == 200, body
                revision = body["revision"]
                await eventually(
                    lambda: all(
                        n.status().to_json()["compact_revision"] >= revision - 22
                        for n in c.nodes.values()
                    ),
                    "every replica compacted to within the retention",
                )
                st = await status(s, lead)
                assert revision - st["compact_revision"] <= 22, st
                compacted = {n.status().to_json()["compact_revision"] for n in c.nodes.values()}
                assert len(compacted) == 1  # the same point on every replica
                code, body = await call(s, "GET", f"{follow}/v1/kv/k0?revision=2")
                assert code == 410, body
                code, body = await call(s, "GET", f"{follow}/v1/kv/k0?revision={revision - 5}")
                assert code == 200, body

    run(main())
