"""A slow disk for benchmarks: every ``os.fdatasync`` waits first.

Put this directory on PYTHONPATH (an absolute path: a ``--variant`` runs in
its own tree) and set ``RAFTKV_BENCH_FDATASYNC_DELAY_MS``;
every raftkv node the benchmark starts then sleeps that long before each
``fdatasync`` (without the GIL, as a slow device would keep it), e.g.::

    RAFTKV_BENCH_FDATASYNC_DELAY_MS=5 PYTHONPATH=$PWD/bench/slowdisk \\
        python bench/kv_bench.py --systems raftkv --variant before=DIR --ops put

etcd, not a Python program, is unaffected. Not used by tests or by raftkv.
"""

import os
import time

_DELAY_S = float(os.environ.get("RAFTKV_BENCH_FDATASYNC_DELAY_MS", "0")) / 1000

if _DELAY_S > 0:
    _fdatasync = os.fdatasync

    def _slow_fdatasync(fd: int) -> None:
        time.sleep(_DELAY_S)
        _fdatasync(fd)

    os.fdatasync = _slow_fdatasync
