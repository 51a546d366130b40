"""Jepsen-style fault tests of real ``raftkv serve`` processes.

Rule: this package sits on top of the others, like the CLI: it starts real
nodes (:mod:`~raftkv.jepsen.nodes`) on their own network hosts
(:mod:`~raftkv.jepsen.net`), drives concurrent clients
(:mod:`~raftkv.jepsen.workload`), and optionally watchers
(:mod:`~raftkv.jepsen.watchers`) and lease clients (:mod:`~raftkv.jepsen.leasing`),
while a seeded nemesis injects faults (:mod:`~raftkv.jepsen.nemesis`), and checks
the history with the simulator's checkers plus the replicated log
(:mod:`~raftkv.jepsen.analysis`, :mod:`~raftkv.jepsen.feeds`).
:func:`run_jepsen` (``raftkv jepsen``) runs one test. See docs/jepsen.md.
"""

from __future__ import annotations

from raftkv.jepsen.analysis import NodeLog, Verdict, analyze, read_node_log, replay
from raftkv.jepsen.nemesis import FAULT_KINDS, Fault, make_schedule, parse_faults
from raftkv.jepsen.runner import JepsenConfig, JepsenResult, run_jepsen

__all__ = [
    "JepsenConfig",
    "JepsenResult",
    "run_jepsen",
    "FAULT_KINDS",
    "Fault",
    "make_schedule",
    "parse_faults",
    "NodeLog",
    "Verdict",
    "analyze",
    "read_node_log",
    "replay",
]
