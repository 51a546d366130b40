"""Benchmark: restart time and memory of a node holding many keys.

Starts a 3-node raftkv cluster (default settings, fsync on), loads KEYS keys
with multi-puts of BATCH pairs, then writes single puts until every node has
taken a snapshot (``--snapshot-entries``, default the server's 100,000), so the
state machine image holds every key and the log is short. It then records each
node's resident memory, kills one follower with SIGKILL, restarts it from its
data dir, and measures how long until its ``/v1/health/ready`` answers 200 (it
restored the snapshot, replayed the log tail, and caught up with the leader).
Appends one JSON line to bench/results/kv_restart.jsonl.

Usage: python bench/kv_restart.py [--keys 1000000] [--value-size 100] [--batch 1000]

Not run by tests.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from context import git_commit
from kvbench.record import REPO, machine_info
from kvbench.systems import Cluster, key_name, wait_ready

RESULTS = REPO / "bench" / "results" / "kv_restart.jsonl"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / (1 << 20)


async def _metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="raftkv-restart-", dir=args.data_dir))
    cluster = Cluster(root, 3, True, 100, 1000)
    started = time.perf_counter()
    cluster.start()
    row: dict[str, Any] = {}
    try:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_ready(session, cluster, 60)
            value = "x" * max(0, args.value_size - 2)
            t0 = time.perf_counter()
            urls = cluster.urls()
            for lo in range(0, args.keys, args.batch):
                body = {key_name(i): value for i in range(lo, min(args.keys, lo + args.batch))}
                for attempt in range(100):
                    async with session.post(urls[attempt % 3] + "/v1/kv", json=body) as r:
                        await r.read()
                        if r.status == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise SystemExit("load failed")
                if lo // args.batch % 100 == 0:
                    sys.stderr.write(f"\r  loaded {lo + args.batch:>9} keys")
            load_s = time.perf_counter() - t0
            sys.stderr.write(f"\n  {args.keys} keys in {load_s:.1f} s; writing until snapshots\n")
            t0 = time.perf_counter()
            i = 0
            while True:
                counts = [
                    await _metric(session, u, "raftkv_snapshots_total") for u in cluster.urls()
                ]
                if all(c >= 1 for c in counts):
                    break
                batch = [
                    session.put(f"{urls[j % 3]}/v1/kv/{key_name(j % args.keys)}", json=value)
                    for j in range(i, i + 64)
                ]
                for resp in await asyncio.gather(*batch):
                    resp.release()
                i += 64
            fill_s = time.perf_counter() - t0
            leader = await cluster.leader(session)
            victim = next(n for n in cluster.api if n != leader)
            rss = {n: round(_rss_mib(p.pid), 1) for n, p in cluster.procs.items()}
            disk = {n: round(_du_mib(root / n), 1) for n in cluster.api}
            cluster.kill(victim)
            t0 = time.perf_counter()
            cluster.spawn(victim)
            while True:
                try:
                    if await cluster.healthy(session, victim):
                        break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                cluster.check_alive()
                await asyncio.sleep(0.05)
            restart_s = time.perf_counter() - t0
            rss_after = round(_rss_mib(cluster.procs[victim].pid), 1)
            row = {
                "bench": "kv_restart",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "commit": git_commit(),
                "machine": machine_info(root),
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "keys": args.keys,
                "value_bytes": args.value_size,
                "load_s": round(load_s, 1),
                "writes_until_snapshot": i,
                "fill_s": round(fill_s, 1),
                "rss_mib": rss,
                "data_dir_mib": disk,
                "restarted": victim,
                "restart_to_ready_s": round(restart_s, 2),
                "rss_after_restart_mib": rss_after,
                "total_s": round(time.perf_counter() - started, 1),
            }
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000, help="pairs per multi-put")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    row = asyncio.run(amain(args))
    print(json.dumps(row, indent=2))
    if not args.no_record:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
