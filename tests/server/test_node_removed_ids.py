"""Removed member ids are never reused (etcd's removed-member store), in process.

A node re-added under an id it had before may have lost its vote in the current
term with its disk and could grant that term a second vote. So every id that
left the configuration is recorded as replicated state (log, snapshots,
``members.json``) and refused: before proposing (409), and when a change that
re-adds one is committed anyway, at apply time, identically on every replica.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import msgpack
import pytest

from raftkv.core.types import ConfChange, ConfChangeSingle, ConfChangeType, NodeId
from raftkv.replica.kv import KVStateMachine
from raftkv.replica.replica import Replica, decode_image
from raftkv.server.config import Member
from raftkv.server.errors import MemberRemoved
from raftkv.server.node import RaftNode
from tests.cluster.harness import InProcCluster, eventually, free_ports, put_cmd, run


def member_body(node_id: str, member: Member, *, learner: bool = False) -> dict[str, object]:
    return {"id": node_id, **member.to_json(), "learner": learner}


async def leader_among(c: InProcCluster, ids: list[NodeId], timeout: float = 5.0) -> NodeId:
    """The leader the nodes ``ids`` agree on (the others may know none)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        leaders = {c.nodes[n].leader for n in ids}
        leader = next(iter(leaders))
        if len(leaders) == 1 and leader in ids and c.nodes[leader].is_leader:
            return leader
        await asyncio.sleep(0.02)
    raise AssertionError(f"no leader agreed on among {ids}")


async def remove_one(c: InProcCluster) -> tuple[NodeId, NodeId, int]:
    """Remove a follower (stopped first, as a node whose disk was lost would be).

    Returns (leader, removed id, index of the removal).
    """
    leader = await c.leader()
    # Membership changes wait until the leader committed an entry of its term.
    await c.nodes[leader].propose(put_cmd("a", 1))
    victim = next(n for n in c.nodes if n != leader)
    await c.stop_node(victim)
    result = await c.nodes[leader].remove_member(victim)
    assert victim not in result["voters"]  # type: ignore[index]
    index = c.nodes[leader].removed[victim]
    for node in c.nodes.values():
        await node.wait_applied(index, timeout=5)
        assert node.removed == {victim: index}
    return leader, victim, index


def test_removed_id_is_refused_before_proposing(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader, victim, _ = await remove_one(c)
            node = c.nodes[leader]
            follower = next(n for n in c.nodes if n != leader)
            last = node.status().last_index
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{c.url(leader)}/v1/members") as r:
                    listed = await r.json()
                assert listed["removed"] == [victim]
                assert victim not in listed["voters"] and victim not in listed["members"]
                # On the leader, and on a follower (forwarded): voter and learner.
                for at in (leader, follower):
                    for learner in (False, True):
                        body = member_body(victim, c.members[victim], learner=learner)
                        async with s.post(f"{c.url(at)}/v1/members", json=body) as r:
                            assert r.status == 409, await r.text()
                            error = (await r.json())["error"]
                        assert f"{victim} was removed" in error and "new id" in error
            with pytest.raises(MemberRemoved):
                await node.promote_member(victim)
            # Refused before proposing: the leader's log did not grow.
            assert node.status().last_index == last
            # A new id is accepted.
            ports = free_ports(2)
            fresh = Member(("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]))
            result = await node.add_member(NodeId("n9"), fresh, learner=True)
            assert result["learners"] == ["n9"]  # type: ignore[index]

    run(main())


def test_removed_id_committed_anyway_is_refused_on_every_replica(tmp_path: Path) -> None:
    """A re-add that bypasses the check (an older leader; here injected straight
    into the core) commits, and every replica refuses it the same way when it
    applies it -- also when a restarted node replays its whole log."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader, victim, removed_at = await remove_one(c)
            node = c.nodes[leader]
            context = json.dumps({victim: c.members[victim].to_json()}).encode()
            cc = ConfChange(
                changes=(ConfChangeSingle(ConfChangeType.ADD_VOTER, victim),), context=context
            )
            # Admin.propose_conf_change goes straight to the core's propose_conf_change.
            with pytest.raises(MemberRemoved):
                await node._admin.propose_conf_change(cc)
            injected = node.applied_index
            assert injected > removed_at
            voters = sorted(c.nodes)
            for n in c.nodes.values():
                await n.wait_applied(injected, timeout=5)
                assert n._raw is not None
                core = n._raw.status().conf_state
                assert sorted(core.voters) == voters and core.learners == (), n.node_id
                assert sorted(n.status().voters) == voters
                assert victim not in n.members
                assert n.removed == {victim: removed_at}
            # The core is not left waiting for that change: the next one is accepted.
            ports = free_ports(2)
            fresh = Member(("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]))
            result = await node.add_member(NodeId("n9"), fresh, learner=True)
            assert result["learners"] == ["n9"]  # type: ignore[index]
            # A restarted follower replays its log from entry 1 (the founding
            # membership, which includes `victim`) knowing of the removal from
            # members.json: the founding entry still applies, the re-add does not.
            follower = next(n for n in c.nodes if n != leader)
            await c.stop_node(follower)
            await c.start_node(follower)
            restarted = c.nodes[follower]
            await restarted.wait_applied(node.applied_index, timeout=5)
            assert restarted._raw is not None
            core = restarted._raw.status().conf_state
            assert sorted(core.voters) == voters and core.learners == ("n9",)
            assert restarted.removed == {victim: removed_at}

    run(main())


def test_removed_ids_survive_a_restart_in_members_json(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader, victim, removed_at = await remove_one(c)
            for node_id in c.nodes:
                saved = json.loads((tmp_path / node_id / "members.json").read_text())
                assert saved["removed"] == {victim: removed_at}
                # A fresh node object on the same data dir reads it back.
                reread = RaftNode(c.config(node_id), hub=c.hub)
                reread._members_file.load(restored=False)
                assert reread.removed == {victim: removed_at}
                assert sorted(reread.members) == sorted(c.nodes)
            # The restarted node refuses the id once it leads.
            await c.stop_node(leader)
            await c.start_node(leader)
            new_leader = await c.leader()
            with pytest.raises(MemberRemoved):
                await c.nodes[new_leader].add_member(victim, c.members[victim], learner=False)

    run(main())


def test_members_json_without_removed_ids_still_loads(tmp_path: Path) -> None:
    """A data dir written before removed ids were recorded."""
    c = InProcCluster(tmp_path)
    c.members = {
        NodeId("n1"): Member(("127.0.0.1", 7001), ("127.0.0.1", 8001)),
        NodeId("n2"): Member(("127.0.0.1", 7002), ("127.0.0.1", 8002)),
    }
    data_dir = tmp_path / "n1"
    data_dir.mkdir()
    old = {"members": {"n1": c.members[NodeId("n1")].to_json()}}
    (data_dir / "members.json").write_text(json.dumps(old))
    node = RaftNode(c.config(NodeId("n1")))
    node._members_file.load(restored=False)
    assert list(node.members) == ["n1"] and node.removed == {}


def test_snapshot_envelope_carries_removed_ids_and_old_envelopes_still_read() -> None:
    members = {NodeId("n1"): Member(("127.0.0.1", 7001), ("127.0.0.1", 8001))}
    replica = Replica(KVStateMachine(), members=members)
    replica.book.removed[NodeId("n3")] = 7
    data = decode_image(replica.snapshot())
    assert (data.members, data.removed) == (members, {"n3": 7})
    old = msgpack.packb(
        {"v": 1, "members": {"n1": members[NodeId("n1")].to_json()}, "sm": b"sm"},
        use_bin_type=True,
    )
    data = decode_image(old)
    assert (data.members, data.removed, data.sm) == (members, {}, b"sm")
    with pytest.raises(ValueError):
        bad = {"v": 1, "members": {}, "removed": {"n3": "x"}, "sm": b""}
        decode_image(msgpack.packb(bad, use_bin_type=True))


def test_removed_ids_reach_a_node_that_catches_up_by_snapshot(tmp_path: Path) -> None:
    """The removal is compacted away; a new member learns it from the snapshot,
    and so does a node that restarts from its own snapshot."""

    async def main() -> None:
        async with InProcCluster(tmp_path, snapshot_entries=20) as c:
            leader, victim, removed_at = await remove_one(c)
            node = c.nodes[leader]
            for i in range(60):
                await node.propose(put_cmd(f"k{i}", i))
            storage = node._storage
            assert storage is not None
            await eventually(lambda: storage.first_index() > removed_at, "removal compacted")
            new = NodeId("n4")
            ports = free_ports(2)
            c.members[new] = Member(("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]))
            await node.add_member(new, c.members[new], learner=True)
            await c.start_node(new, state="existing")
            joiner = c.nodes[new]
            await joiner.wait_applied(node.applied_index, timeout=10)
            installed = joiner.metrics.registry.get_sample_value(
                "raftkv_snapshots_installed_total", {"node": new}
            )
            assert installed is not None and installed >= 1
            assert joiner._storage is not None and joiner._storage.first_index() > removed_at
            assert joiner.removed == {victim: removed_at}
            with pytest.raises(MemberRemoved):
                await joiner.add_member(victim, c.members[victim], learner=True)
            # A node restarting from its own snapshot (members.json gone) too.
            follower = next(n for n in c.nodes if n not in (leader, new))
            f_node = c.nodes[follower]
            await eventually(lambda: f_node._snapshots.index > removed_at, "follower snapshot")
            await c.stop_node(follower)
            (tmp_path / follower / "members.json").unlink()
            await c.start_node(follower)
            assert c.nodes[follower].removed == {victim: removed_at}

    run(main())


def test_removed_node_back_with_its_old_data_stays_out(tmp_path: Path) -> None:
    """Removed while down, it never applied its removal and still believes it is
    a voter: it must not get back in, nor stop the others from committing."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader, victim, _ = await remove_one(c)
            await c.start_node(victim)  # its old data dir
            back = c.nodes[victim]
            assert back._raw is not None and victim in back._raw.status().conf_state.voters
            for i in range(10):
                await asyncio.sleep(c.election_ms / 1000 / 2)
                leader = await leader_among(c, [n for n in c.nodes if n != victim])
                await c.nodes[leader].propose(put_cmd(f"after{i}", i))
            for node_id, node in c.nodes.items():
                if node_id != victim:
                    assert victim not in node.status().voters
                    assert node.removed.keys() == {victim}
            assert not back.is_leader

    run(main())
