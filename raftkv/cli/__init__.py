"""The ``raftkv`` command line.

Rule: the CLI is a thin shell over library functions -- it parses options,
calls them and prints; it holds no Raft or simulation logic. Wall-clock time,
processes and files are allowed here (and only here among the layers that use
the simulator).

This module assembles the :func:`main` group, loading each command's module
when the command runs (so ``raftkv get`` starts without the simulator's
imports); each command group lives in a module of its own, which imports only
:mod:`raftkv.cli._common` of this package:

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

import importlib
from typing import Any

import click

__all__ = [
    "main",
    "serve",
    "parse_seeds",
    "load_raft_class",
    "DEFAULT_ENDPOINTS",
    "EXIT_NODE_FAILED",
]

_COMMANDS: dict[str, tuple[str, str]] = {
    "cas": ("kv", "cas"),
    "cluster": ("local_cluster", "cluster"),
    "compact": ("kv", "compact"),
    "delete": ("kv", "delete"),
    "elect": ("concurrency", "elect"),
    "get": ("kv", "get"),
    "jepsen": ("jepsen_cmd", "jepsen"),
    "lease": ("leases", "lease"),
    "lock": ("concurrency", "lock"),
    "members": ("admin", "members"),
    "put": ("kv", "put"),
    "serve": ("node", "serve"),
    "sim": ("simulator", "sim"),
    "status": ("admin", "status"),
    "transfer-leader": ("admin", "transfer_leader"),
    "txn": ("kv", "txn"),
    "watch": ("kv", "watch"),
}
"""Each command: the module of this package that defines it, and its name there."""

_EXPORTS: dict[str, tuple[str, str]] = {
    "serve": ("node", "serve"),
    "EXIT_NODE_FAILED": ("node", "EXIT_NODE_FAILED"),
    "parse_seeds": ("simulator", "parse_seeds"),
    "load_raft_class": ("simulator", "load_raft_class"),
    "DEFAULT_ENDPOINTS": ("_common", "DEFAULT_ENDPOINTS"),
}


def _load(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


class _LazyGroup(click.Group):
    """Imports a command's module only when the command is used (or listed):
    ``raftkv get`` does not pay for the simulator's imports."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        command: click.Command = _load(*spec)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raftkv", message="%(prog)s %(version)s")
def main() -> None:
    """raftkv: Raft consensus and a replicated key/value store, in Python."""


def __getattr__(name: str) -> Any:
    """The names re-exported above, imported on first use (PEP 562)."""
    spec = _EXPORTS.get(name)
    if spec is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _load(*spec)
