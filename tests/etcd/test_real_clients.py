"""Real clients: Debian's etcdctl against a 3-node raftkv cluster, side by side with a
real etcd when Debian's etcd-server is installed (``make etcd-tools`` installs both),
and PyPI's etcd3 client.

Every etcdctl scenario runs the same command line against both and compares the
outputs, with the ids that differ by nature (cluster and member ids, Raft terms)
blanked; revisions are compared too: both stores start at revision 1.

etcd3 (0.12) ships protobuf modules generated in 2019, which protobuf >= 4 loads
only with its pure-Python implementation, and which define etcd's message names
again: it runs in a subprocess of its own with
``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from raftkv.core.types import NodeId
from tests.cluster.harness import ProcCluster, free_ports

pytestmark = pytest.mark.cluster

ETCDCTL = shutil.which("etcdctl")
ETCD = shutil.which("etcd")
_NEEDS = "needs Debian's etcd-client (etcdctl): `make etcd-tools` installs it as root"


@dataclass
class GrpcCluster(ProcCluster):
    """:class:`ProcCluster` whose nodes serve the etcd gRPC API too."""

    grpc_ports: dict[NodeId, int] | None = None

    def command(self, node_id: NodeId, state: str = "new") -> list[str]:
        if self.grpc_ports is None:
            self.grpc_ports = dict(zip(self.members, free_ports(len(self.members)), strict=True))
        port = self.grpc_ports[node_id]
        return [*super().command(node_id, state), "--grpc-addr", f"127.0.0.1:{port}"]

    @property
    def endpoints(self) -> str:
        assert self.grpc_ports is not None
        return ",".join(f"127.0.0.1:{p}" for p in self.grpc_ports.values())


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
    if ETCDCTL is None:
        pytest.skip(_NEEDS)
    if ETCD is None:
        pytest.skip("needs Debian's etcd-server to compare with: `make etcd-tools` as root")
    data = tmp_path_factory.mktemp("etcd")
    client, peer = free_ports(2)
    url = f"http://127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
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


def test_etcdctl_watch_and_lease_say_they_are_not_served_yet(raftkv_endpoints: str) -> None:
    code, out = etcdctl(raftkv_endpoints, "lease", "grant", "10")
    assert code != 0
    assert "Lease.LeaseGrant is not implemented by raftkv" in out


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
