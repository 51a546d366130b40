"""The ``raftkv`` command line.

Rule: the CLI is a thin shell over library functions -- it parses options,
calls them and prints; it holds no Raft or simulation logic. Wall-clock time,
processes and files are allowed here (and only here among the layers that use
the simulator).

This module assembles the :func:`main` group; each command group lives in a
module of its own, which imports only :mod:`raftkv.cli._common` of this package:

* :mod:`~raftkv.cli.simulator`: ``sim`` (the deterministic simulator);
* :mod:`~raftkv.cli.node`: ``serve`` (one node);
* :mod:`~raftkv.cli.local_cluster`: ``cluster`` (a local cluster of ``serve``
  processes);
* :mod:`~raftkv.cli.kv`: ``put``, ``get``, ``delete``, ``cas``, ``txn``,
  ``compact`` and ``watch``;
* :mod:`~raftkv.cli.admin`: ``status``, ``members`` and ``transfer-leader``;
* :mod:`~raftkv.cli.leases`: ``lease``;
* :mod:`~raftkv.cli.concurrency`: ``lock`` and ``elect``;
* :mod:`~raftkv.cli.jepsen_cmd`: ``jepsen`` (real nodes under faults, history
  checked);
* :mod:`~raftkv.cli._common`: what the client commands share (the endpoint,
  credential and timeout options, the client calls, JSON in and out, errors).
"""

from __future__ import annotations

import click

from raftkv.cli._common import DEFAULT_ENDPOINTS
from raftkv.cli.admin import members, status, transfer_leader
from raftkv.cli.concurrency import elect, lock
from raftkv.cli.jepsen_cmd import jepsen
from raftkv.cli.kv import cas, compact, delete, get, put, txn, watch
from raftkv.cli.leases import lease
from raftkv.cli.local_cluster import cluster
from raftkv.cli.node import EXIT_NODE_FAILED, serve
from raftkv.cli.simulator import load_raft_class, parse_seeds, sim

__all__ = [
    "main",
    "serve",
    "parse_seeds",
    "load_raft_class",
    "DEFAULT_ENDPOINTS",
    "EXIT_NODE_FAILED",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raftkv", message="%(prog)s %(version)s")
def main() -> None:
    """raftkv: Raft consensus and a replicated key/value store, in Python."""


for _command in (
    sim,
    serve,
    cluster,
    put,
    get,
    delete,
    cas,
    txn,
    compact,
    status,
    members,
    transfer_leader,
    jepsen,
    watch,
    lease,
    lock,
    elect,
):
    main.add_command(_command)
