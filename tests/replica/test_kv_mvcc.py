"""The KV state machine on the MVCC store: revisions, ranges, transactions,
compaction, the NOSPACE alarm, snapshots (issue 16)."""

from __future__ import annotations

import msgpack
import pytest

from raftkv.replica.kv import (
    ERR_COMPACTED,
    ERR_CONFLICT,
    ERR_FUTURE_REVISION,
    ERR_NOSPACE,
    Alarm,
    Cas,
    Compact,
    Compare,
    Delete,
    Deleted,
    DeleteRange,
    InvalidCommand,
    KeyRange,
    KVResult,
    KVStateMachine,
    Listing,
    MultiPut,
    Put,
    PutDone,
    Range,
    Session,
    Txn,
    TxnAnswer,
    TxnDelete,
    TxnPut,
    TxnRange,
    decode_command,
    encode_command,
)
from raftkv.replica.mvcc import CompactedError, FutureRevisionError
from tests.replica.test_kv import Log


@pytest.fixture
def log() -> Log:
    return Log(KVStateMachine())


def keys(listing: Listing) -> list[str]:
    return [item.key for item in listing.items]


def test_prefix_and_interval_ranges(log: Log) -> None:
    log.apply(MultiPut(pairs={"a/1": 1, "a/2": 2, "a0": 3, "b": 4}, time_ms=1))
    sm = log.sm
    assert keys(sm.range(KeyRange(key="a/", prefix=True))) == ["a/1", "a/2"]
    assert keys(sm.range(KeyRange(key="a/1", range_end="a0"))) == ["a/1", "a/2"]
    assert keys(sm.range(KeyRange(key="a0", range_end="\0"))) == ["a0", "b"]
    assert keys(sm.range(KeyRange(key="", prefix=True))) == ["a/1", "a/2", "a0", "b"]
    assert keys(sm.range(KeyRange(key="b"))) == ["b"]
    limited = sm.range(KeyRange(key="", prefix=True), limit=2)
    assert (keys(limited), limited.count, limited.more) == (["a/1", "a/2"], 4, True)
    counted = sm.range(KeyRange(key="a", prefix=True), count_only=True)
    assert (counted.items, counted.count) == ((), 3)
    only = sm.range(KeyRange(key="b"), keys_only=True)
    assert only.items[0].value_json == b"" and only.items[0].version == 1
    down = sm.range(KeyRange(key="", prefix=True), sort_order="descend")
    assert keys(down) == ["b", "a0", "a/2", "a/1"]


def test_reads_at_old_revisions_and_compaction(log: Log) -> None:
    for value in (1, 2, 3):
        log.apply(Put(key="k", value=value, time_ms=1))  # revisions 2, 3, 4
    sm = log.sm
    assert sm.range(KeyRange(key="k"), revision=2).items[0].value == 1
    assert sm.range(KeyRange(key="k"), revision=3).items[0].value == 2
    with pytest.raises(FutureRevisionError):
        sm.range(KeyRange(key="k"), revision=5)
    # Through the log: the same answers as results, not exceptions.
    r = log.apply(Range(range=KeyRange(key="k"), revision=9, time_ms=1))
    assert isinstance(r, KVResult) and r.error == ERR_FUTURE_REVISION
    assert log.apply(Compact(revision=3, time_ms=1)).ok
    assert sm.compact_revision == 3
    with pytest.raises(CompactedError):
        sm.range(KeyRange(key="k"), revision=2)
    assert sm.range(KeyRange(key="k"), revision=3).items[0].value == 2
    r = log.apply(Range(range=KeyRange(key="k"), revision=2, time_ms=1))
    assert isinstance(r, KVResult) and (r.error, r.compact_revision) == (ERR_COMPACTED, 3)
    # Compacting again at or below the point is an error, changes nothing.
    r = log.apply(Compact(revision=3, time_ms=1))
    assert (r.ok, r.error) == (False, ERR_COMPACTED)
    assert sm.read("k").value == 3  # the newest version always survives


def test_delete_range_is_one_revision(log: Log) -> None:
    log.apply(MultiPut(pairs={"p/1": 1, "p/2": 2, "q": 3}, time_ms=1))  # revision 2
    r = log.apply(DeleteRange(range=KeyRange(key="p/", prefix=True), prev_kv=True, time_ms=1))
    assert isinstance(r, Deleted) and (r.deleted, r.revision) == (2, 3)
    assert [(i.key, i.value) for i in r.prev] == [("p/1", 1), ("p/2", 2)]
    r = log.apply(DeleteRange(range=KeyRange(key="p/", prefix=True), time_ms=1))
    assert isinstance(r, Deleted) and (r.deleted, r.revision) == (0, 3)  # nothing: no bump
    assert list(log.sm.items()) == [("q", 3)]


def test_txn_success_and_failure_branches(log: Log) -> None:
    log.apply(Put(key="x", value={"n": 1}, time_ms=1))  # revision 2
    guard = Compare(range=KeyRange(key="x"), target="value", cmp="==", value={"n": 1})
    txn = Txn(
        compares=(guard,),
        success=(
            TxnPut(key="y", value=1),
            TxnRange(range=KeyRange(key="y")),
            TxnDelete(range=KeyRange(key="x")),
        ),
        failure=(TxnRange(range=KeyRange(key="x")),),
        time_ms=1,
    )
    r = log.apply(txn)
    assert isinstance(r, TxnAnswer) and r.succeeded and r.revision == 3
    put, read, deleted = r.responses
    assert put == PutDone(revision=3)
    # A read later in the transaction sees its earlier writes.
    assert isinstance(read, Listing) and [i.value for i in read.items] == [1]
    assert isinstance(deleted, Deleted) and deleted.deleted == 1
    # The guard fails now (x is gone): the failure branch only reads -- no bump.
    r = log.apply(txn)
    assert isinstance(r, TxnAnswer) and not r.succeeded and r.revision == 3
    assert isinstance(r.responses[0], Listing) and r.responses[0].items == ()


@pytest.mark.parametrize(
    ("target", "cmp", "value", "holds"),
    [
        ("version", "==", 2, True),
        ("version", ">", 1, True),
        ("version", "<", 2, False),
        ("create_revision", "==", 2, True),
        ("mod_revision", "==", 3, True),
        ("mod_revision", "!=", 3, False),
        ("value", "==", 2.0, True),  # JSON equality: 2 == 2.0
        ("value", "!=", 2, False),
    ],
)
def test_txn_compares(log: Log, target: str, cmp: str, value: object, holds: bool) -> None:
    log.apply(Put(key="k", value=1, time_ms=1))  # revision 2
    log.apply(Put(key="k", value=2, time_ms=1))  # revision 3: version 2
    guard = Compare(range=KeyRange(key="k"), target=target, cmp=cmp, value=value)  # type: ignore[arg-type]
    r = log.apply(Txn(compares=(guard,), success=(), failure=(), time_ms=1))
    assert isinstance(r, TxnAnswer) and r.succeeded is holds


def test_txn_compare_over_a_range_and_on_missing_keys(log: Log) -> None:
    log.apply(MultiPut(pairs={"r/1": 1, "r/2": 1}, time_ms=1))
    every = KeyRange(key="r/", prefix=True)

    def holds(*compares: Compare) -> bool:
        r = log.apply(Txn(compares=compares, success=(), failure=(), time_ms=1))
        assert isinstance(r, TxnAnswer)
        return r.succeeded

    assert holds(Compare(range=every, target="value", cmp="==", value=1))
    log.apply(Put(key="r/2", value=2, time_ms=1))
    # A range compare holds only if it holds for every key in it.
    assert not holds(Compare(range=every, target="value", cmp="==", value=1))
    missing = KeyRange(key="nope")
    assert holds(Compare(range=missing, target="version", cmp="==", value=0))
    assert not holds(Compare(range=missing, target="value", cmp="==", value=None))
    assert not holds(Compare(range=missing, target="value", cmp="!=", value=1))


def test_txn_rejects_duplicate_writes() -> None:
    with pytest.raises(InvalidCommand, match="duplicate key"):
        Txn(
            compares=(),
            success=(TxnPut(key="a", value=1), TxnPut(key="a", value=2)),
            failure=(),
            time_ms=1,
        )
    with pytest.raises(InvalidCommand, match="duplicate key"):
        Txn(
            compares=(),
            success=(TxnPut(key="a/1", value=1), TxnDelete(range=KeyRange(key="a/", prefix=True))),
            failure=(),
            time_ms=1,
        )
    with pytest.raises(InvalidCommand, match="== or !="):
        Compare(range=KeyRange(key="a"), target="value", cmp="<", value=1)


def test_every_command_round_trips_through_the_log_encoding() -> None:
    session = Session(client_id="c", seq=3)
    commands = [
        Range(
            range=KeyRange(key="a", prefix=True),
            revision=4,
            limit=2,
            keys_only=True,
            sort_order="descend",
            sort_target="mod_revision",
            time_ms=5,
            session=session,
        ),
        DeleteRange(range=KeyRange(key="a", range_end="b"), prev_kv=True, time_ms=5),
        Txn(
            compares=(Compare(range=KeyRange(key="a"), target="version", cmp=">", value=0),),
            success=(TxnPut(key="b", value=[1]), TxnDelete(range=KeyRange(key="c"))),
            failure=(TxnRange(range=KeyRange(key="", prefix=True), limit=1, count_only=True),),
            time_ms=5,
            session=session,
        ),
        Compact(revision=7, time_ms=5),
        Alarm(active=True, time_ms=5),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command


def test_the_nospace_alarm_refuses_writes_but_not_reads_or_deletes(log: Log) -> None:
    log.apply(Put(key="a", value=1, time_ms=1))
    log.apply(Alarm(active=True, time_ms=1))
    assert log.sm.alarm
    for command in (
        Put(key="b", value=1, time_ms=1),
        MultiPut(pairs={"b": 1}, time_ms=1),
        Cas(key="a", expect=1, value=2, time_ms=1),
        Txn(compares=(), success=(TxnPut(key="b", value=1),), failure=(), time_ms=1),
    ):
        r = log.apply(command)
        assert isinstance(r, KVResult) and (r.ok, r.error) == (False, ERR_NOSPACE), command
        assert not r.executed
    # A conflicting CAS is still a conflict (it would write nothing).
    r = log.apply(Cas(key="a", expect=9, value=2, time_ms=1))
    assert r.error == ERR_CONFLICT
    assert log.sm.read("a").value == 1
    assert log.apply(Delete(key="a", time_ms=1)).ok
    assert log.apply(Compact(revision=2, time_ms=1)).ok
    log.apply(Alarm(active=False, time_ms=1))
    assert log.apply(Put(key="b", value=1, time_ms=1)).ok


def test_a_refused_write_does_not_use_up_its_session_sequence(log: Log) -> None:
    """NOSPACE is a refusal: the same Idempotency-Key works once the alarm clears."""
    session = Session(client_id="c", seq=1)
    log.apply(Alarm(active=True, time_ms=1))
    assert log.apply(Put(key="k", value=1, time_ms=1, session=session)).error == ERR_NOSPACE
    log.apply(Alarm(active=False, time_ms=1))
    r = log.apply(Put(key="k", value=1, time_ms=1, session=session))
    assert r.ok and not r.replayed


def test_replayed_txn_and_delete_range(log: Log) -> None:
    session = Session(client_id="c", seq=1)
    txn = Txn(
        compares=(Compare(range=KeyRange(key="k"), target="version", cmp="==", value=0),),
        success=(TxnPut(key="k", value=1),),
        failure=(),
        time_ms=1,
        session=session,
    )
    first = log.apply(txn)
    retry = log.apply(txn)
    assert isinstance(first, TxnAnswer) and isinstance(retry, TxnAnswer)
    assert (retry.replayed, retry.succeeded, retry.index, retry.revision) == (
        True,
        True,
        first.index,
        first.revision,
    )
    assert log.sm.read("k").item.version == 1  # type: ignore[union-attr]  # not applied twice


def test_snapshot_holds_the_whole_history(log: Log) -> None:
    for value in range(5):
        log.apply(Put(key="k", value=value, time_ms=1))
    log.apply(Compact(revision=3, time_ms=1))
    log.apply(Alarm(active=True, time_ms=1))
    restored = KVStateMachine()
    restored.restore(log.sm.snapshot())
    assert restored.snapshot() == log.sm.snapshot()
    assert (restored.revision, restored.compact_revision, restored.alarm) == (6, 3, True)
    for revision in range(3, 7):
        assert restored.range(KeyRange(key="k"), revision=revision) == log.sm.range(
            KeyRange(key="k"), revision=revision
        )


def test_snapshot_later_is_a_capture(log: Log) -> None:
    log.apply(Put(key="a", value=1, time_ms=1))
    encode = log.sm.snapshot_later()
    expected = log.sm.snapshot()
    log.apply(Put(key="a", value=2, time_ms=1))
    log.apply(Put(key="b", value=3, time_ms=1))
    assert encode() == expected


def test_a_version_2_snapshot_restores_into_one_revision() -> None:
    body = {
        "version": 2,
        "applied_index": 7,
        "log_time_ms": 9,
        "data": [["a", 1], ["b", {"x": None}]],
        "sessions": [],
    }
    sm = KVStateMachine()
    sm.restore(msgpack.packb(body, use_bin_type=True))
    assert list(sm.items()) == [("a", 1), ("b", {"x": None})]
    assert sm.revision == 2 and sm.read("b").item.mod_revision == 2  # type: ignore[union-attr]


def test_a_snapshot_is_packed_byte_for_byte_as_one_packb(log: Log) -> None:
    """The snapshot is packed a key at a time (the GIL is free between keys);
    the bytes must be exactly one msgpack.packb of the same body."""
    for i in range(300):
        log.apply(Put(key=f"k{i % 97}", value={"i": i, "s": "x" * (i % 7)}, time_ms=1))
    log.apply(Delete(key="k3", time_ms=1))
    data = log.sm.snapshot()
    body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    assert msgpack.packb(body, use_bin_type=True) == data
    assert len(body["store"][3]) == 97
