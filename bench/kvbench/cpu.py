"""CPU time per request: every node's and the load generator's (Linux /proc)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from kvbench.systems import Cluster

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``, all its threads (Linux).

    From ``/proc/PID/stat`` (fields 14 and 15, in clock ticks; the command name
    in field 2 may hold spaces and parentheses, so fields are counted after the
    last ``)``).
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_snapshot(cluster: Cluster) -> dict[str, float]:
    """CPU seconds of every running node of ``cluster``, and of this process as ``client``."""
    snap = {}
    for n, proc in cluster.procs.items():
        with contextlib.suppress(OSError, IndexError, ValueError):
            snap[n] = cpu_seconds(proc.pid)
    t = os.times()
    snap["client"] = t.user + t.system
    return snap


def cpu_per_op(
    before: dict[str, float], after: dict[str, float], ops: int, leader: str | None
) -> dict[str, Any]:
    """Microseconds of CPU per request: each node, the leader, the followers, all nodes, client."""
    if ops <= 0:
        return {}
    us = {n: round((after[n] - before[n]) * 1e6 / ops, 1) for n in before if n in after}
    client = us.pop("client", float("nan"))
    return {
        "by_node": us,
        "leader": us.get(leader) if leader is not None else None,
        "followers": [v for n, v in sorted(us.items()) if n != leader],
        "nodes": round(sum(us.values()), 1),
        "client": client,
    }


def format_cpu(cpu: dict[str, Any]) -> str:
    """One line: ``cpu µs/op: leader 437  followers 273 282  nodes 992  client 427``."""
    if not cpu:
        return "cpu µs/op: no requests"
    leader = f"leader {cpu['leader']:.0f}  " if cpu["leader"] is not None else ""
    followers = " ".join(f"{v:.0f}" for v in cpu["followers"])
    return (
        f"cpu µs/op: {leader}{'followers' if leader else 'nodes'} {followers}  "
        f"nodes {cpu['nodes']:.0f}  client {cpu['client']:.0f}"
    )
