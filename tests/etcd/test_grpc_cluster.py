"""The etcd v3 Cluster service's membership changes against an in-process cluster."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import grpc
import pytest

from raftkv.core.types import NodeId
from raftkv.etcd import errors
from raftkv.etcd.convert import name_id
from raftkv.etcd.pb import rpc_pb2
from raftkv.etcd.service import parse_peer_urls
from raftkv.server.config import Member
from tests.cluster.harness import eventually, free_ports
from tests.etcd.conftest import etcd_cluster, follower, grpc_target, stubs
from tests.security.conftest import run


def _error(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    return exc.code(), exc.details()


def _status(e: errors.EtcdError) -> tuple[grpc.StatusCode, str]:
    return grpc.StatusCode[e.code.name], e.message


def test_peer_urls_carry_the_id_the_raft_and_the_api_address() -> None:
    node_id, member = parse_peer_urls(["http://n4@127.0.0.1:7004", " http://127.0.0.1:8004"])
    assert node_id == "n4"
    assert member == Member(("127.0.0.1", 7004), ("127.0.0.1", 8004))
    for bad in (["ftp://n4@h:1", "http://h:2"], ["http://n4@h", "http://h:2"], ["http://n4@h:1/p"]):
        with pytest.raises(errors.EtcdError) as info:
            parse_peer_urls(bad)
        assert info.value == errors.MEMBER_BAD_URLS
    for short in (["http://n4@h:1"], ["http://h:1", "http://h:2"]):
        with pytest.raises(errors.EtcdError) as info:
            parse_peer_urls(short)
        assert info.value.code is errors.Code.INVALID_ARGUMENT
        assert "http://n4@127.0.0.1:7004,http://127.0.0.1:8004" in info.value.message
    with pytest.raises(errors.EtcdError, match="bad member id"):
        parse_peer_urls(["http://bad%20id@h:1", "http://h:2"])


def test_member_add_promote_remove_through_a_follower_and_the_leader(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            other = follower(c, leader)
            raft_port, api_port = free_ports(2)
            urls = [f"http://n4@127.0.0.1:{raft_port}", f"http://127.0.0.1:{api_port}"]
            async with (
                grpc.aio.insecure_channel(grpc_target(c, other)) as fch,
                grpc.aio.insecure_channel(grpc_target(c, leader)) as lch,
            ):
                f, lead = stubs(fch), stubs(lch)
                added = await f.cluster.MemberAdd(
                    rpc_pb2.MemberAddRequest(peerURLs=urls, isLearner=True)
                )
                assert (added.member.ID, added.member.name) == (name_id("n4"), "n4")
                assert added.member.isLearner
                assert list(added.member.peerURLs) == [f"http://127.0.0.1:{raft_port}"]
                assert list(added.member.clientURLs) == [f"http://127.0.0.1:{api_port}"]
                assert added.header.member_id == name_id(other)
                await eventually(lambda: "n4" in c.nodes[other].members, "n4 applied")
                listed = await f.cluster.MemberList(rpc_pb2.MemberListRequest())
                assert [(m.name, m.isLearner) for m in listed.members] == [
                    ("n1", False),
                    ("n2", False),
                    ("n3", False),
                    ("n4", True),
                ]
                # The leader's membership decides: a follower that has not
                # applied an add yet forwards a second one, which the leader
                # refuses (the learner is not made a voter that way).
                r5, a5 = free_ports(2)
                urls5 = [f"http://n5@127.0.0.1:{r5}", f"http://127.0.0.1:{a5}"]
                await lead.cluster.MemberAdd(
                    rpc_pb2.MemberAddRequest(peerURLs=urls5, isLearner=True)
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await f.cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=urls5))
                assert _error(info.value) == _status(errors.MEMBER_EXIST)
                assert "n5" in c.nodes[leader].status().learners
                await f.cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=name_id("n5")))
                # Refusals, with etcd's texts and codes.
                for stub, request, want in (
                    (f, rpc_pb2.MemberAddRequest(peerURLs=urls), errors.MEMBER_EXIST),
                    (
                        lead,
                        rpc_pb2.MemberAddRequest(
                            peerURLs=[f"http://n6@127.0.0.1:{raft_port}", urls[1]]
                        ),
                        errors.PEER_URL_EXIST,
                    ),
                    (f, rpc_pb2.MemberAddRequest(peerURLs=["ftp://x"]), errors.MEMBER_BAD_URLS),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.cluster.MemberAdd(request)
                    assert _error(info.value) == _status(want)
                for stub, member_id, want in (
                    (f, name_id(leader), errors.MEMBER_NOT_LEARNER),
                    (f, 12345, errors.MEMBER_NOT_FOUND),
                    (f, name_id("n4"), errors.LEARNER_NOT_READY),  # not running: no log
                    (lead, name_id("n4"), errors.LEARNER_NOT_READY),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.cluster.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=member_id))
                    assert _error(info.value) == _status(want)
                # n4 moves to new ports before it ever ran (through the follower).
                raft2, api2 = free_ports(2)
                moved = Member(("127.0.0.1", raft2), ("127.0.0.1", api2))
                new_urls = [f"http://127.0.0.1:{raft2}", f"http://127.0.0.1:{api2}"]
                updated = await f.cluster.MemberUpdate(
                    rpc_pb2.MemberUpdateRequest(ID=name_id("n4"), peerURLs=new_urls)
                )
                assert updated.header.member_id == name_id(other)
                (n4,) = (m for m in updated.members if m.name == "n4")
                assert (list(n4.peerURLs), list(n4.clientURLs)) == ([new_urls[0]], [new_urls[1]])
                assert n4.isLearner
                await eventually(
                    lambda: all(n.members.get("n4") == moved for n in c.nodes.values()),
                    "every member has n4's new addresses",
                )
                # One URL (it may name the member): the API address stays.
                same = await lead.cluster.MemberUpdate(
                    rpc_pb2.MemberUpdateRequest(
                        ID=name_id("n4"), peerURLs=[f"http://n4@127.0.0.1:{raft2}"]
                    )
                )
                (n4,) = (m for m in same.members if m.name == "n4")
                assert list(n4.clientURLs) == [new_urls[1]]
                taken = c.members[leader].raft
                for stub, member_id, peer_urls, want in (
                    (f, 12345, new_urls, errors.MEMBER_NOT_FOUND),
                    (lead, name_id("n4"), [f"http://{taken[0]}:{taken[1]}"], errors.PEER_URL_EXIST),
                    (f, name_id("n4"), [f"http://{taken[0]}:{taken[1]}"], errors.PEER_URL_EXIST),
                    (f, name_id("n4"), ["ftp://x"], errors.MEMBER_BAD_URLS),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.cluster.MemberUpdate(
                            rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=peer_urls)
                        )
                    assert _error(info.value) == _status(want)
                for peer_urls in ([f"http://n5@127.0.0.1:{raft2}"], [*new_urls, new_urls[0]]):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await f.cluster.MemberUpdate(
                            rpc_pb2.MemberUpdateRequest(ID=name_id("n4"), peerURLs=peer_urls)
                        )
                    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert all(n.members.get("n4") == moved for n in c.nodes.values())
                # n4 starts where it moved, catches up, and is promoted (through
                # the follower). (Moving a member over TCP: tests/cluster/test_operations.py.)
                c.members[NodeId("n4")] = moved
                await c.start_node(NodeId("n4"), "existing")
                await eventually(
                    lambda: c.nodes[NodeId("n4")].applied_index >= c.nodes[leader].applied_index,
                    "n4 caught up",
                )
                # The joiner reports the cluster id of the founding members.
                async with grpc.aio.insecure_channel(grpc_target(c, NodeId("n4"))) as n4ch:
                    local = rpc_pb2.RangeRequest(key=b"k", serializable=True)
                    got = await stubs(n4ch).kv.Range(local)
                assert got.header.cluster_id == name_id("n1,n2,n3")
                promoted = await f.cluster.MemberPromote(
                    rpc_pb2.MemberPromoteRequest(ID=name_id("n4"))
                )
                assert [m.isLearner for m in promoted.members] == [False] * 4
                await eventually(lambda: "n4" in c.nodes[other].status().voters, "n4 votes")
                # Removed (through the follower); gone for good.
                n4 = rpc_pb2.MemberRemoveRequest(ID=name_id("n4"))
                removed = await f.cluster.MemberRemove(n4)
                assert [m.name for m in removed.members] == ["n1", "n2", "n3"]
                await c.stop_node(NodeId("n4"))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await lead.cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=name_id("n4")))
                assert _error(info.value) == _status(errors.MEMBER_NOT_FOUND)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await lead.cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=urls))
                assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert "n4 was removed from the cluster" in info.value.details()

    run(scenario())


def test_member_remove_that_would_lose_the_quorum_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            down, up = (n for n in sorted(c.nodes) if n != leader)
            await c.stop_node(down)
            node = c.nodes[leader]
            await eventually(lambda: not node.removal_keeps_quorum(up), "down seen inactive")
            async with grpc.aio.insecure_channel(grpc_target(c, leader)) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stubs(ch).cluster.MemberRemove(
                        rpc_pb2.MemberRemoveRequest(ID=name_id(up))
                    )
                assert _error(info.value) == _status(errors.UNHEALTHY)
                # Removing the member that is down leaves two of two active: allowed.
                await stubs(ch).cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=name_id(down)))
            assert sorted(node.members) == sorted([leader, up])

    run(scenario())


def test_gateway_member_add_and_remove(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            raft_port, api_port = free_ports(2)
            body = {
                "peerURLs": [f"http://n7@127.0.0.1:{raft_port}", f"http://127.0.0.1:{api_port}"],
                "isLearner": True,
            }
            url = c.url(follower(c, leader))
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{url}/v3/cluster/member/add", json=body) as resp:
                    assert resp.status == 200
                    added = json.loads(await resp.read())
                assert added["member"]["ID"] == str(name_id("n7"))
                assert added["member"]["isLearner"] is True
                member_id = {"ID": added["member"]["ID"]}
                async with http.post(f"{url}/v3/cluster/member/promote", json=member_id) as resp:
                    assert resp.status == 412
                    assert json.loads(await resp.read())["error"] == (
                        errors.LEARNER_NOT_READY.message
                    )
                async with http.post(f"{url}/v3/cluster/member/remove", json=member_id) as resp:
                    assert resp.status == 200
                    assert len(json.loads(await resp.read())["members"]) == 3
                async with http.post(f"{url}/v3/cluster/member/remove", json=member_id) as resp:
                    assert resp.status == 404
                    assert json.loads(await resp.read())["code"] == 5
                # A change forwarded to a node that no longer leads is not forwarded again.
                stale = {"X-Raftkv-Forwarded": leader}
                async with http.post(
                    f"{url}/v3/cluster/member/add", json=body, headers=stale
                ) as resp:
                    assert resp.status == 503
                    assert json.loads(await resp.read())["message"] == errors.NO_LEADER.message

    run(scenario())
