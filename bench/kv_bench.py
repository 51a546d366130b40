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

Usage: python bench/kv_bench.py [--duration 10] [--concurrency 1,16,64] [--ops put,get]
       [--keys 10000] [--value-size 100] [--nodes 3] [--data-dir DIR] [--no-fsync]

The data dir must be on the disk you care about (tmpfs makes fsync free); the
client runs in this one process, so on a small machine it shares the CPUs with
the nodes. Not run by tests.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "kv_bench.jsonl"


# --------------------------------------------------------------------------- cluster


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Cluster:
    """N ``raftkv serve`` processes on loopback."""

    root: Path
    nodes: int
    fsync: bool
    heartbeat_ms: int
    election_ms: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        ports = _free_ports(2 * self.nodes)
        ids = [f"n{i + 1}" for i in range(self.nodes)]
        raft = {n: f"127.0.0.1:{ports[2 * i]}" for i, n in enumerate(ids)}
        self.api = {n: f"127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(ids)}
        spec = ",".join(f"{n}={raft[n]}/{self.api[n]}" for n in ids)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for n in ids:
            cmd = [
                sys.executable, "-m", "raftkv.cli", "serve",
                "--id", n,
                "--data-dir", str(self.root / n),
                "--raft-addr", raft[n],
                "--api-addr", self.api[n],
                "--initial-cluster", spec,
                "--heartbeat-interval-ms", str(self.heartbeat_ms),
                "--election-timeout-ms", str(self.election_ms),
                "--log-level", "WARNING",
            ]  # fmt: skip
            if not self.fsync:
                cmd.append("--no-fsync")
            with open(self.root / f"{n}.log", "ab") as log:
                self.procs[n] = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=REPO)

    def urls(self) -> list[str]:
        return [f"http://{a}" for a in self.api.values()]

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def check_alive(self) -> None:
        dead = [n for n, p in self.procs.items() if p.poll() is not None]
        if dead:
            logs = "\n".join(
                (self.root / f"{n}.log").read_text(errors="replace")[-2000:] for n in dead
            )
            raise SystemExit(f"node(s) {', '.join(dead)} exited:\n{logs}")


async def _wait_ready(session: aiohttp.ClientSession, cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        ok = 0
        for url in cluster.urls():
            try:
                async with session.get(url + "/v1/health/ready") as r:
                    ok += r.status == 200
            except aiohttp.ClientError:
                pass
        if ok == len(cluster.procs):
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the cluster did not become ready")


# --------------------------------------------------------------------------- load


@dataclass
class Point:
    op: str
    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

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
        }


def _key(i: int) -> str:
    return f"key{i:06d}"


async def _preload(session: aiohttp.ClientSession, urls: list[str], keys: int, value: str) -> None:
    batch = 200
    for lo in range(0, keys, batch):
        body = {_key(i): value for i in range(lo, min(keys, lo + batch))}
        for attempt in range(50):
            async with session.post(urls[attempt % len(urls)] + "/v1/kv", json=body) as r:
                await r.read()
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("preload failed")


async def _worker(
    session: aiohttp.ClientSession,
    urls: list[str],
    point: Point,
    keys: int,
    payload: bytes,
    rng: random.Random,
    stop_at: float,
    record_from: float,
) -> None:
    n = rng.randrange(len(urls))
    headers = {"Content-Type": "application/json"}
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            return
        n = (n + 1) % len(urls)
        url = f"{urls[n]}/v1/kv/{_key(rng.randrange(keys))}"
        try:
            if point.op == "put":
                async with session.put(url, data=payload, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            else:
                async with session.get(url) as r:
                    await r.read()
                    ok = r.status in (200, 404)
            status = str(r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, status = False, type(exc).__name__
        done = time.perf_counter()
        if now >= record_from:
            if ok:
                point.latencies.append(done - now)
            else:
                point.errors[status] = point.errors.get(status, 0) + 1
        if not ok:
            await asyncio.sleep(0.01)  # no leader for a moment: do not spin


async def _progress(point: Point, start: float, warmup: float, duration: float) -> None:
    while True:
        elapsed = time.perf_counter() - start
        phase = "warmup" if elapsed < warmup else f"{elapsed - warmup:4.1f}/{duration:g}s"
        sys.stderr.write(
            f"\r  {point.op:>3} c={point.concurrency:<3} {phase:>10}  "
            f"{len(point.latencies):>8} ops  {sum(point.errors.values()):>5} errors"
        )
        sys.stderr.flush()
        await asyncio.sleep(0.5)


async def run_point(
    session: aiohttp.ClientSession,
    urls: list[str],
    op: str,
    concurrency: int,
    *,
    duration: float,
    warmup: float,
    keys: int,
    payload: bytes,
    seed: int,
) -> Point:
    point = Point(op, concurrency)
    start = time.perf_counter()
    record_from = start + warmup
    stop_at = record_from + duration
    ticker = asyncio.create_task(_progress(point, start, warmup, duration))
    workers = [
        _worker(
            session, urls, point, keys, payload, random.Random(seed * 1000 + w), stop_at,
            record_from,
        )
        for w in range(concurrency)
    ]  # fmt: skip
    await asyncio.gather(*workers)
    ticker.cancel()
    point.seconds = time.perf_counter() - record_from
    sys.stderr.write("\r" + " " * 72 + "\r")
    return point


# --------------------------------------------------------------------------- context


def _commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "data_fs": _filesystem(data_dir),
    }


# --------------------------------------------------------------------------- main


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="raftkv-kvbench-", dir=args.data_dir))
    cluster = Cluster(root, args.nodes, not args.no_fsync, args.heartbeat_ms, args.election_ms)
    rows: list[dict[str, Any]] = []
    machine = _machine(root)
    commit = _commit()
    print(
        f"raftkv kv_bench: {args.nodes} nodes, fsync={'off' if args.no_fsync else 'on'}, "
        f"data in {root} ({machine['data_fs']}), {machine['cpus']} CPUs, commit {commit[:12]}",
        file=sys.stderr,
    )
    cluster.start()
    try:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await _wait_ready(session, cluster, 60)
            value = "x" * max(0, args.value_size - 2)  # a JSON string of value_size bytes
            payload = json.dumps(value).encode()
            print(f"preloading {args.keys} keys...", file=sys.stderr)
            await _preload(session, cluster.urls(), args.keys, value)
            for op in args.ops:
                for concurrency in args.concurrency:
                    cluster.check_alive()
                    point = await run_point(
                        session,
                        cluster.urls(),
                        op,
                        concurrency,
                        duration=args.duration,
                        warmup=args.warmup,
                        keys=args.keys,
                        payload=payload,
                        seed=args.seed,
                    )
                    s = point.summary()
                    errors = sum(s["errors"].values())
                    print(
                        f"{op:>4}  c={concurrency:<4} {s['ops_per_s']:>9.1f} ops/s  "
                        f"p50 {s['p50_ms']:>8.2f} ms  p99 {s['p99_ms']:>8.2f} ms"
                        + (f"  errors {s['errors']}" if errors else ""),
                        file=sys.stderr,
                    )
                    rows.append(
                        {
                            "bench": "kv_bench",
                            "date": datetime.datetime.now(datetime.UTC).isoformat(
                                timespec="seconds"
                            ),
                            "commit": commit,
                            "machine": machine,
                            "nodes": args.nodes,
                            "fsync": not args.no_fsync,
                            "keys": args.keys,
                            "value_bytes": len(payload),
                            "heartbeat_ms": args.heartbeat_ms,
                            "election_ms": args.election_ms,
                            "warmup_s": args.warmup,
                            **s,
                        }
                    )
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first")
    parser.add_argument("--concurrency", type=_csv_ints, default=[1, 16, 64])
    parser.add_argument(
        "--ops",
        type=lambda t: [o.strip() for o in t.split(",") if o.strip()],
        default=["put", "get"],
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--value-size", type=int, default=100, help="bytes of JSON per value")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--heartbeat-ms", type=int, default=100)
    parser.add_argument("--election-ms", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--no-fsync", action="store_true", help="UNSAFE mode, for comparison")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and node logs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON lines appended here")
    parser.add_argument("--no-record", action="store_true", help="do not append results")
    args = parser.parse_args()
    if any(op not in ("put", "get") for op in args.ops):
        parser.error("--ops takes put and/or get")
    rows = asyncio.run(amain(args))
    print()
    print(f"{'op':<4} {'conc':>5} {'ops/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for r in rows:
        print(
            f"{r['op']:<4} {r['concurrency']:>5} {r['ops_per_s']:>10.1f} "
            f"{r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {sum(r['errors'].values()):>7}"
        )
    if not args.no_record:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        print(f"appended {len(rows)} rows to {args.results}")


if __name__ == "__main__":
    main()
