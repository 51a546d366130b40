"""MVCCStore rule by rule, each pinned to the etcd behaviour it reproduces.

etcd references are to etcd-io/etcd (main): server/storage/mvcc/kvstore_txn.go
(``storeTxnWrite``, ``rangeKeys``), key_index.go, kvstore.go (``updateCompactRev``),
server/etcdserver/txn/{txn,range,put,delete}.go and
server/etcdserver/api/v3rpc/key.go (``checkTxnRequest``, ``checkIntervals``).
The random-sequence check against a naive model is in test_mvcc_model.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import msgpack
import pytest

from raftkv.replica.mvcc import (
    VERSION_OVERHEAD_BYTES,
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
    MVCCStore,
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

T = CompareTarget
R = CompareResult


def compact_now(store: MVCCStore, revision: int) -> None:
    """Compact and run the physical pass to its end (as a node does over time)."""
    store.compact(revision)
    while store.compact_step(1000):
        pass


def test_compaction_is_logical_at_once_and_physical_in_slices() -> None:
    store = MVCCStore()
    for i in range(50):
        store.put(b"k%d" % (i % 5), b"v%d" % i)
    store.delete_range(b"k0")
    before = {r: store.range(b"\0", b"\0", revision=r) for r in range(30, store.revision + 1)}
    size = store.size_bytes
    store.compact(30)
    # Reads below fail at once; reads at or above answer as before.
    with pytest.raises(CompactedError):
        store.get(b"k1", 29)
    assert all(store.range(b"\0", b"\0", revision=r) == before[r] for r in before)
    assert store.compacting and store.size_bytes == size  # nothing freed yet
    wire = store.to_wire()  # a snapshot already holds only what compaction keeps
    assert MVCCStore.from_wire(wire).state_digest() == store.state_digest()
    assert store.compact_step(2) and store.size_bytes < size
    while store.compact_step(2):
        pass
    assert not store.compacting and store.to_wire() == wire
    assert all(store.range(b"\0", b"\0", revision=r) == before[r] for r in before)


def assert_fully_compacted(store: MVCCStore) -> None:
    """The physical pass freed everything compaction drops: the store holds
    exactly the versions its snapshot holds."""
    wire = store.to_wire()
    held = [(key, v) for key, versions in wire[3] for v in versions]
    assert not store.compacting
    assert store.version_count == len(held)
    assert store.size_bytes == sum(len(k) + len(v[4]) + VERSION_OVERHEAD_BYTES for k, v in held)


@pytest.mark.parametrize("restart", [False, True], ids=["running", "restored"])
def test_tombstones_left_at_the_compact_revision_go_at_the_next_compaction(restart) -> None:
    """A tombstone exactly at the compact revision stays (rule 6); the next
    compaction must free it although no later write superseded it -- alone, or
    followed by a re-creation written after that next compaction point."""
    store = MVCCStore()
    store.put(b"alone", b"1")
    store.put(b"again", b"1")
    tomb, _ = store.delete_range(b"a", b"b")  # both keys, one revision
    compact_now(store, tomb)
    assert store.get(b"alone", tomb) is None and store.version_count == 2  # the tombstones
    store.put(b"other", b"x")  # tomb + 1
    store.put(b"other", b"y")  # tomb + 2
    store.put(b"again", b"2")  # tomb + 3: re-created after the next compaction point
    if restart:
        store = MVCCStore.from_wire(store.to_wire())
    compact_now(store, tomb + 2)
    assert_fully_compacted(store)
    assert [key for key, _ in store.to_wire()[3]] == [b"again", b"other"]
    assert store.version_count == 2


def test_compaction_visits_only_keys_written_since_and_frees_them_all() -> None:
    """Repeated compactions over a store with many untouched keys: each pass
    frees exactly what rule 6 drops, however the writes fall between them."""
    store = MVCCStore()
    for i in range(200):
        store.put(b"cold%03d" % i, b"v")
    for round_ in range(1, 6):
        for i in range(40):
            key = b"hot%d" % (i % 7)
            if i % 9 == 0:
                store.delete_range(key)
            else:
                store.put(key, b"%d-%d" % (round_, i))
        compact_now(store, store.revision - 3)
        assert_fully_compacted(store)
    assert store.key_count == 200 + sum(1 for k in store.range(b"hot", b"hou").kvs)


def test_a_capture_builds_the_store_as_it_was_whatever_changes_after() -> None:
    """capture() shares the version lists; later appends, deletes, new keys and
    a compaction's physical pass (which replaces lists) must not reach it."""
    store = MVCCStore()
    for i in range(30):
        store.put(b"k%d" % (i % 4), b"v%d" % i)
    store.delete_range(b"k3")
    store.compact(store.revision - 5)  # a pass under way at capture time
    expected = msgpack.packb(store.to_wire(), use_bin_type=True)
    pack = store.capture()
    for i in range(20):
        store.put(b"k%d" % (i % 6), b"w%d" % i)  # appends to shared lists, new keys
    store.delete_range(b"k0", b"k2")
    while store.compact_step(1):
        pass
    compact_now(store, store.revision - 1)  # replaces the lists the capture holds
    assert pack() == expected


def test_a_capture_packs_in_chunks_exactly_as_one_packb_would() -> None:
    """Chunks of every size (a full 512 keys, a few keys of large values, 1 and
    more than 15 keys: the array headers differ) join to the bytes of one
    ``packb`` of :meth:`MVCCStore.to_wire`, also while a compaction is under way."""
    store = MVCCStore()
    for i in range(1300):
        store.put(b"a%05d" % i, b"v%d" % i)
    for i in range(7):
        store.put(b"b%d" % i, bytes(100_000))  # ~3 keys per chunk of 256 KB
    store.put(b"c", bytes(300_000))  # alone in its chunk
    for i in range(20):
        store.put(b"d%02d" % i, b"x")  # 20 keys: an array16 header
    for i in range(0, 1300, 3):
        store.put(b"a%05d" % i, b"w%d" % i)
    store.delete_range(b"a00100", b"a00200")
    assert msgpack.packb(store.to_wire(), use_bin_type=True) == store.capture()()
    store.compact(store.revision - 10)  # a compaction's physical pass under way
    assert store.compacting
    assert msgpack.packb(store.to_wire(), use_bin_type=True) == store.capture()()


def kv(key: bytes, value: bytes, create: int, mod: int, version: int, lease: int = 0) -> KeyValue:
    return KeyValue(
        key=key,
        value=value,
        create_revision=create,
        mod_revision=mod,
        version=version,
        lease=lease,
    )


def cmp(key: bytes, target: CompareTarget, result: CompareResult, operand, end=b"") -> Compare:
    return Compare(key=key, target=target, result=result, operand=operand, range_end=end)


def keys_of(result: RangeResult) -> list[bytes]:
    return [item.key for item in result.kvs]


def store_with(*pairs: tuple[bytes, bytes]) -> MVCCStore:
    store = MVCCStore()
    for key, value in pairs:
        store.put(key, value)
    return store


ALL = {"key": b"\0", "range_end": b"\0"}


# --------------------------------------------------------------------------- revisions


def test_fresh_store_is_at_revision_one_and_first_put_gets_two():
    """etcd's store starts at currentRev 1; a write txn writes beginRev + 1."""
    store = MVCCStore()
    assert (store.revision, store.compact_revision, store.key_count, store.size_bytes) == (
        1,
        0,
        0,
        0,
    )
    assert store.put(b"a", b"1") == (2, None)
    assert store.revision == 2


def test_put_of_the_same_value_still_bumps_the_revision_and_version():
    """storeTxnWrite.put always appends a change; nothing compares values."""
    store = store_with((b"a", b"1"))
    revision, prev = store.put(b"a", b"1")
    assert revision == 3
    assert prev == kv(b"a", b"1", 2, 2, 1)
    assert store.get(b"a") == kv(b"a", b"1", 2, 3, 2)


def test_versions_count_puts_and_a_delete_restarts_the_key():
    """key_index.go: a tombstone ends a generation; the next put starts one at version 1."""
    store = MVCCStore()
    store.put(b"k", b"v1", lease=7)
    store.put(b"k", b"v2")
    assert store.get(b"k") == kv(b"k", b"v2", 2, 3, 2)
    assert store.delete_range(b"k") == (4, (kv(b"k", b"v2", 2, 3, 2),))
    assert store.get(b"k") is None
    assert store.key_count == 0
    store.put(b"k", b"v3")
    assert store.get(b"k") == kv(b"k", b"v3", 5, 5, 1)
    # Old revisions answer as they were.
    assert store.get(b"k", revision=2) == kv(b"k", b"v1", 2, 2, 1, lease=7)
    assert store.get(b"k", revision=4) is None
    assert store.get(b"k", revision=1) is None


def test_delete_of_missing_keys_does_not_bump_the_revision():
    """storeTxnWrite.DeleteRange: n == 0 and no changes -> beginRev, and End() does not bump."""
    store = store_with((b"a", b"1"))
    assert store.delete_range(b"zz") == (2, ())
    assert store.delete_range(b"b", b"c") == (2, ())
    assert store.revision == 2
    result = store.txn((), [DeleteRangeOp(key=b"missing")])
    assert result == TxnResult(
        succeeded=True, responses=(DeleteResult(revision=2, deleted=0),), revision=2
    )
    assert store.revision == 2


def test_read_only_txn_does_not_bump_the_revision():
    """txn.go: the header revision is Rev() (+1 only if Changes() is not empty)."""
    store = store_with((b"a", b"1"))
    result = store.txn(
        [cmp(b"a", T.VALUE, R.EQUAL, b"1")],
        [RangeOp(key=b"a")],
        [PutOp(key=b"a", value=b"2")],
    )
    assert result.succeeded
    assert result.revision == 2
    assert store.revision == 2
    # A failing compare whose failure branch only reads: no bump either.
    result = store.txn([cmp(b"a", T.VALUE, R.EQUAL, b"nope")], [PutOp(key=b"a")], [RangeOp(**ALL)])
    assert not result.succeeded
    assert store.revision == 2


def test_all_writes_of_a_txn_share_one_revision():
    store = store_with((b"x", b"0"))
    result = store.txn(
        (),
        [PutOp(key=b"a", value=b"1"), PutOp(key=b"b", value=b"2"), DeleteRangeOp(key=b"x")],
    )
    assert result.revision == 3
    assert [r.revision for r in result.responses] == [3, 3, 3]
    assert store.get(b"a") == kv(b"a", b"1", 3, 3, 1)
    assert store.get(b"b") == kv(b"b", b"2", 3, 3, 1)
    assert store.get(b"x", revision=2) == kv(b"x", b"0", 2, 2, 1)
    assert store.get(b"x") is None


def test_lease_is_stored_per_version():
    store = MVCCStore()
    store.put(b"a", b"1", lease=5)
    store.put(b"a", b"2")
    assert store.get(b"a", revision=2).lease == 5
    assert store.get(b"a").lease == 0


def test_empty_key_is_refused_everywhere():
    """v3rpc checkRangeRequest/checkPutRequest/checkDeleteRequest: ErrGRPCEmptyKey."""
    store = MVCCStore()
    with pytest.raises(EmptyKeyError) as info:
        store.put(b"", b"v")
    assert str(info.value) == "key is not provided"
    for call in (
        lambda: store.get(b""),
        lambda: store.range(b""),
        lambda: store.delete_range(b""),
        lambda: store.txn([cmp(b"", T.VERSION, R.EQUAL, 0)]),
        lambda: store.txn((), (), [RangeOp(key=b"")]),
    ):
        with pytest.raises(EmptyKeyError):
            call()
    assert store.revision == 1


# --------------------------------------------------------------------------- ranges


def test_range_end_conventions():
    """rpc.proto RangeRequest: b"" one key, b"\\0" every key >= key, else [key, range_end)."""
    store = store_with((b"a", b"1"), (b"a/1", b"2"), (b"a/2", b"3"), (b"b", b"4"), (b"\xff", b"5"))
    assert keys_of(store.range(b"a")) == [b"a"]
    assert keys_of(store.range(b"a/")) == []
    assert keys_of(store.range(b"a/", b"\0")) == [b"a/1", b"a/2", b"b", b"\xff"]
    assert keys_of(store.range(b"\0", b"\0")) == [b"a", b"a/1", b"a/2", b"b", b"\xff"]
    assert keys_of(store.range(b"a", b"b")) == [b"a", b"a/1", b"a/2"]
    assert keys_of(store.range(b"a/", prefix_range_end(b"a/"))) == [b"a/1", b"a/2"]
    assert keys_of(store.range(b"b", b"a")) == []  # range_end <= key: empty
    assert keys_of(store.range(b"b", b"b")) == []


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        (b"a", b"b"),
        (b"a/", b"a0"),
        (b"a\xff", b"b"),
        (b"a\xfe\xff\xff", b"a\xff"),
        (b"\xff", b"\0"),
        (b"\xff\xff", b"\0"),
        (b"", b"\0"),
    ],
)
def test_prefix_range_end_is_etcds_get_prefix(prefix: bytes, end: bytes):
    """clientv3 GetPrefixRangeEnd: increment the last byte < 0xff; none: b"\\0"."""
    assert prefix_range_end(prefix) == end


def test_range_reads_at_a_revision_and_reports_the_current_one():
    """rangeKeys: reads at ro.Rev, answers with Rev: curRev in the header."""
    store = store_with((b"a", b"1"), (b"b", b"2"))
    store.put(b"a", b"3")
    store.delete_range(b"b")
    old = store.range(b"\0", b"\0", revision=3)
    assert old == RangeResult(
        kvs=(kv(b"a", b"1", 2, 2, 1), kv(b"b", b"2", 3, 3, 1)), count=2, more=False, revision=5
    )
    assert store.range(b"\0", b"\0", revision=0).kvs == (kv(b"a", b"3", 2, 4, 2),)
    assert store.range(b"\0", b"\0", revision=-3).kvs == (kv(b"a", b"3", 2, 4, 2),)
    assert store.range(b"\0", b"\0", revision=1).kvs == ()


def test_future_revision_is_an_error():
    """rangeKeys: rev > curRev -> ErrFutureRev."""
    store = store_with((b"a", b"1"))
    with pytest.raises(FutureRevisionError) as info:
        store.range(b"a", revision=3)
    assert str(info.value) == "mvcc: required revision is a future revision"
    assert info.value.revision == 2
    with pytest.raises(FutureRevisionError):
        store.get(b"a", revision=3)
    assert store.get(b"a", revision=2) is not None


def test_limit_count_and_more():
    """Count is every key in the range (withTotalCount), more: limit cut kvs."""
    store = store_with(*[(b"k%d" % i, b"v") for i in range(5)])
    result = store.range(b"k", b"l", limit=2)
    assert keys_of(result) == [b"k0", b"k1"]
    assert (result.count, result.more) == (5, True)
    result = store.range(b"k", b"l", limit=5)
    assert (len(result.kvs), result.count, result.more) == (5, 5, False)
    for no_limit in (0, -1):
        result = store.range(b"k", b"l", limit=no_limit)
        assert (len(result.kvs), result.more) == (5, False)


def test_count_only_and_keys_only():
    """count_only: no kvs; keys_only: values blanked (lease kept, as etcd 3.5/3.6)."""
    store = MVCCStore()
    store.put(b"a", b"1", lease=9)
    store.put(b"b", b"2")
    result = store.range(b"\0", b"\0", count_only=True, limit=1)
    assert result == RangeResult(kvs=(), count=2, more=False, revision=3)
    result = store.range(b"\0", b"\0", keys_only=True)
    assert result.kvs == (kv(b"a", b"", 2, 2, 1, lease=9), kv(b"b", b"", 3, 3, 1))
    assert store.get(b"a").value == b"1"  # the store's own version is untouched


def test_sort_then_limit():
    """executeRange: sort (ASCEND when a non-key target has order NONE), then cut to limit."""
    store = MVCCStore()
    store.put(b"c", b"x")  # create 2
    store.put(b"a", b"z")  # create 3
    store.put(b"b", b"y")  # create 4
    store.put(b"c", b"w")  # c: version 2, mod 5
    by = store.range
    assert keys_of(by(**ALL, sort_target=SortTarget.CREATE)) == [b"c", b"a", b"b"]
    assert keys_of(by(**ALL, sort_target=SortTarget.MOD, sort_order=SortOrder.DESCEND)) == [
        b"c",
        b"b",
        b"a",
    ]
    assert keys_of(by(**ALL, sort_order=SortOrder.DESCEND)) == [b"c", b"b", b"a"]
    assert keys_of(by(**ALL, sort_target=SortTarget.VALUE)) == [b"c", b"b", b"a"]
    result = by(**ALL, sort_target=SortTarget.VALUE, sort_order=SortOrder.DESCEND, limit=1)
    assert keys_of(result) == [b"a"]
    assert (result.count, result.more) == (3, True)


def test_sort_ties_keep_ascending_key_order():
    """etcd's sort.Sort is not stable; ours is, so ties come in key order either way."""
    store = store_with((b"b", b"1"), (b"a", b"1"), (b"c", b"1"))
    for order in (SortOrder.ASCEND, SortOrder.DESCEND):
        result = store.range(**ALL, sort_target=SortTarget.VERSION, sort_order=order)
        assert keys_of(result) == [b"a", b"b", b"c"]


def test_revision_filters_apply_after_count():
    """rpc.proto RangeResponse.count: 'unaffected by limits and filters'."""
    store = store_with((b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4"))
    store.put(b"a", b"5")  # a: create 2, mod 6
    result = store.range(**ALL, min_mod_revision=4)
    assert keys_of(result) == [b"a", b"c", b"d"]
    assert result.count == 4
    assert keys_of(store.range(**ALL, max_mod_revision=3)) == [b"b"]
    assert keys_of(store.range(**ALL, min_create_revision=3, max_create_revision=4)) == [
        b"b",
        b"c",
    ]
    # With a filter, more is decided on the filtered list.
    result = store.range(**ALL, min_mod_revision=4, limit=2)
    assert (keys_of(result), result.count, result.more) == ([b"a", b"c"], 4, True)
    result = store.range(**ALL, min_mod_revision=5, limit=2)
    assert (keys_of(result), result.count, result.more) == ([b"a", b"d"], 4, False)


# --------------------------------------------------------------------------- compares


@pytest.mark.parametrize(
    ("target", "result", "operand", "holds"),
    [
        (T.VALUE, R.EQUAL, b"v", True),
        (T.VALUE, R.NOT_EQUAL, b"v", False),
        (T.VALUE, R.GREATER, b"u", True),
        (T.VALUE, R.LESS, b"w", True),
        (T.VALUE, R.LESS, b"v", False),
        (T.VERSION, R.EQUAL, 2, True),
        (T.VERSION, R.GREATER, 1, True),
        (T.VERSION, R.LESS, 2, False),
        (T.CREATE, R.EQUAL, 2, True),
        (T.MOD, R.EQUAL, 3, True),
        (T.MOD, R.NOT_EQUAL, 3, False),
        (T.LEASE, R.EQUAL, 4, True),
        (T.LEASE, R.GREATER, 4, False),
    ],
)
def test_compare_on_a_key(target, result, operand, holds):
    """txn.go compareKV: bytes.Compare for values, integer order for the rest."""
    store = MVCCStore()
    store.put(b"k", b"x")
    store.put(b"k", b"v", lease=4)  # create 2, mod 3, version 2
    assert store.txn([cmp(b"k", target, result, operand)]).succeeded is holds


@pytest.mark.parametrize(
    ("target", "result", "operand", "holds"),
    [
        (T.VERSION, R.EQUAL, 0, True),
        (T.CREATE, R.EQUAL, 0, True),
        (T.MOD, R.LESS, 1, True),
        (T.LEASE, R.EQUAL, 0, True),
        (T.VERSION, R.GREATER, 0, False),
        (T.VALUE, R.EQUAL, b"", False),
        (T.VALUE, R.NOT_EQUAL, b"x", False),
    ],
)
def test_compare_on_a_missing_key(target, result, operand, holds):
    """applyCompare: no key compares as an empty KeyValue, except VALUE, which always fails."""
    store = store_with((b"other", b""))
    store.put(b"gone", b"x")
    store.delete_range(b"gone")
    assert store.txn([cmp(b"missing", target, result, operand)]).succeeded is holds
    assert store.txn([cmp(b"gone", target, result, operand)]).succeeded is holds


def test_compare_over_a_range_holds_only_if_it_holds_for_every_key():
    """applyCompare: every kv of the range must satisfy the compare."""
    store = store_with((b"p/1", b"a"), (b"p/2", b"a"), (b"q", b"b"))
    end = prefix_range_end(b"p/")
    assert store.txn([cmp(b"p/", T.VALUE, R.EQUAL, b"a", end)]).succeeded
    assert store.txn([cmp(b"p/", T.VERSION, R.EQUAL, 1, end)]).succeeded
    store.put(b"p/2", b"b")
    assert not store.txn([cmp(b"p/", T.VALUE, R.EQUAL, b"a", end)]).succeeded
    assert not store.txn([cmp(b"p/", T.VERSION, R.EQUAL, 1, end)]).succeeded
    assert store.txn([cmp(b"p/", T.VERSION, R.GREATER, 0, end)]).succeeded
    # An empty range: VALUE fails, other targets compare zeros.
    assert not store.txn([cmp(b"r/", T.VALUE, R.EQUAL, b"", b"r0")]).succeeded
    assert store.txn([cmp(b"r/", T.VERSION, R.EQUAL, 0, b"r0")]).succeeded
    assert store.txn([cmp(b"p/", T.CREATE, R.GREATER, 0, b"\0")]).succeeded


def test_all_compares_must_hold():
    store = store_with((b"a", b"1"), (b"b", b"2"))
    ok = cmp(b"a", T.VALUE, R.EQUAL, b"1")
    bad = cmp(b"b", T.VALUE, R.EQUAL, b"1")
    assert store.txn([ok]).succeeded
    assert not store.txn([ok, bad]).succeeded
    assert store.txn([]).succeeded  # no compares: success


def test_operand_of_the_wrong_type_compares_as_the_targets_zero():
    """compareKV reads an unset target_union as 0 / nil."""
    store = store_with((b"k", b""))
    assert store.txn([cmp(b"k", T.VALUE, R.EQUAL, 5)]).succeeded  # value b"" == nil
    assert store.txn([cmp(b"k", T.VERSION, R.GREATER, b"x")]).succeeded  # 1 > 0


# --------------------------------------------------------------------------- transactions


def test_failed_compare_runs_the_failure_branch_and_changes_nothing_else():
    store = store_with((b"a", b"1"))
    result = store.txn(
        [cmp(b"a", T.VALUE, R.EQUAL, b"other")],
        [PutOp(key=b"a", value=b"success")],
        [RangeOp(key=b"a")],
    )
    assert not result.succeeded
    assert result.responses == (
        RangeResult(kvs=(kv(b"a", b"1", 2, 2, 1),), count=1, more=False, revision=2),
    )
    assert store.get(b"a").value == b"1"


def test_later_ops_see_earlier_writes_of_the_same_txn():
    """storeTxnWrite.Range reads at beginRev + 1 once the txn has changes."""
    store = store_with((b"a", b"1"), (b"b", b"2"))
    result = store.txn(
        (),
        [
            RangeOp(**ALL),
            PutOp(key=b"c", value=b"3"),
            DeleteRangeOp(key=b"a"),
            RangeOp(**ALL),
            RangeOp(**ALL, revision=3),  # an explicit revision reads the state before
        ],
    )
    before, put, delete, after, at_three = result.responses
    assert (keys_of(before), before.revision) == ([b"a", b"b"], 3)
    assert put == PutResult(revision=4)
    assert delete == DeleteResult(revision=4, deleted=1)
    assert (keys_of(after), after.revision) == ([b"b", b"c"], 4)
    assert (keys_of(at_three), at_three.revision) == ([b"a", b"b"], 4)


def test_delete_result_revision_follows_earlier_changes():
    """storeTxnWrite.DeleteRange: beginRev + 1 if n != 0 or the txn already changed something."""
    store = store_with((b"a", b"1"))
    result = store.txn((), [DeleteRangeOp(key=b"zz"), PutOp(key=b"b"), DeleteRangeOp(key=b"zz")])
    assert [r.revision for r in result.responses] == [2, 3, 3]


def test_put_prev_kv_ignore_value_and_ignore_lease():
    """put.go: prev_kv returns the old kv; ignore_value/ignore_lease keep the current ones."""
    store = MVCCStore()
    store.put(b"k", b"v", lease=3)
    result = store.txn(
        (),
        [
            PutOp(key=b"k", ignore_value=True, prev_kv=True, lease=4),
            PutOp(key=b"new", value=b"n", prev_kv=True),
        ],
    )
    assert result.responses == (
        PutResult(revision=3, prev_kv=kv(b"k", b"v", 2, 2, 1, lease=3)),
        PutResult(revision=3, prev_kv=None),
    )
    assert store.get(b"k") == kv(b"k", b"v", 2, 3, 2, lease=4)
    store.execute(PutOp(key=b"k", value=b"w", ignore_lease=True))
    assert store.get(b"k") == kv(b"k", b"w", 2, 4, 3, lease=4)


def test_ignore_value_on_a_missing_key_fails_and_applies_nothing():
    """checkAndGetPrevKV: ignore_{value,lease} on a missing key -> ErrKeyNotFound."""
    store = store_with((b"a", b"1"))
    digest = store.state_digest()
    for op in (PutOp(key=b"gone", ignore_value=True), PutOp(key=b"gone", ignore_lease=True)):
        with pytest.raises(KeyNotFoundError) as info:
            store.txn((), [PutOp(key=b"a", value=b"2"), op])
        assert str(info.value) == "key not found"
        assert info.value.key == b"gone"
    assert store.state_digest() == digest
    assert store.revision == 2


def test_ignore_flags_with_a_value_or_lease_are_invalid():
    """checkPutRequest: ErrGRPCValueProvided / ErrGRPCLeaseProvided, in either branch."""
    store = store_with((b"a", b"1"))
    with pytest.raises(ValueProvidedError):
        store.execute(PutOp(key=b"a", value=b"x", ignore_value=True))
    with pytest.raises(LeaseProvidedError):
        store.txn((), (), [PutOp(key=b"a", lease=1, ignore_lease=True)])
    assert store.revision == 2


def test_delete_prev_kvs():
    store = store_with((b"a/1", b"1"), (b"a/2", b"2"), (b"b", b"3"))
    result = store.execute(DeleteRangeOp(key=b"a/", range_end=b"a0", prev_kv=True))
    assert result == DeleteResult(
        revision=5, deleted=2, prev_kvs=(kv(b"a/1", b"1", 2, 2, 1), kv(b"a/2", b"2", 3, 3, 1))
    )
    assert store.execute(DeleteRangeOp(key=b"b")) == DeleteResult(revision=6, deleted=1)


def test_nested_txn_compares_see_the_state_before_the_txn():
    """txn.go compareToPath evaluates every compare on the path before any op runs."""
    store = store_with((b"a", b"1"))
    inner = TxnOp(
        compares=(cmp(b"a", T.VALUE, R.EQUAL, b"1"),),
        success=(RangeOp(key=b"a"),),
        failure=(PutOp(key=b"c", value=b"failure ran"),),
    )
    result = store.txn((), [PutOp(key=b"a", value=b"2"), inner])
    nested = result.responses[1]
    assert isinstance(nested, TxnResult)
    assert nested.succeeded  # a was "1" before the txn, though the put already ran
    assert nested.responses[0].kvs == (kv(b"a", b"2", 2, 3, 2),)  # the range sees the put
    assert nested.revision == 3
    assert store.get(b"c") is None


def test_nested_txn_runs_its_chosen_branch():
    store = store_with((b"a", b"1"))
    result = store.txn(
        (),
        [
            TxnOp(
                compares=(cmp(b"a", T.VERSION, R.EQUAL, 5),),
                success=(PutOp(key=b"s"),),
                failure=(PutOp(key=b"f"), TxnOp(success=(PutOp(key=b"g"),))),
            )
        ],
    )
    assert result.revision == 3
    (nested,) = result.responses
    assert not nested.succeeded
    assert nested.responses[0] == PutResult(revision=3)
    assert nested.responses[1] == TxnResult(
        succeeded=True, responses=(PutResult(revision=3),), revision=3
    )
    assert keys_of(store.range(**ALL)) == [b"a", b"f", b"g"]


def test_future_or_compacted_revision_in_the_executed_path_fails_the_whole_txn():
    """checkTxn -> checkRange: ErrFutureRev / ErrCompacted before anything is applied."""
    store = store_with((b"a", b"1"), (b"a", b"2"), (b"a", b"3"))
    compact_now(store, 3)
    digest = store.state_digest()
    with pytest.raises(FutureRevisionError):
        store.txn((), [PutOp(key=b"b"), RangeOp(key=b"a", revision=5)])
    with pytest.raises(CompactedError):
        store.txn((), [PutOp(key=b"b"), TxnOp(success=(RangeOp(key=b"a", revision=2),))])
    assert store.state_digest() == digest
    # The branch not taken is not checked.
    result = store.txn(
        [cmp(b"a", T.VERSION, R.EQUAL, 3)], [PutOp(key=b"b")], [RangeOp(key=b"a", revision=99)]
    )
    assert result.succeeded


def test_unknown_op_is_a_type_error():
    with pytest.raises(TypeError):
        MVCCStore().txn((), ["not an op"])  # type: ignore[list-item]


def test_execute_is_a_one_op_txn():
    store = store_with((b"a", b"1"))
    assert store.execute(RangeOp(key=b"a")) == store.range(b"a")
    assert store.execute(PutOp(key=b"a", value=b"2", prev_kv=True)) == PutResult(
        revision=3, prev_kv=kv(b"a", b"1", 2, 2, 1)
    )
    assert store.execute(DeleteRangeOp(key=b"zz")) == DeleteResult(revision=3, deleted=0)


# --------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param([PutOp(key=b"a"), PutOp(key=b"a")], id="put-twice"),
        pytest.param([PutOp(key=b"a"), DeleteRangeOp(key=b"a")], id="put-then-delete"),
        pytest.param([DeleteRangeOp(key=b"a"), PutOp(key=b"a")], id="delete-then-put"),
        pytest.param(
            [DeleteRangeOp(key=b"a", range_end=b"c"), PutOp(key=b"b")], id="put-in-deleted-range"
        ),
        pytest.param([PutOp(key=b"a"), TxnOp(success=(PutOp(key=b"a"),))], id="outer-and-nested"),
        pytest.param(
            [TxnOp(success=(DeleteRangeOp(key=b"a"),)), PutOp(key=b"a")], id="nested-delete"
        ),
        pytest.param(
            [TxnOp(failure=(PutOp(key=b"a"),)), TxnOp(success=(PutOp(key=b"a"),))],
            id="two-nested-txns",
        ),
        pytest.param(
            [TxnOp(success=(TxnOp(success=(PutOp(key=b"a"), PutOp(key=b"a"))),))],
            id="deep-nesting",
        ),
        # Stricter than etcd's checkIntervals, which misses these two (etcd#22395, #16380):
        pytest.param(
            [DeleteRangeOp(key=b"a", range_end=b"\0"), PutOp(key=b"b")], id="from-key-delete"
        ),
        pytest.param(
            [TxnOp(success=(PutOp(key=b"a"),)), TxnOp(success=(DeleteRangeOp(key=b"a"),))],
            id="put-then-sibling-delete",
        ),
    ],
)
def test_a_branch_may_not_write_a_key_twice(ops):
    """v3rpc checkIntervals: ErrGRPCDuplicateKey, checked on both branches before applying."""
    store = store_with((b"a", b"1"), (b"b", b"2"))
    digest = store.state_digest()
    with pytest.raises(DuplicateKeyError) as info:
        store.txn((), ops)
    assert str(info.value) == "duplicate key given in txn request"
    # The failure branch is checked too, even when the success branch would run.
    with pytest.raises(DuplicateKeyError):
        store.txn((), [RangeOp(key=b"a")], ops)
    assert store.state_digest() == digest


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param(
            [DeleteRangeOp(key=b"a"), DeleteRangeOp(key=b"a", range_end=b"\0")], id="two-deletes"
        ),
        pytest.param(
            [TxnOp(success=(PutOp(key=b"a"),), failure=(PutOp(key=b"a"),))],
            id="then-and-else-are-exclusive",
        ),
        pytest.param(
            [TxnOp(success=(PutOp(key=b"a"),), failure=(DeleteRangeOp(key=b"a"),))],
            id="put-and-delete-in-exclusive-branches",
        ),
        pytest.param(
            [DeleteRangeOp(key=b"a", range_end=b"b"), PutOp(key=b"b")], id="range-end-excluded"
        ),
        pytest.param([RangeOp(key=b"a"), PutOp(key=b"a"), RangeOp(key=b"a")], id="reads"),
    ],
)
def test_writes_that_never_touch_a_key_twice_are_allowed(ops):
    store = store_with((b"a", b"1"))
    store.txn((), ops)
    store.txn((), [RangeOp(key=b"a")], ops)


def test_validation_errors_are_invalid_requests_and_revision_errors_are_not():
    for cls in (
        EmptyKeyError,
        ValueProvidedError,
        LeaseProvidedError,
        DuplicateKeyError,
        KeyNotFoundError,
    ):
        assert issubclass(cls, InvalidRequestError)
    for cls in (CompactedError, FutureRevisionError):
        assert issubclass(cls, RevisionError)
        assert not issubclass(cls, InvalidRequestError)


# --------------------------------------------------------------------------- compaction


def history_store() -> MVCCStore:
    """key_index.go's example: put(2) put(3) tombstone(4) put(5) tombstone(6) on b"foo"
    (etcd's revisions 1..5 shifted by one: our first write is revision 2), plus b"bar"
    written at 7 and 8."""
    store = MVCCStore()
    store.put(b"foo", b"a")
    store.put(b"foo", b"b")
    store.delete_range(b"foo")
    store.put(b"foo", b"c")
    store.delete_range(b"foo")
    store.put(b"bar", b"x")
    store.put(b"bar", b"y")
    return store


def wire_versions(store: MVCCStore) -> dict[bytes, list[int]]:
    """key -> the mod revisions it keeps (a tombstone as a negative number)."""
    _, _, _, keys = store.to_wire()
    return {key: [v[0] if v[2] else -v[0] for v in versions] for key, versions in keys}


def test_compaction_follows_etcds_key_index_example():
    """key_index.go doc: compact keeps the newest version <= rev; an older tombstone
    ends the key; a tombstone exactly at rev stays until a later compaction."""
    store = history_store()
    assert wire_versions(store) == {b"bar": [7, 8], b"foo": [2, 3, -4, 5, -6]}
    compact_now(store, 3)
    assert wire_versions(store) == {b"bar": [7, 8], b"foo": [3, -4, 5, -6]}
    compact_now(store, 5)
    assert wire_versions(store) == {b"bar": [7, 8], b"foo": [5, -6]}
    compact_now(store, 6)
    assert wire_versions(store) == {b"bar": [7, 8], b"foo": [-6]}
    compact_now(store, 7)
    assert wire_versions(store) == {b"bar": [7, 8]}
    compact_now(store, 8)
    assert wire_versions(store) == {b"bar": [8]}
    assert store.get(b"bar") == kv(b"bar", b"y", 7, 8, 2)


def test_compaction_never_drops_the_newest_version_of_a_live_key():
    store = MVCCStore()
    store.put(b"old", b"1")  # 2: never written again
    for i in range(5):
        store.put(b"hot", b"%d" % i)  # 3..7
    compact_now(store, store.revision)
    assert store.get(b"old") == kv(b"old", b"1", 2, 2, 1)
    assert store.get(b"hot") == kv(b"hot", b"4", 3, 7, 5)
    assert store.key_count == 2
    assert store.version_count == 2


def test_reads_at_or_above_the_compact_revision_answer_as_before():
    store = history_store()
    store.put(b"foo", b"d")  # 9
    before = {
        (revision, end): store.range(b"\0", end, revision=revision)
        for revision in range(1, store.revision + 1)
        for end in (b"\0", b"g")
    }
    gets = {(key, r): store.get(key, r) for key in (b"foo", b"bar") for r in range(1, 10)}
    for compact in (3, 4, 6, 8, 9):
        compact_now(store, compact)
        for (revision, end), result in before.items():
            if revision < compact:
                with pytest.raises(CompactedError) as info:
                    store.range(b"\0", end, revision=revision)
                assert info.value.compact_revision == compact
                assert str(info.value) == "mvcc: required revision has been compacted"
            else:
                assert store.range(b"\0", end, revision=revision) == result
        for (key, revision), value in gets.items():
            if revision >= compact:
                assert store.get(key, revision) == value


def test_compaction_revision_rules():
    """kvstore.go updateCompactRev: rev <= compactMainRev -> ErrCompacted,
    rev > currentRev -> ErrFutureRev."""
    store = store_with((b"a", b"1"), (b"a", b"2"))
    with pytest.raises(FutureRevisionError):
        compact_now(store, 4)
    with pytest.raises(CompactedError):
        compact_now(store, 0)
    compact_now(store, 2)
    assert store.compact_revision == 2
    with pytest.raises(CompactedError) as info:
        compact_now(store, 2)
    assert info.value.compact_revision == 2
    compact_now(store, 3)  # the current revision may be compacted
    assert store.compact_revision == 3
    assert store.get(b"a", revision=3) == kv(b"a", b"2", 2, 3, 2)


def test_size_bytes_is_the_documented_formula_and_falls_after_compaction():
    store = MVCCStore()
    store.put(b"key", b"value")
    store.put(b"key", b"v2")
    store.delete_range(b"key")
    per = VERSION_OVERHEAD_BYTES
    assert store.size_bytes == (3 + 5 + per) + (3 + 2 + per) + (3 + per)
    store.put(b"k2", b"x")
    size = store.size_bytes
    compact_now(store, store.revision)
    assert store.size_bytes == 2 + 1 + per < size
    assert store.version_count == 1


def test_compaction_keeps_history_above_the_compact_revision():
    store = MVCCStore()
    for i in range(6):
        store.put(b"k", b"%d" % i)  # revisions 2..7
    compact_now(store, 5)
    assert wire_versions(store) == {b"k": [5, 6, 7]}
    assert [store.get(b"k", r).value for r in (5, 6, 7)] == [b"3", b"4", b"5"]


# --------------------------------------------------------------------------- snapshots


def test_wire_round_trip_answers_every_readable_revision_the_same():
    store = history_store()
    store.put(b"a/1", b"1", lease=3)
    compact_now(store, 5)
    wire = msgpack.unpackb(msgpack.packb(store.to_wire(), use_bin_type=True), raw=False)
    restored = MVCCStore.from_wire(wire)
    assert restored.state_digest() == store.state_digest()
    assert restored.to_wire() == store.to_wire()
    assert (restored.revision, restored.compact_revision) == (store.revision, 5)
    assert (restored.key_count, restored.size_bytes, restored.version_count) == (
        store.key_count,
        store.size_bytes,
        store.version_count,
    )
    for revision in range(5, store.revision + 1):
        assert restored.range(**ALL, revision=revision) == store.range(**ALL, revision=revision)
    with pytest.raises(CompactedError):
        restored.range(**ALL, revision=4)
    # Both continue alike.
    assert restored.put(b"foo", b"z") == store.put(b"foo", b"z")
    compact_now(restored, restored.revision)
    compact_now(store, store.revision)
    assert restored.state_digest() == store.state_digest()


def test_wire_lists_keys_in_order():
    store = MVCCStore()
    for key in (b"c", b"a", b"b"):
        store.put(key, b"")
    assert [key for key, _ in store.to_wire()[3]] == [b"a", b"b", b"c"]


def test_digest_depends_on_history_not_only_on_current_values():
    one = store_with((b"a", b"1"), (b"a", b"2"))
    two = store_with((b"b", b"0"), (b"a", b"2"))
    two.delete_range(b"b")
    assert one.state_digest() != two.state_digest()
    assert store_with((b"a", b"1")).state_digest() == store_with((b"a", b"1")).state_digest()


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(None, id="not-a-list"),
        pytest.param([2, 1, 0, []], id="format"),
        pytest.param([1, 0, 0, []], id="revision-zero"),
        pytest.param([1, 3, 4, []], id="compact-above-revision"),
        pytest.param(
            [1, 3, 0, [[b"b", [[2, 2, 1, 0, b""]]], [b"a", [[3, 3, 1, 0, b""]]]]], id="order"
        ),
        pytest.param([1, 3, 0, [[b"", [[2, 2, 1, 0, b""]]]]], id="empty-key"),
        pytest.param([1, 3, 0, [[b"a", []]]], id="no-versions"),
        pytest.param([1, 3, 0, [[b"a", [[4, 4, 1, 0, b""]]]]], id="future-version"),
        pytest.param([1, 3, 0, [[b"a", [[3, 3, 1, 0, b""], [2, 2, 1, 0, b""]]]]], id="decreasing"),
        pytest.param([1, 3, 0, [[b"a", [[2, 2, 1, 0, b""], [3, 2, 3, 0, b""]]]]], id="version-gap"),
        pytest.param(
            [1, 3, 0, [[b"a", [[2, 2, 1, 0, b""], [3, 3, 2, 0, b""]]]]], id="create-moved"
        ),
        pytest.param([1, 3, 0, [[b"a", [[2, 0, 0, 0, b""]]]]], id="tombstone-first"),
        pytest.param(
            [1, 3, 0, [[b"a", [[2, 2, 1, 0, b""], [3, 0, 0, 0, b"x"]]]]], id="tombstone-value"
        ),
        pytest.param(
            [1, 4, 3, [[b"a", [[2, 2, 1, 0, b""], [3, 2, 2, 0, b""]]]]], id="below-compact"
        ),
        pytest.param([1, 3, 0, [[b"a", [[2, 2, 2, 0, b""]]]]], id="new-key-not-version-one"),
        pytest.param([1, 3, 0, [[b"a", [[2, 2, 1, 0, "text"]]]]], id="str-value"),
        pytest.param([1, 3, 0, [[b"a", [[2, 2, True, 0, b""]]]]], id="bool-version"),
    ],
)
def test_from_wire_rejects_what_to_wire_cannot_make(wire):
    with pytest.raises(InvalidSnapshotError):
        MVCCStore.from_wire(wire)


def test_from_wire_accepts_a_compacted_key_with_history_below():
    """After compact(3) a key may start with a version below 3 (its newest then) or a
    tombstone exactly at 3."""
    wire = [
        1,
        5,
        3,
        [
            [b"a", [[2, 2, 1, 0, b"x"], [4, 2, 2, 0, b"y"]]],
            [b"b", [[3, 0, 0, 0, b""], [5, 5, 1, 0, b"z"]]],
            [b"c", [[3, 2, 2, 0, b"w"]]],
        ],
    ]
    store = MVCCStore.from_wire(wire)
    assert store.get(b"a", 3) == kv(b"a", b"x", 2, 2, 1)
    assert store.get(b"b", 3) is None
    assert store.get(b"c") == kv(b"c", b"w", 2, 3, 2)
    assert store.key_count == 3


_DIGEST_SCRIPT = """
from raftkv.replica.mvcc import DeleteRangeOp, MVCCStore, PutOp
store = MVCCStore()
for i in range(300):
    store.put(b"k%d" % (i * 7919 % 101), b"v%d" % i)
    if i % 13 == 0:
        store.txn((), [DeleteRangeOp(key=b"k%d" % (i % 10), range_end=b"k%d" % (i % 10 + 1))])
    if i % 50 == 49:
        store.compact(store.revision - 20)
        store.compact_step(7)  # partly freed, in set order: the digest must not care
digest = store.state_digest()
while store.compact_step(7):
    pass
print(digest, store.state_digest(), store.size_bytes, store.key_count)
"""


def test_digest_does_not_depend_on_the_hash_seed():
    """Replicas run with different PYTHONHASHSEEDs; set and dict order must not leak."""
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1
