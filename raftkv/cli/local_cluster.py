"""``raftkv cluster``: a local cluster of ``raftkv serve`` processes on ports
derived from ``--base-port``; Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import sys
import time

import click

from raftkv.cli._common import _fail


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
