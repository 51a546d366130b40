"""Benchmark: per-operation cost of the MVCC store against a dict and the replicated store.

Times single-key puts and gets (the hot path) and a few multi-key operations
over ``--keys`` keys (default 200,000), each the best of ``--repeat`` passes
(default 5), garbage collector on, and prints nanoseconds per operation:

* ``dict``: ``d[key] = value`` / ``d.get(key)``, the floor;
* ``KVStateMachine``: the replicated store (on the MVCC store) -- ``apply`` of
  an encoded put command (msgpack decode, validation, sessions and the change
  feed included) and ``read``. (The pre-MVCC store's figures in
  docs/benchmarks.md were taken with this script at ``097874a``, where it
  imported that store from raftkv.server.kv.)
* ``MVCCStore``: ``put`` (with and without building the previous version),
  ``get`` now and at an old revision, a 100-key prefix ``range``, and a
  compare-and-put ``txn``.

Not run by tests. Usage: PYTHONPATH=. python bench/mvcc_ops.py [--keys N] [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from raftkv.replica.kv import KVStateMachine, Put, encode_command
from raftkv.replica.mvcc import (
    Compare,
    CompareResult,
    CompareTarget,
    MVCCStore,
    PutOp,
    prefix_range_end,
)


def best(
    fn: Callable[[], object], ops: int, repeat: int, setup: Callable[[], object] | None = None
) -> float:
    """Best nanoseconds per op over ``repeat`` passes of ``fn`` (``ops`` ops each)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / ops * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, repeat = args.keys, args.repeat
    keys = [b"key/%08d" % i for i in range(n)]
    value = b"v" * 32
    rows: list[tuple[str, float]] = []

    data: dict[bytes, bytes] = {}

    def dict_set() -> None:
        for key in keys:
            data[key] = value

    def dict_get() -> None:
        get = data.get
        for key in keys:
            get(key)

    rows.append(("dict: set existing key", best(dict_set, n, repeat, dict_set)))
    rows.append(("dict: get", best(dict_get, n, repeat)))

    sm = KVStateMachine()
    str_keys = [k.decode() for k in keys]
    commands = [encode_command(Put(key=k, value="v" * 32, time_ms=1)) for k in str_keys]
    index = [0]

    def sm_apply() -> None:
        apply = sm.apply
        i = index[0]
        for command in commands:
            i += 1
            apply(i, command)
        index[0] = i

    def sm_read() -> None:
        read = sm.read
        for key in str_keys:
            read(key)

    rows.append(("KVStateMachine: apply put (decode incl.)", best(sm_apply, n, repeat)))
    rows.append(("KVStateMachine: read", best(sm_read, n, repeat)))

    store = MVCCStore()
    for key in keys:
        store.put(key, value)
    store.put(keys[0], value)  # a second version somewhere

    def mvcc_put() -> None:
        put = store.put
        for key in keys:
            put(key, value)

    def mvcc_put_no_prev() -> None:
        put = store.put
        for key in keys:
            put(key, value, prev_kv=False)

    def mvcc_get() -> None:
        get = store.get
        for key in keys:
            get(key)

    rows.append(("MVCCStore: put existing key", best(mvcc_put, n, repeat)))
    rows.append(("MVCCStore: put existing, prev_kv=False", best(mvcc_put_no_prev, n, repeat)))
    rows.append(("MVCCStore: get", best(mvcc_get, n, repeat)))
    old = store.revision - n

    def mvcc_get_old() -> None:
        get = store.get
        for key in keys:
            get(key, old)

    rows.append(("MVCCStore: get at an old revision", best(mvcc_get_old, n, repeat)))

    fresh: list[MVCCStore] = []

    def new_store() -> None:
        fresh[:] = [MVCCStore()]

    def mvcc_put_new() -> None:
        put = fresh[0].put
        for key in keys:
            put(key, value)

    rows.append(("MVCCStore: put new key", best(mvcc_put_new, n, repeat, new_store)))

    prefixes = [b"key/%06d" % i for i in range(0, n // 100)]
    ends = [prefix_range_end(p) for p in prefixes]

    def mvcc_range() -> None:
        read = store.range
        for prefix, end in zip(prefixes, ends, strict=True):
            read(prefix, end)

    rows.append(("MVCCStore: range of a 100-key prefix", best(mvcc_range, len(prefixes), repeat)))

    txn_keys = keys[: n // 10]

    def mvcc_cas() -> None:
        txn = store.txn
        get = store.get
        for key in txn_keys:
            current = get(key)
            assert current is not None
            txn(
                [
                    Compare(
                        key=key,
                        target=CompareTarget.MOD,
                        result=CompareResult.EQUAL,
                        operand=current.mod_revision,
                    )
                ],
                [PutOp(key=key, value=value)],
            )

    rows.append(("MVCCStore: get + compare-and-put txn", best(mvcc_cas, len(txn_keys), repeat)))

    python = sys.version.split()[0]
    print(f"{n:,} keys, 12-byte keys, 32-byte values, best of {repeat}; Python {python}")
    print()
    print("| operation | ns/op |")
    print("|---|---:|")
    for label, ns in rows:
        print(f"| {label} | {ns:,.0f} |")


if __name__ == "__main__":
    main()
