"""Benchmark: WAL appends + fdatasync per second (group commit pays off here).

Each "Ready" is one ``WAL.append`` of N entries plus a hard state, then one
``WAL.sync`` (one write, one fdatasync). Reported for N = 1 and N = 64, with
fsync on (the real cost) and off (the CPU cost of encoding and writing).

Usage: python bench/wal_fsync.py [--dir DIR] [--seconds S] [--payload BYTES]

DIR must be on the disk you care about (tmpfs makes fsync free). Not run by tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raftkv.core.types import Entry, HardState
from raftkv.storage.wal import WAL


def run(directory: Path, *, batch: int, fsync: bool, seconds: float, payload: int) -> None:
    wal, _ = WAL.open(directory, fsync=fsync)
    data = b"x" * payload
    index = 0
    readys = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        entries = [Entry(term=1, index=index + i + 1, data=data) for i in range(batch)]
        index += batch
        wal.append(entries, HardState(term=1, commit=index))
        wal.sync()
        readys += 1
    elapsed = time.perf_counter() - start
    wal.close()
    print(
        f"fsync={'on ' if fsync else 'off'}  entries/Ready={batch:3d}  "
        f"Readys/s={readys / elapsed:10.0f}  entries/s={index / elapsed:11.0f}  "
        f"mean Ready latency={elapsed / readys * 1e6:8.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="parent directory for the WAL")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--payload", type=int, default=100, help="bytes per entry")
    args = parser.parse_args()
    parent = args.dir if args.dir is not None else Path.cwd()
    for fsync in (True, False):
        for batch in (1, 64):
            with tempfile.TemporaryDirectory(prefix="raftkv-bench-", dir=parent) as tmp:
                run(Path(tmp), batch=batch, fsync=fsync, seconds=args.seconds, payload=args.payload)


if __name__ == "__main__":
    main()
