"""The replica layer: everything a replica decides from committed entries, with no I/O.

Rule: nothing in this package reads a clock, an RNG, the environment or a
file; the simulator and the server drive the same code, so what the simulator
proves holds for the server. :mod:`raftkv.replica.mvcc` is the MVCC key space
(etcd v3's revisions, ranges, transactions and compaction) and
:mod:`raftkv.replica.keyindex` the sorted key index under it.
"""

from __future__ import annotations

from raftkv.replica.keyindex import KeyIndex
from raftkv.replica.mvcc import (
    VERSION_OVERHEAD_BYTES,
    WIRE_FORMAT,
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    DeleteResult,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    InvalidRequestError,
    InvalidSnapshotError,
    KeyNotFoundError,
    KeyValue,
    LeaseProvidedError,
    MVCCError,
    MVCCStore,
    Op,
    OpResult,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    RevisionError,
    SortOrder,
    SortTarget,
    TxnOp,
    TxnResult,
    ValueProvidedError,
    prefix_range_end,
)

__all__ = [
    # the store
    "MVCCStore",
    "KeyValue",
    "prefix_range_end",
    "VERSION_OVERHEAD_BYTES",
    "WIRE_FORMAT",
    # requests
    "Compare",
    "CompareTarget",
    "CompareResult",
    "RangeOp",
    "PutOp",
    "DeleteRangeOp",
    "TxnOp",
    "Op",
    "SortOrder",
    "SortTarget",
    # results
    "RangeResult",
    "PutResult",
    "DeleteResult",
    "TxnResult",
    "OpResult",
    # errors
    "MVCCError",
    "RevisionError",
    "CompactedError",
    "FutureRevisionError",
    "InvalidRequestError",
    "EmptyKeyError",
    "ValueProvidedError",
    "LeaseProvidedError",
    "DuplicateKeyError",
    "KeyNotFoundError",
    "InvalidSnapshotError",
    # the key index
    "KeyIndex",
]
