"""raftkv: the Raft consensus algorithm in Python.

Layers (see docs/design.md):

* :mod:`raftkv.core` -- a sans-I/O, deterministic Raft state machine;
* :mod:`raftkv.sim` -- a deterministic simulator that runs many cores over a
  simulated network and disk and checks Raft's safety properties;
* the real node runtime (storage, transport, server, client) built on the core.
"""

from __future__ import annotations

__version__ = "0.1.0"
