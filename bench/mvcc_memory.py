"""Benchmark: memory of the MVCC store -- bytes per key, and the cost of history.

Each case runs in a fresh interpreter and reports the growth of its resident
set size (``/proc/self/statm``, after a full garbage collection) while it
builds the data, divided by the number of keys:

* ``dict``: a plain ``dict[bytes, bytes]`` with the same keys and values, the
  shape of today's (pre-MVCC) store;
* ``mvcc 1 version``: ``MVCCStore`` with one put per key;
* ``mvcc 10 versions``: ten puts per key (the history a store keeps until it is
  compacted);
* ``mvcc 10 -> compacted``: the same, then ``compact(revision)`` (logical, timed)
  and its physical pass in slices of 10,000 keys, a node's budget per tick
  (``compact_step``; the whole
  pass and the longest slice are timed);
  resident memory rarely goes back to the allocator, so this row also reports
  what ``size_bytes`` and the version count say.

Keys are ``b"key/%08d"`` (12 bytes), values 32 bytes, a distinct object per
version. Linux only (``/proc``). Not run by tests.

Usage: PYTHONPATH=. python bench/mvcc_memory.py [--keys 1000000] [--versions 10]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
SLICE_KEYS = 10_000  # raftkv.server.node.quota.COMPACT_KEYS_PER_TICK


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def run_case(case: str, n: int, versions: int) -> dict[str, object]:
    keys = [b"key/%08d" % i for i in range(n)]
    before = rss()
    start = time.perf_counter()
    extra: dict[str, object] = {}
    if case == "dict":
        data: dict[bytes, bytes] = {}
        for i, key in enumerate(keys):
            data[key] = b"%032d" % i
    else:
        from raftkv.replica.mvcc import MVCCStore

        store = MVCCStore()
        put = store.put
        rounds = 1 if case == "mvcc-1" else versions
        for r in range(rounds):
            for i, key in enumerate(keys):
                put(key, b"%032d" % (r * n + i), prev_kv=False)
        if case == "mvcc-compacted":
            extra["size_bytes_before_compaction"] = store.size_bytes
            compact_start = time.perf_counter()
            store.compact(store.revision)
            extra["compact_call_seconds"] = round(time.perf_counter() - compact_start, 4)
            slices = 0
            longest = 0.0
            while True:
                step_start = time.perf_counter()
                more = store.compact_step(SLICE_KEYS)
                longest = max(longest, time.perf_counter() - step_start)
                slices += 1
                if not more:
                    break
            extra["compact_pass_seconds"] = round(time.perf_counter() - compact_start, 2)
            extra["compact_slices"] = slices
            extra["slice_keys"] = SLICE_KEYS
            extra["longest_slice_ms"] = round(longest * 1000, 1)
        extra["size_bytes"] = store.size_bytes
        extra["versions"] = store.version_count
    seconds = time.perf_counter() - start
    grown = rss() - before
    return {"case": case, "keys": n, "bytes": grown, "seconds": round(seconds, 2), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.keys, args.versions)))
        return
    labels = {
        "dict": "dict[bytes, bytes]",
        "mvcc-1": "mvcc 1 version",
        "mvcc-10": f"mvcc {args.versions} versions",
        "mvcc-compacted": f"mvcc {args.versions} -> compacted",
    }
    print(f"{args.keys:,} keys, 12-byte keys, 32-byte values; Python {sys.version.split()[0]}")
    print()
    print(
        "| case | bytes/key | total MiB | build s | size_bytes/key | versions "
        "| compact() s | pass s | longest slice ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case, label in labels.items():
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                *("--case", case),
                *("--keys", str(args.keys)),
                *("--versions", str(args.versions)),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out)
        per_key = r["bytes"] / args.keys
        size = r.get("size_bytes")
        size_per_key = f"{size / args.keys:.0f}" if isinstance(size, int) else "-"
        print(
            f"| {label} | {per_key:.0f} | {r['bytes'] / 2**20:.0f} | {r['seconds']} "
            f"| {size_per_key} | {r.get('versions', '-')} | {r.get('compact_call_seconds', '-')} "
            f"| {r.get('compact_pass_seconds', '-')} | {r.get('longest_slice_ms', '-')} |"
        )


if __name__ == "__main__":
    main()
