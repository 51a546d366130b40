"""The etcd Watch service on an in-process cluster: one stream, several watchers, etcd's answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from raftkv.etcd.pb import kv_pb2, rpc_pb2
from tests.cluster.harness import eventually
from tests.etcd.conftest import etcd_cluster, follower, grpc_target, stubs
from tests.security.conftest import run

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


def create(key: bytes, range_end: bytes = b"", **fields: Any) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(key=key, range_end=range_end, **fields)
    )


def cancel(watch_id: int) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id))


PROGRESS = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())


async def read(call: Any) -> rpc_pb2.WatchResponse:
    response = await asyncio.wait_for(call.read(), 5)
    assert isinstance(response, rpc_pb2.WatchResponse), response
    return response


def events(response: rpc_pb2.WatchResponse) -> list[tuple[int, bytes, bytes, int]]:
    return [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in response.events]


def test_several_watchers_on_one_stream_created_events_cancel(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            async with (
                grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel,
                grpc.aio.insecure_channel(grpc_target(c, leader)) as writer,
            ):
                s, w = stubs(channel), stubs(writer)
                await w.kv.Put(rpc_pb2.PutRequest(key=b"a/0", value=b"old"))
                await s.kv.Range(rpc_pb2.RangeRequest(key=b"a/0"))  # the follower applied it
                call = s.watch.Watch()
                await call.write(create(b"a/", b"a0", prev_kv=True))
                first = await read(call)
                assert (first.watch_id, first.created, first.header.revision) == (0, True, 2)
                await call.write(create(b"b", watch_id=7))
                second = await read(call)
                assert (second.watch_id, second.created) == (7, True)
                await call.write(create(b"b"))  # the lowest free id
                third = await read(call)
                assert (third.watch_id, third.created) == (1, True)
                await call.write(create(b"b", watch_id=7))
                refused = await read(call)
                assert (refused.watch_id, refused.created, refused.canceled) == (-1, True, True)
                assert refused.cancel_reason == (
                    "mvcc: duplicate watch ID provided on the WatchStream"
                )
                await w.kv.Put(rpc_pb2.PutRequest(key=b"a/0", value=b"new"))
                got = await read(call)
                assert got.watch_id == 0 and got.header.revision == 3
                assert events(got) == [(PUT, b"a/0", b"new", 3)]
                assert got.events[0].prev_kv.value == b"old"
                await w.kv.Txn(
                    rpc_pb2.TxnRequest(
                        success=[
                            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"b", value=b"1")),
                            rpc_pb2.RequestOp(
                                request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"a/0")
                            ),
                        ]
                    )
                )
                by_id = {}
                for _ in range(3):
                    r = await read(call)
                    by_id[r.watch_id] = r
                assert events(by_id[0]) == [(DELETE, b"a/0", b"", 4)]
                assert events(by_id[7]) == events(by_id[1]) == [(PUT, b"b", b"1", 4)]
                assert not by_id[7].events[0].HasField("prev_kv")
                await call.write(cancel(0))
                canceled = await read(call)
                assert (canceled.watch_id, canceled.canceled) == (0, True)
                await w.kv.Put(rpc_pb2.PutRequest(key=b"a/1", value=b"x"))  # nobody watches
                await call.write(cancel(1))
                assert (await read(call)).watch_id == 1
                await w.kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"2"))
                last = await read(call)
                assert last.watch_id == 7 and events(last) == [(PUT, b"b", b"2", 6)]
                assert c.nodes[follower(c, leader)].watchers == 1
                call.cancel()  # the client goes away: its watchers are closed
                await eventually(lambda: all(n.watchers == 0 for n in c.nodes.values()), "closed")

    run(scenario())


def test_history_compaction_filters_and_progress(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            async with grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel:
                s = stubs(channel)
                for n in range(4):  # revisions 2..5
                    await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"%d" % n))
                await s.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"k"))  # 6
                await s.kv.Compact(rpc_pb2.CompactionRequest(revision=3))
                call = s.watch.Watch()
                await call.write(create(b"k", start_revision=2))
                created = await read(call)
                assert created.created and created.header.revision == 6
                compacted = await read(call)
                assert (compacted.watch_id, compacted.canceled) == (0, True)
                assert (compacted.compact_revision, compacted.cancel_reason) == (3, "")
                await call.write(create(b"k", start_revision=3))
                assert (await read(call)).created
                seen = [events(await read(call)) for _ in range(4)]
                assert seen == [
                    [(PUT, b"k", b"1", 3)],
                    [(PUT, b"k", b"2", 4)],
                    [(PUT, b"k", b"3", 5)],
                    [(DELETE, b"k", b"", 6)],
                ]
                await call.write(
                    create(b"k", start_revision=3, filters=[rpc_pb2.WatchCreateRequest.NOPUT])
                )
                filtered = await read(call)
                assert filtered.created and filtered.watch_id == 2
                assert events(await read(call)) == [(DELETE, b"k", b"", 6)]
                await call.write(PROGRESS)
                progress = await read(call)
                assert (progress.watch_id, progress.header.revision) == (-1, 6)
                assert not progress.events and not progress.canceled
                call.cancel()

    run(scenario())


def test_require_leader_ends_the_stream_with_no_leader(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            alone = follower(c, leader)
            async with grpc.aio.insecure_channel(grpc_target(c, alone)) as channel:
                s = stubs(channel)
                required = s.watch.Watch(metadata=(("hasleader", "true"),))
                await required.write(create(b"k"))
                assert (await read(required)).created
                free = s.watch.Watch()
                await free.write(create(b"k"))
                assert (await read(free)).created
                for node in list(c.nodes):
                    if node != alone:
                        await c.stop_node(node)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await asyncio.wait_for(required.read(), 10)
                assert (info.value.code(), info.value.details()) == (
                    grpc.StatusCode.UNAVAILABLE,
                    "etcdserver: no leader",
                )
                await eventually(lambda: c.nodes[alone].leader is None, "the leader is lost")
                late = s.watch.Watch(metadata=(("hasleader", "true"),))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    # The server may end the stream before the create is written.
                    await late.write(create(b"k"))
                    await asyncio.wait_for(late.read(), 5)
                assert info.value.details() == "etcdserver: no leader"
                await free.write(PROGRESS)  # a watch without hasleader goes on
                assert (await read(free)).watch_id == -1
                free.cancel()

    run(scenario())


def test_a_slow_watcher_is_cancelled_with_the_reason_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path, watch_buffer_bytes=1000) as c:
            leader = await c.leader()
            async with grpc.aio.insecure_channel(grpc_target(c, leader)) as channel:
                s = stubs(channel)
                call = s.watch.Watch()
                await call.write(create(b"big"))
                await call.write(create(b"small"))
                assert [(await read(call)).watch_id for _ in range(2)] == [0, 1]
                # One revision over the bound: more than this watcher may have queued.
                await s.kv.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * 2000))
                slow = await read(call)
                assert (slow.watch_id, slow.canceled) == (0, True)
                assert slow.cancel_reason.startswith("slow watcher: ")
                assert "limit 1000" in slow.cancel_reason
                await s.kv.Put(rpc_pb2.PutRequest(key=b"small", value=b"y"))
                assert events(await read(call)) == [(PUT, b"small", b"y", 3)]
                call.cancel()

    run(scenario())


def test_watchers_over_the_stream_and_node_limits_are_refused(tmp_path: Path) -> None:
    """--max-watchers-per-stream 2 and --max-watchers 3: a refused create answers
    created+canceled with etcd's "too many requests" text; the stream's other
    watchers go on; /v1 watches count and are refused with 429."""

    async def scenario() -> None:
        async with etcd_cluster(tmp_path, max_watchers=3, max_watchers_per_stream=2) as c:
            leader = await c.leader()
            url = c.url(leader)
            async with grpc.aio.insecure_channel(grpc_target(c, leader)) as channel:
                s = stubs(channel)
                call = s.watch.Watch()
                for watch_id in (0, 1):
                    await call.write(create(b"k"))
                    assert (await read(call)).watch_id == watch_id
                await call.write(create(b"k"))
                refused = await read(call)
                assert (refused.watch_id, refused.created, refused.canceled) == (-1, True, True)
                assert refused.cancel_reason == (
                    "etcdserver: too many requests: a watch stream holds at most 2 watchers "
                    "(--max-watchers-per-stream)"
                )
                # A /v1 watch is the node's third watcher; a fourth is refused.
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{url}/v1/watch?key=k") as third,
                ):
                    assert third.status == 200
                    async with http.get(f"{url}/v1/watch?key=k") as fourth:
                        assert fourth.status == 429
                        body = await fourth.json()
                        assert "serves 3 (--max-watchers)" in body["error"], body
                    other = s.watch.Watch()
                    await other.write(create(b"k"))
                    refused = await read(other)
                    assert (refused.watch_id, refused.canceled) == (-1, True)
                    assert refused.cancel_reason == (
                        "etcdserver: too many requests: too many watchers: this node "
                        "serves 3 (--max-watchers)"
                    )
                    other.cancel()
                # The first stream's watchers still deliver.
                await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
                got = {(await read(call)).watch_id for _ in range(2)}
                assert got == {0, 1}
                call.cancel()

    run(scenario())
