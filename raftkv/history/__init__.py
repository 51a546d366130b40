"""History checkers: given what clients saw (and what the log committed), was it correct?

Shared by the simulator (:mod:`raftkv.sim`) and the Jepsen-style fault test of
real nodes (:mod:`raftkv.jepsen`); they depend only on the replica layer's
commands and results, never on how the history was produced.

- :mod:`~raftkv.history.linearizability`: per-key WGL linearizability.
- :mod:`~raftkv.history.revisions` (with the model :mod:`~raftkv.history.storemodel`):
  multi-key operations checked by the revisions they report; their history
  format (operations, the JSON-lines file) is :mod:`~raftkv.history.revhistory`.
- :mod:`~raftkv.history.watchcheck`: every watcher's events against the committed history.
- :mod:`~raftkv.history.leasecheck`: lease expiries and revokes against renewals.
"""
