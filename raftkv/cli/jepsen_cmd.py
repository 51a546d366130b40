"""``raftkv jepsen``: fault-test real ``raftkv serve`` processes and check the
history; :mod:`raftkv.jepsen` does the work (docs/jepsen.md).
"""

from __future__ import annotations

import sys

import click

from raftkv.cli._common import _fail


@click.command()
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
