"""``python -m raftkv.cli ...``: the ``raftkv`` command (the local cluster, the
test harness and the jepsen nodes start ``serve`` this way)."""

from __future__ import annotations

from raftkv.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
