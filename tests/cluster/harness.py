"""Helpers that run raftkv nodes for tests: in-process (InMemoryHub) and as real processes.

Rule: every helper cleans up what it started (tasks, sockets, processes), so
tests pass under ``filterwarnings = error``. Ports are free loopback ports
picked at random by the OS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.core.types import NodeId
from raftkv.launch import (
    InitialClusterState,
    LocalCluster,
    ServeOptions,
    child_env,
    loopback_members,
    raftkv_argv,
    spawn,
    stop_processes,
)
from raftkv.launch import (
    free_ports as free_ports,  # re-exported: the tests import it from here
)
from raftkv.limits import HostPort
from raftkv.replica.kv import Put, encode_command
from raftkv.server.config import Member, ServerConfig
from raftkv.server.http.server import ApiServer
from raftkv.server.node import RaftNode
from raftkv.transport.base import InMemoryHub

REPO_ROOT = Path(__file__).resolve().parents[2]


def member_map(n: int) -> dict[NodeId, Member]:
    """``n1`` .. ``nN`` on free loopback ports."""
    return loopback_members(n)


# --------------------------------------------------------------------------- in-process


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds (polled every 10 ms); fail naming ``what``.

    For effects a node completes in the background, such as a snapshot it
    writes in its snapshot thread and the log compaction after it.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def run(coro: Any, timeout: float = 60.0) -> Any:
    """Run an in-process cluster test's coroutine, failing it after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def put_cmd(key: str, value: object) -> bytes:
    """An encoded /v1 put, as a node proposes it."""
    return encode_command(Put(key=key, value=value, time_ms=1))  # type: ignore[arg-type]


@dataclass
class InProcCluster:
    """N nodes in one event loop over an :class:`InMemoryHub`, each with its HTTP API."""

    data_dir: Path
    n: int = 3
    heartbeat_ms: int = 20
    election_ms: int = 200
    snapshot_entries: int = 10000
    hub: InMemoryHub = field(default_factory=InMemoryHub)
    members: dict[NodeId, Member] = field(default_factory=dict)
    nodes: dict[NodeId, RaftNode] = field(default_factory=dict)
    apis: dict[NodeId, ApiServer] = field(default_factory=dict)

    def config(self, node_id: NodeId, state: str = "new") -> ServerConfig:
        m = self.members[node_id]
        return ServerConfig(
            node_id=node_id,
            data_dir=str(self.data_dir / node_id),
            raft_addr=m.raft,
            api_addr=m.api,
            initial_cluster=dict(self.members),
            initial_cluster_state=state,
            heartbeat_interval_ms=self.heartbeat_ms,
            election_timeout_ms=self.election_ms,
            fsync=False,
            request_timeout_s=2.0,
            snapshot_entries=self.snapshot_entries,
        )

    async def __aenter__(self) -> InProcCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.members = member_map(self.n)
        for node_id in self.members:
            await self.start_node(node_id)

    async def start_node(self, node_id: NodeId, state: str = "new") -> None:
        cfg = self.config(node_id, state)
        node = RaftNode(cfg, hub=self.hub)
        await node.start()
        api = ApiServer(node, cfg)
        await api.start()
        self.nodes[node_id] = node
        self.apis[node_id] = api

    async def stop_node(self, node_id: NodeId) -> None:
        node = self.nodes.pop(node_id)
        api = self.apis.pop(node_id)
        await node.stop(transfer=False)
        await api.stop()

    async def stop(self) -> None:
        for node_id in list(self.nodes):
            await self.stop_node(node_id)

    def url(self, node_id: NodeId) -> str:
        return self.members[node_id].api_url()

    async def leader(self, timeout: float = 5.0) -> NodeId:
        """The leader all running nodes agree on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = {n.leader for n in self.nodes.values()}
            leader = next(iter(leaders))
            if len(leaders) == 1 and leader is not None and self.nodes[leader].is_leader:
                return leader
            await asyncio.sleep(0.02)
        raise AssertionError(f"no leader agreed on: {[n.leader for n in self.nodes.values()]}")


# --------------------------------------------------------------------------- real processes


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """One blocking request; returns (status, decoded JSON or text); status 0 if unreachable."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        status = exc.code
        exc.close()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode("utf-8", "replace")


@dataclass
class ProcCluster:
    """N ``raftkv serve`` subprocesses on loopback."""

    data_dir: Path
    n: int = 3
    heartbeat_ms: int = 50
    election_ms: int = 500
    fsync: bool = True
    snapshot_entries: int | None = None
    extra_args: list[str] = field(default_factory=list)
    members: dict[NodeId, Member] = field(default_factory=dict)
    grpc: dict[NodeId, HostPort] = field(default_factory=dict)
    """Nodes that serve the etcd gRPC API, and where."""
    procs: dict[NodeId, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.members:
            self.members = member_map(self.n)

    @property
    def launch(self) -> LocalCluster:
        """These nodes as the launcher runs them (sharing members, grpc and procs)."""
        return LocalCluster(
            self.members,
            self.data_dir,
            ServeOptions(
                heartbeat_interval_ms=self.heartbeat_ms,
                election_timeout_ms=self.election_ms,
                snapshot_entries=self.snapshot_entries,
                fsync=self.fsync,
                log_level="WARNING",
                extra_args=tuple(self.extra_args),
            ),
            grpc=self.grpc,
            log_dir=self.data_dir,
            src=REPO_ROOT,
            cwd=REPO_ROOT,
            procs=self.procs,
        )

    def command(self, node_id: NodeId, state: InitialClusterState = "new") -> list[str]:
        return self.launch.argv(node_id, state)

    def start_node(self, node_id: NodeId, state: InitialClusterState = "new") -> None:
        launch = self.launch
        self.procs[node_id] = spawn(
            self.command(node_id, state),  # subclasses add flags (tests/etcd)
            log_path=launch.log_path(node_id),
            env=child_env(REPO_ROOT),
            cwd=REPO_ROOT,
        )

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for node_id in self.members:
            self.start_node(node_id)

    def kill(self, node_id: NodeId) -> None:
        self.launch.kill(node_id)

    def terminate(self, node_id: NodeId, timeout: float = 10.0) -> int:
        return self.launch.terminate(node_id, timeout)

    def stop(self) -> None:
        for node_id in list(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(node_id)

    def url(self, node_id: NodeId) -> str:
        return self.members[node_id].api_url()

    def status(self, node_id: NodeId) -> dict[str, Any] | None:
        code, payload = http("GET", self.url(node_id) + "/v1/status", timeout=1.0)
        return payload if code == 200 else None

    def wait_leader(self, timeout: float = 30.0, among: list[NodeId] | None = None) -> NodeId:
        """Wait until the running nodes agree on a leader that is among them."""
        ids = among if among is not None else list(self.procs)
        deadline = time.monotonic() + timeout
        last: list[Any] = []
        while time.monotonic() < deadline:
            sts = [self.status(n) for n in ids]
            last = sts
            if all(s is not None for s in sts):
                leaders = {s["leader"] for s in sts if s is not None}
                if len(leaders) == 1:
                    leader = next(iter(leaders))
                    if leader in ids:
                        return NodeId(leader)
            time.sleep(0.05)
        raise AssertionError(f"no agreed leader among {ids}: {last}")

    def metric(self, node_id: NodeId, name: str, **labels: str) -> float:
        """One sample of ``node_id``'s /metrics (0 when absent)."""
        code, text = http("GET", self.url(node_id) + "/metrics", timeout=2.0)
        assert code == 200 and isinstance(text, str), (code, text)
        want = {"node": node_id, **labels}
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            label_text, _, value = line[len(name) + 1 :].rpartition("} ")
            got = dict(part.split("=", 1) for part in label_text.split(",") if "=" in part)
            if {k: v.strip('"') for k, v in got.items()} == want:
                return float(value)
        return 0.0

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``raftkv ARGS --endpoints <every member's API>``."""
        endpoints = ",".join(f"{m.api[0]}:{m.api[1]}" for m in self.members.values())
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        return subprocess.run(
            raftkv_argv(*args, "--endpoints", endpoints),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
        )

    def logs(self) -> str:
        out = []
        for node_id in self.members:
            path = self.data_dir / f"{node_id}.log"
            if path.exists():
                out.append(f"--- {node_id}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(out)


@contextlib.contextmanager
def proc_cluster(data_dir: Path, **kwargs: Any) -> Iterator[ProcCluster]:
    c = ProcCluster(data_dir, **kwargs)
    c.start()
    try:
        yield c
    finally:
        stop_processes(c.procs.values(), grace=10)
