"""Real clients: Debian's etcdctl against a 3-node raftkv cluster, side by side with a
real etcd when Debian's etcd-server is installed (``make etcd-tools`` installs both),
and PyPI's etcd3, etcd3gw and aetcd clients: KV, leases, watches, membership,
and etcdctl's lock and elect.

Every etcdctl scenario runs the same command line against both and compares the
outputs, with the ids that differ by nature (cluster and member ids, Raft terms)
blanked; revisions are compared too: both stores start at revision 1.

etcd3 (0.12) ships protobuf modules generated in 2019, which protobuf >= 4 loads
only with its pure-Python implementation, and which define etcd's message names
again: it runs in a subprocess of its own with
``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``. aetcd's generated modules
define etcd's messages under the same names as raftkv's (a protobuf
"duplicate symbol" error in one process): it runs in a subprocess too.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raftkv.core.types import NodeId
from raftkv.launch import InitialClusterState
from raftkv.limits import format_host_port
from tests.cluster.harness import ProcCluster, free_ports

pytestmark = pytest.mark.cluster

ETCDCTL = shutil.which("etcdctl")
ETCD = shutil.which("etcd")
_NEEDS = "needs Debian's etcd-client (etcdctl): `make etcd-tools` installs it as root"


@dataclass
class GrpcCluster(ProcCluster):
    """:class:`ProcCluster` whose nodes serve the etcd gRPC API too."""

    def command(self, node_id: NodeId, state: InitialClusterState = "new") -> list[str]:
        if not self.grpc:
            # Free now, but the members' ports are free too until their nodes
            # bind them: never hand one out twice.
            taken = {port for m in self.members.values() for _, port in (m.raft, m.api)}
            ports = [p for p in free_ports(3 * len(self.members)) if p not in taken]
            self.grpc = {
                n: ("127.0.0.1", p)
                for n, p in zip(self.members, ports[: len(self.members)], strict=True)
            }
        return super().command(node_id, state)

    @property
    def endpoints(self) -> str:
        assert self.grpc
        return ",".join(format_host_port(a) for a in self.grpc.values())


def etcdctl(endpoints: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    """Run etcdctl; its exit status and output (stdout + stderr, client log lines dropped)."""
    assert ETCDCTL is not None
    done = subprocess.run(
        [ETCDCTL, "--endpoints", endpoints, "--command-timeout", "5s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    lines = [
        line for line in (done.stdout + done.stderr).splitlines() if not line.startswith('{"level"')
    ]
    return done.returncode, "\n".join(lines)


_IDS = re.compile(r'"(cluster_id|member_id|raft_term|ClusterID|MemberID|RaftTerm)"( ?: ?)\d+')


def normalize(output: str) -> str:
    """Blank what differs between any two clusters: their ids and Raft terms."""
    return _IDS.sub(r'"\1"\g<2>0', output)


SCENARIO: list[tuple[tuple[str, ...], str | None]] = [
    (("put", "foo", "bar"), None),
    (("put", "foo/a", "1"), None),
    (("put", "foo/b", "2"), None),
    (("put", "foo/c", "3", "-w", "json"), None),
    (("get", "foo", "--prefix"), None),
    (("get", "foo", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--limit", "2"), None),
    (("get", "foo", "--prefix", "--limit", "2", "-w", "json"), None),
    (("get", "foo", "--prefix", "--keys-only"), None),
    (("get", "foo", "--prefix", "--print-value-only", "--order=DESCEND"), None),
    (("get", "foo", "--prefix", "--consistency=s", "-w", "fields"), None),
    (("get", "foo/b", "--from-key"), None),
    (("put", "foo", "baz", "--prev-kv"), None),
    (("get", "foo", "--rev", "2"), None),
    (("get", "foo", "--rev", "99"), None),
    (("txn", "-w", "json"), 'value("foo") = "baz"\n\nput foo qux\nget foo\n\nput foo nope\n\n'),
    (("txn",), 'mod("foo") < "3"\n\nput foo never\n\ndel foo/a\n\n'),
    (("del", "foo/", "--prefix", "--prev-kv"), None),
    (("del", "nothing"), None),
    (("compaction", "3"), None),
    (("get", "foo", "--rev", "2"), None),
    (("compaction", "2"), None),
    (("get", "", "--prefix", "-w", "json"), None),
]


def _cluster(data_dir: Path) -> Iterator[str]:
    c = GrpcCluster(data_dir, fsync=False, heartbeat_ms=50)
    c.start()
    try:
        c.wait_leader()
        yield c.endpoints
    finally:
        c.stop()


@pytest.fixture(scope="module")
def raftkv_endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cluster for etcdctl; the scenario, which compares revisions, writes first."""
    if ETCDCTL is None:
        pytest.skip(_NEEDS)
    yield from _cluster(tmp_path_factory.mktemp("raftkv"))


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _etcd(tmp_path_factory.mktemp("etcd"))


def _etcd(data: Path) -> Iterator[str]:
    """A fresh one-member etcd 3.4 on free ports: its client endpoint (gRPC and
    the JSON gateway)."""
    if ETCDCTL is None:
        pytest.skip(_NEEDS)
    if ETCD is None:
        pytest.skip("needs Debian's etcd-server to compare with: `make etcd-tools` as root")
    client, peer = free_ports(2)
    url = f"http://127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "etcd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            ETCD,
            "--name", "e1",
            "--data-dir", str(data / "e1"),
            "--listen-client-urls", url,
            "--advertise-client-urls", url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"e1={peer_url}",
            "--unsafe-no-fsync",
        ],
        stdout=log,
        stderr=log,
    )  # fmt: skip
    log.close()
    try:
        endpoint = f"127.0.0.1:{client}"
        deadline = time.monotonic() + 30
        while etcdctl(endpoint, "endpoint", "health")[0] != 0:
            assert time.monotonic() < deadline, (data / "etcd.log").read_text()[-2000:]
            time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_etcdctl_scenario_matches_a_real_etcd(raftkv_endpoints: str, etcd_endpoint: str) -> None:
    for args, stdin in SCENARIO:
        ours = etcdctl(raftkv_endpoints, *args, stdin=stdin)
        theirs = etcdctl(etcd_endpoint, *args, stdin=stdin)
        assert (ours[0], normalize(ours[1])) == (theirs[0], normalize(theirs[1])), args


def test_etcdctl_endpoint_status_and_member_list(raftkv_endpoints: str) -> None:
    code, out = etcdctl(raftkv_endpoints, "endpoint", "status", "-w", "json")
    assert code == 0, out
    statuses: list[dict[str, Any]] = json.loads(out)
    assert len(statuses) == 3
    assert {s["Status"]["version"] for s in statuses} == {"3.5.0"}
    leaders = {s["Status"]["leader"] for s in statuses}
    assert len(leaders) == 1
    assert sum(s["Status"]["header"]["member_id"] in leaders for s in statuses) == 1
    code, out = etcdctl(raftkv_endpoints, "member", "list")
    assert code == 0 and len(out.splitlines()) == 3, out
    code, out = etcdctl(raftkv_endpoints, "endpoint", "health")
    assert code == 0 and out.count("is healthy") == 3, out


_LEASE_GRANTED = re.compile(r"lease ([0-9a-f]{16}) granted")
_REMAINING = re.compile(r"remaining\(\d+s\)")
_ATTACHED = re.compile(r"attached keys\(\[([^]]*)\]\)")


def _grant(endpoints: str, ttl: str) -> str:
    code, out = etcdctl(endpoints, "lease", "grant", ttl)
    found = _LEASE_GRANTED.search(out)
    assert code == 0 and found is not None, out
    return found.group(1)


def _without_lease(output: str, lease: str) -> str:
    """``output`` with the lease's id (hex, and decimal as -w json prints it)
    blanked, the remaining seconds of a time-to-live (99 or 100), and its
    attached keys sorted (etcd lists them in Go's random map order)."""
    output = output.replace(lease, "LEASE").replace(str(int(lease, 16)), "LEASE")
    output = _ATTACHED.sub(
        lambda m: "attached keys([" + " ".join(sorted(m.group(1).split())) + "])", output
    )
    return _REMAINING.sub("remaining(Ns)", output)


def test_etcdctl_lease_scenario_matches_a_real_etcd(
    raftkv_endpoints: str, etcd_endpoint: str
) -> None:
    runs = []
    for endpoints in (raftkv_endpoints, etcd_endpoint):
        lease = _grant(endpoints, "100")
        steps = [
            ("put", "--lease", lease, "leased/k", "v"),
            ("put", "--lease", lease, "leased/j", "w"),
            ("lease", "timetolive", lease, "--keys"),
            ("lease", "keep-alive", "--once", lease),
            ("get", "leased/", "--prefix"),
            ("lease", "revoke", lease),
            ("get", "leased/", "--prefix"),
            ("lease", "timetolive", lease),
            ("lease", "timetolive", lease, "-w", "json"),
            ("lease", "keep-alive", "--once", lease),
            ("lease", "revoke", lease),
            ("put", "--lease", lease, "leased/k", "v"),
        ]
        listed = etcdctl(endpoints, "lease", "list")
        assert listed[0] == 0 and lease in listed[1], listed
        outputs = []
        for args in steps:
            code, out = etcdctl(endpoints, *args)
            shown = " ".join(args).replace(lease, "LEASE")
            outputs.append((shown, code, normalize(_without_lease(out, lease))))
        runs.append(outputs)
    ours, theirs = runs
    for mine, etcds in zip(ours, theirs, strict=True):
        assert mine == etcds, mine[0]


def _revision(endpoints: str) -> int:
    code, out = etcdctl(endpoints, "get", "nothing", "-w", "json")
    assert code == 0, out
    revision: int = json.loads(out)["header"]["revision"]
    return revision


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith('{"level"')]


def _wait_lines(path: Path, n: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(_lines(path)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return _lines(path)


def _background(endpoints: str, out: Path, *args: str) -> subprocess.Popen[bytes]:
    assert ETCDCTL is not None
    with out.open("wb") as log:
        return subprocess.Popen(
            [ETCDCTL, "--endpoints", endpoints, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ETCDCTL_API": "3"},
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_etcdctl_watch_matches_a_real_etcd(
    raftkv_endpoints: str, etcd_endpoint: str, tmp_path: Path
) -> None:
    """``watch --prefix --rev R --prev-kv`` from history, then live, then
    ``watch`` from a compacted revision (each store compacted to its current
    revision first): the same lines from both."""
    outputs = []
    for name, endpoints in (("raftkv", raftkv_endpoints), ("etcd", etcd_endpoint)):
        start = _revision(endpoints) + 1
        assert etcdctl(endpoints, "put", "w/a", "1")[0] == 0  # history at start
        out = tmp_path / f"{name}.watch"
        proc = _background(
            endpoints, out, "watch", "--prefix", "w/", "--rev", str(start), "--prev-kv"
        )
        try:
            assert _wait_lines(out, 3)[:3] == ["PUT", "w/a", "1"]
            for args in (("put", "w/b", "2"), ("put", "w/a", "3"), ("put", "x", "no")):
                assert etcdctl(endpoints, *args)[0] == 0
            assert etcdctl(endpoints, "del", "w/", "--prefix")[0] == 0
            lines = _wait_lines(out, 21)
        finally:
            _stop(proc)
        outputs.append(lines)
        assert etcdctl(endpoints, "compaction", str(_revision(endpoints)))[0] == 0
        code, text = etcdctl(endpoints, "watch", "foo", "--rev", "1")
        outputs.append([str(code), text])
    assert outputs[0] == outputs[2]
    # With --prev-kv, the previous key and value come before the new ones.
    assert outputs[0][:11] == ["PUT", "w/a", "1", "PUT", "w/b", "2", "PUT", "w/a", "1", "w/a", "3"]
    assert len(outputs[0]) == 21 and outputs[0][11] == outputs[0][16] == "DELETE"
    assert outputs[1] == outputs[3]
    assert "required revision has been compacted" in outputs[1][1]


def test_etcdctl_lock_excludes_and_hands_over(raftkv_endpoints: str, tmp_path: Path) -> None:
    code, out = etcdctl(raftkv_endpoints, "lock", "mylock", "--", "echo", "held")
    assert (code, out) == (0, "held")
    holder = _background(raftkv_endpoints, tmp_path / "holder", "lock", "mylock")
    waiter = None
    try:
        first = _wait_lines(tmp_path / "holder", 1)
        assert first[0].startswith("mylock/"), first  # the lock's key (then a blank line)
        waiter = _background(
            raftkv_endpoints, tmp_path / "waiter", "lock", "mylock", "--", "echo", "second"
        )
        time.sleep(1.5)
        assert waiter.poll() is None and _lines(tmp_path / "waiter") == []  # still waiting
        _stop(holder)  # etcdctl unlocks on SIGTERM
        assert waiter.wait(timeout=15) == 0
        assert _lines(tmp_path / "waiter") == ["second"]
    finally:
        _stop(holder)
        if waiter is not None:
            _stop(waiter)


def test_etcdctl_elect_campaign_observe_and_hand_over(
    raftkv_endpoints: str, tmp_path: Path
) -> None:
    p1 = _background(raftkv_endpoints, tmp_path / "p1", "elect", "myelection", "p1")
    procs = [p1]
    try:
        first = _wait_lines(tmp_path / "p1", 2)
        assert len(first) == 2 and first[0].startswith("myelection/") and first[1] == "p1"
        procs.append(
            _background(raftkv_endpoints, tmp_path / "listen", "elect", "-l", "myelection")
        )
        assert _wait_lines(tmp_path / "listen", 2) == first
        procs.append(_background(raftkv_endpoints, tmp_path / "p2", "elect", "myelection", "p2"))
        time.sleep(1.0)
        assert _lines(tmp_path / "p2") == []  # p1 leads
        _stop(p1)  # resigns
        second = _wait_lines(tmp_path / "p2", 2)
        assert len(second) == 2 and second[1] == "p2" and second[0] != first[0]
        assert _wait_lines(tmp_path / "listen", 4) == first + second
    finally:
        for proc in procs:
            _stop(proc)


ETCD3_FLOW = """
import sys
import etcd3

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3.client(host=host, port=int(port), timeout=10)
client.put("/app/a", "1")
client.put("/app/b", b"\\xff raw")
value, meta = client.get("/app/a")
assert value == b"1" and meta.version == 1, (value, meta)
assert [(v, m.key) for v, m in client.get_prefix("/app/")] == [
    (b"1", b"/app/a"), (b"\\xff raw", b"/app/b")
]
ok, responses = client.transaction(
    compare=[client.transactions.value("/app/a") == "1"],
    success=[client.transactions.put("/app/a", "2"), client.transactions.get("/app/a")],
    failure=[],
)
assert ok and responses[1][0][0] == b"2", responses
ok, _ = client.transaction(
    compare=[client.transactions.version("/app/a") == 1],
    success=[client.transactions.put("/app/a", "never")],
    failure=[client.transactions.delete("/app/b")],
)
assert not ok and client.get("/app/b")[0] is None
assert client.delete_prefix("/app/").deleted == 1
status = client.status()
assert status.version == "3.5.0" and status.raft_term >= 1
lease = client.lease(30)
client.put("/app/leased", "v", lease=lease)
assert lease.refresh()[0].TTL == 30
assert lease.granted_ttl == 30 and 28 <= lease.remaining_ttl <= 30
assert lease.keys == [b"/app/leased"]
events, cancel = client.watch_prefix("/app/")
client.put("/app/watched", "w")
event = next(events)
assert (type(event).__name__, event.key, event.value) == ("PutEvent", b"/app/watched", b"w")
lease.revoke()
event = next(events)
assert (type(event).__name__, event.key) == ("DeleteEvent", b"/app/leased")
cancel()
with client.lock("mylock", ttl=10) as lock:
    assert lock.is_acquired()
print("etcd3 flow ok")
"""


@pytest.fixture
def fresh_endpoints(tmp_path: Path) -> Iterator[str]:
    yield from _cluster(tmp_path / "raftkv")


def test_etcd3_client_flow(fresh_endpoints: str) -> None:
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    probe = subprocess.run(
        [sys.executable, "-c", "import etcd3"], capture_output=True, env=env, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(f"PyPI's etcd3 does not import here: {probe.stderr.decode()[-300:]}")
    endpoint = fresh_endpoints.split(",")[1]  # a follower as often as not
    done = subprocess.run(
        [sys.executable, "-c", ETCD3_FLOW, endpoint],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0 and "etcd3 flow ok" in done.stdout, done.stderr[-2000:]


# etcdctl prints ids with %16x: a leading zero becomes a space.
_HEX_ID = re.compile(r"\b(Member|cluster) +[0-9a-f]{1,16}\b")
_INITIAL_CLUSTER = re.compile(r'ETCD_INITIAL_CLUSTER="[^"]*"\n')


def _member_id(endpoints: str, name: str) -> str:
    """The hex id etcdctl's ``member list`` shows for the member ``name`` (the
    member etcdctl asks may apply a change a moment after the leader)."""
    deadline = time.monotonic() + 5
    while True:
        code, out = etcdctl(endpoints, "member", "list")
        assert code == 0, out
        for line in out.splitlines():
            fields = [f.strip() for f in line.split(",")]
            if fields[2] == name:
                return fields[0]
        assert time.monotonic() < deadline, f"{name} not in {out}"
        time.sleep(0.1)


def test_etcdctl_member_add_promote_remove_match_a_real_etcd(
    raftkv_endpoints: str, etcd_endpoint: str
) -> None:
    """A learner added with raftkv's peer URL convention (etcd takes the same URLs),
    promoted too early, removed; refusals for unknown ids and voters."""
    raft, api = free_ports(2)
    peers = f"--peer-urls=http://n9@127.0.0.1:{raft},http://127.0.0.1:{api}"
    outputs = {}
    for name, endpoints in (("raftkv", raftkv_endpoints), ("etcd", etcd_endpoint)):
        first = endpoints.split(",")[0]
        voter = etcdctl(first, "endpoint", "status", "-w", "json")[1]
        voter_id = format(json.loads(voter)[0]["Status"]["header"]["member_id"], "x")
        steps = [etcdctl(endpoints, "member", "add", "n9", "--learner", peers)]
        learner = _member_id(endpoints, "") if name == "etcd" else _member_id(endpoints, "n9")
        steps += [
            etcdctl(endpoints, "member", "add", "n9", peers),
            etcdctl(endpoints, "member", "promote", learner),
            etcdctl(endpoints, "member", "promote", voter_id),
            etcdctl(endpoints, "member", "promote", "1234"),
            etcdctl(endpoints, "member", "remove", learner),
            etcdctl(endpoints, "member", "remove", learner),
        ]
        # etcdctl prints the members' peer URLs as the response lists them
        # (etcd: both of the new one's; raftkv: its Raft address).
        if name == "raftkv":
            assert f"n9=http://127.0.0.1:{raft}" in steps[0][1], steps[0][1]
        outputs[name] = [
            (code, _HEX_ID.sub(r"\1 ID", _INITIAL_CLUSTER.sub("", out))) for code, out in steps
        ]
    assert outputs["raftkv"] == outputs["etcd"]


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[GrpcCluster]:
    c = GrpcCluster(tmp_path / "raftkv", fsync=False, heartbeat_ms=50)
    c.start()
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop()


def test_etcd3gw_client_flow(fresh_cluster: GrpcCluster) -> None:
    """PyPI's etcd3gw (the JSON gateway client) through a member's HTTP port."""
    etcd3gw = pytest.importorskip("etcd3gw", reason="PyPI's etcd3gw is not installed")
    host, port = fresh_cluster.members[NodeId("n2")].api
    client = etcd3gw.client(host=host, port=port, timeout=10)
    assert client.put("/app/a", "1") and client.put("/app/b", b"\xff raw")
    assert client.get("/app/a") == [b"1"]
    ((value, meta),) = client.get("/app/a", metadata=True)
    assert value == b"1" and meta["version"] == "1" and meta["key"] == b"/app/a"
    assert [(v, m["key"]) for v, m in client.get_prefix("/app/")] == [
        (b"1", b"/app/a"),
        (b"\xff raw", b"/app/b"),
    ]
    assert client.get("/app/", range_end="/app0", count_only=True) == []
    assert client.replace("/app/a", "1", "2") and not client.replace("/app/a", "1", "3")
    assert client.create("/app/new", "n") and not client.create("/app/new", "again")
    txn = client.transaction(
        {
            "compare": [
                {"key": _b64(b"/app/a"), "result": "EQUAL", "target": "VALUE", "value": _b64(b"2")}
            ],
            "success": [{"request_range": {"key": _b64(b"/app/a")}}],
            "failure": [],
        }
    )
    assert txn["succeeded"] is True
    assert txn["responses"][0]["response_range"]["kvs"][0]["value"] == _b64(b"2")
    assert client.status()["version"] == "3.5.0"
    assert [m["name"] for m in client.members()] == ["n1", "n2", "n3"]
    lease = client.lease(30)
    assert client.put("/app/leased", "v", lease=lease)
    assert 28 <= lease.ttl() <= 30 and lease.refresh() == 30
    assert lease.keys() == [b"/app/leased"]
    events, cancel = client.watch_prefix("/app/")
    try:
        client.put("/app/watched", "w")
        event = next(events)
        # A PUT has no "type": the enum's zero value, omitted (etcd's gateway too).
        assert (event.get("type"), event["kv"]["key"], event["kv"]["value"]) == (
            None,
            b"/app/watched",
            b"w",
        )
        assert lease.revoke()
        event = next(events)
        assert (event["type"], event["kv"]["key"]) == ("DELETE", b"/app/leased")
    finally:
        cancel()
    assert client.delete_prefix("/app/") and client.get_prefix("/app/") == []
    with client.lock("mylock", ttl=10) as lock:
        assert lock.is_acquired()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


AETCD_FLOW = """
import asyncio, sys
import aetcd

async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
        await client.put(b"/app/a", b"1")
        await client.put(b"/app/b", b"\\xff raw")
        got = await client.get(b"/app/a")
        assert got.value == b"1" and got.version == 1, got
        assert [(kv.key, kv.value) for kv in await client.get_prefix(b"/app/")] == [
            (b"/app/a", b"1"), (b"/app/b", b"\\xff raw")
        ]
        ranged = await client.get_range(b"/app/", b"/app0")
        assert ranged.count == 2 and not ranged.more, ranged
        ok, responses = await client.transaction(
            compare=[client.transactions.value(b"/app/a") == b"1"],
            success=[client.transactions.put(b"/app/a", b"2"), client.transactions.get(b"/app/a")],
            failure=[],
        )
        assert ok and responses[1][0][0] == b"2", responses
        ok, _ = await client.transaction(
            compare=[client.transactions.version(b"/app/a") == 1],
            success=[client.transactions.put(b"/app/a", b"never")],
            failure=[client.transactions.delete(b"/app/b")],
        )
        assert not ok and await client.get(b"/app/b") is None
        status = await client.status()
        assert status.version == "3.5.0" and status.raft_term >= 1
        lease = await client.lease(30)
        await client.put(b"/app/leased", b"v", lease=lease)
        assert (await lease.refresh()).TTL == 30
        assert await lease.granted_ttl() == 30 and 28 <= await lease.remaining_ttl() <= 30
        assert await lease.keys() == [b"/app/leased"]
        watch = await client.watch_prefix(b"/app/")
        events = watch.__aiter__()
        await client.put(b"/app/watched", b"w")
        event = await asyncio.wait_for(events.__anext__(), 10)
        assert (event.kind, event.kv.key, event.kv.value) == ("PUT", b"/app/watched", b"w")
        await lease.revoke()
        event = await asyncio.wait_for(events.__anext__(), 10)
        assert (event.kind, event.kv.key) == ("DELETE", b"/app/leased")
        await watch.cancel()
        assert (await client.delete_prefix(b"/app/")).deleted == 2
        async with client.lock(b"mylock", ttl=10) as lock:
            assert await lock.is_acquired()
        members = [m.name async for m in client.members()]
        assert members == ["n1", "n2", "n3"], members
    print("aetcd flow ok")

asyncio.run(main())
"""


def test_aetcd_client_flow(fresh_cluster: GrpcCluster) -> None:
    """PyPI's aetcd (asyncio gRPC). Its generated modules define etcd's messages
    again, which raftkv's own (imported by the test process) already did: it
    runs in a subprocess of its own."""
    probe = subprocess.run([sys.executable, "-c", "import aetcd"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"PyPI's aetcd does not import here: {probe.stderr.decode()[-300:]}")
    endpoint = fresh_cluster.endpoints.split(",")[1]
    done = subprocess.run(
        [sys.executable, "-c", AETCD_FLOW, endpoint],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "aetcd flow ok" in done.stdout, done.stderr[-2000:]


def _b(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (path, body) in order; both stores start at revision 1 and get the same writes.
GATEWAY_SCENARIO: list[tuple[str, dict[str, Any]]] = [
    ("/v3/kv/put", {"key": _b("a"), "value": _b("1")}),
    ("/v3/kv/put", {"key": _b("a"), "value": _b("2"), "prev_kv": True}),
    ("/v3/kv/put", {"key": _b("a/x"), "value": _b("x")}),
    ("/v3/kv/put", {"key": _b("b"), "value": _b("")}),
    ("/v3/kv/range", {"key": _b("a")}),
    ("/v3/kv/range", {"key": _b("a"), "range_end": _b("c"), "limit": 2}),
    ("/v3/kv/range", {"key": _b("a"), "range_end": _b("c"), "count_only": True}),
    ("/v3/kv/range", {"key": _b("a"), "rangeEnd": _b("c"), "keysOnly": True}),
    ("/v3/kv/range", {"key": _b("zzz")}),
    ("/v3/kv/range", {"key": _b("a"), "revision": "2"}),
    ("/v3/kv/range", {"key": _b("a"), "revision": 99}),
    (
        "/v3/kv/txn",
        {
            "compare": [{"key": _b("a"), "result": "EQUAL", "target": "VALUE", "value": _b("2")}],
            "success": [
                {"request_put": {"key": _b("c"), "value": _b("3"), "prev_kv": True}},
                {"request_range": {"key": _b("a")}},
                {"request_delete_range": {"key": _b("b")}},
            ],
            "failure": [{"request_put": {"key": _b("never"), "value": _b("")}}],
        },
    ),
    (
        "/v3/kv/txn",
        {
            "compare": [{"key": _b("a"), "target": "VERSION", "result": "GREATER", "version": 5}],
            "failure": [{"request_range": {"key": _b("a/"), "range_end": _b("a0")}}],
        },
    ),
    ("/v3/kv/deleterange", {"key": _b("a"), "range_end": _b("b"), "prev_kv": True}),
    ("/v3/kv/deleterange", {"key": _b("nothing")}),
    ("/v3/kv/put", {"key": _b("k"), "value": _b("v"), "lease": "99"}),
    ("/v3/lease/grant", {"TTL": 600, "ID": 7777}),
    ("/v3/lease/grant", {"TTL": 600, "ID": 7777}),
    ("/v3/kv/put", {"key": _b("leased"), "value": _b("v"), "lease": 7777}),
    ("/v3/lease/timetolive", {"ID": 7777, "keys": True}),
    ("/v3/kv/lease/timetolive", {"ID": 1}),
    ("/v3/lease/revoke", {"ID": 7777}),
    ("/v3/lease/revoke", {"ID": 7777}),
    ("/v3/kv/compaction", {"revision": 4}),
    ("/v3/kv/range", {"key": _b("a"), "revision": 3}),
    ("/v3/kv/compaction", {"revision": 3}),
    ("/v3/kv/compaction", {"revision": 1000}),
    ("/v3/kv/range", {"key": _b(""), "range_end": _b("\\0")}),
    ("/v3/kv/put", {"value": _b("v")}),
    ("/v3beta/kv/range", {"key": _b("c")}),
]

_GATEWAY_IDS = re.compile(r'"(cluster_id|member_id|raft_term)":"\d+"')
_TTL = re.compile(r'"TTL":"\d+"')


def _post(base: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_gateway_answers_are_byte_compatible_with_etcd(
    fresh_cluster: GrpcCluster, tmp_path: Path
) -> None:
    """The same JSON requests to etcd 3.4's gateway and to raftkv's, from the
    same store state: the same status and body bytes, ids and terms blanked
    (and a time-to-live's remaining seconds, which ticks)."""
    etcd = _etcd(tmp_path / "etcd")
    endpoint = next(etcd)
    try:
        host, port = fresh_cluster.members[NodeId("n2")].api
        ours_base, theirs_base = f"http://{host}:{port}", f"http://{endpoint}"
        for path, body in GATEWAY_SCENARIO:
            ours = _post(ours_base, path, body)
            theirs = _post(theirs_base, path, body)
            normal = [
                (status, _GATEWAY_IDS.sub(r'"\1":"0"', raw.decode()))
                for status, raw in (ours, theirs)
            ]
            if path.endswith("/timetolive"):
                # Remaining seconds: etcd truncates them, raftkv rounds them up.
                normal = [(status, _TTL.sub('"TTL":"N"', text)) for status, text in normal]
            assert normal[0] == normal[1], (path, body)
    finally:
        etcd.close()
