"""The ``raftkv`` command line.

Rule: the CLI is a thin shell over library functions -- it parses options,
calls them and prints; it holds no Raft or simulation logic. Wall-clock time,
processes and files are allowed here (and only here among the layers that use
the simulator). The commands, all in the :func:`main` group: ``sim`` (the
deterministic simulator), ``serve`` (one node), ``cluster`` (a local cluster of
``serve`` processes), the client commands ``put``, ``get``, ``delete``,
``cas``, ``txn``, ``compact``, ``status``, ``members`` and
``transfer-leader``, and ``jepsen`` (real nodes under faults, history checked).
"""

from __future__ import annotations

import importlib
import io
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NoReturn

import click

from raftkv.core import Raft
from raftkv.sim.faults import FAULT_KINDS, parse_faults
from raftkv.sim.mutants import ALL_MUTANTS, MUTANTS, plant
from raftkv.sim.runner import SimConfig, SimResult, format_summary, run_simulation
from raftkv.viz.timeline import timeline_page


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raftkv", message="%(prog)s %(version)s")
def main() -> None:
    """raftkv: Raft consensus and a replicated key/value store, in Python."""


def parse_seeds(spec: str) -> list[int]:
    """Parse ``"7"``, ``"1-500"`` or ``"1,4,10-20"`` into a sorted list of unique seeds.

    Raises:
        click.BadParameter: on malformed input or an empty/backwards range.
    """
    seeds: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo_text, hi_text = part.split("-", 1) if not part.startswith("-") else ("", "")
                lo, hi = int(lo_text), int(hi_text)
                if hi < lo:
                    raise click.BadParameter(f"range {part!r} runs backwards")
                seeds.update(range(lo, hi + 1))
            else:
                seeds.add(int(part))
        except ValueError:
            raise click.BadParameter(f"not a seed or seed range: {part!r}") from None
    if not seeds:
        raise click.BadParameter("no seeds given")
    return sorted(seeds)


def load_raft_class(spec: str | None) -> type[Raft]:
    """Import ``module:Class`` (a Raft subclass), or return :class:`Raft` for ``None``."""
    if spec is None:
        return Raft
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"expected MODULE:CLASS, got {spec!r}")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Raft)):
        raise click.BadParameter(f"{spec} is not a subclass of raftkv.core.Raft")
    return cls


def _replay_command(config: SimConfig, extra: str | None) -> str:
    parts = [
        "raftkv sim",
        f"--seed {config.seed}",
        f"--nodes {config.nodes}",
        f"--time {config.duration:g}",
        f"--faults {','.join(sorted(config.faults)) or 'none'}",
        f"--clients {config.clients}",
        f"--keys {config.keys}",
    ]
    default = SimConfig(seed=config.seed)
    for option, attr in (
        ("--tick-ms", "tick_ms"),
        ("--latency-us", "latency_us"),
        ("--jitter-us", "jitter_us"),
    ):
        if getattr(config, attr) != getattr(default, attr):
            parts.append(f"{option} {getattr(config, attr):g}")
    if config.membership:
        parts.append("--membership")
    if config.snapshot_every:
        parts.append(f"--snapshots {config.snapshot_every}")
    if config.reads:
        parts.append("--reads")
    if config.retries != (2 if config.reads else 0):
        parts.append(f"--retries {config.retries}")
    if config.txn:
        parts.append("--txn")
    if config.watches:
        parts.append("--watches")
    if config.leases:
        parts.append("--leases")
    if not config.check_linearizability:
        parts.append("--no-linearizability")
    if extra is not None:
        parts.append(extra)
    parts.append(f"--trace seed-{config.seed}.jsonl")
    return " ".join(parts)


def _run_one(config: SimConfig) -> tuple[SimResult, float]:
    start = time.perf_counter()
    result = run_simulation(config)
    return result, time.perf_counter() - start


def _sweep_worker(args: tuple[SimConfig, str | None]) -> tuple[SimResult, float]:
    config, raft_class = args
    if raft_class is not None:
        config = replace(config, raft_class=load_raft_class(raft_class))
    return _run_one(config)


@main.command()
@click.option("--seed", type=int, default=None, help="Run one simulation with this seed.")
@click.option(
    "--seeds",
    "seeds_spec",
    default=None,
    metavar="SPEC",
    help="Sweep many seeds in parallel: a range '1-500', a list '3,9,12' or a mix '1-10,42'.",
)
@click.option(
    "--nodes", type=click.IntRange(1, 15), default=5, show_default=True, help="Cluster size."
)
@click.option(
    "--time",
    "duration",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Virtual seconds to simulate (the last few are fault-free so the cluster converges).",
)
@click.option(
    "--faults",
    default="all",
    show_default=True,
    help=f"Comma-separated fault kinds ({', '.join(FAULT_KINDS)}), or 'all' (every kind but"
    " hints), or 'none'.",
)
@click.option(
    "--clients", type=click.IntRange(0, 64), default=4, show_default=True, help="Simulated clients."
)
@click.option(
    "--keys", type=click.IntRange(1, 64), default=4, show_default=True, help="Keys the clients use."
)
@click.option(
    "--tick-ms",
    type=click.FloatRange(min=0.1),
    default=100.0,
    show_default=True,
    help="Virtual time between ticks (heartbeat every tick, elections after 10-20 ticks).",
)
@click.option(
    "--latency-us",
    type=click.IntRange(0),
    default=500,
    show_default=True,
    help="Fixed one-way network delay in microseconds.",
)
@click.option(
    "--jitter-us",
    type=click.IntRange(0),
    default=300,
    show_default=True,
    help="Mean exponential extra network delay in microseconds. Short ticks with long "
    "delays (e.g. --tick-ms 10 --latency-us 3000 --jitter-us 3000) make elections collide "
    "far more often.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1),
    default=None,
    help="Worker processes for --seeds (default: the number of CPUs).",
)
@click.option(
    "--timing", is_flag=True, help="Add wall-clock figures (deliveries per second, run time)."
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write a JSON-lines event trace of the run to this file (single seed only); "
    "a name ending in .html gets the timeline page instead (see --html).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write a self-contained HTML timeline of the run to this file: one lane per "
    "node (role, term, log length, commit index), faults, elections, messages, the "
    "violation; zoom, pan, click for every node's log at that instant.",
)
@click.option(
    "--no-linearizability",
    is_flag=True,
    help="Skip the end-of-run linearizability check of the client history.",
)
@click.option(
    "--mutant",
    type=click.Choice(sorted(ALL_MUTANTS)),
    default=None,
    help="Run this deliberately broken Raft, replica layer or read path "
    "(raftkv.sim.mutants) on every node; a checker should report a violation.",
)
@click.option(
    "--raft-class",
    default=None,
    metavar="MODULE:CLASS",
    help="Run this Raft subclass on every node instead of raftkv.core.Raft (mutation testing).",
)
@click.option(
    "--membership",
    is_flag=True,
    help="A simulated operator adds learners, promotes them, removes voters (the leader too), "
    "replaces voters in one joint change and transfers leadership while the faults go on.",
)
@click.option(
    "--snapshots",
    "snapshot_every",
    type=click.IntRange(0),
    default=None,
    flag_value=20,
    is_flag=False,
    metavar="[N]",
    help="Every node snapshots its state machine and compacts its log every N applied "
    "entries (20 if no N is given), so lagging nodes catch up by InstallSnapshot.",
)
@click.option(
    "--reads",
    is_flag=True,
    help="Clients read through ReadIndex (from leaders and followers) and retry timed-out "
    "writes under the same session request id (see --retries).",
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=None,
    help="Times a client resends a timed-out write under the same request id "
    "[default: 2 with --reads, else 0].",
)
@click.option(
    "--txn",
    is_flag=True,
    help="Clients also issue range reads (some at an older revision), multi-key "
    "transactions, delete-ranges and compactions; every operation is checked by its "
    "revision against a model of the store (docs/testing.md).",
)
@click.option(
    "--watches",
    is_flag=True,
    help="Watchers on every node disconnect, reconnect (often to another node) and resume "
    "from their last revision, across compaction too; every watcher's events are checked "
    "against the applied history (docs/testing.md).",
)
@click.option(
    "--leases",
    is_flag=True,
    help="Lease clients grant leases, attach keys, keep them alive through the leader, stop "
    "renewing or revoke, while every node's lessor runs on the virtual clock; the lease "
    "checker holds the cluster to the lease contract (docs/testing.md).",
)
def sim(
    seed: int | None,
    seeds_spec: str | None,
    nodes: int,
    duration: float,
    faults: str,
    clients: int,
    keys: int,
    tick_ms: float,
    latency_us: int,
    jitter_us: int,
    jobs: int | None,
    timing: bool,
    trace_path: str | None,
    html_path: str | None,
    no_linearizability: bool,
    mutant: str | None,
    raft_class: str | None,
    membership: bool,
    snapshot_every: int | None,
    reads: bool,
    retries: int | None,
    txn: bool,
    watches: bool,
    leases: bool,
) -> None:
    """Run the deterministic cluster simulator and check Raft's safety properties.

    Every run is a pure function of its seed and options: the summary (without
    --timing) and the --trace file are byte-identical when a run is repeated.
    The checkers -- election safety, leader append-only, log matching, leader
    completeness, state machine safety, durability across crashes, and
    linearizability of the client history (with --txn also the revision check
    of ranges, transactions and compaction) -- run after every event or at the
    end; the run stops at the first violation and the command exits with
    status 1.

    \b
    Examples:
      raftkv sim --seed 7 --nodes 5 --time 60 --faults partition,crash,loss,dup,reorder
      raftkv sim --seed 7 --trace seed-7.jsonl
      raftkv sim --seeds 1-500 --faults all --time 30
      raftkv sim --seeds 1-200 --tick-ms 10 --latency-us 3000 --jitter-us 3000
      raftkv sim --seeds 1-1000 --membership --snapshots 20 --reads --txn
      raftkv sim --seeds 1-200 --watches --leases
    """
    replay_extra: str | None = None
    if mutant is not None:
        if raft_class is not None:
            raise click.UsageError("give either --mutant or --raft-class, not both")
        if mutant in MUTANTS:
            raft_class = f"{MUTANTS[mutant].__module__}:{MUTANTS[mutant].__qualname__}"
        replay_extra = f"--mutant {mutant}"
    elif raft_class is not None:
        replay_extra = f"--raft-class {raft_class}"
    try:
        fault_set = parse_faults(faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from None
    if leases and txn:
        raise click.UsageError("--leases cannot be combined with --txn yet")
    if (seed is None) == (seeds_spec is None):
        if seed is None and seeds_spec is None:
            seed = 1
        else:
            raise click.UsageError("give either --seed or --seeds, not both")
    base = SimConfig(
        seed=seed if seed is not None else 0,
        nodes=nodes,
        duration=duration,
        faults=fault_set,
        clients=clients,
        keys=keys,
        tick_ms=tick_ms,
        latency_us=latency_us,
        jitter_us=jitter_us,
        check_linearizability=not no_linearizability,
        raft_class=load_raft_class(raft_class),
        membership=membership,
        snapshot_every=snapshot_every or 0,
        reads=reads,
        retries=retries if retries is not None else (2 if reads else 0),
        txn=txn,
        watches=watches,
        leases=leases,
    )
    if mutant is not None and mutant not in MUTANTS:
        base = plant(mutant, base)  # a replica or read-path mutant: turns on what it needs
    if seeds_spec is None:
        _single(base, timing, trace_path, html_path, replay_extra)
        return
    if trace_path is not None or html_path is not None:
        raise click.UsageError("--trace and --html need a single --seed")
    seeds = parse_seeds(seeds_spec)
    _sweep(base, seeds, jobs or os.cpu_count() or 1, timing, raft_class, replay_extra)


def _single(
    config: SimConfig,
    timing: bool,
    trace_path: str | None,
    html_path: str | None,
    replay_extra: str | None,
) -> None:
    start = time.perf_counter()
    if trace_path is not None or html_path is not None:
        sink = io.StringIO()
        result = run_simulation(config, trace_sink=sink)
        wall = time.perf_counter() - start
        text = sink.getvalue()
        title = f"raftkv sim seed {config.seed}"
        if trace_path is not None and trace_path.endswith((".html", ".htm")):
            # `--trace run.html`: the timeline page instead of JSON lines.
            html_path, trace_path = trace_path, None
        if trace_path is not None:
            with open(trace_path, "w", encoding="utf-8") as f:
                f.write(text)
        if html_path is not None:
            with open(html_path, "w", encoding="utf-8") as f:
                f.write(timeline_page(text.splitlines(), title=title))
    else:
        result = run_simulation(config)
        wall = time.perf_counter() - start
    click.echo(format_summary(result, wall_seconds=wall if timing else None))
    if result.violation is not None:
        click.echo("replay: " + _replay_command(config, replay_extra), err=True)
        sys.exit(1)


def _sweep(
    base: SimConfig,
    seeds: list[int],
    jobs: int,
    timing: bool,
    raft_class: str | None,
    replay_extra: str | None,
) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    # Raft subclasses from a --raft-class module are re-imported by name in workers.
    configs = [(replace(base, seed=s, raft_class=Raft), raft_class) for s in seeds]
    failures: list[SimResult] = []
    deliveries = 0
    events = 0
    cpu_seconds = 0.0
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]sim sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("sweep", total=len(seeds), failed=0)
        if jobs == 1:
            results = (_sweep_worker(c) for c in configs)
            for result, wall in results:
                deliveries += result.deliveries
                events += result.events
                cpu_seconds += wall
                if result.violation is not None:
                    failures.append(result)
                progress.update(task, advance=1, failed=len(failures))
        else:
            ctx = multiprocessing.get_context(
                "fork" if sys.platform.startswith("linux") else "spawn"
            )
            with ctx.Pool(processes=jobs) as pool:
                for result, wall in pool.imap_unordered(_sweep_worker, configs):
                    deliveries += result.deliveries
                    events += result.events
                    cpu_seconds += wall
                    if result.violation is not None:
                        failures.append(result)
                    progress.update(task, advance=1, failed=len(failures))
    wall = time.perf_counter() - start
    failures.sort(key=lambda r: r.config.seed)
    faults = ",".join(sorted(base.faults)) or "none"
    click.echo(
        f"swept {len(seeds)} seeds (nodes={base.nodes} time={base.duration:g}s faults={faults}"
        f"{' txn' if base.txn else ''}{' watches' if base.watches else ''}"
        f"{' leases' if base.leases else ''}): "
        f"{len(seeds) - len(failures)} ok, {len(failures)} failed, {deliveries} deliveries"
    )
    if timing:
        click.echo(
            f"wall clock {wall:.2f}s with {jobs} jobs; "
            f"{deliveries / wall if wall else 0:,.0f} deliveries/s overall, "
            f"{deliveries / cpu_seconds if cpu_seconds else 0:,.0f} per worker-second"
        )
    for result in failures:
        v = result.violation
        assert v is not None
        first_line = v.message.splitlines()[0] if v.message else ""
        click.echo(f"seed {v.seed}: {v.checker} at t={v.time / 1e6:.6f}s: {first_line}")
        cfg = replace(result.config, raft_class=Raft)
        click.echo("  replay: " + _replay_command(cfg, replay_extra))
    if failures:
        sys.exit(1)


# --------------------------------------------------------------------------- real nodes
# The commands below run and talk to real processes. Their logic lives in
# raftkv.server; they import it lazily so `raftkv sim` does not load aiohttp.
# User mistakes and unreachable clusters print one line (no traceback) and exit 1.

DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
EXIT_NODE_FAILED = 70
"""``raftkv serve``'s exit code when its node failed (EX_SOFTWARE): restart it."""


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@main.command()
@click.option(
    "--id",
    "node_id",
    default=None,
    envvar="RAFTKV_ID",
    help="This node's member id (required). With --peers-from-statefulset: the pod name "
    "NAME-ORDINAL, which is the member id unless the data dir records another one, or the "
    "pod joins with an empty data dir (then it adopts the id registered at its address).",
)
@click.option(
    "--data-dir",
    required=True,
    envvar="RAFTKV_DATA_DIR",
    type=click.Path(file_okay=False),
    help="Where the WAL and snapshots live.",
)
@click.option("--raft-addr", required=True, envvar="RAFTKV_RAFT_ADDR", help="HOST:PORT for peers.")
@click.option("--api-addr", required=True, envvar="RAFTKV_API_ADDR", help="HOST:PORT for HTTP.")
@click.option(
    "--grpc-addr",
    default=None,
    envvar="RAFTKV_GRPC_ADDR",
    help="HOST:PORT for the etcd v3 gRPC API (etcdctl, etcd client libraries; docs/etcd.md). "
    "Same TLS and client tokens as the HTTP API. Default: not served (the JSON gateway "
    "under /v3/ on --api-addr is served either way).",
)
@click.option(
    "--initial-cluster",
    default=None,
    envvar="RAFTKV_INITIAL_CLUSTER",
    help="n1=RAFTHOST:PORT/APIHOST:PORT,n2=... With 'new': every founding member, this one "
    "included. With 'existing': the current members plus this one (their addresses). "
    "Read only when the data dir is empty. Required unless --peers-from-statefulset.",
)
@click.option(
    "--initial-cluster-state",
    type=click.Choice(["new", "existing"]),
    default=None,
    envvar="RAFTKV_INITIAL_CLUSTER_STATE",
    help="'new' (default): found a cluster from --initial-cluster. 'existing': join a running "
    "cluster after `raftkv members add` (learns the membership from the leader). "
    "Ignored when the data dir already holds state: the node restarts from it. "
    "With --peers-from-statefulset the default is derived from the ordinal.",
)
@click.option(
    "--peers-from-statefulset",
    is_flag=True,
    envvar="RAFTKV_PEERS_FROM_STATEFULSET",
    help="Derive --initial-cluster (and --initial-cluster-state) from the pod name --id "
    "NAME-ORDINAL: pods NAME-0..NAME-(SIZE-1) found the cluster, higher ordinals join. "
    "Peers listen on this node's --raft-addr/--api-addr ports at --peer-host. A pod that "
    "joins with an empty data dir runs as the member id the cluster registered at its Raft "
    "address (`raftkv members add ID --raft-addr ...`), waiting, not ready, until there is one.",
)
@click.option(
    "--peer-host",
    default="{pod}",
    show_default=True,
    envvar="RAFTKV_PEER_HOST",
    help="With --peers-from-statefulset: pod i's host name; {pod} is NAME-i, {ordinal} is i "
    "(e.g. {pod}.raftkv-peers.default.svc.cluster.local).",
)
@click.option(
    "--initial-cluster-size",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    envvar="RAFTKV_INITIAL_CLUSTER_SIZE",
    help="With --peers-from-statefulset: how many pods (ordinals 0..SIZE-1) found the cluster. "
    "Keep it at the founding size when scaling.",
)
@click.option(
    "--heartbeat-interval-ms",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    envvar="RAFTKV_HEARTBEAT_INTERVAL_MS",
    help="One tick; the leader heartbeats every tick.",
)
@click.option(
    "--election-timeout-ms",
    type=click.IntRange(2),
    default=1000,
    show_default=True,
    envvar="RAFTKV_ELECTION_TIMEOUT_MS",
    help="Base election timeout (randomized up to twice this).",
)
@click.option(
    "--no-fsync",
    is_flag=True,
    envvar="RAFTKV_NO_FSYNC",
    help="UNSAFE, for tests/benchmarks only: do not fsync the WAL (a crash can lose "
    "acknowledged writes).",
)
@click.option(
    "--snapshot-entries",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    envvar="RAFTKV_SNAPSHOT_ENTRIES",
    help="Snapshot the state machine every this many applied entries.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1),
    default=1 << 20,
    show_default=True,
    envvar="RAFTKV_MAX_BODY_BYTES",
    help="Largest HTTP request body (413 above).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="RAFTKV_LOG_FORMAT",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    envvar="RAFTKV_LOG_LEVEL",
)
@click.option(
    "--cluster-secret",
    default=None,
    envvar="RAFTKV_CLUSTER_SECRET",
    help="Shared secret authenticating peer connections (prefer --cluster-secret-file).",
)
@click.option(
    "--cluster-secret-file",
    default=None,
    envvar="RAFTKV_CLUSTER_SECRET_FILE",
    type=click.Path(dir_okay=False),
    help="File holding the cluster secret (at least 16 bytes; `openssl rand -hex 32`). "
    "Peers prove it with HMAC-SHA256 over fresh nonces before any Raft message is accepted. "
    "Default: no peer authentication (trusted networks only; docs/security.md).",
)
@click.option(
    "--tls-cert",
    default=None,
    envvar="RAFTKV_TLS_CERT",
    type=click.Path(dir_okay=False),
    help="This node's certificate (PEM). With --tls-key and --tls-ca: mutual TLS between "
    "peers, HTTPS on the API. Its subjectAltName must name the hosts of its addresses.",
)
@click.option(
    "--tls-key",
    default=None,
    envvar="RAFTKV_TLS_KEY",
    type=click.Path(dir_okay=False),
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--tls-ca",
    default=None,
    envvar="RAFTKV_TLS_CA",
    type=click.Path(dir_okay=False),
    help="CA certificate(s) (PEM) that sign the members' (and clients') certificates.",
)
@click.option(
    "--tls-api-client-auth",
    is_flag=True,
    envvar="RAFTKV_TLS_API_CLIENT_AUTH",
    help="Also require a client certificate signed by --tls-ca on the HTTP API.",
)
@click.option(
    "--client-token-file",
    default=None,
    envvar="RAFTKV_CLIENT_TOKEN_FILE",
    type=click.Path(dir_okay=False),
    help="Require bearer tokens on the HTTP API (but health probes): lines 'ro|rw TOKEN "
    "[NAME]'; ro tokens may only read. 401 without a known token, 403 for ro on a write.",
)
@click.option(
    "--max-key-bytes",
    type=click.IntRange(1, 1024),
    default=1024,
    show_default=True,
    envvar="RAFTKV_MAX_KEY_BYTES",
    help="Longest key, in bytes of UTF-8 (400 above).",
)
@click.option(
    "--max-value-bytes",
    type=click.IntRange(1),
    default=1 << 20,
    show_default=True,
    envvar="RAFTKV_MAX_VALUE_BYTES",
    help="Largest value, as JSON bytes (413 above).",
)
@click.option(
    "--max-multi-put-pairs",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    envvar="RAFTKV_MAX_MULTI_PUT_PAIRS",
    help="Most pairs in one multi-put (413 above).",
)
@click.option(
    "--max-concurrent-requests",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    envvar="RAFTKV_MAX_CONCURRENT_REQUESTS",
    help="HTTP requests in flight on this node (503 above). Each connection is served "
    "one request at a time.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=None,
    envvar="RAFTKV_MAX_CONNECTIONS",
    help="HTTP connections open at once; one more is answered 503 and closed. "
    "[default: 4096, lowered to what the open file limit leaves; a value given must fit]",
)
@click.option(
    "--max-peer-frame-bytes",
    type=click.IntRange(1 << 21, 2**32 - 1),
    default=64 << 20,
    show_default=True,
    envvar="RAFTKV_MAX_PEER_FRAME_BYTES",
    help="Largest frame accepted from a peer, checked before it is read (the connection is "
    "closed above). Must be the same on every member.",
)
@click.option(
    "--quota-bytes",
    type=click.IntRange(1),
    default=2 * 1024**3,
    show_default=True,
    envvar="RAFTKV_QUOTA_BYTES",
    help="Space quota of the KV store, on its logical size (every kept version of every key: "
    "key + value + 192 bytes). Past it the leader raises the NOSPACE alarm: writes that add "
    "data are refused (HTTP 507) until deletes and a compaction bring the size back under it "
    "(docs/operations.md). Give every member the same value.",
)
@click.option(
    "--auto-compaction-retention",
    type=click.IntRange(0),
    default=10_000,
    show_default=True,
    envvar="RAFTKV_AUTO_COMPACTION_RETENTION",
    help="Revisions of history to keep: the leader compacts everything older once the store is "
    "a tenth past it (etcd's revision mode). Reads at older revisions then answer 410. "
    "0 keeps all history until `raftkv compact`.",
)
@click.option(
    "--watch-progress-interval-s",
    type=click.FloatRange(0.01),
    default=600.0,
    show_default=True,
    envvar="RAFTKV_WATCH_PROGRESS_INTERVAL_S",
    help="How often a watch that asked for progress notifications (progress_notify=true) "
    "gets one: the revision it has every event up to (etcd: 10 minutes).",
)
@click.option(
    "--watch-buffer-bytes",
    type=click.IntRange(1024),
    default=4 << 20,
    show_default=True,
    envvar="RAFTKV_WATCH_BUFFER_BYTES",
    help="Events one watcher may have waiting for a client that does not read them; past "
    "this the watch is cancelled ('slow watcher') and the client resumes from its last revision.",
)
@click.option(
    "--max-watchers",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    envvar="RAFTKV_MAX_WATCHERS",
    help="Watchers this node serves, GET /v1/watch and etcd API watchers alike; one more "
    "is refused (/v1: 429; etcd: 'etcdserver: too many requests').",
)
@click.option(
    "--max-watchers-per-stream",
    type=click.IntRange(1),
    default=1_000,
    show_default=True,
    envvar="RAFTKV_MAX_WATCHERS_PER_STREAM",
    help="Watchers one etcd Watch stream (gRPC or /v3/watch) may hold.",
)
@click.option(
    "--no-leader-hints",
    is_flag=True,
    envvar="RAFTKV_NO_LEADER_HINTS",
    help="Wait a whole election timeout after the leader dies, even when its address "
    "refuses connections (by default a follower then campaigns within a tick or two).",
)
def serve(
    node_id: str | None,
    data_dir: str,
    raft_addr: str,
    api_addr: str,
    grpc_addr: str | None,
    initial_cluster: str | None,
    initial_cluster_state: str | None,
    peers_from_statefulset: bool,
    peer_host: str,
    initial_cluster_size: int,
    heartbeat_interval_ms: int,
    election_timeout_ms: int,
    no_fsync: bool,
    snapshot_entries: int,
    max_body_bytes: int,
    log_format: str,
    log_level: str,
    cluster_secret: str | None,
    cluster_secret_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    tls_api_client_auth: bool,
    client_token_file: str | None,
    max_key_bytes: int,
    max_value_bytes: int,
    max_multi_put_pairs: int,
    max_concurrent_requests: int,
    max_connections: int | None,
    max_peer_frame_bytes: int,
    quota_bytes: int,
    auto_compaction_retention: int,
    watch_progress_interval_s: float,
    watch_buffer_bytes: int,
    max_watchers: int,
    max_watchers_per_stream: int,
    no_leader_hints: bool,
) -> None:
    """Run one raftkv node (Raft peer transport, HTTP API; etcd v3 gRPC with
    --grpc-addr) until SIGTERM/SIGINT.

    Every flag can also come from an environment variable RAFTKV_<FLAG>,
    e.g. RAFTKV_ID=n1, RAFTKV_INITIAL_CLUSTER=...

    A data dir that already holds state restarts from it; --initial-cluster and
    --initial-cluster-state matter only on the very first start.

    If the node fails (its WAL or snapshot store cannot write, or its drive
    loop breaks), it logs why and exits with code 70 at once, for a supervisor
    to restart it; a bad flag or a start-up error exits with code 1.

    \b
    Example (one of three founding members):
      raftkv serve --id n1 --data-dir data/n1 \\
        --raft-addr 127.0.0.1:7001 --api-addr 127.0.0.1:8001 \\
        --initial-cluster n1=127.0.0.1:7001/127.0.0.1:8001,n2=127.0.0.1:7002/...,n3=...
    \b
    In a Kubernetes StatefulSet (deploy/k8s), every pod runs the same command:
      RAFTKV_ID=raftkv-1 RAFTKV_PEERS_FROM_STATEFULSET=1 RAFTKV_INITIAL_CLUSTER_SIZE=3 \\
      RAFTKV_PEER_HOST={pod}.raftkv-peers.default.svc.cluster.local \\
      raftkv serve --data-dir /var/lib/raftkv --raft-addr 0.0.0.0:7001 --api-addr 0.0.0.0:8001
    The data dir records the member id; a pod that joins with an empty one asks the
    members which id is registered at its Raft address (docs/deploy.md).
    \b
    Adding n4 to a running cluster:
      raftkv members add n4 --raft-addr 127.0.0.1:7004 --api-addr 127.0.0.1:8004
      raftkv serve --id n4 --data-dir data/n4 --initial-cluster-state existing \\
        --raft-addr 127.0.0.1:7004 --api-addr 127.0.0.1:8004 \\
        --initial-cluster n1=...,n2=...,n3=...,n4=127.0.0.1:7004/127.0.0.1:8004
    """
    import asyncio
    import signal

    from raftkv.core.errors import RaftKVError
    from raftkv.core.types import NodeId
    from raftkv.server.config import (
        ServerConfig,
        parse_host_port,
        parse_initial_cluster,
        statefulset_initial_cluster,
    )
    from raftkv.server.errors import ConfigError
    from raftkv.server.logging import setup_logging
    from raftkv.server.security import (
        read_request_token,
        read_secret_file,
        read_token_file,
        secret_file_is_exposed,
    )

    if not node_id:
        _fail("missing --id (or $RAFTKV_ID)")
    try:
        raft = parse_host_port(raft_addr, what="--raft-addr")
        api = parse_host_port(api_addr, what="--api-addr")
        grpc = parse_host_port(grpc_addr, what="--grpc-addr") if grpc_addr else None
        if peers_from_statefulset:
            if initial_cluster:
                raise ConfigError(
                    "give either --initial-cluster or --peers-from-statefulset, not both"
                )
            members, derived_state = statefulset_initial_cluster(
                node_id,
                peer_host=peer_host,
                initial_cluster_size=initial_cluster_size,
                raft_port=raft[1],
                api_port=api[1],
            )
            initial_cluster_state = initial_cluster_state or derived_state
        elif not initial_cluster:
            raise ConfigError("missing --initial-cluster (or $RAFTKV_INITIAL_CLUSTER)")
        else:
            members = parse_initial_cluster(initial_cluster)
        if cluster_secret and cluster_secret_file:
            raise ConfigError("give either --cluster-secret or --cluster-secret-file, not both")
        secret = cluster_secret.encode() if cluster_secret else None
        if cluster_secret_file:
            secret = read_secret_file(cluster_secret_file)
        tokens = read_token_file(client_token_file) if client_token_file else None
        # A pod that asks its peers which member id to run as needs a token too.
        own_token = (
            read_request_token(client_token_file)
            if peers_from_statefulset and client_token_file
            else None
        )
        config = ServerConfig(
            node_id=NodeId(node_id),
            data_dir=data_dir,
            raft_addr=raft,
            api_addr=api,
            grpc_addr=grpc,
            initial_cluster=members,
            initial_cluster_state=initial_cluster_state or "new",
            heartbeat_interval_ms=heartbeat_interval_ms,
            election_timeout_ms=election_timeout_ms,
            fsync=not no_fsync,
            snapshot_entries=snapshot_entries,
            max_body_bytes=max_body_bytes,
            log_format=log_format,
            log_level=log_level.upper(),
            cluster_secret=secret,
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            tls_ca_file=tls_ca,
            tls_api_client_auth=tls_api_client_auth,
            client_tokens=tokens,
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
            max_multi_put_pairs=max_multi_put_pairs,
            max_concurrent_requests=max_concurrent_requests,
            max_connections=max_connections,
            max_peer_frame_bytes=max_peer_frame_bytes,
            quota_bytes=quota_bytes,
            auto_compaction_retention=auto_compaction_retention,
            watch_progress_interval_s=watch_progress_interval_s,
            watch_buffer_bytes=watch_buffer_bytes,
            max_watchers=max_watchers,
            max_watchers_per_stream=max_watchers_per_stream,
            leader_hints=not no_leader_hints,
        )
        config.validate()
        if config.tls:
            # Load the certificates now: a mistake is one line, not a traceback at start.
            from raftkv.server.security import api_ssl_contexts, peer_ssl_contexts

            peer_ssl_contexts(config)
            api_ssl_contexts(config)
    except ConfigError as exc:
        _fail(exc.message)
    setup_logging(node_id, log_format, log_level)
    _warn_exposed(config, cluster_secret_file, client_token_file, secret_file_is_exposed)
    if no_fsync:
        logging.getLogger("raftkv.server").warning(
            "--no-fsync: UNSAFE, a crash can lose acknowledged writes"
        )

    async def run() -> None:
        from raftkv.server.api import serve as serve_node
        from raftkv.server.identity import resolve_pod_identity

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        cfg = config
        if peers_from_statefulset:
            # The pod name is the first member id of a pod only (identity.py).
            resolved = await resolve_pod_identity(
                config, initial_cluster_size=initial_cluster_size, token=own_token, stop=stop
            )
            if resolved is None:
                return  # stopped while waiting for a member id
            cfg = resolved
            if cfg.node_id != config.node_id:
                setup_logging(cfg.node_id, log_format, log_level)
        await serve_node(cfg, stop)

    from raftkv.server.api import run_event_loop
    from raftkv.server.errors import NodeFailed

    try:
        run_event_loop(run())
    except NodeFailed as exc:
        # Crash-stop: the cause and its traceback are logged already. Exit now,
        # without waiting for threads (a WAL sync may hang on a broken disk).
        click.echo(f"error: {node_id}: {exc}", err=True)
        logging.shutdown()
        os._exit(EXIT_NODE_FAILED)
    except OSError as exc:
        _fail(f"{node_id}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else ""))
    except RaftKVError as exc:
        _fail(f"{node_id}: {exc}")


def _warn_exposed(
    config: Any,
    secret_file: str | None,
    token_file: str | None,
    exposed: Callable[[str], bool],
) -> None:
    """Warn about open ports without protection, and about readable secret files."""
    log = logging.getLogger("raftkv.server")
    loopback = ("127.", "localhost", "::1")
    if not config.raft_addr[0].startswith(loopback) and config.cluster_secret is None:
        log.warning(
            "peer port %s:%d accepts any peer: no --cluster-secret-file (docs/security.md)",
            *config.raft_addr,
        )
    if not config.api_addr[0].startswith(loopback) and config.client_tokens is None:
        log.warning(
            "HTTP API %s:%d serves anyone: no --client-token-file (docs/security.md)",
            *config.api_addr,
        )
    grpc_addr = getattr(config, "grpc_addr", None)
    if (
        grpc_addr is not None
        and not grpc_addr[0].startswith(loopback)
        and config.client_tokens is None
    ):
        log.warning(
            "etcd gRPC API %s:%d serves anyone: no --client-token-file (docs/security.md)",
            *grpc_addr,
        )
    for path in (secret_file, token_file):
        if path and exposed(path):
            log.warning("%s is readable by group or others; chmod 600 it", path)


@main.command()
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default="./data",
    show_default=True,
    help="Each node uses DATA_DIR/<id>.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1, 63000),
    default=7000,
    show_default=True,
    help="Raft ports are BASE+1.., API ports BASE+1001.. (7001.. and 8001.. by default); "
    "gRPC ports etcd's 2379, 22379, 32379.. by default, else BASE+2001..",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--no-grpc",
    is_flag=True,
    help="Do not serve the etcd v3 gRPC API (by default nodes 1-6 serve it on etcd's "
    "local-cluster ports 2379, 22379, 32379, ...).",
)
@click.option("--heartbeat-interval-ms", type=click.IntRange(1), default=100, show_default=True)
@click.option("--election-timeout-ms", type=click.IntRange(2), default=1000, show_default=True)
@click.option("--no-fsync", is_flag=True, help="UNSAFE, for tests/benchmarks only.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
def cluster(
    nodes: int,
    data_dir: str,
    base_port: int,
    host: str,
    no_grpc: bool,
    heartbeat_interval_ms: int,
    election_timeout_ms: int,
    no_fsync: bool,
    log_format: str,
) -> None:
    """Start a local cluster of NODES `raftkv serve` processes; Ctrl-C stops them all.

    Each node serves the etcd v3 gRPC API too, on etcd's local-cluster ports
    (2379, 22379, 32379, then 42379, 52379, 62379; nodes 7-9 serve none; with
    another --base-port, BASE+2001..):
    ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 put foo bar
    """
    import signal
    import subprocess

    ids = [f"n{i}" for i in range(1, nodes + 1)]
    raft = {n: f"{host}:{base_port + i}" for i, n in enumerate(ids, 1)}
    api = {n: f"{host}:{base_port + 1000 + i}" for i, n in enumerate(ids, 1)}
    grpc = (
        {}
        if no_grpc
        else {n: f"{host}:{_etcd_port(i, base_port)}" for i, n in enumerate(ids, 1) if i <= 6}
    )
    spec = ",".join(f"{n}={raft[n]}/{api[n]}" for n in ids)
    # The directory that holds the raftkv package (this file is raftkv/cli/...).
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for n in ids:
        cmd = [
            sys.executable,
            "-m",
            "raftkv.cli",
            "serve",
            "--id",
            n,
            "--data-dir",
            os.path.join(data_dir, n),
            "--raft-addr",
            raft[n],
            "--api-addr",
            api[n],
            "--initial-cluster",
            spec,
            "--heartbeat-interval-ms",
            str(heartbeat_interval_ms),
            "--election-timeout-ms",
            str(election_timeout_ms),
            "--log-format",
            log_format,
        ]
        if no_fsync:
            cmd.append("--no-fsync")
        if n in grpc:
            cmd += ["--grpc-addr", grpc[n]]
        # Own process group: a terminal's Ctrl-C reaches us, and we stop the nodes.
        procs[n] = subprocess.Popen(cmd, env=env, start_new_session=True)
        etcd = f"  etcd grpc {grpc[n]}" if n in grpc else ""
        click.echo(
            f"{n}: api http://{api[n]}{etcd}  raft {raft[n]}  data {os.path.join(data_dir, n)}"
        )
    click.echo(f"endpoints: {','.join('http://' + api[n] for n in ids)}")
    if grpc:
        click.echo(
            f"etcd endpoints: {','.join(grpc.values())} (ETCDCTL_API=3 etcdctl --endpoints ...)"
        )
    click.echo(f"dashboard: http://{api[ids[0]]}/ (any node's API serves it)")
    click.echo("Ctrl-C stops the cluster.")
    try:
        while not stopping:
            time.sleep(0.2)
            for n, p in procs.items():
                if p.returncode is None and p.poll() is not None:
                    click.echo(f"{n} exited with status {p.returncode}", err=True)
            if all(p.returncode is not None for p in procs.values()):
                _fail("every node exited")
    finally:
        click.echo("stopping the cluster...", err=True)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    click.echo("cluster stopped", err=True)


_DEFAULT_BASE_PORT = 7000


def _etcd_port(i: int, base_port: int) -> int:
    """Node ``i``'s (1-based) gRPC port: etcd's local-cluster client ports 2379, 22379,
    32379, ... with the default ``--base-port``, else BASE+2001, BASE+2002, ..."""
    if base_port != _DEFAULT_BASE_PORT:
        return base_port + 2000 + i
    return 2379 if i == 1 else i * 10_000 + 2379


class _Http:
    """A tiny blocking HTTP client over the cluster's endpoints (stdlib only)."""

    def __init__(self, endpoints: str | None, timeout: float) -> None:
        from raftkv.client import make_ssl_context

        endpoints = endpoints or DEFAULT_ENDPOINTS
        auth = _auth()
        self.ssl = None
        if auth["ca_file"] or auth["cert_file"] or "https://" in endpoints:
            try:
                self.ssl = make_ssl_context(auth["ca_file"], auth["cert_file"], auth["key_file"])
            except ValueError as exc:
                _fail(str(exc))
        scheme = "https://" if self.ssl is not None else "http://"
        self.endpoints = [e.strip().rstrip("/") for e in endpoints.split(",") if e.strip()]
        self.endpoints = [e if "://" in e else scheme + e for e in self.endpoints]
        if not self.endpoints:
            _fail("no endpoints given")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {auth['token']}"} if auth["token"] else {}

    def request(
        self, method: str, path: str, body: object = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Try each endpoint until one answers with something other than 503."""
        import json as _json
        import urllib.error
        import urllib.request

        data = None if body is None else _json.dumps(body).encode()
        last: tuple[int, Any] | None = None
        errors: list[str] = []
        for _attempt in range(3):
            for base in self.endpoints:
                req = urllib.request.Request(base + path, data=data, method=method)
                req.add_header("Content-Type", "application/json")
                for k, v in {**self.headers, **(headers or {})}.items():
                    req.add_header(k, v)
                try:
                    with urllib.request.urlopen(
                        req, timeout=self.timeout, context=self.ssl
                    ) as resp:
                        return resp.status, _decode(resp.read())
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, _decode(exc.read())
                    if status != 503:
                        return status, payload
                    last = (status, payload)
                except (urllib.error.URLError, OSError) as exc:
                    reason = getattr(exc, "reason", exc)
                    errors.append(f"{base}: {reason}")
            time.sleep(0.3)
        if last is not None:
            return last
        _fail("cluster unreachable (" + "; ".join(errors[: len(self.endpoints)]) + ")")

    def request_one(self, method: str, path: str) -> tuple[int, Any]:
        """One request to the first endpoint; status 0 when it is unreachable."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.endpoints[0] + path, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(getattr(exc, "reason", exc))


def _decode(raw: bytes) -> Any:
    import json as _json

    try:
        return _json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _show(status: int, payload: Any) -> None:
    import json as _json

    if 200 <= status < 300:
        click.echo(_json.dumps(payload, indent=2, sort_keys=True))
        return
    message = payload.get("error") if isinstance(payload, dict) else payload
    _fail(f"{message} (HTTP {status})")


def _json_arg(text: str, what: str) -> Any:
    import json as _json

    try:
        return _json.loads(text)
    except ValueError:
        raise click.BadParameter(
            f"not JSON: {text!r} (quote strings: '\"text\"')", param_hint=what
        ) from None


_endpoints_flag = click.option(
    "--endpoints",
    envvar="RAFTKV_ENDPOINTS",
    default=None,
    help=f"Comma-separated API addresses HOST:PORT or https://HOST:PORT "
    f"(default: {DEFAULT_ENDPOINTS}).",
)


def _endpoints_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--endpoints plus the credentials options (every client command takes both)."""
    return _endpoints_flag(_auth_options(f))


_timeout_option = click.option("--timeout", type=float, default=5.0, show_default=True)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"raftkv.{param.name}"] = value
    return value


def _auth_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--token/--ca-file/--cert-file/--key-file, kept in the click context's meta."""
    for opt in reversed(
        [
            click.option(
                "--token",
                envvar="RAFTKV_TOKEN",
                default=None,
                expose_value=False,
                callback=_remember,
                help="Bearer token for a cluster with --client-token-file (prefer the env var).",
            ),
            click.option(
                "--ca-file",
                envvar="RAFTKV_CA_FILE",
                default=None,
                expose_value=False,
                callback=_remember,
                help="CA certificate to verify the nodes with; turns on HTTPS "
                "(as does an https:// endpoint).",
            ),
            click.option(
                "--cert-file",
                envvar="RAFTKV_CERT_FILE",
                default=None,
                expose_value=False,
                callback=_remember,
                help="Client certificate (PEM), for nodes with --tls-api-client-auth.",
            ),
            click.option(
                "--key-file",
                envvar="RAFTKV_KEY_FILE",
                default=None,
                expose_value=False,
                callback=_remember,
                help="Private key of --cert-file (PEM).",
            ),
        ]
    ):
        f = opt(f)
    return f


def _auth() -> dict[str, Any]:
    """The --token/--ca-file/--cert-file/--key-file of the running command."""
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    return {
        name: meta.get(f"raftkv.{name}") for name in ("token", "ca_file", "cert_file", "key_file")
    }


def _quote(key: str) -> str:
    from urllib.parse import quote

    return quote(key, safe="")


def _client_call(endpoints: str | None, timeout: float, call: Callable[[Any], Any]) -> Any:
    """Run ``call(client)`` with helper errors turned into one-line messages."""
    from raftkv.client import Client, ClientError

    try:
        client = Client(endpoints, deadline=timeout, timeout=min(timeout, 5.0), **_auth())
    except ValueError as exc:
        _fail(str(exc))
    try:
        return call(client)
    except ClientError as exc:
        _fail(str(exc))


def _show_write(result: Any) -> None:
    click.echo(f"ok index={result.index} revision={result.revision} leader={result.leader}")


def _show_json(body: dict[str, Any]) -> None:
    """Print a JSON object a field per line, and each item of a list field
    (keys, responses) on a line of its own."""
    import json as _json

    def dumps(value: Any) -> str:
        return _json.dumps(value, ensure_ascii=False)

    fields = []
    for name, value in body.items():
        text = dumps(value)
        if isinstance(value, list) and value:
            text = "[\n" + ",\n".join(f"    {dumps(item)}" for item in value) + "\n  ]"
        fields.append(f"  {dumps(name)}: {text}")
    click.echo("{\n" + ",\n".join(fields) + "\n}")


@main.command()
@click.argument("key")
@click.argument("value")
@click.option(
    "--lease",
    type=click.IntRange(0, 2**63 - 1),
    default=0,
    help="Attach KEY to this lease (raftkv lease grant): it is deleted when the lease ends.",
)
@_endpoints_option
@_timeout_option
def put(key: str, value: str, lease: int, endpoints: str | None, timeout: float) -> None:
    """Set KEY to the JSON VALUE (e.g. raftkv put x 7, raftkv put s '"text"')."""
    v = _json_arg(value, "VALUE")
    _show_write(_client_call(endpoints, timeout, lambda c: c.put(key, v, lease=lease)))


def _key_or_prefix(key: str | None, prefix: str | None) -> None:
    if key is None and prefix is None:
        raise click.UsageError("give KEY or --prefix PREFIX")
    if key is not None and prefix is not None:
        raise click.UsageError("give KEY or --prefix PREFIX, not both")


@main.command()
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="List every key starting with PREFIX ('' = all).")
@click.option(
    "--rev",
    "revision",
    type=click.IntRange(0),
    default=0,
    help="Read as of this store revision (a 4xx once compacted away) [default: now].",
)
@click.option("--limit", type=click.IntRange(0), default=0, help="With --prefix: at most N keys.")
@click.option("--keys-only", is_flag=True, help="With --prefix: no values.")
@click.option("--count-only", is_flag=True, help="With --prefix: only the count.")
@click.option("--stale", is_flag=True, help="Serve from the contacted node without a ReadIndex.")
@_endpoints_option
@_timeout_option
def get(
    key: str | None,
    prefix: str | None,
    revision: int,
    limit: int,
    keys_only: bool,
    count_only: bool,
    stale: bool,
    endpoints: str | None,
    timeout: float,
) -> None:
    """Print the JSON value of KEY, or list the keys under --prefix.

    Linearizable unless --stale. With --prefix it prints the JSON answer of
    GET /v1/kv: {"kvs": [{"key", "value", "create_revision", "mod_revision",
    "version"}...], "count", "more", "revision"} ("more": --limit cut the list).
    """
    import json as _json

    _key_or_prefix(key, prefix)
    consistency = "stale" if stale else "linearizable"
    if key is not None:
        if limit or keys_only or count_only:
            raise click.UsageError("--limit, --keys-only and --count-only go only with --prefix")
        value = _client_call(
            endpoints, timeout, lambda c: c.get(key, consistency, revision=revision)
        )
        click.echo(_json.dumps(value))
        return
    listing = _client_call(
        endpoints,
        timeout,
        lambda c: c.range(
            prefix=prefix,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            consistency=consistency,
        ),
    )
    kvs = []
    for kv in listing.kvs:
        item = {"key": kv.key, "value": kv.value}
        if keys_only:
            del item["value"]
        item.update(
            create_revision=kv.create_revision, mod_revision=kv.mod_revision, version=kv.version
        )
        kvs.append(item)
    _show_json(
        {"kvs": kvs, "count": listing.count, "more": listing.more, "revision": listing.revision}
    )


@main.command()
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="Delete every key starting with PREFIX ('' = all).")
@_endpoints_option
@_timeout_option
def delete(key: str | None, prefix: str | None, endpoints: str | None, timeout: float) -> None:
    """Delete KEY (an error if it is absent), or every key under --prefix (in
    one revision; none is no error)."""
    _key_or_prefix(key, prefix)
    if key is not None:
        _show_write(_client_call(endpoints, timeout, lambda c: c.delete(key)))
        return
    result = _client_call(endpoints, timeout, lambda c: c.delete_range(prefix=prefix))
    deleted = "?" if result.deleted is None else result.deleted  # a replayed retry
    click.echo(f"ok deleted={deleted} revision={result.revision} leader={result.leader}")


@main.command()
@click.argument("key")
@click.argument("expect")
@click.argument("new")
@_endpoints_option
@_timeout_option
def cas(key: str, expect: str, new: str, endpoints: str | None, timeout: float) -> None:
    """Set KEY to NEW if it holds EXPECT (JSON; null means "absent")."""
    e, n = _json_arg(expect, "EXPECT"), _json_arg(new, "NEW")
    _show_write(_client_call(endpoints, timeout, lambda c: c.cas(key, e, n)))


@main.command()
@click.argument("file", type=click.File("r"), default="-")
@_endpoints_option
@_timeout_option
def txn(file: Any, endpoints: str | None, timeout: float) -> None:
    """Run the transaction in FILE (JSON; '-' or none: stdin) and print the answer.

    The JSON is POST /v1/txn's (docs/api.md): {"compare": [{"key", "target":
    "value|version|create_revision|mod_revision", "op": "==|!=|<|>", "value"}],
    "success": [{"put": {"key", "value"}} | {"delete": {"key"}} | {"range":
    {"key"}}], "failure": [...]}; a range or delete also takes "range_end" or
    "prefix": true. Prints {"succeeded", "revision", "index", "leader",
    "responses"} (a retry the cluster had applied already: "replayed": true
    and no responses); a compare
    that fails is no error (exit 0, "succeeded": false).
    """
    import json as _json

    text = file.read()
    try:
        body = _json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="FILE") from None
    if not isinstance(body, dict):
        raise click.BadParameter("must hold a JSON object", param_hint="FILE")
    for name in body:
        if name not in ("compare", "success", "failure"):
            raise click.BadParameter(
                f"unknown field {name!r} (compare, success, failure)", param_hint="FILE"
            )
    result = _client_call(
        endpoints,
        timeout,
        lambda c: c.txn(body.get("compare", []), body.get("success", []), body.get("failure", [])),
    )
    answer: dict[str, Any] = {
        "succeeded": result.succeeded,
        "revision": result.revision,
        "index": result.index,
        "leader": result.leader,
    }
    if result.replayed:
        answer["replayed"] = True
    else:
        answer["responses"] = list(result.responses)
    _show_json(answer)


@main.command()
@click.argument("revision", type=click.IntRange(1))
@_endpoints_option
@_timeout_option
def compact(revision: int, endpoints: str | None, timeout: float) -> None:
    """Drop the history below REVISION: reads before it fail from then on, and the
    space it held is freed (the NOSPACE alarm clears once the store is back
    under --quota-bytes). REVISION: e.g. the "revision" of `raftkv status`."""
    result = _client_call(endpoints, timeout, lambda c: c.compact(revision))
    click.echo(
        f"ok compact_revision={result.compact_revision} revision={result.revision} "
        f"leader={result.leader}"
    )


@main.command()
@_endpoints_option
@_timeout_option
def status(endpoints: str | None, timeout: float) -> None:
    """Show every node's status (role, term, leader, indexes)."""
    import json as _json

    ok = False
    for base in _Http(endpoints, timeout).endpoints:
        code, payload = _Http(base, timeout).request_one("GET", "/v1/status")
        if code == 200 and isinstance(payload, dict):
            ok = True
            store = f" revision={payload['revision']}" if "revision" in payload else ""
            if payload.get("alarm"):
                store += f" alarm={payload['alarm']}"
            click.echo(
                f"{payload['id']:<6} {base:<26} {payload['role']:<10} term={payload['term']} "
                f"leader={payload['leader']} commit={payload['commit_index']} "
                f"applied={payload['applied_index']}{store}"
            )
        else:
            click.echo(f"{'?':<6} {base:<26} unreachable: {_json.dumps(payload)}")
    if not ok:
        _fail("cluster unreachable")


@main.group()
def members() -> None:
    """List, add, update or remove cluster members."""


@members.command("list")
@_endpoints_option
@_timeout_option
def members_list(endpoints: str | None, timeout: float) -> None:
    """Show the replicated address book, the voters/learners and the removed ids."""
    _show(*_Http(endpoints, timeout).request("GET", "/v1/members"))


@members.command("add")
@click.argument("node_id")
@click.option("--raft-addr", required=True, help="HOST:PORT of the new node's peer transport.")
@click.option("--api-addr", required=True, help="HOST:PORT of the new node's HTTP API.")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner.")
@_endpoints_option
@_timeout_option
def members_add(
    node_id: str,
    raft_addr: str,
    api_addr: str,
    learner: bool,
    endpoints: str | None,
    timeout: float,
) -> None:
    """Add NODE_ID, then start it with `raftkv serve --initial-cluster-state existing`.

    Its --initial-cluster lists the current members plus itself. Add large or
    slow-to-catch-up nodes as --learner first, then `raftkv members promote`.
    An id that was removed from the cluster is refused (HTTP 409): a node that
    replaces one, even on the same machine, joins under a new id.
    """
    body = {"id": node_id, "raft_addr": raft_addr, "api_addr": api_addr, "learner": learner}
    _show(*_Http(endpoints, timeout).request("POST", "/v1/members", body))


@members.command("promote")
@click.argument("node_id")
@_endpoints_option
@_timeout_option
def members_promote(node_id: str, endpoints: str | None, timeout: float) -> None:
    """Make the learner NODE_ID a voter (refused until it has caught up)."""
    _show(*_Http(endpoints, timeout).request("POST", f"/v1/members/{_quote(node_id)}/promote"))


@members.command("update")
@click.argument("node_id")
@click.option("--raft-addr", required=True, help="HOST:PORT of the member's peer transport.")
@click.option("--api-addr", required=True, help="HOST:PORT of the member's HTTP API.")
@_endpoints_option
@_timeout_option
def members_update(
    node_id: str, raft_addr: str, api_addr: str, endpoints: str | None, timeout: float
) -> None:
    """Give the member NODE_ID new addresses (moving it to another host or port).

    Every member updates its address book and peer links once the change
    commits; then restart NODE_ID with the same --raft-addr and --api-addr.
    Until it restarts there, the others cannot reach it: update one member at
    a time, and only while the rest still form a quorum.
    """
    body = {"raft_addr": raft_addr, "api_addr": api_addr}
    _show(*_Http(endpoints, timeout).request("PUT", f"/v1/members/{_quote(node_id)}", body))


@members.command("remove")
@click.argument("node_id")
@_endpoints_option
@_timeout_option
def members_remove(node_id: str, endpoints: str | None, timeout: float) -> None:
    """Remove NODE_ID from the cluster; the id can never be added again."""
    _show(*_Http(endpoints, timeout).request("DELETE", f"/v1/members/{_quote(node_id)}"))


@main.command("transfer-leader")
@click.argument("node_id")
@_endpoints_option
@_timeout_option
def transfer_leader(node_id: str, endpoints: str | None, timeout: float) -> None:
    """Hand leadership to NODE_ID."""
    _show(*_Http(endpoints, timeout).request("POST", "/v1/leader/transfer", {"to": node_id}))


@main.command()
@click.option("--seed", type=int, default=None, help="Seed of the faults and clients [random].")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option(
    "--time",
    "duration",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    help="Seconds of client load under faults (then heal, recovery, final reads).",
)
@click.option("--recovery", type=click.FloatRange(0), default=5.0, show_default=True)
@click.option(
    "--faults",
    default="all",
    show_default=True,
    help="all, none, or a comma list of partition,kill,pause,restart,membership.",
)
@click.option("--clients", type=click.IntRange(1), default=10, show_default=True)
@click.option("--keys", type=click.IntRange(1), default=4, show_default=True)
@click.option(
    "--key-period",
    type=click.FloatRange(1),
    default=15.0,
    show_default=True,
    help="Seconds before the clients move to a fresh set of keys.",
)
@click.option(
    "--net",
    type=click.Choice(["auto", "netns", "loopback"]),
    default="auto",
    show_default=True,
    help="netns: a network namespace per node (root); loopback: 127.x + TCP proxies.",
)
@click.option(
    "--results",
    type=click.Path(file_okay=False),
    default="results/jepsen",
    show_default=True,
)
@click.option("--heartbeat-interval-ms", type=click.IntRange(1), default=50, show_default=True)
@click.option("--election-timeout-ms", type=click.IntRange(2), default=500, show_default=True)
@click.option(
    "--unsafe-stale-reads",
    is_flag=True,
    help="Read with ?consistency=stale (local state, no ReadIndex): must fail the check.",
)
@click.option("--no-fsync", is_flag=True, help="Run the nodes with --no-fsync (UNSAFE).")
@click.option("--keep-data", is_flag=True, help="Keep the data dirs of a passing run.")
@click.option(
    "--txn/--no-txn",
    default=None,
    help="Also run range reads, transactions, delete-ranges and compactions, checked by "
    "their revisions [default: when the nodes list GET /v1/kv?prefix=].",
)
@click.option(
    "--watches",
    is_flag=True,
    help="Also run watchers on every node (resuming across faults), each checked against "
    "the committed history.",
)
@click.option(
    "--leases",
    is_flag=True,
    help="Also run lease clients (grant, attach keys, keep alive, revoke or let expire), "
    "checked against the lease contract.",
)
def jepsen(
    seed: int | None,
    nodes: int,
    duration: float,
    recovery: float,
    faults: str,
    clients: int,
    keys: int,
    key_period: float,
    net: str,
    results: str,
    heartbeat_interval_ms: int,
    election_timeout_ms: int,
    unsafe_stale_reads: bool,
    no_fsync: bool,
    keep_data: bool,
    txn: bool | None,
    watches: bool,
    leases: bool,
) -> None:
    """Fault-test real `raftkv serve` processes and check the history (docs/jepsen.md).

    Each node runs in its own network namespace (as root; else on a loopback
    address behind TCP proxies). A nemesis drawn from --seed partitions, kills,
    pauses, restarts and removes/re-adds nodes while clients read, write and
    compare-and-set (with --txn also range-read, run transactions, delete ranges
    and compact; with --watches watchers on every node record every event; with
    --leases lease clients grant, keep alive and revoke). Everything is healed,
    every key is read on every node, and the history is checked for
    linearizability (the simulator's checker), by its revisions (the
    simulator's revision checker), for durability and exactly-once execution
    against the replicated log, and the watchers and leases against the
    committed history (the simulator's watch and lease checkers).
    Exit status: 0 pass, 1 violation, 2 undecided or harness error. The last
    line is the verdict.
    """
    import os
    from pathlib import Path

    from raftkv.jepsen import JepsenConfig, parse_faults, run_jepsen

    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big") % 1_000_000
    try:
        kinds = parse_faults(faults)
    except ValueError as exc:
        _fail(str(exc))
    config = JepsenConfig(
        seed=seed,
        nodes=nodes,
        time=duration,
        recovery=recovery,
        faults=kinds,
        clients=clients,
        keys=keys,
        key_period=key_period,
        net=net,
        results=Path(results),
        heartbeat_ms=heartbeat_interval_ms,
        election_ms=election_timeout_ms,
        stale_reads=unsafe_stale_reads,
        fsync=not no_fsync,
        keep_data=keep_data,
        txn=txn,
        watches=watches,
        leases=leases,
    )
    result = run_jepsen(config, out=lambda line: click.echo(line))
    sys.exit(result.exit_code)


# ----------------------------------------------------------------------------- watch


def _kv_text(kv: Any) -> str:
    import json as _json

    return _json.dumps(kv.value, ensure_ascii=False)


def _show_event(event: Any, prev_kv: bool) -> None:
    kv = event.kv
    if event.type == "put":
        line = f"{kv.mod_revision} PUT {kv.key} {_kv_text(kv)}"
        if kv.lease:
            line += f" lease={kv.lease}"
    else:
        line = f"{kv.mod_revision} DELETE {kv.key}"
    if prev_kv and event.prev_kv is not None:
        line += f" (was {_kv_text(event.prev_kv)})"
    click.echo(line)


@main.command()
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="Watch every key starting with PREFIX ('' = all).")
@click.option(
    "--rev",
    "revision",
    type=click.IntRange(0),
    default=0,
    help="Start at this store revision (a 4xx once compacted away) [default: the next one].",
)
@click.option("--prev-kv", is_flag=True, help="Show each key's value before the change.")
@_endpoints_option
@_timeout_option
def watch(
    key: str | None,
    prefix: str | None,
    revision: int,
    prev_kv: bool,
    endpoints: str | None,
    timeout: float,
) -> None:
    """Print every change of KEY (or under --prefix) as it happens, one line each:
    REVISION PUT KEY VALUE, or REVISION DELETE KEY. Reconnects on its own and
    resumes after the last revision printed; Ctrl-C stops.

    --timeout is how long it keeps trying while no node accepts the watch."""

    def run(client: Any) -> None:
        with client.watch(key, prefix=prefix, start_revision=revision, prev_kv=prev_kv) as w:
            for response in w:
                for event in response.events:
                    _show_event(event, prev_kv)

    _key_or_prefix(key, prefix)
    try:
        _client_call(endpoints, timeout, run)
    except KeyboardInterrupt:
        sys.exit(130)


# ----------------------------------------------------------------------------- leases


@main.group()
def lease() -> None:
    """Grant, renew, inspect and revoke leases (keys put with --lease vanish with them)."""


@lease.command("grant")
@click.argument("ttl", type=click.IntRange(1))
@click.option("--id", "lease_id", type=click.IntRange(0, 2**63 - 1), default=0, help="Its id.")
@_endpoints_option
@_timeout_option
def lease_grant(ttl: int, lease_id: int, endpoints: str | None, timeout: float) -> None:
    """A lease of TTL seconds (raised to the cluster's minimum); prints its id."""
    granted = _client_call(endpoints, timeout, lambda c: c.lease_grant(ttl, lease_id=lease_id))
    click.echo(f"lease {granted.id} granted with TTL {granted.ttl}s")


@lease.command("revoke")
@click.argument("lease_id", type=click.IntRange(1, 2**63 - 1))
@_endpoints_option
@_timeout_option
def lease_revoke(lease_id: int, endpoints: str | None, timeout: float) -> None:
    """End the lease now: every key attached to it is deleted."""
    result = _client_call(endpoints, timeout, lambda c: c.lease_revoke(lease_id))
    click.echo(f"lease {lease_id} revoked (revision {result.revision})")


@lease.command("keep-alive")
@click.argument("lease_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--once", is_flag=True, help="Renew once and exit.")
@_endpoints_option
@_timeout_option
def lease_keep_alive(lease_id: int, once: bool, endpoints: str | None, timeout: float) -> None:
    """Renew the lease every third of its TTL until Ctrl-C (or once)."""

    def run(client: Any) -> None:
        while True:
            ttl = client.lease_keepalive(lease_id)
            click.echo(f"lease {lease_id} kept alive with TTL {ttl}s")
            if once:
                return
            time.sleep(max(0.5, ttl / 3))

    try:
        _client_call(endpoints, timeout, run)
    except KeyboardInterrupt:
        sys.exit(130)


@lease.command("ttl")
@click.argument("lease_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--keys", is_flag=True, help="List the keys attached to it.")
@_endpoints_option
@_timeout_option
def lease_ttl(lease_id: int, keys: bool, endpoints: str | None, timeout: float) -> None:
    """The lease's remaining TTL as the leader counts it (and its keys)."""
    info = _client_call(endpoints, timeout, lambda c: c.lease_ttl(lease_id, keys=keys))
    line = f"lease {info.id} granted with TTL {info.granted_ttl}s, remaining {info.ttl}s"
    if keys:
        line += ", keys: " + (" ".join(info.keys) if info.keys else "(none)")
    click.echo(line)


@lease.command("list")
@_endpoints_option
@_timeout_option
def lease_list(endpoints: str | None, timeout: float) -> None:
    """Every lease, one per line: ID (granted TTL)."""
    leases = _client_call(endpoints, timeout, lambda c: c.leases())
    click.echo(f"{len(leases)} lease(s)")
    for granted in leases:
        click.echo(f"{granted.id} (TTL {granted.ttl}s)")


# ----------------------------------------------------------------------------- lock, elect


_ttl_option = click.option(
    "--ttl",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="The session lease's TTL: how long a holder that stopped renewing keeps it.",
)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_ttl_option
@_endpoints_option
@_timeout_option
def lock(
    name: str, command: tuple[str, ...], ttl: int, endpoints: str | None, timeout: float
) -> None:
    """Hold the lock NAME (waiting for it), then run COMMAND and release it.

    Without COMMAND: print the lock's key and hold it until Ctrl-C. The lock is
    held through a lease kept alive meanwhile; if the lease is lost (this
    process could not renew it for TTL seconds), COMMAND is terminated and the
    exit status is 1. Otherwise the exit status is COMMAND's. COMMAND sees the
    key as $RAFTKV_LOCK_KEY. Use -- before a COMMAND with options. Ctrl-C or
    SIGTERM releases the lock at once (and stops COMMAND)."""
    from raftkv.client.concurrency import Lock, LockLost, Session

    _interrupt_on_sigterm()

    def run(client: Any) -> int:
        with Session(client, ttl=ttl) as session:
            mutex = Lock(session, name)
            try:
                held = mutex.acquire()
            except LockLost as exc:
                _fail(str(exc))
            try:
                return _hold(session, held.key, command)
            finally:
                mutex.release()

    try:
        code = _client_call(endpoints, timeout, run)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (``kill``, ``timeout``) ends a lock or election as Ctrl-C does:
    the key is released and the lease revoked now, not after its TTL."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _hold(session: Any, key: str, command: tuple[str, ...]) -> int:
    """Run ``command`` (or wait for Ctrl-C) while the session's lease lives."""
    import subprocess

    if not command:
        click.echo(key)
        session.wait_lost()
        click.echo(f"lost {key}: the lease ended", err=True)
        return 1
    env = {**os.environ, "RAFTKV_LOCK_KEY": key}
    child = subprocess.Popen(list(command), env=env)
    try:
        while True:
            try:
                return child.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
            if session.lost:
                click.echo(f"lost {key}: the lease ended; stopping the command", err=True)
                child.terminate()
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return 1
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()


@main.command()
@click.argument("name")
@click.argument("value", required=False)
@click.option(
    "--listen", is_flag=True, help="Do not campaign: print the leader each time it changes."
)
@_ttl_option
@_endpoints_option
@_timeout_option
def elect(
    name: str, value: str | None, listen: bool, ttl: int, endpoints: str | None, timeout: float
) -> None:
    """Campaign to be the leader of NAME with the JSON VALUE as proposal; once
    elected print the leader key and value, and lead until Ctrl-C (or until the
    lease is lost: exit status 1). With --listen (no VALUE): print the leader's
    key and value now and whenever the leader changes, until Ctrl-C."""
    from raftkv.client.concurrency import Election, LockLost, Session, observe_leader

    if listen == (value is not None):
        raise click.UsageError("give VALUE to campaign, or --listen to follow the leader")
    _interrupt_on_sigterm()

    def follow(client: Any) -> int:
        for leader in observe_leader(client, name):
            click.echo("(no leader)" if leader is None else f"{leader.key} {_kv_text(leader)}")
        return 0

    def run(client: Any) -> int:
        proposal = _json_arg(value or "", "VALUE")
        with Session(client, ttl=ttl) as session:
            election = Election(session, name, proposal)
            try:
                leader = election.campaign()
            except LockLost as exc:
                _fail(str(exc))
            try:
                click.echo(f"{leader.key} {_kv_text(leader)}")
                session.wait_lost()
                click.echo(f"lost {leader.key}: the lease ended", err=True)
                return 1
            finally:
                election.resign()

    try:
        code = _client_call(endpoints, timeout, follow if listen else run)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)
