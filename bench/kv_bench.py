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
change is measured before and after back to back. Each repeat starts with the
next system in turn (with ``--repeat`` a multiple of the number of systems,
each runs first equally often).

``--flavor NAME=FLAGS`` adds a raftkv cluster started with more ``raftkv
serve`` flags (e.g. ``nohints=--no-leader-hints``). ``--load wrk`` drives every
point with wrk (``apt-get install wrk``) and bench/kv_wrk.lua instead of the
asyncio client: the same closed loop, keys, values and routes from C event
loops, which leave more of a small machine's CPUs to the servers (a second
opinion; see :func:`run_point_wrk`). ``--load grpc`` drives both etcd and
raftkv through the etcd v3 API (``Put``, ``Range``) with one grpc.aio client,
so the comparison uses the very same client code (raftkv nodes then get
``--grpc-addr``). ``--plot PNG`` draws the run with
bench/plot_kv.py. With ``bench/slowdisk`` on PYTHONPATH (absolute) and
``RAFTKV_BENCH_FDATASYNC_DELAY_MS`` set, every raftkv ``fdatasync`` waits that
long first (a slow disk; recorded in each row). ``--to leader`` sends every
request to the node that leads when a point starts, not to every node in
turn: for writes, no follower forwards, which bounds what forwarding costs.

Usage: python bench/kv_bench.py [--systems raftkv,etcd] [--duration 10]
       [--concurrency 1,16,64] [--ops put,get] [--keys 10000] [--value-size 100]
       [--nodes 3] [--data-dir DIR] [--no-fsync] [--failover N] [--cpu]
       [--variant NAME=DIR ...] [--flavor NAME=FLAGS ...] [--load asyncio|wrk|grpc]
       [--to all|leader] [--plot PNG]

The data dir must be on the disk you care about (tmpfs makes fsync free); the
client runs in this one process, so on a small machine it shares the CPUs with
the nodes. Not run by tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from context import git_commit
from kvbench.cpu import format_cpu
from kvbench.failover import measure_failover
from kvbench.load import grpc_sender, grpc_stubs, http_sender, run_point, run_point_wrk
from kvbench.record import RESULTS, machine_info, row_head
from kvbench.systems import Cluster, make_cluster, wait_ready
from kvbench.table import markdown_table


async def amain(args: argparse.Namespace) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="raftkv-kvbench-", dir=args.data_dir))
    clusters = [make_cluster(system, root, args) for system in args.systems]
    if args.load == "grpc":
        for cluster in clusters:
            cluster.serve_grpc = type(cluster) is Cluster  # raftkv (etcd serves gRPC anyway)
    for name, src in args.variant:
        cluster = make_cluster("raftkv", root, args)
        cluster.name, cluster.root, cluster.src = name, root / name, src
        clusters.append(cluster)
    for name, flags in args.flavor:
        cluster = make_cluster("raftkv", root, args)
        cluster.name, cluster.root, cluster.extra_args = name, root / name, flags
        clusters.append(cluster)
    rows: list[dict[str, Any]] = []
    machine = machine_info(root)
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
        **({"to": "leader"} if args.to == "leader" else {}),
        # bench/slowdisk: every raftkv fdatasync waits this long first
        **({"fdatasync_delay_ms": float(delay)} if (delay := os.environ.get(_DELAY_ENV)) else {}),
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
                await wait_ready(control, cluster, 60)
                print(f"{cluster.name}: preloading {args.keys} keys...", file=sys.stderr)
                await cluster.preload(control, args.keys, payload)
            # Interleaved: each point runs on every system in turn, so slow drift
            # in the machine's load hits all of them alike.
            for op in args.ops:
                for concurrency in args.concurrency:
                    for rep in range(args.repeat):
                        # Each repeat starts with the next system, so that none
                        # always runs first (right after another system's load).
                        first = rep % len(clusters)
                        for cluster in clusters[first:] + clusters[:first]:
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
                                    "to_leader": args.to == "leader",
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
                                {**row_head(base, cluster, load_before), "repeat": rep, **s}
                            )
            if args.failover:
                for cluster in clusters:
                    load_before = os.getloadavg()[0]
                    times = await measure_failover(
                        control, cluster, payload=payload, keys=args.keys, trials=args.failover
                    )
                    rows.append(
                        {
                            **row_head(base, cluster, load_before),
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


_DELAY_ENV = "RAFTKV_BENCH_FDATASYNC_DELAY_MS"


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
    parser.add_argument(
        "--to",
        choices=["all", "leader"],
        default="all",
        help="send requests to every node in turn (default), or all to the leader: with"
        " writes, the ceiling of what forwarding costs (asyncio and grpc loads only)",
    )
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
    if args.load == "wrk" and args.to == "leader":
        parser.error("--to leader needs --load asyncio or grpc")
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
