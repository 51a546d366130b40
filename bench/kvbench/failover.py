"""Failover: kill -9 the leader, time the first write that succeeds after it."""

from __future__ import annotations

import asyncio
import random
import sys
import time

import aiohttp

from kvbench.systems import Cluster, key_name, wait_ready

_JSON_HEADERS = {"Content-Type": "application/json"}


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
                key = key_name(rng.randrange(keys))
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
        await wait_ready(session, cluster, 60)
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
    await wait_ready(session, cluster, 60)
    return results
