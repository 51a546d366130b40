"""The etcd v3 gRPC API against an in-process cluster: KV semantics, headers, errors."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from raftkv.etcd.convert import name_id
from raftkv.etcd.pb import rpc_pb2
from raftkv.replica.kv import KVStateMachine
from tests.cluster.harness import eventually
from tests.etcd.conftest import etcd_cluster, follower, grpc_target, stubs
from tests.security.conftest import run

RAW = b"\xff\x00raw\x80"


def _code_and_message(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return exc.code(), exc.details()


def test_put_and_range_through_a_follower_store_raw_bytes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            node = follower(c, leader)
            async with grpc.aio.insecure_channel(grpc_target(c, node)) as channel:
                s = stubs(channel)
                put = await s.kv.Put(rpc_pb2.PutRequest(key=b"a/\xfe", value=RAW))
                assert put.header.revision == 2
                assert put.header.member_id == name_id(node)
                # The founding members' ids, sorted and joined (docs/etcd.md).
                assert put.header.cluster_id == name_id("n1,n2,n3") != name_id("raftkv")
                assert put.header.raft_term == c.nodes[node].term > 0
                for key, value in ((b"a/1", b"one"), (b"a/2", b"two"), (b"b", b"bee")):
                    await s.kv.Put(rpc_pb2.PutRequest(key=key, value=value))
                got = await s.kv.Range(rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0"))
                assert [(kv.key, kv.value) for kv in got.kvs] == [
                    (b"a/1", b"one"),
                    (b"a/2", b"two"),
                    (b"a/\xfe", RAW),
                ]
                assert (got.count, got.more, got.header.revision) == (3, False, 5)
                limited = await s.kv.Range(
                    rpc_pb2.RangeRequest(
                        key=b"a/",
                        range_end=b"a0",
                        limit=1,
                        sort_order=rpc_pb2.RangeRequest.DESCEND,
                        sort_target=rpc_pb2.RangeRequest.VALUE,
                        serializable=True,
                    )
                )
                assert [kv.key for kv in limited.kvs] == [b"a/\xfe"]
                assert (limited.count, limited.more) == (3, True)
                old = await s.kv.Range(rpc_pb2.RangeRequest(key=b"a/1", revision=2))
                assert old.kvs == [] and old.header.revision == 5
            sm = c.nodes[leader].state_machine
            assert isinstance(sm, KVStateMachine)
            item = sm.read("a/1").item  # the /v1 view: the same bytes, not JSON
            assert item is not None and item.value_json == b"one" and not item.is_json

    run(scenario())


def test_txn_delete_prev_kv_and_sub_headers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            async with grpc.aio.insecure_channel(grpc_target(c, leader)) as channel:
                s = stubs(channel)
                await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v1"))
                txn = rpc_pb2.TxnRequest(
                    compare=[
                        rpc_pb2.Compare(
                            key=b"k",
                            target=rpc_pb2.Compare.VALUE,
                            result=rpc_pb2.Compare.EQUAL,
                            value=b"v1",
                        )
                    ],
                    success=[
                        rpc_pb2.RequestOp(
                            request_put=rpc_pb2.PutRequest(key=b"k", value=b"v2", prev_kv=True)
                        ),
                        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k")),
                    ],
                )
                done = await s.kv.Txn(txn)
                assert done.succeeded and done.header.revision == 3
                assert done.header.member_id == name_id(leader)
                put, read = done.responses
                assert put.response_put.prev_kv.value == b"v1"
                assert put.response_put.header == rpc_pb2.ResponseHeader(revision=3)
                assert read.response_range.kvs[0].value == b"v2"
                again = await s.kv.Txn(txn)
                assert not again.succeeded and again.header.revision == 3
                deleted = await s.kv.DeleteRange(
                    rpc_pb2.DeleteRangeRequest(key=b"\0", range_end=b"\0", prev_kv=True)
                )
                assert deleted.deleted == 1 and deleted.prev_kvs[0].key == b"k"
                assert deleted.header.revision == 4

    run(scenario())


def test_etcd_errors_and_codes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            async with grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel:
                s = stubs(channel)
                for n in range(4):
                    await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"%d" % n))
                await s.kv.Compact(rpc_pb2.CompactionRequest(revision=3))
                cases = [
                    (
                        s.kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=2)),
                        grpc.StatusCode.OUT_OF_RANGE,
                        "etcdserver: mvcc: required revision has been compacted",
                    ),
                    (
                        s.kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=99)),
                        grpc.StatusCode.OUT_OF_RANGE,
                        "etcdserver: mvcc: required revision is a future revision",
                    ),
                    (
                        s.kv.Compact(rpc_pb2.CompactionRequest(revision=2)),
                        grpc.StatusCode.OUT_OF_RANGE,
                        "etcdserver: mvcc: required revision has been compacted",
                    ),
                    (
                        s.kv.Put(rpc_pb2.PutRequest(key=b"", value=b"x")),
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "etcdserver: key is not provided",
                    ),
                    (
                        s.kv.Put(rpc_pb2.PutRequest(key=b"x", lease=7)),
                        grpc.StatusCode.NOT_FOUND,
                        "etcdserver: requested lease not found",
                    ),
                    (
                        s.kv.Put(rpc_pb2.PutRequest(key=b"absent", ignore_value=True)),
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "etcdserver: key not found",
                    ),
                    (
                        s.kv.Txn(
                            rpc_pb2.TxnRequest(
                                success=[
                                    rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d")),
                                    rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d")),
                                ]
                            )
                        ),
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "etcdserver: duplicate key given in txn request",
                    ),
                    (
                        s.maintenance.Defragment(rpc_pb2.DefragmentRequest()),
                        grpc.StatusCode.UNIMPLEMENTED,
                        "etcdserver: Maintenance.Defragment is not implemented by raftkv",
                    ),
                ]
                for call, code, message in cases:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call
                    assert _code_and_message(info.value) == (code, message)

    run(scenario())


def test_nospace_is_resource_exhausted_and_alarm_lists_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path, quota_bytes=2000) as c:
            leader = await c.leader()
            async with grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel:
                s = stubs(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    for n in range(100):
                        await s.kv.Put(rpc_pb2.PutRequest(key=b"k%d" % n, value=b"x" * 100))
                assert _code_and_message(info.value) == (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "etcdserver: mvcc: database space exceeded",
                )
                alarms = await s.maintenance.Alarm(rpc_pb2.AlarmRequest())
                assert [(a.memberID, a.alarm) for a in alarms.alarms] == [
                    (name_id(leader), rpc_pb2.NOSPACE)
                ]
                status = await s.maintenance.Status(rpc_pb2.StatusRequest())
                assert status.errors == [f"memberID:{name_id(leader)} alarm:NOSPACE "]
                # etcdctl alarm disarm: cleared through the log on every node...
                disarm = rpc_pb2.AlarmRequest(
                    action=rpc_pb2.AlarmRequest.DEACTIVATE, alarm=rpc_pb2.NOSPACE
                )
                cleared = await s.maintenance.Alarm(disarm)
                assert [a.alarm for a in cleared.alarms] == [rpc_pb2.NOSPACE]
                # ... and raised again by the leader: the store is still over the quota.
                sm = c.nodes[leader].state_machine
                assert isinstance(sm, KVStateMachine)
                await eventually(lambda: sm.alarm, "the alarm raised again")

    run(scenario())


def test_status_and_member_list(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            node = follower(c, leader)
            async with grpc.aio.insecure_channel(grpc_target(c, node)) as channel:
                s = stubs(channel)
                await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
                status = await s.maintenance.Status(rpc_pb2.StatusRequest())
                sm = c.nodes[node].state_machine
                assert isinstance(sm, KVStateMachine)
                assert status.version == "3.5.0"
                assert status.leader == name_id(leader)
                assert status.dbSize == sm.size_bytes > 0
                assert status.raftTerm == c.nodes[node].term
                assert status.raftAppliedIndex <= status.raftIndex
                assert status.header.member_id == name_id(node)
                members = await s.cluster.MemberList(rpc_pb2.MemberListRequest())
                assert [(m.ID, m.name) for m in members.members] == [
                    (name_id(n), n) for n in sorted(c.members)
                ]
                mine = next(m for m in members.members if m.name == node)
                assert mine.clientURLs[0] == f"http://{grpc_target(c, node)}"
                raft_host, raft_port = c.members[node].raft
                assert list(mine.peerURLs) == [f"http://{raft_host}:{raft_port}"]

    run(scenario())
