"""The command line of a ``raftkv serve`` process.

Rule: this is the one place that spells ``raftkv serve``'s flags for a
launcher (``raftkv cluster``, the test harness, jepsen, the benchmarks);
:func:`serve_argv` takes typed values and returns the argv, and a flag left
at None is not passed, so ``serve`` applies its own default. The tests parse
its output with the real ``serve`` command's click parser.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from raftkv.core.types import NodeId
from raftkv.limits import HostPort, format_host_port
from raftkv.replica.membership import Member
from raftkv.server.config import format_initial_cluster

__all__ = ["InitialClusterState", "ServeOptions", "raftkv_argv", "serve_argv"]

InitialClusterState = Literal["new", "existing"]
"""``--initial-cluster-state``: found a cluster, or join a running one."""


def raftkv_argv(*args: str, python: str | None = None) -> list[str]:
    """``raftkv ARGS`` as run by ``python`` (default: this interpreter), with
    the package found on its path rather than an installed script."""
    return [python or sys.executable, "-m", "raftkv.cli", *args]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """The ``raftkv serve`` flags every node of a launch gets alike.

    None leaves ``serve``'s default (see ``raftkv serve --help``).
    """

    heartbeat_interval_ms: int | None = None
    """``--heartbeat-interval-ms``."""
    election_timeout_ms: int | None = None
    """``--election-timeout-ms``."""
    fsync: bool = True
    """False passes ``--no-fsync`` (UNSAFE: tests and benchmarks only)."""
    snapshot_entries: int | None = None
    """``--snapshot-entries``."""
    log_format: Literal["text", "json"] | None = None
    """``--log-format``."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    """``--log-level``."""
    watch_progress_interval_s: float | None = None
    """``--watch-progress-interval-s``."""
    extra_args: tuple[str, ...] = ()
    """More ``serve`` flags, passed last (so they override the ones above)."""


def serve_argv(
    node_id: NodeId | str,
    *,
    data_dir: str | os.PathLike[str],
    raft_addr: HostPort,
    api_addr: HostPort,
    initial_cluster: Mapping[NodeId, Member],
    initial_cluster_state: InitialClusterState | None = None,
    grpc_addr: HostPort | None = None,
    options: ServeOptions | None = None,
    python: str | None = None,
) -> list[str]:
    """The argv that runs node ``node_id``.

    Args:
        node_id: ``--id``.
        data_dir: ``--data-dir``.
        raft_addr: ``--raft-addr``, where the node listens for peers (it may
            differ from its advertised address in ``initial_cluster``).
        api_addr: ``--api-addr``.
        initial_cluster: ``--initial-cluster``: every member's advertised
            addresses, this node's included.
        initial_cluster_state: ``--initial-cluster-state`` (None: serve's default, new).
        grpc_addr: ``--grpc-addr`` (None: no etcd gRPC API).
        options: the flags shared by every node.
        python: the interpreter (default: this one).
    """
    opts = options or ServeOptions()
    argv = [
        *raftkv_argv("serve", python=python),
        "--id",
        str(node_id),
        "--data-dir",
        os.fspath(data_dir),
        "--raft-addr",
        format_host_port(raft_addr),
        "--api-addr",
        format_host_port(api_addr),
    ]
    if grpc_addr is not None:
        argv += ["--grpc-addr", format_host_port(grpc_addr)]
    argv += ["--initial-cluster", format_initial_cluster(dict(initial_cluster))]
    if initial_cluster_state is not None:
        argv += ["--initial-cluster-state", initial_cluster_state]
    if opts.heartbeat_interval_ms is not None:
        argv += ["--heartbeat-interval-ms", str(opts.heartbeat_interval_ms)]
    if opts.election_timeout_ms is not None:
        argv += ["--election-timeout-ms", str(opts.election_timeout_ms)]
    if opts.snapshot_entries is not None:
        argv += ["--snapshot-entries", str(opts.snapshot_entries)]
    if not opts.fsync:
        argv.append("--no-fsync")
    if opts.log_format is not None:
        argv += ["--log-format", opts.log_format]
    if opts.log_level is not None:
        argv += ["--log-level", opts.log_level]
    if opts.watch_progress_interval_s is not None:
        argv += ["--watch-progress-interval-s", f"{opts.watch_progress_interval_s:g}"]
    return argv + list(opts.extra_args)
