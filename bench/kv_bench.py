"""Benchmark: closed-loop KV load against a local 3-node cluster it starts itself.

Starts ``raftkv serve`` processes (fsync on unless --no-fsync) on free loopback
ports in a temporary data dir, preloads the key space with multi-puts, then
runs each point -- an operation (``put`` of a VALUE_SIZE-byte value to a random
key out of KEYS, or a linearizable ``get`` of a random key) at a concurrency --
for DURATION seconds. Each of CONCURRENCY asyncio workers sends one request,
waits for the answer, sends the next (closed loop); requests are spread over
every node (followers forward writes to the leader and serve linearizable
reads with ReadIndex). Prints ops/s, p50 and p99 latency per point, and appends
one JSON line per point (date, machine, commit, options) to
bench/results/kv_bench.jsonl.

With ``--systems raftkv,etcd`` it then starts a local etcd cluster (the
``etcd`` binary on PATH, e.g. Debian's etcd-server; same node count, same
heartbeat/election settings, fsync on) and drives it with the same load
generator through etcd's v3 JSON gateway (``POST /v3/kv/put`` and
``/v3/kv/range`` with base64 keys and values; ranges are linearizable unless
``--stale``), back to back, so the two are compared in one run. ``--failover N``
also kills the leader with SIGKILL N times per system and measures how long
until the first write succeeds (see :func:`measure_failover`).

``--cpu`` also reads each node's CPU time (user + system, from
``/proc/PID/stat``) and the load generator's at the start and end of each
recorded window, and prints microseconds of CPU per request for each node (its
role then), all nodes together, and the client. On a shared machine this is the
number to compare, as throughput moves with the other load.
``--variant NAME=DIR`` adds a raftkv cluster run from another source tree (e.g.
``git archive HEAD | tar -x -C DIR``), driven interleaved with the others, so a
change is measured before and after back to back.

``--flavor NAME=FLAGS`` adds a raftkv cluster started with more ``raftkv
serve`` flags (e.g. ``nohints=--no-leader-hints``). ``--load wrk`` drives every
point with wrk (``apt-get install wrk``) and bench/kv_wrk.lua instead of the
asyncio client: the same closed loop, keys, values and routes from C event
loops, which leave more of a small machine's CPUs to the servers (a second
opinion; see :func:`run_point_wrk`). ``--load grpc`` drives both etcd and
raftkv through the etcd v3 API (``Put``, ``Range``) with one grpc.aio client,
so the comparison uses the very same client code (raftkv nodes then get
``--grpc-addr``). ``--plot PNG`` draws the run with
bench/plot_kv.py.

Usage: python bench/kv_bench.py [--systems raftkv,etcd] [--duration 10]
       [--concurrency 1,16,64] [--ops put,get] [--keys 10000] [--value-size 100]
       [--nodes 3] [--data-dir DIR] [--no-fsync] [--failover N] [--cpu]
       [--variant NAME=DIR ...] [--flavor NAME=FLAGS ...] [--load asyncio|wrk|grpc]
       [--plot PNG]

The data dir must be on the disk you care about (tmpfs makes fsync free); the
client runs in this one process, so on a small machine it shares the CPUs with
the nodes. Not run by tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from context import cpu_model, git_commit

from raftkv.core.types import NodeId
from raftkv.launch import ServeOptions, child_env, free_ports, serve_argv, spawn, stop_processes
from raftkv.limits import HostPort, format_host_port
from raftkv.replica.membership import Member

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "kv_bench.jsonl"
_JSON_HEADERS = {"Content-Type": "application/json"}


# --------------------------------------------------------------------------- clusters


def _local(port: int) -> HostPort:
    return ("127.0.0.1", port)


def _key(i: int) -> str:
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
            body = {_key(i): obj for i in range(lo, min(keys, lo + batch))}
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
                {"requestPut": {"key": _b64(_key(i).encode()), "value": _b64(value)}}
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


async def _wait_ready(session: aiohttp.ClientSession, cluster: Cluster, timeout: float) -> None:
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


# --------------------------------------------------------------------------- CPU

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``, all its threads (Linux).

    From ``/proc/PID/stat`` (fields 14 and 15, in clock ticks; the command name
    in field 2 may hold spaces and parentheses, so fields are counted after the
    last ``)``).
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _cpu_snapshot(cluster: Cluster) -> dict[str, float]:
    """CPU seconds of every running node of ``cluster``, and of this process as ``client``."""
    snap = {}
    for n, proc in cluster.procs.items():
        with contextlib.suppress(OSError, IndexError, ValueError):
            snap[n] = cpu_seconds(proc.pid)
    t = os.times()
    snap["client"] = t.user + t.system
    return snap


def cpu_per_op(
    before: dict[str, float], after: dict[str, float], ops: int, leader: str | None
) -> dict[str, Any]:
    """Microseconds of CPU per request: each node, the leader, the followers, all nodes, client."""
    if ops <= 0:
        return {}
    us = {n: round((after[n] - before[n]) * 1e6 / ops, 1) for n in before if n in after}
    client = us.pop("client", float("nan"))
    return {
        "by_node": us,
        "leader": us.get(leader) if leader is not None else None,
        "followers": [v for n, v in sorted(us.items()) if n != leader],
        "nodes": round(sum(us.values()), 1),
        "client": client,
    }


def format_cpu(cpu: dict[str, Any]) -> str:
    """One line: ``cpu µs/op: leader 437  followers 273 282  nodes 992  client 427``."""
    if not cpu:
        return "cpu µs/op: no requests"
    leader = f"leader {cpu['leader']:.0f}  " if cpu["leader"] is not None else ""
    followers = " ".join(f"{v:.0f}" for v in cpu["followers"])
    return (
        f"cpu µs/op: {leader}{'followers' if leader else 'nodes'} {followers}  "
        f"nodes {cpu['nodes']:.0f}  client {cpu['client']:.0f}"
    )


# --------------------------------------------------------------------------- load


@dataclass
class Point:
    op: str
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_us_per_op: dict[str, Any] | None = None  # with --cpu: see cpu_per_op

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

        return {
            "op": self.op,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "ops": len(lat),
            "ops_per_s": round(len(lat) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(pct(0.50), 3),
            "p99_ms": round(pct(0.99), 3),
            "max_ms": round(lat[-1] * 1000, 3) if lat else float("nan"),
            "errors": dict(self.errors),
            **({"cpu_us_per_op": self.cpu_us_per_op} if self.cpu_us_per_op is not None else {}),
        }


Send = Callable[[int, str], Awaitable[tuple[bool, str]]]
"""One request of a point's operation to node ``n`` for ``key``: (ok, status)."""


def http_sender(
    session: aiohttp.ClientSession, cluster: Cluster, op: str, payload: bytes, stale: bool
) -> Send:
    """The point's requests over each system's own HTTP API."""
    urls = cluster.urls()
    headers = {"Content-Type": "application/json"}

    async def send(n: int, key: str) -> tuple[bool, str]:
        if op == "put":
            method, url, body = cluster.put_request(urls[n], key, payload)
        else:
            method, url, body = cluster.get_request(urls[n], key, stale)
        try:
            async with session.request(
                method, url, data=body or None, headers=headers if body else None
            ) as r:
                await r.read()
                return cluster.ok(op, r.status), str(r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, type(exc).__name__

    return send


def grpc_sender(stubs: list[Any], op: str, payload: bytes, stale: bool) -> Send:
    """The point's requests through the etcd v3 gRPC API (``Put``, ``Range``)."""
    import grpc  # the etcd v3 API's client (raftkv's runtime dependency)

    from raftkv.etcd.pb import rpc_pb2

    async def send(n: int, key: str) -> tuple[bool, str]:
        try:
            if op == "put":
                await stubs[n].Put(rpc_pb2.PutRequest(key=key.encode(), value=payload), timeout=10)
            else:
                await stubs[n].Range(
                    rpc_pb2.RangeRequest(key=key.encode(), serializable=stale), timeout=10
                )
        except grpc.aio.AioRpcError as exc:
            return False, exc.code().name
        return True, "OK"

    return send


async def _worker(
    send: Send,
    nodes: int,
    point: Point,
    keys: int,
    rng: random.Random,
    stop_at: float,
    record_from: float,
) -> None:
    """A closed loop: one request at a time, to the nodes in turn, until ``stop_at``."""
    n = rng.randrange(nodes)
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            return
        n = (n + 1) % nodes
        ok, status = await send(n, _key(rng.randrange(keys)))
        done = time.perf_counter()
        if now >= record_from:
            if ok:
                point.latencies.append(done - now)
            else:
                point.errors[status] = point.errors.get(status, 0) + 1
        if not ok:
            await asyncio.sleep(0.01)  # no leader for a moment: do not spin


async def _progress(label: str, point: Point, start: float, warmup: float, duration: float) -> None:
    while True:
        elapsed = time.perf_counter() - start
        phase = "warmup" if elapsed < warmup else f"{elapsed - warmup:4.1f}/{duration:g}s"
        sys.stderr.write(
            f"\r  {label:>6} {point.op:>3} c={point.concurrency:<3} {phase:>10}  "
            f"{len(point.latencies):>8} ops  {sum(point.errors.values()):>5} errors"
        )
        sys.stderr.flush()
        await asyncio.sleep(0.5)


async def run_point(
    cluster: Cluster,
    op: str,
    concurrency: int,
    send: Send,
    *,
    duration: float,
    warmup: float,
    keys: int,
    seed: int,
    cpu: bool = False,
) -> Point:
    """``concurrency`` closed loops sending ``send`` requests for ``warmup`` +
    ``duration`` seconds; latencies, errors and (``cpu``) CPU per request of
    the recorded window."""
    point = Point(op, concurrency)
    leader = await _leader_once(cluster) if cpu else None
    start = time.perf_counter()
    record_from = start + warmup
    stop_at = record_from + duration
    ticker = asyncio.create_task(_progress(cluster.name, point, start, warmup, duration))
    nodes = len(cluster.api)
    workers = [
        _worker(send, nodes, point, keys, random.Random(seed * 1000 + w), stop_at, record_from)
        for w in range(concurrency)
    ]
    cpu_before: dict[str, float] = {}

    async def sample_at_record_from() -> None:
        await asyncio.sleep(max(0.0, record_from - time.perf_counter()))
        cpu_before.update(_cpu_snapshot(cluster))

    sampler = asyncio.create_task(sample_at_record_from()) if cpu else None
    await asyncio.gather(*workers)
    ticker.cancel()
    point.seconds = time.perf_counter() - record_from
    if sampler is not None:
        await sampler
        # Requests started in the window, successful or not (all finished by now).
        ops = len(point.latencies) + sum(point.errors.values())
        point.cpu_us_per_op = cpu_per_op(cpu_before, _cpu_snapshot(cluster), ops, leader)
    sys.stderr.write("\r" + " " * 80 + "\r")
    return point


@contextlib.asynccontextmanager
async def grpc_stubs(cluster: Cluster) -> AsyncIterator[list[Any]]:
    """etcd v3 KV stubs, a channel per node (in the order of ``cluster.api``),
    closed on exit: the one grpc.aio client that drives etcd and raftkv alike."""
    import grpc

    from raftkv.etcd.pb import rpc_pb2_grpc

    channels = [grpc.aio.insecure_channel(cluster.grpc[n]) for n in cluster.api]
    try:
        yield [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    finally:
        for ch in channels:
            await ch.close()


WRK_SCRIPT = REPO / "bench" / "kv_wrk.lua"


async def run_point_wrk(
    cluster: Cluster,
    op: str,
    concurrency: int,
    *,
    duration: float,
    warmup: float,
    keys: int,
    payload: bytes,
    seed: int,
    cpu: bool = False,
) -> dict[str, Any]:
    """One point driven by ``wrk`` (bench/kv_wrk.lua) instead of the asyncio generator.

    Same closed loop, keys, values and routes; wrk's C event loops cost far less
    CPU per request than the Python client, so on a small machine this shows
    more of what the servers themselves can do. Thread *i* of wrk holds its
    connections to node *i*, so the connections are spread over every node;
    wrk gives each thread ``concurrency // threads`` connections, so the
    connection count actually used (recorded as ``connections``) is rounded
    down to a multiple of the node count (64 -> 63 with 3 nodes). ``op`` is
    ``put``, ``get`` (linearizable) or ``stale``. Returns a row like
    :meth:`Point.summary`'s; latencies are wrk's (µs resolution).
    """
    threads = max(1, min(concurrency, len(cluster.api)))
    connections = concurrency // threads * threads
    protocol = "etcd" if isinstance(cluster, EtcdCluster) else "raftkv"
    env = dict(os.environ, KV_WRK_NODES=",".join(cluster.api.values()))

    async def wrk(seconds: float) -> str:
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
            "--timeout", "10s", "-s", str(WRK_SCRIPT), cluster.urls()[0], "--",
            protocol, op, str(keys), payload.decode(), str(seed), "statuses",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        start = time.perf_counter()
        wait = asyncio.ensure_future(proc.communicate())
        while not wait.done():
            sys.stderr.write(
                f"\r  {cluster.name:>6} {op:>5} c={connections:<3} wrk "
                f"{time.perf_counter() - start:5.1f}/{seconds:g}s"
            )
            sys.stderr.flush()
            await asyncio.wait([wait], timeout=0.5)
        out, err = wait.result()
        if proc.returncode != 0:
            raise SystemExit(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')}")
        return out.decode()

    leader = await _leader_once(cluster) if cpu else None
    if warmup > 0:
        await wrk(warmup)
    nodes_before = _cpu_snapshot(cluster)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = await wrk(duration)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    nodes_after = _cpu_snapshot(cluster)
    sys.stderr.write("\r" + " " * 80 + "\r")
    res = json.loads(out.strip().splitlines()[-1])
    # wrk counts an answer with status > 399 as a completed request (and a "status"
    # error); the script counts answers by status, judged here as for the asyncio client.
    kind = "put" if op == "put" else "get"
    ok = sum(n for st, n in res["statuses"].items() if cluster.ok(kind, int(st)))
    errors = {st: n for st, n in res["statuses"].items() if not cluster.ok(kind, int(st))}
    errors.update({k: v for k, v in res["errors"].items() if v and k != "status"})
    seconds = res["duration_us"] / 1e6
    row: dict[str, Any] = {
        "op": op,
        "concurrency": concurrency,
        "connections": connections,
        "load": "wrk",
        "seconds": round(seconds, 3),
        "ops": ok,
        "ops_per_s": round(ok / seconds, 1) if seconds else 0.0,
        "p50_ms": round(res["p50_us"] / 1000, 3),
        "p99_ms": round(res["p99_us"] / 1000, 3),
        "max_ms": round(res["max_us"] / 1000, 3),
        "errors": errors,
    }
    if cpu:
        # The client's CPU: wrk's own, from the rusage of this process's waited-for children.
        nodes_before["client"] = children_before.ru_utime + children_before.ru_stime
        nodes_after["client"] = children_after.ru_utime + children_after.ru_stime
        row["cpu_us_per_op"] = cpu_per_op(nodes_before, nodes_after, res["requests"], leader)
    return row


async def _leader_once(cluster: Cluster) -> str | None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        return await cluster.leader(session)


# --------------------------------------------------------------------------- failover


async def _attempt(
    session: aiohttp.ClientSession, cluster: Cluster, n: str, key: str, payload: bytes
) -> float | None:
    """One put to node ``n``; the perf_counter time it succeeded, or None."""
    method, url, body = cluster.put_request(cluster.url(n), key, payload)
    try:
        async with session.request(
            method, url, data=body, headers=_JSON_HEADERS, timeout=aiohttp.ClientTimeout(total=10)
        ) as r:
            await r.read()
            if cluster.ok("put", r.status):
                return time.perf_counter()
    except (aiohttp.ClientError, TimeoutError):
        pass
    return None


async def _first_write(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    nodes: list[str],
    payload: bytes,
    keys: int,
    rng: random.Random,
) -> float:
    """Start a put to each of ``nodes`` every 20 ms; the time the first one succeeded."""
    pending: set[asyncio.Task[float | None]] = set()
    try:
        while True:
            for n in nodes:
                key = _key(rng.randrange(keys))
                pending.add(asyncio.create_task(_attempt(session, cluster, n, key, payload)))
            done, pending = await asyncio.wait(pending, timeout=0.02)
            ok = [r for r in (t.result() for t in done) if r is not None]
            if ok:
                return min(ok)
    finally:
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def measure_failover(
    session: aiohttp.ClientSession,
    cluster: Cluster,
    *,
    payload: bytes,
    keys: int,
    trials: int,
) -> list[float]:
    """Kill the leader with SIGKILL ``trials`` times; seconds until the first write succeeds.

    In each trial the client starts a put on every surviving node every 20 ms
    (each may wait up to 10 s), so neither a request stuck on the dead leader
    nor a client timeout decides the result. The clock starts when the kill
    returns and stops when the first put sent after the kill succeeds. The
    killed node is then restarted from its data dir and the cluster is left to
    become healthy before the next trial.
    """
    results: list[float] = []
    rng = random.Random(7)
    for trial in range(trials):
        await _wait_ready(session, cluster, 60)
        leader = None
        for _ in range(100):
            leader = await cluster.leader(session)
            if leader is not None:
                break
            await asyncio.sleep(0.1)
        if leader is None:
            raise SystemExit(f"{cluster.name}: no leader before failover trial {trial + 1}")
        await asyncio.sleep(0.5)  # a steady heartbeat rhythm, as in production
        survivors = [n for n in cluster.api if n != leader]
        cluster.kill(leader)
        killed_at = time.perf_counter()
        try:
            took = (
                await asyncio.wait_for(
                    _first_write(session, cluster, survivors, payload, keys, rng), 30
                )
                - killed_at
            )
        except TimeoutError:
            took = float("inf")
        results.append(took)
        sys.stderr.write(f"  {cluster.name}: kill -9 {leader} -> first write after {took:.3f} s\n")
        cluster.spawn(leader)
    await _wait_ready(session, cluster, 60)
    return results


# --------------------------------------------------------------------------- context


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts; Linux only)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best, fstype = "", "unknown"
    resolved = str(path.resolve())
    for parts in mounts:
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype


def _machine(data_dir: Path) -> dict[str, Any]:
    return {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "data_fs": _filesystem(data_dir),
    }


# --------------------------------------------------------------------------- main


def _make_cluster(system: str, root: Path, args: argparse.Namespace) -> Cluster:
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


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="raftkv-kvbench-", dir=args.data_dir))
    clusters = [_make_cluster(system, root, args) for system in args.systems]
    if args.load == "grpc":
        for cluster in clusters:
            cluster.serve_grpc = type(cluster) is Cluster  # raftkv (etcd serves gRPC anyway)
    for name, src in args.variant:
        cluster = _make_cluster("raftkv", root, args)
        cluster.name, cluster.root, cluster.src = name, root / name, src
        clusters.append(cluster)
    for name, flags in args.flavor:
        cluster = _make_cluster("raftkv", root, args)
        cluster.name, cluster.root, cluster.extra_args = name, root / name, flags
        clusters.append(cluster)
    rows: list[dict[str, Any]] = []
    machine = _machine(root)
    commit = git_commit()
    print(
        f"kv_bench: {', '.join(args.systems)}; {args.nodes} nodes each, "
        f"fsync={'off' if args.no_fsync else 'on'}, data in {root} ({machine['data_fs']}), "
        f"{machine['cpus']} CPUs, commit {commit[:12]}, load average {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    value = "x" * max(0, args.value_size - 2)  # a JSON string of value_size bytes
    payload = json.dumps(value).encode()
    base = {
        "bench": "kv_bench",
        "commit": commit,
        "machine": machine,
        "nodes": args.nodes,
        "keys": args.keys,
        "value_bytes": len(payload),
        "heartbeat_ms": args.heartbeat_ms,
        "election_ms": args.election_ms,
        "warmup_s": args.warmup,
        "load": args.load,
    }
    try:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        # Health checks, preloads, leader lookups and failover go through their own
        # session, so the load's pooled connections carry nothing but the load.
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            # No pool limit: during a failover, puts to etcd wait up to its request
            # timeout (7 s here); with a bounded pool they would queue behind them.
            aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            ) as control,
        ):
            for cluster in clusters:
                cluster.root.mkdir(parents=True)
                cluster.start()
                await _wait_ready(control, cluster, 60)
                print(f"{cluster.name}: preloading {args.keys} keys...", file=sys.stderr)
                await cluster.preload(control, args.keys, payload)
            # Interleaved: each point runs on every system in turn, so slow drift
            # in the machine's load hits all of them alike.
            for op in args.ops:
                for concurrency in args.concurrency:
                    for rep in range(args.repeat):
                        for cluster in clusters:
                            if not cluster.supports(op) or (
                                args.load == "grpc" and not cluster.grpc
                            ):
                                continue
                            cluster.check_alive()
                            load_before = os.getloadavg()[0]
                            if args.load == "wrk":
                                s = await run_point_wrk(
                                    cluster,
                                    op,
                                    concurrency,
                                    duration=args.duration,
                                    warmup=args.warmup,
                                    keys=args.keys,
                                    payload=payload,
                                    seed=args.seed,
                                    cpu=args.cpu,
                                )
                            else:
                                get_op = "get" if op == "stale" else op
                                stale = op == "stale"
                                point_args = {
                                    "duration": args.duration,
                                    "warmup": args.warmup,
                                    "keys": args.keys,
                                    "seed": args.seed,
                                    "cpu": args.cpu,
                                }
                                if args.load == "grpc":
                                    async with grpc_stubs(cluster) as stubs:
                                        send = grpc_sender(stubs, get_op, payload, stale)
                                        point = await run_point(
                                            cluster, get_op, concurrency, send, **point_args
                                        )
                                else:
                                    send = http_sender(session, cluster, get_op, payload, stale)
                                    point = await run_point(
                                        cluster, get_op, concurrency, send, **point_args
                                    )
                                s = point.summary()
                                s["op"] = op
                            errors = sum(s["errors"].values())
                            print(
                                f"{cluster.name:>6} {op:>5}  c={concurrency:<4} "
                                f"{s['ops_per_s']:>9.1f} ops/s  "
                                f"p50 {s['p50_ms']:>8.2f} ms  p99 {s['p99_ms']:>8.2f} ms"
                                + (f"  errors {s['errors']}" if errors else "")
                                + (
                                    f"\n{'':>6} {format_cpu(s.get('cpu_us_per_op') or {})}"
                                    if args.cpu
                                    else ""
                                ),
                                file=sys.stderr,
                            )
                            rows.append(
                                {**_row_head(base, cluster, load_before), "repeat": rep, **s}
                            )
            if args.failover:
                for cluster in clusters:
                    load_before = os.getloadavg()[0]
                    times = await measure_failover(
                        control, cluster, payload=payload, keys=args.keys, trials=args.failover
                    )
                    rows.append(
                        {
                            **_row_head(base, cluster, load_before),
                            "op": "failover",
                            "trials_s": [round(t, 3) for t in times],
                            "median_s": round(statistics.median(times), 3),
                            "max_s": round(max(times), 3),
                        }
                    )
    finally:
        for cluster in clusters:
            cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _row_head(base: dict[str, Any], cluster: Cluster, load_before: float) -> dict[str, Any]:
    """The fields every result row starts with: the run's, the system's, when, the load."""
    return {
        **base,
        "system": cluster.name,
        "version": cluster.version(),
        "fsync": cluster.fsync,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _csv(text: str) -> list[str]:
    return [o.strip() for o in text.split(",") if o.strip()]


def _variant(text: str) -> tuple[str, Path]:
    name, sep, src = text.partition("=")
    path = Path(src).resolve()
    cli = path / "raftkv" / "cli"  # a package now, a module in older trees
    if not sep or not name or not (cli.with_suffix(".py").is_file() or cli.is_dir()):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR with DIR/raftkv/cli, got {text!r}")
    return name, path


def _flavor(text: str) -> tuple[str, list[str]]:
    name, sep, flags = text.partition("=")
    if not sep or not name or not flags.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=FLAGS, got {text!r}")
    return name, flags.split()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (op, concurrency): each system's ops/s, p50, p99, and raftkv/other ratios.

    With several runs of a point (``--repeat``) each cell shows the run of
    median throughput; with an even number of runs, the lower of the middle
    two (use an odd ``--repeat``).
    """
    systems = list(dict.fromkeys(r["system"] for r in rows))
    points = list(dict.fromkeys((r["op"], r.get("concurrency")) for r in rows))
    runs: dict[tuple[str, str, int | None], list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault((row["system"], row["op"], row.get("concurrency")), []).append(row)
    # With --repeat, each cell shows the run of median throughput (the lower median).
    by: dict[tuple[str, str, int | None], dict[str, Any] | None] = {
        k: sorted(v, key=lambda r: float(r.get("ops_per_s", 0.0)))[(len(v) - 1) // 2]
        for k, v in runs.items()
    }
    head = ["op", "conc"]
    for sy in systems:
        head += [f"{sy} ops/s", f"{sy} p50 ms", f"{sy} p99 ms"]
    others = [sy for sy in systems if sy != "raftkv"]
    if "raftkv" in systems:
        head += [f"ops ratio raftkv/{sy}" for sy in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for op, conc in points:
        if op == "failover":
            cells = ["leader kill -9 → first write", ""]
            for sy in systems:
                r = by.get((sy, op, conc))
                cells += [f"median {r['median_s']:.3f} s" if r else "", "", ""]
            if "raftkv" in systems:
                cells += [""] * len(others)
        else:
            cells = [op, str(conc)]
            for sy in systems:
                r = by.get((sy, op, conc))
                cells += (
                    [f"{r['ops_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.1f}"]
                    if r
                    else ["", "", ""]
                )
            if "raftkv" in systems:
                mine = by.get(("raftkv", op, conc))
                for sy in others:
                    theirs = by.get((sy, op, conc))
                    ok = mine and theirs and theirs["ops_per_s"]
                    cells.append(
                        f"{mine['ops_per_s'] / theirs['ops_per_s']:.2f}×"  # type: ignore[index]
                        if ok
                        else ""
                    )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--systems",
        type=_csv,
        default=["raftkv"],
        help="comma-separated: raftkv, etcd, pysyncobj, noop (each its own cluster, driven in"
        " turn; PySyncObj never fsyncs and runs put and stale only; noop answers 200 {} to"
        " everything: the load generator's ceiling)",
    )
    parser.add_argument("--etcd", default="etcd", help="the etcd binary")
    parser.add_argument(
        "--pysyncobj-python",
        default=sys.executable,
        help="the Python that runs PySyncObj nodes (needs pysyncobj, aiohttp)",
    )
    parser.add_argument(
        "--load",
        choices=("asyncio", "wrk", "grpc"),
        default="asyncio",
        help="load generator: this process's asyncio/aiohttp client (default), wrk"
        " (apt-get install wrk) with bench/kv_wrk.lua, whose C event loops leave more of"
        " the CPUs to the servers, or grpc: the etcd v3 API (Put, Range) through one grpc.aio"
        " client for raftkv (--grpc-addr) and etcd alike",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first")
    parser.add_argument("--concurrency", type=_csv_ints, default=[1, 16, 64])
    parser.add_argument(
        "--ops", type=_csv, default=["put", "get"], help="put, get (linearizable), stale"
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=100, help="bytes of JSON per value")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--heartbeat-ms", type=int, default=100)
    parser.add_argument("--election-ms", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--failover", type=int, default=0, help="leader kill trials per system")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each point per system (table: median)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--no-fsync", action="store_true", help="UNSAFE mode, for comparison")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and node logs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines appended here")
    parser.add_argument("--no-record", action="store_true", help="do not append results")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also print (and record) µs of CPU per request of each node, all nodes, and the"
        " client, from /proc/PID/stat over each recorded window (Linux)",
    )
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run raftkv from the source tree DIR under NAME, interleaved with --systems"
        " (before/after comparisons: git archive HEAD | tar -x -C DIR); repeatable",
    )
    parser.add_argument(
        "--flavor",
        type=_flavor,
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="also run raftkv with more `raftkv serve` flags under NAME, interleaved with"
        " --systems (e.g. nohints=--no-leader-hints); repeatable",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw throughput and p99 against concurrency for this run (bench/plot_kv.py;"
        " needs matplotlib)",
    )
    args = parser.parse_args()
    if any(op not in ("put", "get", "stale") for op in args.ops):
        parser.error("--ops takes put, get and/or stale")
    if args.load == "wrk" and shutil.which("wrk") is None:
        parser.error("--load wrk needs wrk on PATH (apt-get install wrk)")
    rows = asyncio.run(amain(args))
    print()
    print(markdown_table(rows))
    if args.plot is not None:
        from plot_kv import plot  # needs matplotlib: pip install 'raftkv[bench]'

        print(f"plot: {plot(rows, args.plot)}")
    if not args.no_record:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        print(f"appended {len(rows)} rows to {args.results}")


if __name__ == "__main__":
    main()
