"""The MVCC key space: etcd v3's revisions, range reads, transactions and compaction.

Rules:

1. **Pure and deterministic.** No clock, randomness, I/O or threads. Nothing
   that reaches a result, :meth:`MVCCStore.to_wire` or
   :meth:`MVCCStore.state_digest` depends on dict or set order: ranges walk the
   sorted :class:`~raftkv.replica.keyindex.KeyIndex`, snapshots list keys in
   order. Stores that receive the same calls in the same order are equal, and
   answer alike.
2. **One store revision** (etcd's main revision). A fresh store is at 1. A call
   that changes something moves it up by exactly one, and every version that
   call writes carries the new revision: a put (always, even of the value the
   key already holds), a delete that finds a live key, a transaction whose
   executed branch did either. Reads, deletes that find nothing and
   transactions whose executed branch changed nothing leave it where it is.
3. **Versions.** Per key: ``create_revision``, ``mod_revision``, ``version``
   (1 when the key is created, +1 per put) and ``lease`` (0 = none). A delete
   writes a tombstone: the key is absent from then on, and the next put creates
   it again (version 1, a new ``create_revision``). A key has at most one
   version per revision (rule 5 forbids writing a key twice in one transaction).
4. **Reads at a revision.** ``revision <= 0`` reads the current revision; above
   it raises :class:`FutureRevisionError`; below :attr:`MVCCStore.compact_revision`
   raises :class:`CompactedError`. The compact revision itself and everything
   above answer exactly as when they were current. Key ranges follow etcd:
   ``range_end == b""`` is the single key, ``b"\\0"`` every key ``>= key``,
   anything else ``[key, range_end)`` (empty if ``range_end <= key``); the empty
   key is never a key (:class:`EmptyKeyError`), so ``key=b"\\0",
   range_end=b"\\0"`` is every key and :func:`prefix_range_end` gives prefixes.
5. **Transactions are checked, then applied** (etcd's apply order): validate
   every op of both branches, nested ones included (empty keys,
   ``ignore_value`` with a value, ``ignore_lease`` with a lease); reject a
   branch that writes a key twice (:class:`DuplicateKeyError`); evaluate all
   compares -- nested ones too -- against the state before the transaction,
   which picks the executed path; check that path's range revisions and the
   keys its ``ignore_value``/``ignore_lease`` puts need. Only then run the ops,
   in order, each seeing the writes of the ones before it. Every error is raised
   by the checks before the first write, so a call that raises changed nothing.
6. **Compaction.** ``compact(r)`` keeps, of each key, the versions after ``r``
   and its newest version at or before ``r`` -- the one reads at ``r`` see --
   and drops the older ones. If that version is a tombstone older than ``r``,
   it goes too (and the key with it, if nothing follows). A tombstone exactly
   at ``r`` stays: it is a change at a readable revision (etcd keeps it too,
   for watchers starting at ``r``). So a live key's newest version is never
   dropped, and every read at ``r`` or later answers as before.
7. **Size.** :attr:`MVCCStore.size_bytes` is
   ``sum(len(key) + len(value) + VERSION_OVERHEAD_BYTES)`` over every kept
   version, tombstones included (a tombstone's value is empty). It grows with
   each write and falls as a compaction's physical pass frees versions
   (:meth:`MVCCStore.compact_step`), so two stores with the same content may
   differ in it until their passes end; a store restored from :meth:`to_wire`
   starts compacted.

Where this deliberately differs from etcd (v3.6 and main), and why:

* The duplicate-key rule is the one etcd means, not the one its
  ``checkIntervals`` implements: a delete with ``range_end == b"\\0"`` (every
  key from ``key`` on) covers the keys it deletes (etcd builds the empty
  interval ``[key, "\\0")``, etcd-io/etcd#22395), and a put in one nested
  transaction conflicts with a delete in a *later* sibling as well as an
  earlier one (etcd#16380). etcd's looser check lets one transaction delete
  and re-create a key in the same revision, a shape its own compaction then
  loses data on (etcd#22376); here it cannot arise.
* Sorting by version, create, mod revision or value keeps equal elements in
  ascending key order (etcd's ``sort.Sort`` is not stable, so any order of
  ties is etcd-compatible).
* ``keys_only`` results keep ``lease`` (etcd 3.5/3.6 do; 3.7's in-memory
  keys-only path returns lease 0).
* A nested transaction's result carries the revision seen after it (etcd
  leaves the nested header's revision 0).
* ``revision < 0`` always means "current" (etcd's transaction check calls a
  negative range revision compacted once a compaction has happened).
* Values are compared as Python ``bytes``; a :class:`Compare` whose operand
  has the wrong type for its target compares against the target's zero
  (``b""`` or 0), as etcd does with an unset ``target_union``.

The package's modules, one job each (import from the package, not from them):

* ``_errors``: the errors the store raises to its caller;
* ``_values``: the requests and answers, etcd's messages as frozen values;
* ``_versions``: how the store keeps a key's versions, and the pure
  functions that read them (rules 3, 4 and 6 on one key);
* ``_state``: the store's fields, their invariants, and the two writes that
  add a version;
* ``_reads``: ``get`` and ``range`` (rule 4);
* ``_txncheck``: the transaction checks that need no state (rule 5);
* ``_txn``: transactions: decide, check, then run (rule 5);
* ``_compaction``: ``compact`` and its physical pass (rules 6 and 7);
* ``_wire``: the snapshot form, ``to_wire``/``capture``/``from_wire``;
* ``_store``: :class:`MVCCStore`, those parts as one class, with the
  single-key writes and the change feed.

:class:`MVCCStore`'s methods are spread over ``_state``, ``_reads``, ``_txn``,
``_compaction`` and ``_wire`` as base classes of it, as etcd spreads its
``store`` over ``kvstore.go``, ``kvstore_txn.go`` and
``kvstore_compaction.go``: every base shares one set of slots (``_state``), so
the store is one object, and a method costs the same wherever it is written.
"""

from __future__ import annotations

from raftkv.replica.mvcc._errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevisionError,
    InvalidRequestError,
    InvalidSnapshotError,
    KeyNotFoundError,
    LeaseProvidedError,
    MVCCError,
    RevisionError,
    ValueProvidedError,
)
from raftkv.replica.mvcc._store import MVCCStore
from raftkv.replica.mvcc._txncheck import check_txn
from raftkv.replica.mvcc._values import (
    EVENT_DELETE,
    EVENT_PUT,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    DeleteResult,
    Event,
    KeyValue,
    Op,
    OpResult,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnOp,
    TxnResult,
    prefix_range_end,
)
from raftkv.replica.mvcc._versions import VERSION_OVERHEAD_BYTES
from raftkv.replica.mvcc._wire import WIRE_FORMAT

__all__ = [
    "VERSION_OVERHEAD_BYTES",
    "WIRE_FORMAT",
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
    "SortOrder",
    "SortTarget",
    "CompareTarget",
    "CompareResult",
    "KeyValue",
    "EVENT_PUT",
    "EVENT_DELETE",
    "Event",
    "Compare",
    "RangeOp",
    "PutOp",
    "DeleteRangeOp",
    "TxnOp",
    "Op",
    "RangeResult",
    "PutResult",
    "DeleteResult",
    "TxnResult",
    "OpResult",
    "MVCCStore",
    "check_txn",
    "prefix_range_end",
]
