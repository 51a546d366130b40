"""Leases in the KV state machine and its change feed (issue 17)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from raftkv.replica.kv import (
    ERR_LEASE_EXISTS,
    ERR_LEASE_NOT_FOUND,
    ERR_NOSPACE,
    Alarm,
    Cas,
    Compact,
    Delete,
    DeleteRange,
    InvalidCommand,
    KeyRange,
    KVResult,
    KVStateMachine,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseGranted,
    LeaseRevoke,
    LeaseRevoked,
    MultiPut,
    Put,
    Session,
    Txn,
    TxnAnswer,
    TxnDelete,
    TxnPut,
    decode_command,
    encode_command,
)
from raftkv.replica.mvcc import EVENT_DELETE, EVENT_PUT, CompactedError
from tests.replica.test_kv import Log


@pytest.fixture
def log() -> Log:
    return Log(KVStateMachine())


def grant(log: Log, lease_id: int = 0, ttl_s: int = 10) -> int:
    r: Any = log.apply(LeaseGrant(id=lease_id, ttl_s=ttl_s, time_ms=1))
    assert isinstance(r, LeaseGranted), r
    return int(r.id)


def test_commands_round_trip_through_the_log_encoding() -> None:
    for cmd in (
        Put(key="k", value=1, time_ms=2, lease=7),
        LeaseGrant(id=0, ttl_s=5, time_ms=3),
        LeaseGrant(id=2**63 - 1, ttl_s=5, time_ms=3, session=Session(client_id="c", seq=1)),
        LeaseRevoke(id=9, time_ms=4),
        LeaseRevoke(id=9, time_ms=4, expired=True),
        LeaseCheckpoint(checkpoints=((1, 500), (3, 0)), time_ms=5),
        Txn(compares=(), success=(TxnPut(key="a", value=1, lease=4),), failure=(), time_ms=1),
    ):
        assert decode_command(encode_command(cmd)) == cmd
    # A put without a lease encodes as before leases existed.
    assert b"lease" not in encode_command(Put(key="k", value=1, time_ms=2))


@pytest.mark.parametrize(
    "build",
    [
        lambda: LeaseGrant(id=-1, ttl_s=5, time_ms=1),
        lambda: LeaseGrant(id=2**63, ttl_s=5, time_ms=1),
        lambda: LeaseGrant(id=1, ttl_s=0, time_ms=1),
        lambda: LeaseGrant(id=True, ttl_s=5, time_ms=1),
        lambda: LeaseRevoke(id=0, time_ms=1),
        lambda: LeaseCheckpoint(checkpoints=((1, -1),), time_ms=1),
        lambda: LeaseCheckpoint(checkpoints=((0, 1),), time_ms=1),
        lambda: Put(key="k", value=1, time_ms=1, lease=-3),
        lambda: Put(key="k", value=1, time_ms=1, lease=None),
        lambda: TxnPut(key="k", value=1, lease=2**63),
    ],
)
def test_bad_lease_commands_are_refused_when_built(build: Any) -> None:
    with pytest.raises(InvalidCommand):
        build()


def test_grant_assigns_ids_and_refuses_a_taken_one(log: Log) -> None:
    assert grant(log) == 1  # the entry's index
    assert grant(log, 3) == 3  # the client's choice
    assert grant(log) == 4  # index 3 is taken: the next free id above it
    r = log.apply(LeaseGrant(id=3, ttl_s=10, time_ms=1))
    assert isinstance(r, KVResult) and r.error == ERR_LEASE_EXISTS and not r.executed
    assert log.sm.leases.ids() == [1, 3, 4]
    assert log.sm.revision == 1  # grants change no revision


def test_put_with_a_lease_attaches_and_a_plain_put_detaches(log: Log) -> None:
    lease = grant(log)
    log.apply(Put(key="a", value=1, time_ms=1, lease=lease))
    log.apply(Put(key="b", value=1, time_ms=1, lease=lease))
    assert log.sm.leases.keys_of(lease) == [b"a", b"b"]
    log.apply(Put(key="a", value=2, time_ms=1))  # re-put without a lease
    assert log.sm.leases.keys_of(lease) == [b"b"]
    other = grant(log)
    log.apply(Put(key="b", value=2, time_ms=1, lease=other))  # moves to the other lease
    assert log.sm.leases.keys_of(lease) == []
    assert log.sm.leases.keys_of(other) == [b"b"]


def test_put_naming_a_missing_lease_changes_nothing(log: Log) -> None:
    r = log.apply(Put(key="a", value=1, time_ms=1, lease=42))
    assert isinstance(r, KVResult) and r.error == ERR_LEASE_NOT_FOUND and not r.executed
    assert log.sm.revision == 1 and "a" not in log.sm
    txn = Txn(compares=(), success=(TxnPut(key="a", value=1, lease=42),), failure=(), time_ms=1)
    r = log.apply(txn)
    assert isinstance(r, KVResult) and r.error == ERR_LEASE_NOT_FOUND
    assert log.sm.revision == 1


def test_revoke_deletes_every_key_in_one_revision(log: Log) -> None:
    lease = grant(log)
    for key in ("c", "a", "b"):
        log.apply(Put(key=key, value=1, time_ms=1, lease=lease))
    log.apply(Put(key="other", value=1, time_ms=1))
    before = log.sm.revision
    r = log.apply(LeaseRevoke(id=lease, time_ms=1))
    assert isinstance(r, LeaseRevoked) and r.deleted == 3 and r.revision == before + 1
    assert [k for k, _ in log.sm.items()] == ["other"]
    assert len(log.sm.leases) == 0
    events = log.sm.last_events()
    assert events is not None and events[0] == before + 1
    assert [(e.kind, e.kv.key) for e in events[1]] == [
        (EVENT_DELETE, b"a"),
        (EVENT_DELETE, b"b"),
        (EVENT_DELETE, b"c"),
    ]
    again = log.apply(LeaseRevoke(id=lease, time_ms=1, expired=True))
    assert isinstance(again, KVResult) and again.error == ERR_LEASE_NOT_FOUND


def test_revoke_of_a_lease_without_keys_moves_no_revision(log: Log) -> None:
    lease = grant(log)
    r = log.apply(LeaseRevoke(id=lease, time_ms=1, expired=True))
    assert isinstance(r, LeaseRevoked) and r.deleted == 0 and r.revision == 1


@pytest.mark.parametrize(
    "delete",
    [
        Delete(key="a", time_ms=1),
        DeleteRange(range=KeyRange(key="a", prefix=True), time_ms=1),
        Txn(compares=(), success=(TxnDelete(range=KeyRange(key="a")),), failure=(), time_ms=1),
        Cas(key="a", expect=1, value=2, time_ms=1),
        MultiPut(pairs={"a": 5}, time_ms=1),
        Txn(compares=(), success=(TxnPut(key="a", value=3),), failure=(), time_ms=1),
    ],
)
def test_every_other_write_detaches_the_key(log: Log, delete: Any) -> None:
    lease = grant(log)
    log.apply(Put(key="a", value=1, time_ms=1, lease=lease))
    log.apply(Put(key="b", value=1, time_ms=1, lease=lease))
    log.apply(delete)
    assert log.sm.leases.keys_of(lease) == [b"b"]
    r = log.apply(LeaseRevoke(id=lease, time_ms=1))
    assert isinstance(r, LeaseRevoked) and r.deleted == 1
    survivors = dict(log.sm.items())
    assert "b" not in survivors


def test_txn_put_with_a_lease_attaches(log: Log) -> None:
    lease = grant(log)
    txn = Txn(
        compares=(),
        success=(TxnPut(key="x", value=1, lease=lease), TxnPut(key="y", value=2)),
        failure=(),
        time_ms=1,
    )
    r = log.apply(txn)
    assert isinstance(r, TxnAnswer) and r.succeeded
    assert log.sm.leases.keys_of(lease) == [b"x"]


def test_checkpoint_records_remaining_times_and_ignores_unknown_leases(log: Log) -> None:
    lease = grant(log)
    log.apply(LeaseCheckpoint(checkpoints=((lease, 1234), (99, 5)), time_ms=1))
    got = log.sm.leases.get(lease)
    assert got is not None and got.remaining_ms == 1234 and got.ttl_s == 10
    assert log.sm.leases.get(99) is None


def test_grant_is_refused_under_the_nospace_alarm(log: Log) -> None:
    log.apply(Alarm(active=True, time_ms=1))
    r = log.apply(LeaseGrant(id=0, ttl_s=5, time_ms=1))
    assert isinstance(r, KVResult) and r.error == ERR_NOSPACE


def test_a_retried_grant_and_revoke_apply_once(log: Log) -> None:
    s1 = Session(client_id="c", seq=1)
    first = log.apply(LeaseGrant(id=7, ttl_s=5, time_ms=1, session=s1))
    again = log.apply(LeaseGrant(id=7, ttl_s=5, time_ms=1, session=s1))
    assert isinstance(first, LeaseGranted) and isinstance(again, LeaseGranted)
    assert again.replayed and again.id == 7 and again.index == first.index
    s2 = Session(client_id="c", seq=2)
    log.apply(Put(key="k", value=1, time_ms=1, lease=7))
    r1 = log.apply(LeaseRevoke(id=7, time_ms=1, session=s2))
    r2 = log.apply(LeaseRevoke(id=7, time_ms=1, session=s2))
    assert isinstance(r1, LeaseRevoked) and r1.deleted == 1
    assert isinstance(r2, LeaseRevoked) and r2.replayed and r2.revision == r1.revision


def test_snapshot_holds_leases_and_rebuilds_their_keys(log: Log) -> None:
    a, b = grant(log), grant(log, 100, ttl_s=60)
    log.apply(Put(key="k1", value=1, time_ms=1, lease=a))
    log.apply(Put(key="k2", value=1, time_ms=1, lease=b))
    log.apply(Put(key="k3", value=1, time_ms=1))
    log.apply(LeaseCheckpoint(checkpoints=((b, 777),), time_ms=1))
    data = log.sm.snapshot()
    assert msgpack.unpackb(data)["version"] == 4
    restored = KVStateMachine()
    restored.restore(data)
    assert restored.snapshot() == data
    assert restored.leases.ids() == [a, b]
    assert restored.leases.keys_of(a) == [b"k1"] and restored.leases.keys_of(b) == [b"k2"]
    got = restored.leases.get(b)
    assert got is not None and (got.ttl_s, got.remaining_ms) == (60, 777)
    assert restored.restores == 1
    # The restored replica goes on exactly as the original.
    for sm in (log.sm, restored):
        sm.apply(log.index + 1, encode_command(LeaseRevoke(id=a, time_ms=1)))
    assert restored.snapshot() == log.sm.snapshot()


def test_a_version_3_snapshot_restores_with_no_leases(log: Log) -> None:
    log.apply(Put(key="k", value=1, time_ms=1))
    body = msgpack.unpackb(log.sm.snapshot())
    body["version"] = 3
    del body["leases"]
    sm = KVStateMachine()
    sm.restore(msgpack.packb(body))
    assert len(sm.leases) == 0 and dict(sm.items()) == {"k": 1}


def test_bad_leases_in_a_snapshot_are_refused(log: Log) -> None:
    body = msgpack.unpackb(log.sm.snapshot())
    body["leases"] = [[0, 5, None]]
    with pytest.raises(ValueError, match="bad leases"):
        KVStateMachine().restore(msgpack.packb(body))


# ----------------------------------------------------------------------------- change feed


def test_last_events_are_the_revision_just_written(log: Log) -> None:
    assert log.sm.last_events() is None
    log.apply(Put(key="k", value=1, time_ms=1))
    log.apply(Put(key="k", value=2, time_ms=1))
    got = log.sm.last_events()
    assert got is not None
    revision, events = got
    assert revision == 3 and len(events) == 1
    (ev,) = events
    assert ev.kind == EVENT_PUT and ev.kv.value == b"2" and ev.kv.version == 2
    assert ev.prev_kv is not None and ev.prev_kv.value == b"1"
    log.apply(MultiPut(pairs={"z": 1, "a": 2}, time_ms=1))
    got = log.sm.last_events()
    assert got is not None and [e.kv.key for e in got[1]] == [b"a", b"z"]  # key order
    log.apply(Delete(key="z", time_ms=1))
    got = log.sm.last_events()
    assert got is not None
    (ev,) = got[1]
    assert ev.kind == EVENT_DELETE and ev.kv.mod_revision == 5 and ev.kv.version == 0
    assert ev.kv.value == b"" and ev.prev_kv is not None and ev.prev_kv.value == b"1"


def test_history_replay_matches_the_live_feed(log: Log) -> None:
    live = []
    lease = grant(log)
    commands: list[Any] = [
        Put(key="a", value=1, time_ms=1),
        MultiPut(pairs={"b": 1, "a": 2}, time_ms=1),
        Put(key="c", value=1, time_ms=1, lease=lease),
        Delete(key="a", time_ms=1),
        Put(key="a", value=3, time_ms=1),
        LeaseRevoke(id=lease, time_ms=1),
        DeleteRange(range=KeyRange(key="", prefix=True), time_ms=1),
    ]
    for cmd in commands:
        log.apply(cmd)
        got = log.sm.last_events()
        assert got is not None
        live.extend(got[1])
    assert log.sm.events_between(b"\0", b"\0", 2, log.sm.revision) == live
    only_a = [e for e in live if e.kv.key == b"a"]
    assert log.sm.events_between(b"a", b"", 1, 100) == only_a
    assert log.sm.events_between(b"b", b"d", 4, 8) == [
        e for e in live if e.kv.key in (b"b", b"c") and 4 <= e.kv.mod_revision <= 8
    ]


def test_history_after_compaction(log: Log) -> None:
    for value in range(5):
        log.apply(Put(key="k", value=value, time_ms=1))  # revisions 2..6
    log.apply(Compact(revision=4, time_ms=1))
    with pytest.raises(CompactedError) as exc:
        log.sm.events_between(b"k", b"", 3, 6)
    assert exc.value.compact_revision == 4
    events = log.sm.events_between(b"k", b"", 4, 6)
    assert [e.kv.mod_revision for e in events] == [4, 5, 6]
    assert events[0].prev_kv is None  # dropped by the compaction
    assert events[1].prev_kv is not None and events[1].prev_kv.mod_revision == 4


def test_etcd_writes_keep_the_lease_table_true(log: Log) -> None:
    """The etcd API's raw-bytes transactions attach, move and detach keys like
    /v1 writes, and refuse a lease that does not exist."""
    from raftkv.replica.kv import EtcdAnswer, EtcdTxn
    from raftkv.replica.mvcc import DeleteRangeOp, PutOp

    def etcd(*ops: object) -> Any:
        return log.apply(EtcdTxn(compares=(), success=ops, failure=(), time_ms=1))  # type: ignore[arg-type]

    lease = grant(log)
    r = etcd(PutOp(key=b"a", value=b"x", lease=lease), PutOp(key=b"b", value=b"y", lease=lease))
    assert isinstance(r, EtcdAnswer) and r.ok
    assert log.sm.leases.keys_of(lease) == [b"a", b"b"]
    etcd(DeleteRangeOp(key=b"a"))  # a delete detaches
    etcd(PutOp(key=b"b", value=b"z"))  # a put without a lease detaches
    assert log.sm.leases.keys_of(lease) == []
    etcd(PutOp(key=b"a", value=b"again"))
    revoked = log.apply(LeaseRevoke(id=lease, time_ms=1))
    assert isinstance(revoked, LeaseRevoked) and revoked.deleted == 0
    assert "a" in log.sm and "b" in log.sm  # the revoke left the re-put keys alone
    before = log.sm.revision
    r = etcd(PutOp(key=b"c", value=b"x", lease=424242))
    assert isinstance(r, EtcdAnswer) and r.error == ERR_LEASE_NOT_FOUND
    assert log.sm.revision == before and "c" not in log.sm
