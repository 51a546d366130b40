"""The load: closed loops of requests (asyncio over HTTP or gRPC, or wrk), one point at a time.

Rule: a point is ``concurrency`` closed loops for ``warmup`` + ``duration``
seconds; only the requests started after the warmup are recorded, and a
point's row has the same fields whichever generator drove it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kvbench.cpu import cpu_per_op, cpu_snapshot
from kvbench.record import REPO
from kvbench.systems import Cluster, EtcdCluster, key_name


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
    nodes: list[int],
    point: Point,
    keys: int,
    rng: random.Random,
    stop_at: float,
    record_from: float,
) -> None:
    """A closed loop: one request at a time, to ``nodes`` in turn, until ``stop_at``."""
    i = rng.randrange(len(nodes))
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            return
        i = (i + 1) % len(nodes)
        ok, status = await send(nodes[i], key_name(rng.randrange(keys)))
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
    to_leader: bool = False,
) -> Point:
    """``concurrency`` closed loops sending ``send`` requests for ``warmup`` +
    ``duration`` seconds; latencies, errors and (``cpu``) CPU per request of
    the recorded window. Requests go to every node in turn, or (``to_leader``)
    all to the node that leads when the point starts."""
    point = Point(op, concurrency)
    leader = await leader_once(cluster) if cpu or to_leader else None
    names = list(cluster.api)
    if to_leader:
        if leader is None:
            raise SystemExit(f"{cluster.name}: no leader to send every request to")
        nodes = [names.index(leader)]
    else:
        nodes = list(range(len(names)))
    start = time.perf_counter()
    record_from = start + warmup
    stop_at = record_from + duration
    ticker = asyncio.create_task(_progress(cluster.name, point, start, warmup, duration))
    workers = [
        _worker(send, nodes, point, keys, random.Random(seed * 1000 + w), stop_at, record_from)
        for w in range(concurrency)
    ]
    cpu_before: dict[str, float] = {}

    async def sample_at_record_from() -> None:
        await asyncio.sleep(max(0.0, record_from - time.perf_counter()))
        cpu_before.update(cpu_snapshot(cluster))

    sampler = asyncio.create_task(sample_at_record_from()) if cpu else None
    await asyncio.gather(*workers)
    ticker.cancel()
    point.seconds = time.perf_counter() - record_from
    if sampler is not None:
        await sampler
        # Requests started in the window, successful or not (all finished by now).
        ops = len(point.latencies) + sum(point.errors.values())
        point.cpu_us_per_op = cpu_per_op(cpu_before, cpu_snapshot(cluster), ops, leader)
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

    leader = await leader_once(cluster) if cpu else None
    if warmup > 0:
        await wrk(warmup)
    nodes_before = cpu_snapshot(cluster)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = await wrk(duration)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    nodes_after = cpu_snapshot(cluster)
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


async def leader_once(cluster: Cluster) -> str | None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        return await cluster.leader(session)
