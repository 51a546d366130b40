"""``raftkv sim``: the deterministic cluster simulator, one seed or a sweep of
many seeds over worker processes, and the command line that replays a failing
seed.

Rule: a run is a pure function of its seed and options (:mod:`raftkv.sim`);
wall-clock time shows only in the ``--timing`` figures.
"""

from __future__ import annotations

import importlib
import io
import multiprocessing
import os
import sys
import time
from dataclasses import replace

import click

from raftkv.core import Raft
from raftkv.sim.faults import FAULT_KINDS, parse_faults
from raftkv.sim.mutants import ALL_MUTANTS, MUTANTS, plant
from raftkv.sim.runner import SimConfig, SimResult, format_summary, run_simulation
from raftkv.viz.timeline import timeline_page


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
    if config.serial_storage:
        parts.append("--serial-storage")
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


@click.command()
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
@click.option(
    "--serial-storage",
    is_flag=True,
    help="Nodes handle one Ready at a time, each waiting for the last one's fsync, as a "
    "server on a fast disk does; by default they go on while fsyncs run (asynchronous "
    "storage writes, as a server on a slow disk does).",
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
    serial_storage: bool,
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
        serial_storage=serial_storage,
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
        f"{' leases' if base.leases else ''}{' serial-storage' if base.serial_storage else ''}): "
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
