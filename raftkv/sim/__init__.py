"""Deterministic discrete-event simulation of a raftkv cluster.

Rule: nothing under :mod:`raftkv.sim` reads the wall clock, the global RNG,
threads or the OS. Every random choice comes from a ``random.Random`` seeded from
the run's seed, and simultaneous events run in a fixed order, so a seed replays a
run exactly.

Entry point: :func:`raftkv.sim.runner.run_simulation`.
"""

from __future__ import annotations
