"""The etcd Lease service against an in-process cluster: the node's lease paths, etcd's answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from raftkv.etcd.pb import rpc_pb2
from raftkv.replica.kv import KVStateMachine
from tests.cluster.harness import eventually
from tests.etcd.conftest import etcd_cluster, follower, grpc_target, stubs
from tests.security.conftest import run


async def _keepalives(*ids: int) -> AsyncIterator[rpc_pb2.LeaseKeepAliveRequest]:
    for lease_id in ids:
        yield rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)


def test_grant_put_ttl_keepalive_list_revoke_through_a_follower(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            async with grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel:
                s = stubs(channel)
                picked = await s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=0))
                # ID 0: the node picks; a TTL under the minimum (1 s here) is raised.
                assert picked.ID > 0 and picked.TTL == 1 and picked.error == ""
                granted = await s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=42, TTL=60))
                assert (granted.ID, granted.TTL) == (42, 60)
                assert granted.header.revision == 1  # a grant writes no revision
                put = await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=42))
                assert put.header.revision == 2
                got = await s.kv.Range(rpc_pb2.RangeRequest(key=b"k"))
                assert got.kvs[0].lease == 42
                ttl = await s.lease.LeaseTimeToLive(
                    rpc_pb2.LeaseTimeToLiveRequest(ID=42, keys=True)
                )
                assert ttl.ID == 42 and 58 <= ttl.TTL <= 60 and ttl.grantedTTL == 60
                assert list(ttl.keys) == [b"k"]
                await s.kv.Put(rpc_pb2.PutRequest(key=b"\xff\x00", lease=42))  # not UTF-8
                ttl = await s.lease.LeaseTimeToLive(
                    rpc_pb2.LeaseTimeToLiveRequest(ID=42, keys=True)
                )
                assert list(ttl.keys) == [b"k", b"\xff\x00"]
                listed = await s.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest())
                assert sorted(le.ID for le in listed.leases) == sorted([42, picked.ID])
                answers = [r async for r in s.lease.LeaseKeepAlive(_keepalives(42, 999, 42))]
                assert [(r.ID, r.TTL) for r in answers] == [(42, 60), (999, 0), (42, 60)]
                revoked = await s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=42))
                assert revoked.header.revision == 4  # the revision that deleted its keys
                everything = rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0")
                assert (await s.kv.Range(everything)).kvs == []
                gone = await s.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=42))
                assert (gone.ID, gone.TTL, gone.grantedTTL) == (42, -1, 0)

    run(scenario())


def test_lease_errors_are_etcds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            for node in (leader, follower(c, leader)):
                async with grpc.aio.insecure_channel(grpc_target(c, node)) as channel:
                    s = stubs(channel)
                    await s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=7, TTL=30))
                    cases = [
                        (
                            s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=7, TTL=30)),
                            grpc.StatusCode.FAILED_PRECONDITION,
                            "etcdserver: lease already exists",
                        ),
                        (
                            s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001)),
                            grpc.StatusCode.OUT_OF_RANGE,
                            "etcdserver: too large lease TTL",
                        ),
                        (
                            s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=8)),
                            grpc.StatusCode.NOT_FOUND,
                            "etcdserver: requested lease not found",
                        ),
                        (
                            s.kv.Put(rpc_pb2.PutRequest(key=b"x", lease=8)),
                            grpc.StatusCode.NOT_FOUND,
                            "etcdserver: requested lease not found",
                        ),
                    ]
                    for call, code, message in cases:
                        with pytest.raises(grpc.aio.AioRpcError) as info:
                            await call
                        assert (info.value.code(), info.value.details()) == (code, message)
                    await s.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=7))

    run(scenario())


def test_an_expired_lease_deletes_its_keys_and_keepalive_answers_ttl_0(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            sm = c.nodes[leader].state_machine
            assert isinstance(sm, KVStateMachine)
            async with grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel:
                s = stubs(channel)
                granted = await s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=1))
                await s.kv.Put(rpc_pb2.PutRequest(key=b"eph", value=b"1", lease=granted.ID))
                await eventually(lambda: granted.ID not in sm.leases, "the lease expired")
                assert (await s.kv.Range(rpc_pb2.RangeRequest(key=b"eph"))).kvs == []
                answers = [r async for r in s.lease.LeaseKeepAlive(_keepalives(granted.ID))]
                assert [(r.ID, r.TTL) for r in answers] == [(granted.ID, 0)]

    run(scenario())


def test_without_a_leader_lease_calls_answer_no_leader(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            alone = follower(c, leader)
            for node in list(c.nodes):
                if node != alone:
                    await c.stop_node(node)
            await eventually(lambda: c.nodes[alone].leader is None, "the leader is lost")
            async with grpc.aio.insecure_channel(grpc_target(c, alone)) as channel:
                s = stubs(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10))
                assert (info.value.code(), info.value.details()) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "etcdserver: no leader",
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    [r async for r in s.lease.LeaseKeepAlive(_keepalives(1))]
                assert (info.value.code(), info.value.details()) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "etcdserver: no leader",
                )

    run(scenario())
