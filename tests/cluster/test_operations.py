"""Real processes: replacing a wiped node, rolling restarts, follower ReadIndex.

These are the procedures of docs/operations.md, run with the exact commands it
gives (``raftkv members remove/add``, ``raftkv serve --initial-cluster-state
existing``, SIGTERM).
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from raftkv.core.types import NodeId
from raftkv.replica.membership import Member
from tests.cluster.harness import ProcCluster, free_ports, http, proc_cluster

pytestmark = pytest.mark.cluster


def put(c: ProcCluster, node: NodeId, key: str, value: object, **kw: Any) -> tuple[int, Any]:
    return http("PUT", f"{c.url(node)}/v1/kv/{key}", value, **kw)


def get(c: ProcCluster, node: NodeId, key: str, stale: bool = False) -> tuple[int, Any]:
    q = "?consistency=stale" if stale else ""
    return http("GET", f"{c.url(node)}/v1/kv/{key}{q}")


def wait_caught_up(c: ProcCluster, node: NodeId, leader: NodeId, timeout: float = 10.0) -> None:
    """Wait until ``node`` applied everything ``leader`` had committed when called."""
    st = c.status(leader)
    assert st is not None
    target = st["commit_index"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = c.status(node)
        if s is not None and s["applied_index"] >= target and s["leader"] is not None:
            return
        time.sleep(0.05)
    raise AssertionError(f"{node} did not catch up to {target}: {c.status(node)}\n{c.logs()}")


def test_wiped_node_rejoins_under_a_new_id_from_a_snapshot(tmp_path: Path) -> None:
    with proc_cluster(tmp_path, election_ms=500, heartbeat_ms=50, snapshot_entries=20) as c:
        leader = c.wait_leader()
        victim = next(n for n in c.members if n != leader)
        others = [n for n in c.members if n != victim]
        expected: dict[str, Any] = {}
        for i in range(60):
            code, body = put(c, others[i % 2], f"a{i}", {"i": i})
            assert code == 200, (code, body)
            expected[f"a{i}"] = {"i": i}
        # The disk of `victim` is lost.
        c.kill(victim)
        shutil.rmtree(tmp_path / victim)
        r = c.cli("members", "remove", victim)
        assert r.returncode == 0, r.stderr
        for i in range(40):
            code, body = put(c, others[i % 2], f"b{i}", [i])
            assert code == 200, (code, body)
            expected[f"b{i}"] = [i]
        # The machine comes back with an empty disk: same addresses, a new id.
        new = NodeId("n4")
        m = c.members.pop(victim)
        c.members[new] = m
        r = c.cli(
            "members",
            "add",
            new,
            "--raft-addr",
            f"{m.raft[0]}:{m.raft[1]}",
            "--api-addr",
            f"{m.api[0]}:{m.api[1]}",
        )
        assert r.returncode == 0, r.stderr
        c.start_node(new, state="existing")
        leader = c.wait_leader(among=others)
        wait_caught_up(c, new, leader)
        # It caught up from the leader's snapshot: the log was compacted long ago.
        assert c.metric(leader, "raftkv_snapshots_total") >= 2
        assert c.metric(new, "raftkv_snapshots_installed_total") >= 1, c.logs()
        for key, value in expected.items():
            code, body = get(c, new, key, stale=True)
            assert code == 200 and body["value"] == value, (key, code, body)
        # It is a voter, serves linearizable reads and takes writes.
        st = c.status(new)
        assert st is not None and new in st["voters"] and victim not in st["voters"], st
        assert put(c, new, "after", 1)[0] == 200
        for key in ("a0", "b39", "after"):
            assert get(c, new, key)[0] == 200
        # It learned from the snapshot that the old id is gone for good.
        code, body = http("GET", f"{c.url(new)}/v1/members")
        assert code == 200 and body["removed"] == [victim], body
        # With `new` in, the cluster survives losing another node.
        c.kill(next(n for n in others if n != c.wait_leader()))
        assert put(c, new, "still", 2, timeout=10)[0] == 200


def test_removed_id_cannot_be_added_again(tmp_path: Path) -> None:
    """etcd's rule: a removed member id is never reused (docs/operations.md)."""
    with proc_cluster(tmp_path, election_ms=500, heartbeat_ms=50) as c:
        leader = c.wait_leader()
        victim = next(n for n in c.members if n != leader)
        follower = next(n for n in c.members if n not in (leader, victim))
        assert put(c, leader, "x", 1)[0] == 200
        c.kill(victim)
        shutil.rmtree(tmp_path / victim)
        r = c.cli("members", "remove", victim)
        assert r.returncode == 0, r.stderr
        st = c.status(leader)
        assert st is not None
        term, last = st["term"], st["last_index"]
        m = c.members[victim]
        addrs = ("--raft-addr", f"{m.raft[0]}:{m.raft[1]}", "--api-addr", f"{m.api[0]}:{m.api[1]}")
        for extra in ((), ("--learner",)):
            r = c.cli("members", "add", victim, *addrs, *extra)
            assert r.returncode == 1, (r.stdout, r.stderr)
            assert r.stderr.startswith(f"error: {victim} was removed from the cluster"), r.stderr
            assert "new id" in r.stderr and "(HTTP 409)" in r.stderr, r.stderr
        for node in (leader, follower):  # on a follower: forwarded to the leader
            code, body = http("POST", f"{c.url(node)}/v1/members", {"id": victim, **m.to_json()})
            assert code == 409, (code, body)
            assert f"{victim} was removed" in body["error"], body
        r = c.cli("members", "list")
        assert r.returncode == 0, r.stderr
        listed = json.loads(r.stdout)
        assert listed["removed"] == [victim] and victim not in listed["voters"], listed
        # Nothing was proposed (unless a new leader appended its empty entry).
        st = c.status(leader)
        assert st is not None and (st["last_index"] == last or st["term"] != term), st


def test_a_member_moves_to_new_addresses(tmp_path: Path) -> None:
    """docs/operations.md "Moving a member": ``raftkv members update`` while it is
    down, then a restart on the new addresses; it catches up over TCP there."""
    with proc_cluster(tmp_path, election_ms=500, heartbeat_ms=50) as c:
        leader = c.wait_leader()
        mover = next(n for n in c.members if n != leader)
        other = next(n for n in c.members if n not in (leader, mover))
        assert put(c, leader, "before", 1)[0] == 200
        wait_caught_up(c, mover, leader)
        c.terminate(mover)
        raft_port, api_port = free_ports(2)
        new = Member(("127.0.0.1", raft_port), ("127.0.0.1", api_port))
        addrs = ("--raft-addr", f"127.0.0.1:{raft_port}", "--api-addr", f"127.0.0.1:{api_port}")
        c.members[mover], old = new, c.members[mover]
        # Another member's Raft address is refused; an unknown id is not found.
        taken = c.members[leader].raft
        r = c.cli("members", "update", mover, "--raft-addr", f"{taken[0]}:{taken[1]}", *addrs[2:])
        assert r.returncode == 1 and f"{leader} has the Raft address" in r.stderr, r.stderr
        r = c.cli("members", "update", "n9", *addrs)
        assert r.returncode == 1 and "(HTTP 404)" in r.stderr, r.stderr
        # Through a follower: forwarded to the leader.
        code, body = http("PUT", f"{c.url(other)}/v1/members/{mover}", new.to_json())
        assert code == 200 and sorted(body["result"]["voters"]) == sorted(c.members), body
        for node in (leader, other):
            code, body = http("GET", f"{c.url(node)}/v1/members")
            assert code == 200 and body["members"][mover] == new.to_json(), (node, body)
        assert put(c, other, "while-down", 2)[0] == 200
        c.start_node(mover)  # on the new addresses, with its old data dir
        wait_caught_up(c, mover, c.wait_leader())
        for key, value in (("before", 1), ("while-down", 2)):
            code, body = get(c, mover, key, stale=True)
            assert code == 200 and body["value"] == value, (key, code, body)
        assert put(c, mover, "after", 3)[0] == 200  # forwarded to the leader from there
        code, body = http("GET", f"{c.url(mover)}/v1/members")
        assert code == 200 and body["members"][mover] == new.to_json(), body
        members_file = json.loads((tmp_path / mover / "members.json").read_text())
        assert members_file["members"][mover] == new.to_json(), members_file
        assert old != new
        # It votes from there: the cluster survives losing the leader.
        c.kill(leader)
        c.wait_leader(among=[mover, other])
        assert put(c, mover, "no-old-leader", 4, timeout=10)[0] == 200


def _writer(
    c: ProcCluster, acked: dict[str, int], stop: threading.Event, errors: list[str]
) -> None:
    """Write w0, w1, ... through every running node; record acknowledged writes."""
    ids = list(c.members)
    i = 0
    while not stop.is_set():
        key = f"w{i}"
        for attempt in range(100):
            node = ids[(i + attempt) % len(ids)]
            if node not in c.procs:
                continue
            code, _ = put(c, node, key, i, headers={"Idempotency-Key": f"w/{i + 1}"}, timeout=3)
            if code == 200:
                acked[key] = i
                break
            time.sleep(0.01)
        else:
            errors.append(key)
        i += 1


def test_rolling_sigterm_hands_leadership_over_before_exit(tmp_path: Path) -> None:
    election_s = 1.0
    with proc_cluster(tmp_path, election_ms=1000, heartbeat_ms=50) as c:
        c.wait_leader()
        acked: dict[str, int] = {}
        errors: list[str] = []
        stop = threading.Event()
        t = threading.Thread(target=_writer, args=(c, acked, stop, errors), daemon=True)
        t.start()
        try:
            for _ in range(3):
                leader = c.wait_leader(among=list(c.members))
                st = c.status(leader)
                assert st is not None
                term = st["term"]
                survivors = [n for n in c.members if n != leader]
                before = {
                    n: c.metric(n, "raftkv_messages_received_total", type="TimeoutNow")
                    for n in survivors
                }
                time.sleep(0.3)  # some writes in flight while the leader stops
                proc = c.procs[leader]
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                new_leader = None
                while time.monotonic() - sent < 5:
                    sts = [c.status(n) for n in survivors]
                    leaders = {s["leader"] for s in sts if s is not None and s["term"] > term}
                    if len(leaders) == 1 and None not in leaders:
                        new_leader = NodeId(next(iter(leaders)))
                        break
                    time.sleep(0.005)
                elected = time.monotonic() - sent
                assert new_leader in survivors, c.logs()
                # Followers wait at least one election timeout after the last
                # heartbeat before campaigning: faster means TimeoutNow did it.
                assert elected < 0.6 * election_s, (elected, c.logs())
                after = c.metric(new_leader, "raftkv_messages_received_total", type="TimeoutNow")
                assert after == before[new_leader] + 1
                assert proc.wait(timeout=2 * election_s + 3) == 0  # graceful exit
                del c.procs[leader]
                c.start_node(leader)
                wait_caught_up(c, leader, new_leader)
        finally:
            stop.set()
            t.join(timeout=20)
        assert not errors, errors
        assert len(acked) > 20
        # No acknowledged write is lost: linearizable reads of every key on every node.
        checks = [(node, key, value) for node in c.members for key, value in acked.items()]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda x: get(c, x[0], x[1]), checks))
        for (node, key, value), (code, body) in zip(checks, got, strict=True):
            assert code == 200 and body["value"] == value, (node, key, code, body)


def test_linearizable_get_on_a_follower_uses_read_index(tmp_path: Path) -> None:
    with proc_cluster(tmp_path, election_ms=500, heartbeat_ms=50) as c:
        leader = c.wait_leader()
        follower = next(n for n in c.members if n != leader)
        for i in range(20):
            # Write through the leader, read at once through the follower: the
            # follower must not answer before it applied the write (§6.4).
            assert put(c, leader, "x", i)[0] == 200
            code, body = get(c, follower, "x")
            assert code == 200 and body["value"] == i, (i, code, body)
        reads = c.metric(follower, "raftkv_reads_total", path="read_index_follower")
        assert reads == 20
        assert c.metric(follower, "raftkv_reads_total", path="forwarded") == 0
        assert c.metric(follower, "raftkv_messages_sent_total", type="ReadIndex") >= 1
        assert c.metric(leader, "raftkv_messages_received_total", type="ReadIndex") >= 1
        # The leader saw no forwarded GETs: it served none of these reads itself.
        assert c.metric(leader, "raftkv_reads_total", path="read_index_leader") == 0
