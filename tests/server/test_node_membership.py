"""Membership and leadership transfer through RaftNode, in process (InMemoryHub)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from raftkv.core import membership as core_membership
from raftkv.core.confchange import Membership
from raftkv.core.types import ConfChange, ConfChangeSingle, ConfChangeType, NodeId
from raftkv.replica.kv import Put, encode_command
from raftkv.server.config import Member
from raftkv.server.errors import BadRequest
from tests.cluster.harness import InProcCluster, free_ports, run


def test_transfer_leadership_via_api(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            target = next(n for n in c.nodes if n != leader)
            other = next(n for n in c.nodes if n not in (leader, target))
            # Sent to a follower: forwarded to the leader, which hands over.
            url = f"{c.url(other)}/v1/leader/transfer"
            async with aiohttp.ClientSession() as s, s.post(url, json={"to": target}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["leader"] == target
            assert await c.leader() == target

    run(main())


def test_remove_member_then_writes_continue(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            # Membership changes wait until the leader committed an entry of its term.
            await c.nodes[leader].propose(encode_command(Put(key="a", value=1, time_ms=1)))
            victim = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                async with s.delete(f"{c.url(leader)}/v1/members/{victim}") as r:
                    assert r.status == 200, await r.text()
                await c.stop_node(victim)
                async with s.get(f"{c.url(leader)}/v1/members") as r:
                    body = await r.json()
                    assert victim not in body["voters"] and victim not in body["members"]
                # Two voters left, both up: still a quorum.
                async with s.put(f"{c.url(leader)}/v1/kv/b", json=2) as r:
                    assert r.status == 200, await r.text()
                async with s.post(f"{c.url(leader)}/v1/members", json={"id": "x"}) as r:
                    assert r.status == 400

    run(main())


def test_add_learner_then_promote(tmp_path: Path) -> None:
    """A new node joins as a learner (``existing``), catches up, then becomes a voter."""

    async def main() -> None:
        async with InProcCluster(tmp_path, snapshot_entries=20) as c:
            leader = await c.leader()
            for i in range(50):
                await c.nodes[leader].propose(encode_command(Put(key=f"k{i}", value=i, time_ms=1)))
            new = NodeId("n4")
            ports = free_ports(2)
            c.members[new] = Member(("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]))
            body = {
                "id": new,
                "raft_addr": f"127.0.0.1:{ports[0]}",
                "api_addr": f"127.0.0.1:{ports[1]}",
                "learner": True,
            }
            follower = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                # Another member's Raft address: refused before anything is proposed.
                taken = {**body, "raft_addr": c.members[leader].to_json()["raft_addr"]}
                async with s.post(f"{c.url(follower)}/v1/members", json=taken) as r:
                    assert r.status == 400, await r.text()
                    assert (await r.json())["error"] == (
                        f"{leader} has the Raft address {taken['raft_addr']}"
                    )
                # Sent to a follower: forwarded to the leader.
                async with s.post(f"{c.url(follower)}/v1/members", json=body) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["result"]["learners"] == [new]
                # Adding the learner again as a voter would skip promotion's catch-up check.
                async with s.post(
                    f"{c.url(leader)}/v1/members", json={**body, "learner": False}
                ) as r:
                    assert r.status == 400, await r.text()
                    assert "promote" in (await r.json())["error"]
                # Not a learner: promotion is refused.
                async with s.post(f"{c.url(leader)}/v1/members/{follower}/promote") as r:
                    assert r.status == 400, await r.text()
                # The learner is down, so far behind: promotion must wait.
                async with s.post(f"{c.url(leader)}/v1/members/{new}/promote") as r:
                    assert r.status == 409, await r.text()
                    assert "not caught up" in (await r.json())["error"]
                await c.start_node(new, state="existing")
                joiner = c.nodes[new]
                # It never campaigns: no membership until the leader's snapshot/log.
                assert joiner.status().voters == ()
                last = c.nodes[leader].status().last_index
                await joiner.wait_applied(last, timeout=5)
                installed = joiner.metrics.registry.get_sample_value(
                    "raftkv_snapshots_installed_total", {"node": new}
                )
                assert installed is not None and installed >= 1
                st = joiner.status()
                assert new in st.learners and new not in st.voters
                assert st.role == "follower" and st.leader == leader
                async with s.get(f"{c.url(new)}/v1/kv/k49?consistency=stale") as r:
                    assert (await r.json())["value"] == 49
                async with s.post(f"{c.url(new)}/v1/members/{new}/promote") as r:
                    assert r.status == 200, await r.text()
                    result = (await r.json())["result"]
                    assert new in result["voters"] and result["learners"] == []
                async with s.get(f"{c.url(leader)}/v1/members") as r:
                    members = await r.json()
                assert sorted(members["voters"]) == ["n1", "n2", "n3", "n4"]
                assert members["members"][new]["api_addr"] == f"127.0.0.1:{ports[1]}"
            # Four voters, quorum 3: with one founder down, the new voter counts.
            await c.stop_node(next(n for n in c.nodes if n not in (leader, new)))
            await c.nodes[leader].propose(encode_command(Put(key="after", value=1, time_ms=1)))
            await joiner.wait_applied(c.nodes[leader].applied_index, timeout=5)
            assert joiner.state_machine.read("after").value == 1  # type: ignore[attr-defined]

    run(main())


def test_restart_ignores_initial_cluster(tmp_path: Path) -> None:
    """A non-empty data dir restarts from its log; the founding peers are not re-read."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            await c.nodes[leader].propose(encode_command(Put(key="a", value=1, time_ms=1)))
            victim = next(n for n in c.nodes if n != leader)
            url = f"{c.url(leader)}/v1/members/{victim}"
            async with aiohttp.ClientSession() as s, s.delete(url) as r:
                assert r.status == 200, await r.text()
            other = next(n for n in c.nodes if n not in (leader, victim))
            await c.stop_node(victim)
            # Restart `other` with the stale three-node --initial-cluster (and even
            # "existing"): its membership still comes from the log.
            await c.stop_node(other)
            await c.start_node(other, state="existing")
            restarted = c.nodes[other]
            await restarted.wait_applied(c.nodes[leader].applied_index, timeout=5)
            assert sorted(restarted.status().voters) == sorted([leader, other])
            assert restarted.state_machine.read("a").value == 1  # type: ignore[attr-defined]

    run(main())


def _lenient_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the next configuration change pass the leader's check when proposed.

    The core checks a change twice with the same pure function: when proposing
    (against the membership then) and when applying it. A change that passes
    the first and fails the second takes a proposer that did not check (an
    older version) or a membership that changed in between; here the first
    check is skipped once, and every later call (the applying ones) is real.
    """
    real = core_membership.next_membership
    calls: list[ConfChange] = []

    def check(membership: Membership, cc: ConfChange) -> Membership:
        calls.append(cc)
        return membership if len(calls) == 1 else real(membership, cc)

    monkeypatch.setattr(core_membership, "next_membership", check)


def test_change_refused_when_applied_is_an_error_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed but not applicable: every replica ignores it -- core configuration,
    address book and removed ids alike -- and its proposer gets an error, not 200."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            node = c.nodes[leader]
            await node.propose(encode_command(Put(key="a", value=1, time_ms=1)))
            ports = free_ports(2)
            fresh = Member(("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]))
            # Removes every voter (refused by the core) and adds a learner with an address.
            removals = tuple(
                ConfChangeSingle(ConfChangeType.REMOVE_NODE, n) for n in sorted(c.nodes)
            )
            cc = ConfChange(
                changes=(*removals, ConfChangeSingle(ConfChangeType.ADD_LEARNER, NodeId("n9"))),
                context=json.dumps({"n9": fresh.to_json()}).encode(),
            )
            _lenient_once(monkeypatch)
            with pytest.raises(BadRequest, match="refused when applied: removing every voter"):
                await node._admin.propose_conf_change(cc)
            index = node.applied_index
            voters = sorted(c.nodes)
            for n in c.nodes.values():
                await n.wait_applied(index, timeout=5)
                assert n._raw is not None
                core = n._raw.status().conf_state
                assert sorted(core.voters) == voters and core.learners == (), n.node_id
                assert sorted(n.members) == voters and n.removed == {}, n.node_id
                saved = json.loads((tmp_path / n.node_id / "members.json").read_text())
                assert sorted(saved["members"]) == voters
            # The core is not left waiting for it: the next change is accepted.
            result = await node.add_member(NodeId("n9"), fresh, learner=True)
            assert result["learners"] == ["n9"]  # type: ignore[index]

    run(main())


def test_change_refused_when_applied_answers_400_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path, n=1) as c:
            leader = await c.leader()
            await c.nodes[leader].propose(encode_command(Put(key="a", value=1, time_ms=1)))
            _lenient_once(monkeypatch)
            async with aiohttp.ClientSession() as s:
                # Removing the only voter: refused by the core when applied.
                async with s.delete(f"{c.url(leader)}/v1/members/{leader}") as r:
                    assert r.status == 400, await r.text()
                    error = (await r.json())["error"]
                assert error.startswith("membership change refused when applied"), error
                async with s.get(f"{c.url(leader)}/v1/members") as r:
                    listed = await r.json()
                assert listed["voters"] == [leader] and listed["removed"] == []
                assert list(listed["members"]) == [leader]

    run(main())
