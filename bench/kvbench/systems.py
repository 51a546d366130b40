"""The systems a run compares, each a local cluster of its own processes.

Rule: a :class:`Cluster` says how to start, stop, reach and load one system
(raftkv through :mod:`raftkv.launch`; etcd, PySyncObj and the no-op server by
their own command lines); everything else is the same for all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from context import git_commit

from kvbench.record import REPO
from raftkv.core.types import NodeId
from raftkv.launch import ServeOptions, child_env, free_ports, serve_argv, spawn, stop_processes
from raftkv.limits import HostPort, format_host_port
from raftkv.replica.membership import Member


def _local(port: int) -> HostPort:
    return ("127.0.0.1", port)


def key_name(i: int) -> str:
    return f"key{i:06d}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Cluster:
    """N local processes of one system on loopback; subclasses say how to run and talk to them."""

    root: Path
    nodes: int
    fsync: bool
    heartbeat_ms: int
    election_ms: int
    name: str = "raftkv"
    src: Path = REPO  # the source tree the nodes run (--variant)
    extra_args: list[str] = field(default_factory=list)  # more `raftkv serve` flags (--flavor)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: dict[str, str] = field(default_factory=dict)
    cmds: dict[str, list[str]] = field(default_factory=dict)
    serve_grpc: bool = False  # --load grpc: start raftkv nodes with --grpc-addr
    grpc: dict[str, str] = field(default_factory=dict)  # etcd v3 gRPC address per node

    # -- processes

    def start(self) -> None:
        ports = free_ports(3 * self.nodes)
        ids = [NodeId(f"n{i + 1}") for i in range(self.nodes)]
        members = {
            n: Member(_local(ports[3 * i]), _local(ports[3 * i + 1])) for i, n in enumerate(ids)
        }
        self.api = {n: format_host_port(members[n].api) for n in ids}
        if self.serve_grpc:
            self.grpc = {n: f"127.0.0.1:{ports[3 * i + 2]}" for i, n in enumerate(ids)}
        options = ServeOptions(
            heartbeat_interval_ms=self.heartbeat_ms,
            election_timeout_ms=self.election_ms,
            fsync=self.fsync,
            log_level="WARNING",
            extra_args=tuple(self.extra_args),
        )
        for i, n in enumerate(ids):
            self.cmds[n] = serve_argv(
                n,
                data_dir=self.root / n,
                raft_addr=members[n].raft,
                api_addr=members[n].api,
                grpc_addr=_local(ports[3 * i + 2]) if self.serve_grpc else None,
                initial_cluster=members,
                options=options,
            )
            self.spawn(n)

    def spawn(self, n: str) -> None:
        self._popen(n, env=child_env(self.src), cwd=self.src)

    def _popen(self, n: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        """Start node ``n``'s command, its output appended to ``ROOT/n.log``."""
        self.procs[n] = spawn(
            self.cmds[n], log_path=self.root / f"{n}.log", env=env or dict(os.environ), cwd=cwd
        )

    def urls(self) -> list[str]:
        return [f"http://{a}" for a in self.api.values()]

    def url(self, n: str) -> str:
        return f"http://{self.api[n]}"

    def stop(self) -> None:
        stop_processes(self.procs.values(), grace=15)

    def kill(self, n: str) -> None:
        self.procs[n].kill()  # SIGKILL: no handover, no flush
        self.procs[n].wait()

    def check_alive(self, allow: set[str] | frozenset[str] = frozenset()) -> None:
        dead = [n for n, p in self.procs.items() if p.poll() is not None and n not in allow]
        if dead:
            logs = "\n".join(
                (self.root / f"{n}.log").read_text(errors="replace")[-2000:] for n in dead
            )
            raise SystemExit(f"{self.name} node(s) {', '.join(dead)} exited:\n{logs}")

    # -- protocol

    async def healthy(self, session: aiohttp.ClientSession, n: str) -> bool:
        async with session.get(self.url(n) + "/v1/health/ready") as r:
            return r.status == 200

    async def leader(self, session: aiohttp.ClientSession) -> str | None:
        for n in self.api:
            if self.procs[n].poll() is not None:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self.url(n) + "/v1/status") as r:
                    if r.status == 200 and (await r.json())["role"] == "leader":
                        return n
        return None

    def put_request(self, base: str, key: str, value: bytes) -> tuple[str, str, bytes]:
        return "PUT", f"{base}/v1/kv/{key}", value

    def get_request(self, base: str, key: str, stale: bool) -> tuple[str, str, bytes]:
        return "GET", f"{base}/v1/kv/{key}" + ("?consistency=stale" if stale else ""), b""

    def ok(self, op: str, status: int) -> bool:
        return status == 200 or (op == "get" and status == 404)

    async def preload(self, session: aiohttp.ClientSession, keys: int, value: bytes) -> None:
        urls = self.urls()
        obj = json.loads(value)
        batch = max(1, min(200, (256 << 10) // len(value)))  # bodies well under 1 MiB
        for lo in range(0, keys, batch):
            body = {key_name(i): obj for i in range(lo, min(keys, lo + batch))}
            for attempt in range(50):
                async with session.post(urls[attempt % len(urls)] + "/v1/kv", json=body) as r:
                    await r.read()
                    if r.status == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise SystemExit("preload failed")

    def supports(self, op: str) -> bool:
        """Whether this system can serve ``op`` (put, get = linearizable, stale)."""
        return True

    def version(self) -> str:
        v = git_commit()[:12] if self.src == REPO else f"src {self.src}"
        return " ".join([v, *self.extra_args])


@dataclass
class EtcdCluster(Cluster):
    """N ``etcd`` processes (v3 JSON gateway on the client port), fsync always on."""

    name: str = "etcd"
    binary: str = "etcd"

    def start(self) -> None:
        ports = free_ports(2 * self.nodes)
        ids = [f"e{i + 1}" for i in range(self.nodes)]
        peer = {n: f"http://127.0.0.1:{ports[2 * i]}" for i, n in enumerate(ids)}
        self.api = {n: f"127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(ids)}
        self.grpc = dict(self.api)  # etcd serves gRPC and its gateway on one port
        spec = ",".join(f"{n}={peer[n]}" for n in ids)
        for n in ids:
            self.cmds[n] = [
                self.binary,
                "--name", n,
                "--data-dir", str(self.root / n),
                "--listen-peer-urls", peer[n],
                "--initial-advertise-peer-urls", peer[n],
                "--listen-client-urls", f"http://{self.api[n]}",
                "--advertise-client-urls", f"http://{self.api[n]}",
                "--initial-cluster", spec,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"kvbench-{self.root.name}",
                "--heartbeat-interval", str(self.heartbeat_ms),
                "--election-timeout", str(self.election_ms),
                "--logger", "zap",
                "--log-level", "warn",
            ]  # fmt: skip
            self.spawn(n)

    def spawn(self, n: str) -> None:
        self._popen(n)

    async def healthy(self, session: aiohttp.ClientSession, n: str) -> bool:
        # /health is true once this member has a leader and can serve a linearizable read.
        async with session.get(self.url(n) + "/health") as r:
            return r.status == 200 and json.loads(await r.read()).get("health") == "true"

    async def leader(self, session: aiohttp.ClientSession) -> str | None:
        for n in self.api:
            if self.procs[n].poll() is not None:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(self.url(n) + "/v3/maintenance/status", json={}) as r:
                    if r.status != 200:
                        continue
                    st = json.loads(await r.read())
                    if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                        return n
        return None

    def put_request(self, base: str, key: str, value: bytes) -> tuple[str, str, bytes]:
        body = b'{"key":"%s","value":"%s"}' % (_b64(key.encode()).encode(), _b64(value).encode())
        return "POST", f"{base}/v3/kv/put", body

    def get_request(self, base: str, key: str, stale: bool) -> tuple[str, str, bytes]:
        body = {"key": _b64(key.encode())}
        if stale:
            body["serializable"] = True  # type: ignore[assignment]
        return "POST", f"{base}/v3/kv/range", json.dumps(body).encode()

    def ok(self, op: str, status: int) -> bool:
        return status == 200

    async def preload(self, session: aiohttp.ClientSession, keys: int, value: bytes) -> None:
        urls = self.urls()
        # etcd's default --max-txn-ops is 128, and its request limit about 1.5 MiB.
        batch = max(1, min(100, (256 << 10) // len(value)))
        for lo in range(0, keys, batch):
            ops = [
                {"requestPut": {"key": _b64(key_name(i).encode()), "value": _b64(value)}}
                for i in range(lo, min(keys, lo + batch))
            ]
            for attempt in range(50):
                async with session.post(
                    urls[attempt % len(urls)] + "/v3/kv/txn", json={"success": ops}
                ) as r:
                    await r.read()
                    if r.status == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise SystemExit("etcd preload failed")

    def version(self) -> str:
        try:
            out = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return out.splitlines()[0].split(":", 1)[-1].strip() if out else "unknown"


@dataclass
class PySyncObjCluster(Cluster):
    """N bench/pysyncobj_node.py processes: PySyncObj with the same HTTP routes as raftkv.

    PySyncObj never fsyncs its journal and has no linearizable read, so its
    clusters run ``put`` and ``stale`` points only (see that module).
    """

    name: str = "pysyncobj"
    python: str = sys.executable

    def start(self) -> None:
        ports = free_ports(2 * self.nodes)
        ids = [f"p{i + 1}" for i in range(self.nodes)]
        raft = {n: f"127.0.0.1:{ports[2 * i]}" for i, n in enumerate(ids)}
        self.api = {n: f"127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(ids)}
        for n in ids:
            self.cmds[n] = [
                self.python, str(REPO / "bench" / "pysyncobj_node.py"),
                "--self", raft[n],
                "--partners", ",".join(raft[m] for m in ids if m != n),
                "--http", self.api[n],
                "--data-dir", str(self.root / n),
                "--heartbeat-ms", str(self.heartbeat_ms),
                "--election-ms", str(self.election_ms),
            ]  # fmt: skip
            (self.root / n).mkdir(parents=True, exist_ok=True)
            self.spawn(n)

    def spawn(self, n: str) -> None:
        self._popen(n, cwd=REPO)

    def supports(self, op: str) -> bool:
        return op != "get"

    def version(self) -> str:
        return pysyncobj_version(self.python) or "unknown"


@dataclass
class NoopCluster(Cluster):
    """N bench/noop_node.py processes: HTTP servers that answer ``200 {}`` and do nothing.

    Driven like the others, they show the load generator's ceiling on this
    machine, in the same run (the issue's "client ceiling").
    """

    name: str = "noop"

    def start(self) -> None:
        ports = free_ports(self.nodes)
        ids = [f"z{i + 1}" for i in range(self.nodes)]
        self.api = {n: f"127.0.0.1:{ports[i]}" for i, n in enumerate(ids)}
        for i, n in enumerate(ids):
            self.cmds[n] = [
                sys.executable, str(REPO / "bench" / "noop_node.py"), "--http", self.api[n],
            ] + (["--leader"] if i == 0 else [])  # fmt: skip
            self.spawn(n)

    def spawn(self, n: str) -> None:
        self._popen(n, cwd=REPO)

    async def healthy(self, session: aiohttp.ClientSession, n: str) -> bool:
        async with session.get(self.url(n) + "/v1/health/ready") as r:
            return r.status == 200

    async def preload(self, session: aiohttp.ClientSession, keys: int, value: bytes) -> None:
        return None

    def version(self) -> str:
        return "bench/noop_node.py"


def pysyncobj_version(python: str) -> str | None:
    """PySyncObj's version as installed for ``python``, or None if it is not."""
    try:
        out = subprocess.run(
            [python, str(REPO / "bench" / "pysyncobj_node.py"), "--pysyncobj-version"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


async def wait_ready(session: aiohttp.ClientSession, cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        ok = 0
        for n in cluster.api:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                ok += await cluster.healthy(session, n)
        if ok == len(cluster.procs):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the {cluster.name} cluster did not become ready")


def make_cluster(system: str, root: Path, args: argparse.Namespace) -> Cluster:
    if system == "raftkv":
        return Cluster(
            root / "raftkv", args.nodes, not args.no_fsync, args.heartbeat_ms, args.election_ms
        )
    if system == "etcd":
        binary = shutil.which(args.etcd)
        if binary is None:
            raise SystemExit(f"etcd not found ({args.etcd}); install etcd-server or drop it")
        return EtcdCluster(
            root / "etcd", args.nodes, True, args.heartbeat_ms, args.election_ms, binary=binary
        )
    if system == "noop":
        return NoopCluster(root / "noop", args.nodes, False, args.heartbeat_ms, args.election_ms)
    if system == "pysyncobj":
        if pysyncobj_version(args.pysyncobj_python) is None:
            raise SystemExit(
                f"PySyncObj is not installed for {args.pysyncobj_python}"
                " (pip install 'raftkv[bench]' or pip install pysyncobj), or drop it"
            )
        return PySyncObjCluster(
            root / "pysyncobj", args.nodes, False, args.heartbeat_ms, args.election_ms,
            python=args.pysyncobj_python,
        )  # fmt: skip
    raise SystemExit(f"unknown system {system!r}")
