"""``raftkv cluster``: a local cluster of ``raftkv serve`` processes on ports
derived from ``--base-port``; Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import time

import click

from raftkv.cli._common import _fail
from raftkv.limits import format_host_port


@click.command()
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

    from raftkv.core.types import NodeId
    from raftkv.launch import LocalCluster, ServeOptions
    from raftkv.replica.membership import Member

    ids = [NodeId(f"n{i}") for i in range(1, nodes + 1)]
    members = {
        n: Member((host, base_port + i), (host, base_port + 1000 + i)) for i, n in enumerate(ids, 1)
    }
    grpc = (
        {}
        if no_grpc
        else {n: (host, _etcd_port(i, base_port)) for i, n in enumerate(ids, 1) if i <= 6}
    )
    launch = LocalCluster(
        members,
        data_dir,
        ServeOptions(
            heartbeat_interval_ms=heartbeat_interval_ms,
            election_timeout_ms=election_timeout_ms,
            fsync=not no_fsync,
            log_format="json" if log_format == "json" else "text",
        ),
        grpc=grpc,
        # Own process groups: a terminal's Ctrl-C reaches us, and we stop the nodes.
        new_session=True,
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    api = {n: format_host_port(m.api) for n, m in members.items()}
    for n in ids:
        launch.start_node(n)
        etcd = f"  etcd grpc {format_host_port(grpc[n])}" if n in grpc else ""
        click.echo(
            f"{n}: api http://{api[n]}{etcd}  raft {format_host_port(members[n].raft)}  "
            f"data {os.path.join(data_dir, n)}"
        )
    click.echo(f"endpoints: {','.join('http://' + api[n] for n in ids)}")
    if grpc:
        click.echo(
            f"etcd endpoints: {','.join(format_host_port(a) for a in grpc.values())} "
            "(ETCDCTL_API=3 etcdctl --endpoints ...)"
        )
    click.echo(f"dashboard: http://{api[ids[0]]}/ (any node's API serves it)")
    click.echo("Ctrl-C stops the cluster.")
    try:
        while not stopping:
            time.sleep(0.2)
            for n, p in launch.procs.items():
                if p.returncode is None and p.poll() is not None:
                    click.echo(f"{n} exited with status {p.returncode}", err=True)
            if all(p.returncode is not None for p in launch.procs.values()):
                _fail("every node exited")
    finally:
        click.echo("stopping the cluster...", err=True)
        launch.stop(grace=10)
    click.echo("cluster stopped", err=True)


_DEFAULT_BASE_PORT = 7000


def _etcd_port(i: int, base_port: int) -> int:
    """Node ``i``'s (1-based) gRPC port: etcd's local-cluster client ports 2379, 22379,
    32379, ... with the default ``--base-port``, else BASE+2001, BASE+2002, ..."""
    if base_port != _DEFAULT_BASE_PORT:
        return base_port + 2000 + i
    return 2379 if i == 1 else i * 10_000 + 2379
