"""A node's member id: recorded in its data dir, and adopted by a StatefulSet pod
from the cluster (raftkv/server/identity.py), in process.

A removed id is never reused, so a pod that comes back with an empty volume
cannot simply run as its pod name: it adopts the id the operator registered at
its Raft address, waits (live, not ready) until there is one, and never adopts
an id that held data before.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.core.types import NodeId
from raftkv.server.config import Member, ServerConfig
from raftkv.server.errors import ConfigError
from raftkv.server.identity import (
    ID_FILE,
    claim_data_dir,
    find_registered,
    read_node_id,
    resolve_pod_identity,
)
from raftkv.server.node import RaftNode
from raftkv.server.security import client_ssl_context, parse_tokens, read_request_token
from tests.cluster.harness import InProcCluster, free_ports, put_cmd, run
from tests.security.conftest import (
    RO_TOKEN,
    RW_TOKEN,
    TOKENS_TEXT,
    HubCluster,
    Pki,
    pki,  # noqa: F401  (a fixture: the session's certificates, made once)
)


def pod_config(
    c: InProcCluster, pod: str, raft: tuple[str, int], data_dir: Path, **overrides: Any
) -> ServerConfig:
    """Pod ``pod`` joining ``c`` (``existing``), reached at ``raft``, with its own API port."""
    api = ("127.0.0.1", free_ports(1)[0])
    book = {n: m for n, m in c.members.items() if m.raft != raft}
    book[NodeId(pod)] = Member(raft, api)
    return ServerConfig(
        node_id=NodeId(pod),
        data_dir=str(data_dir),
        raft_addr=raft,
        api_addr=api,
        initial_cluster=book,
        initial_cluster_state="existing",
        heartbeat_interval_ms=c.heartbeat_ms,
        election_timeout_ms=c.election_ms,
        fsync=False,
        **overrides,
    )


async def probe(
    cfg: ServerConfig, path: str, ssl_ctx: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    """GET ``path`` on the pod's API port; (0, None) while nothing listens there yet."""
    scheme = "https" if ssl_ctx is not None else "http"
    url = f"{scheme}://127.0.0.1:{cfg.api_addr[1]}{path}"
    try:
        async with aiohttp.ClientSession() as s, s.get(url, ssl=ssl_ctx or True) as r:
            return r.status, await r.json(content_type=None)
    except aiohttp.ClientConnectionError:
        return 0, None


async def wait_reason(
    cfg: ServerConfig, text: str, ssl_ctx: ssl.SSLContext | None = None, timeout: float = 10.0
) -> str:
    """Wait until the waiting pod's readiness answer contains ``text``; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        code, body = await probe(cfg, "/v1/health/ready", ssl_ctx)
        last = (code, body)
        if code == 503 and text in body["error"]:
            return str(body["error"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"readiness never said {text!r}: {last}")


def test_a_joining_pod_waits_then_adopts_the_id_registered_at_its_address(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            await c.nodes[leader].propose(put_cmd("a", 1))
            raft = ("127.0.0.1", free_ports(1)[0])
            data_dir = tmp_path / "pod"
            cfg = pod_config(c, "raftkv-3", raft, data_dir)
            stop = asyncio.Event()
            task = asyncio.create_task(resolve_pod_identity(cfg, initial_cluster_size=3, stop=stop))
            # Live, not ready, and every other route refused while it has no id.
            reason = await wait_reason(cfg, "no member is registered at 127.0.0.1:")
            assert f"127.0.0.1:{raft[1]} yet (asked n1, n2, n3)" in reason, reason
            assert (await probe(cfg, "/v1/health/live"))[0] == 200
            assert (await probe(cfg, "/v1/kv/a"))[0] == 503
            assert not task.done() and read_node_id(data_dir) is None
            # The operator registers a member at the pod's address: the pod adopts it.
            new = NodeId("raftkv-3-2")
            await c.nodes[leader].add_member(new, cfg.initial_cluster[cfg.node_id], learner=True)
            resolved = await asyncio.wait_for(task, 10)
            assert resolved is not None and resolved.node_id == new
            assert sorted(resolved.initial_cluster) == ["n1", "n2", "n3", new]
            assert resolved.initial_cluster[new].raft == raft
            assert resolved.initial_cluster_state == "existing"
            assert read_node_id(data_dir) == new  # recorded before it starts
            # It runs as that member (the waiting site is gone from its port).
            node = RaftNode(resolved, hub=c.hub)
            await node.start()
            try:
                await node.wait_applied(c.nodes[leader].applied_index, timeout=5)
                assert node.state_machine.read("a").value == 1  # type: ignore[attr-defined]
                assert new in node.status().learners
            finally:
                await node.stop(transfer=False)
            # A restart: the recorded id wins over the pod name, without asking anyone.
            again = await resolve_pod_identity(cfg, initial_cluster_size=3)
            assert again is not None and again.node_id == new
            assert "raftkv-3" not in again.initial_cluster

    run(main())


def test_a_wiped_pod_never_adopts_an_id_that_had_data(tmp_path: Path) -> None:
    """The old member is still registered at the pod's address: the pod waits
    until the operator removed it and registered a new id there."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            await c.nodes[leader].propose(put_cmd("a", 1))
            victim = next(n for n in c.nodes if n != leader)
            await c.nodes[victim].wait_applied(c.nodes[leader].applied_index, timeout=5)
            await asyncio.sleep(3 * c.heartbeat_ms / 1000)  # the leader heard it acknowledge
            await c.stop_node(victim)  # its disk is lost
            raft = c.members[victim].raft
            cfg = pod_config(c, "raftkv-7", raft, tmp_path / "pod")
            stop = asyncio.Event()
            task = asyncio.create_task(resolve_pod_identity(cfg, initial_cluster_size=3, stop=stop))
            reason = await wait_reason(cfg, f"{victim} has acknowledged entries up to")
            assert "remove that member and add one under a new id" in reason, reason
            await c.nodes[leader].remove_member(victim)
            await wait_reason(cfg, "no member is registered at")
            assert not task.done()
            member = cfg.initial_cluster[cfg.node_id]
            await c.nodes[leader].add_member(NodeId("fresh"), member, learner=True)
            resolved = await asyncio.wait_for(task, 10)
            assert resolved is not None and resolved.node_id == "fresh"

    run(main())


def test_a_founding_pod_never_adopts_its_own_name(tmp_path: Path) -> None:
    """Pod NAME-1 of a cluster founded by 3 pods had data under its name, even if
    the leader has not heard from that member (a new leader knows no matches)."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            await c.nodes[leader].propose(put_cmd("a", 1))
            raft = ("127.0.0.1", free_ports(1)[0])
            cfg = pod_config(c, "raftkv-1", raft, tmp_path / "pod")
            member = cfg.initial_cluster[cfg.node_id]
            await c.nodes[leader].add_member(NodeId("raftkv-1"), member, learner=True)
            stop = asyncio.Event()
            task = asyncio.create_task(resolve_pod_identity(cfg, initial_cluster_size=3, stop=stop))
            await wait_reason(cfg, "raftkv-1 founded the cluster on this pod, so it had data")
            stop.set()
            assert await asyncio.wait_for(task, 5) is None  # SIGTERM while waiting
            assert read_node_id(tmp_path / "pod") is None
            # A pod above the founding size adopts its own name (a first scale-up).
            adopted = await resolve_pod_identity(cfg, initial_cluster_size=1)
            assert adopted is not None and adopted.node_id == "raftkv-1"

    run(main())


def test_discovery_uses_the_nodes_tls_certificate_and_a_token(
    tmp_path: Path,
    pki: Pki,  # noqa: F811  (the fixture imported above)
) -> None:
    """The peers' APIs require HTTPS with client certificates and bearer tokens."""
    security = {
        "tls_cert_file": pki.node_cert,
        "tls_key_file": pki.node_key,
        "tls_ca_file": pki.ca,
        "tls_api_client_auth": True,
        "client_tokens": parse_tokens(TOKENS_TEXT),
    }
    client_ssl = client_ssl_context(pki.ca, pki.client_cert, pki.client_key)

    async def main() -> None:
        async with HubCluster(tmp_path, overrides=security) as c:
            leader = await c.leader()
            await c.nodes[leader].propose(put_cmd("a", 1))
            raft = ("127.0.0.1", free_ports(1)[0])
            cfg = pod_config(c, "raftkv-3", raft, tmp_path / "pod", **security)
            member = cfg.initial_cluster[cfg.node_id]
            await c.nodes[leader].add_member(NodeId("raftkv-3"), member, learner=True)
            # Without a token every peer answers 401: it waits (its probes on HTTPS).
            stop = asyncio.Event()
            task = asyncio.create_task(resolve_pod_identity(cfg, initial_cluster_size=3, stop=stop))
            reason = await wait_reason(cfg, "no member is registered", client_ssl)
            assert "n1: 401" in reason, reason
            stop.set()
            assert await asyncio.wait_for(task, 5) is None
            resolved = await resolve_pod_identity(cfg, initial_cluster_size=3, token=RO_TOKEN)
            assert resolved is not None and resolved.node_id == "raftkv-3"

    run(main())


def test_the_data_dir_records_its_member_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            assert (tmp_path / leader / ID_FILE).read_text() == f"{leader}\n"
            other = next(n for n in c.nodes if n != leader)
            await c.stop_node(other)
            # Its data dir under another id: refused, one line naming both.
            cfg = c.config(other)
            wrong = ServerConfig(
                **{
                    **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
                    "node_id": NodeId("n9"),
                    "initial_cluster": {**cfg.initial_cluster, NodeId("n9"): c.members[other]},
                }
            )
            with pytest.raises(ConfigError, match=f"belongs to member {other}, not n9"):
                await RaftNode(wrong, hub=c.hub).start()
            # A pod whose data dir holds state but no record (an older version)
            # keeps its pod name, even when told to join.
            (tmp_path / other / ID_FILE).unlink()
            pod = pod_config(c, "raftkv-5", c.members[other].raft, tmp_path / other)
            same = await resolve_pod_identity(pod, initial_cluster_size=3)
            assert same is not None and same.node_id == "raftkv-5"
            claim_data_dir(tmp_path / other, NodeId("raftkv-5"))
            assert read_node_id(tmp_path / other) == "raftkv-5"

    run(main())


def test_find_registered_reads_a_members_answer() -> None:
    answer = {
        "members": {
            "a": {"raft_addr": "Pod-1.peers:7001", "api_addr": "pod-1.peers:8001"},
            "b": {"raft_addr": "pod-2.peers:7001", "api_addr": "pod-2.peers:8001"},
            "c": {"raft_addr": "pod-1.peers:7001", "api_addr": "x:1"},
        },
        "voters": ["b"],
        "learners": ["a"],
        "leader": "b",
        "removed": ["c"],
    }
    found = find_registered(answer, ("pod-1.peers.", 7001))
    assert [f.node_id for f in found] == ["a"] and found[0].leader == "b"
    assert find_registered(answer, ("pod-1.peers", 7002)) == []
    assert find_registered({**answer, "leader": None}, ("pod-1.peers", 7001)) == []
    assert find_registered("garbage", ("pod-1.peers", 7001)) == []


def test_a_pod_asks_with_a_read_only_token_when_it_has_one(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(TOKENS_TEXT)  # rw first, then ro
    assert read_request_token(str(path)) == RO_TOKEN
    path.write_text(f"# only a writer\nrw {RW_TOKEN} writer\n")
    assert read_request_token(str(path)) == RW_TOKEN
    path.write_text("rw short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        read_request_token(str(path))
