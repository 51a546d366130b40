"""Launching ``raftkv serve`` processes: one command line, one local cluster.

Rule: every launcher of real nodes -- ``raftkv cluster``, the test harness,
jepsen, the benchmarks -- builds ``raftkv serve``'s argv with
:func:`serve_argv` and runs the nodes with :mod:`raftkv.launch.cluster`.
This package sits beside the CLI, above the server: it imports
:mod:`raftkv.server.config` for the ``--initial-cluster`` format, and nothing
in :mod:`raftkv.server` or :mod:`raftkv.client` imports it.

Example::

    from raftkv.launch import LocalCluster, ServeOptions, loopback_members

    cluster = LocalCluster(loopback_members(3), Path("data"), ServeOptions(fsync=False))
    cluster.start()
    try:
        cluster.wait_ready(timeout=30)
        print(cluster.urls())
    finally:
        cluster.stop()
"""

from __future__ import annotations

from raftkv.launch.argv import InitialClusterState, ServeOptions, raftkv_argv, serve_argv
from raftkv.launch.cluster import (
    PACKAGE_ROOT,
    LocalCluster,
    child_env,
    free_ports,
    loopback_members,
    spawn,
    stop_processes,
)
from raftkv.launch.errors import LaunchError, NodeExited, NotReady

__all__ = [
    "PACKAGE_ROOT",
    "InitialClusterState",
    "LaunchError",
    "LocalCluster",
    "NodeExited",
    "NotReady",
    "ServeOptions",
    "child_env",
    "free_ports",
    "loopback_members",
    "raftkv_argv",
    "serve_argv",
    "spawn",
    "stop_processes",
]
