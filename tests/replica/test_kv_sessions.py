"""Client sessions of the KV state machine: no cached values, caps, exactly-once (§6.3)."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from raftkv.replica.kv import (
    ABSENT,
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_OWNER,
    ERR_CONFLICT,
    ERR_NOT_FOUND,
    ERR_SESSION_OWNER,
    ERR_TOO_MANY_OWNER_SESSIONS,
    ERR_TOO_MANY_SESSIONS,
    MAX_SESSION_SNAPSHOT_BYTES,
    Cas,
    Command,
    Delete,
    Get,
    InvalidCommand,
    InvalidSnapshot,
    KVResult,
    KVStateMachine,
    MultiPut,
    Put,
    Session,
    decode_command,
    encode_command,
)
from raftkv.replica.sessions import Outcome, SessionRecord
from tests.replica.test_kv import Log, s

MB = 1 << 20


@pytest.fixture
def log() -> Log:
    return Log(KVStateMachine())


def test_conflicting_cas_with_fresh_sessions_does_not_grow_the_snapshot() -> None:
    """Issue 15 #3: one 1 MB value + 150 conflicting CAS with fresh Idempotency-Keys
    made a 144 MiB snapshot (each session cached the conflict's ``current``)."""
    log = Log(KVStateMachine())
    big = "x" * MB
    log.apply(Put(key="big", value=big, time_ms=1))
    alone = len(log.sm.snapshot())
    for i in range(150):
        r = log.apply(Cas(key="big", expect="nope", value=1, time_ms=2, session=s(f"c{i}", 1)))
        assert (r.ok, r.error, r.current == big) == (False, ERR_CONFLICT, True)
    data = log.sm.snapshot()
    grown = len(data) - alone
    assert grown <= 150 * MAX_SESSION_SNAPSHOT_BYTES, f"snapshot grew by {grown} bytes"
    restored = KVStateMachine()
    restored.restore(data)
    assert restored.snapshot() == data


def test_a_retried_conflict_answers_conflict_without_current(log: Log) -> None:
    log.apply(Put(key="k", value="v1", time_ms=1))
    first = log.apply(Cas(key="k", expect="v0", value="v2", time_ms=2, session=s("c", 1)))
    assert (first.ok, first.error, first.found, first.current) == (False, ERR_CONFLICT, True, "v1")
    log.apply(Put(key="k", value="v0", time_ms=3))  # now the expectation would match
    again = log.apply(Cas(key="k", expect="v0", value="v2", time_ms=4, session=s("c", 1)))
    # The conflict of the first attempt, at its index, without a value: not applied.
    assert (again.ok, again.error, again.index, again.found, again.current) == (
        False,
        ERR_CONFLICT,
        first.index,
        True,
        None,
    )
    assert log.sm.read("k").value == "v0"


_C1 = s("c", 1)
# kind -> (setup, the command with session c/1, what someone else does in between)
_SCENARIOS: dict[str, tuple[Command, Command, Command]] = {
    "put": (
        Put(key="k", value=0, time_ms=1),
        Put(key="k", value=1, time_ms=2, session=_C1),
        Put(key="k", value=2, time_ms=3),
    ),
    "delete": (
        Put(key="k", value=0, time_ms=1),
        Delete(key="k", time_ms=2, session=_C1),
        Put(key="k", value=2, time_ms=3),
    ),
    "delete-absent": (
        Put(key="o", value=0, time_ms=1),
        Delete(key="k", time_ms=2, session=_C1),
        Put(key="k", value=2, time_ms=3),
    ),
    "cas": (
        Put(key="k", value=0, time_ms=1),
        Cas(key="k", expect=0, value=1, time_ms=2, session=_C1),
        Put(key="k", value=0, time_ms=3),
    ),
    "cas-absent": (
        Put(key="o", value=0, time_ms=1),
        Cas(key="k", expect=ABSENT, value=1, time_ms=2, session=_C1),
        Delete(key="k", time_ms=3),
    ),
    "cas-conflict": (
        Put(key="k", value=0, time_ms=1),
        Cas(key="k", expect=5, value=1, time_ms=2, session=_C1),
        Put(key="k", value=5, time_ms=3),
    ),
    "multi-put": (
        Put(key="k", value=0, time_ms=1),
        MultiPut(pairs={"k": 1, "j": 1}, time_ms=2, session=_C1),
        MultiPut(pairs={"k": 2, "j": 2}, time_ms=3),
    ),
    "get": (
        Put(key="k", value=0, time_ms=1),
        Get(key="k", time_ms=2, session=_C1),
        Put(key="k", value=2, time_ms=3),
    ),
}


def _outcome(r: KVResult) -> tuple[bool, int, bool, str | None]:
    return r.ok, r.index, r.found, r.error


@pytest.mark.parametrize("restart", [False, True], ids=["live", "restored"])
@pytest.mark.parametrize("kind", [kind for kind in _SCENARIOS if kind != "get"])
def test_a_retry_is_applied_once_for_every_write_kind(kind: str, restart: bool) -> None:
    setup, write, meanwhile = _SCENARIOS[kind]
    log = Log(KVStateMachine())
    log.apply(setup)
    first = log.apply(write)
    log.apply(meanwhile)
    if restart:  # a follower restored from a snapshot answers the retry the same
        restored = KVStateMachine()
        restored.restore(log.sm.snapshot())
        log = Log(restored, start=log.index)
    state = list(log.sm.items())
    again = log.apply(write)
    assert _outcome(again) == _outcome(first)
    assert list(log.sm.items()) == state  # not applied again
    assert log.sm.sessions()["c"][0] == 1
    assert first.error in (None, ERR_NOT_FOUND, ERR_CONFLICT)


def test_a_retried_get_reads_at_the_retry(log: Log) -> None:
    """A get changes nothing, so its retry is answered by reading again: the value
    at the retry's index (linearizable: a point inside the retried call)."""
    setup, get, meanwhile = _SCENARIOS["get"]
    log.apply(setup)
    first = log.apply(get)
    assert (first.ok, first.value) == (True, 0)
    log.apply(meanwhile)
    again = log.apply(get)
    assert (again.ok, again.value, again.found, again.index) == (True, 2, True, log.index)
    assert log.sm.sessions()["c"][0] == 1
    log.apply(Delete(key="k", time_ms=4))
    gone = log.apply(get)
    assert (gone.ok, gone.error, gone.index) == (False, ERR_NOT_FOUND, log.index)


# ----------------------------------------------------------------------------- caps

A = "aaaaaaaaaaaaaaaa"
B = "bbbbbbbbbbbbbbbb"


def so(client_id: str, seq: int, owner: str | None) -> Session:
    return Session(client_id=client_id, seq=seq, owner=owner)


def test_a_full_session_table_refuses_new_sessions_only() -> None:
    log = Log(KVStateMachine(session_ttl_ms=1000, max_sessions=2))
    assert log.apply(Put(key="k", value=1, time_ms=0, session=s("c1", 1))).ok
    assert log.apply(Put(key="k", value=2, time_ms=10, session=s("c2", 1))).ok
    refused = log.apply(Put(key="k", value=3, time_ms=20, session=s("c3", 1)))
    assert (refused.ok, refused.error, refused.index) == (False, ERR_TOO_MANY_SESSIONS, log.index)
    assert log.sm.read("k").value == 2 and "c3" not in log.sm.sessions()
    # Existing sessions keep working (new writes and retries); writes without one too.
    assert log.apply(Put(key="k", value=4, time_ms=30, session=s("c1", 2))).ok
    assert log.apply(Put(key="k", value=4, time_ms=30, session=s("c1", 2))).replayed
    assert log.apply(Put(key="k", value=5, time_ms=40)).ok
    # c2 expires (idle since 10) by log time: room for c3.
    assert log.apply(Put(key="k", value=6, time_ms=1011, session=s("c3", 1))).ok
    assert sorted(log.sm.sessions()) == ["c1", "c3"]


def test_each_owner_has_its_own_cap() -> None:
    log = Log(KVStateMachine(session_ttl_ms=1000, max_sessions=10, max_sessions_per_owner=2))
    for i in range(2):
        assert log.apply(Put(key="k", value=i, time_ms=i, session=so(f"a{i}", 1, A))).ok
    refused = log.apply(Put(key="k", value=9, time_ms=5, session=so("a9", 1, A)))
    assert (refused.ok, refused.error) == (False, ERR_TOO_MANY_OWNER_SESSIONS)
    assert log.sm.read("k").value == 1
    # Other owners, and sessions without an owner, are not held back by A's.
    assert log.apply(Put(key="k", value=2, time_ms=6, session=so("b0", 1, B))).ok
    for i in range(3):
        assert log.apply(Put(key="k", value=3, time_ms=7, session=s(f"n{i}", 1))).ok
    # A's sessions expire: A may create new ones; the count survives a restore.
    log.apply(Put(key="k", value=4, time_ms=1001, session=so("b0", 2, B)))
    restored = KVStateMachine(session_ttl_ms=1000, max_sessions=10, max_sessions_per_owner=2)
    restored.restore(log.sm.snapshot())
    log = Log(restored, start=log.index)
    assert "a0" not in log.sm.sessions() and "a1" in log.sm.sessions()
    assert log.apply(Put(key="k", value=5, time_ms=1001, session=so("a2", 1, A))).ok
    refused = log.apply(Put(key="k", value=6, time_ms=1001, session=so("a3", 1, A)))
    assert refused.error == ERR_TOO_MANY_OWNER_SESSIONS


def test_default_caps_and_the_per_session_bound() -> None:
    """The largest possible session adds MAX_SESSION_SNAPSHOT_BYTES to a snapshot,
    so the default table is bounded at ~17 MB of snapshot."""
    assert (DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_OWNER) == (100_000, 10_000)
    big = 2**63 - 1
    without, with_one = KVStateMachine(), KVStateMachine()
    without.apply(big, encode_command(Get(key="k", time_ms=big)))
    session = so("c" * 128, big, "f" * 16)
    with_one.apply(big, encode_command(Get(key="k", time_ms=big, session=session)))
    grown = len(with_one.snapshot()) - len(without.snapshot())
    # The store's revision is small here; at its largest it adds 8 bytes more.
    assert grown + 8 == MAX_SESSION_SNAPSHOT_BYTES
    worst = SessionRecord(big, big, big, Outcome.READ, True, big, "f" * 16)
    assert len(msgpack.packb(worst.to_wire("c" * 128))) == MAX_SESSION_SNAPSHOT_BYTES
    assert DEFAULT_MAX_SESSIONS * MAX_SESSION_SNAPSHOT_BYTES < 19_000_000


# ----------------------------------------------------------------------------- owners


def test_a_session_belongs_to_its_owner() -> None:
    log = Log(KVStateMachine())
    first = log.apply(Put(key="k", value="a1", time_ms=1, session=so("c1", 1, A)))
    # B pushing c1's sequence forward, or replaying A's write: refused, nothing moves.
    for seq in (10**9, 1):
        r = log.apply(Put(key="k", value="b", time_ms=2, session=so("c1", seq, B)))
        assert (r.ok, r.error, r.replayed) == (False, ERR_SESSION_OWNER, False)
        assert log.sm.sessions()["c1"] == (1, 1)
    # Nor may a command without an owner use it.
    r = log.apply(Put(key="k", value="b", time_ms=3, session=s("c1", 5)))
    assert r.error == ERR_SESSION_OWNER
    assert log.sm.read("k").value == "a1"
    retry = log.apply(Put(key="k", value="a1", time_ms=4, session=so("c1", 1, A)))
    assert retry == replace(first, replayed=True)
    assert log.apply(Put(key="k", value="a2", time_ms=5, session=so("c1", 2, A))).ok
    # The owner survives a snapshot.
    restored = KVStateMachine()
    restored.restore(log.sm.snapshot())
    r = Log(restored, start=log.index).apply(
        Put(key="k", value="b", time_ms=6, session=so("c1", 3, B))
    )
    assert r.error == ERR_SESSION_OWNER


def test_session_owner_in_the_encoded_command() -> None:
    cmd = Put(key="k", value=1, time_ms=1, session=so("c1", 2, A))
    assert decode_command(encode_command(cmd)) == cmd
    body = msgpack.unpackb(encode_command(cmd))
    assert body["session"] == ["c1", 2] and body["session_owner"] == A
    # Absent = no owner (commands written before owners existed).
    old = msgpack.packb({"op": "put", "key": "k", "value": 1, "time_ms": 1, "session": ["c1", 2]})
    assert decode_command(old) == replace(cmd, session=s("c1", 2))
    for owner in ("short", "A" * 16, "g" * 16, 7):
        bad = {**body, "session_owner": owner}
        with pytest.raises(InvalidCommand):
            decode_command(msgpack.packb(bad))
    with pytest.raises(InvalidCommand, match="without a session"):
        decode_command(msgpack.packb({**body, "session": None}))


# ----------------------------------------------------------------------------- snapshots


def _v1_snapshot(sessions: list[list[object]]) -> bytes:
    data: bytes = msgpack.packb(
        {
            "version": 1,
            "applied_index": 9,
            "log_time_ms": 100,
            "data": [["big", "x" * MB], ["k", 1]],
            "sessions": sessions,
        }
    )
    return data


def test_a_version_1_snapshot_restores_without_its_cached_values() -> None:
    """A rolling upgrade restarts nodes on snapshots written by the previous release."""
    data = _v1_snapshot(
        [
            ["conflict", 1, 50, [False, 3, None, True, ERR_CONFLICT, "x" * MB]],
            ["get", 2, 60, [True, 4, "x" * MB, True, None, None]],
            ["put", 3, 70, [True, 5, None, False, None, None]],
            ["nf", 4, 80, [False, 6, None, False, ERR_NOT_FOUND, None]],
        ]
    )
    assert len(data) > 3 * MB
    sm = KVStateMachine()
    sm.restore(data)
    assert sm.sessions() == {"conflict": (1, 50), "get": (2, 60), "nf": (4, 80), "put": (3, 70)}
    assert len(sm.snapshot()) < MB + 4 * MAX_SESSION_SNAPSHOT_BYTES + 100
    assert msgpack.unpackb(sm.snapshot())["version"] == 4
    log = Log(sm, start=9)
    r = log.apply(Cas(key="big", expect=1, value=2, time_ms=101, session=s("conflict", 1)))
    assert (r.ok, r.error, r.index, r.found, r.current) == (False, ERR_CONFLICT, 3, True, None)
    r = log.apply(Get(key="k", time_ms=101, session=s("get", 2)))
    assert (r.ok, r.value, r.index) == (True, 1, log.index)
    r = log.apply(Put(key="k", value=7, time_ms=101, session=s("put", 3)))
    assert (r.ok, r.index, r.found) == (True, 5, False)
    r = log.apply(Delete(key="k", time_ms=101, session=s("nf", 4)))
    assert (r.ok, r.error, r.index) == (False, ERR_NOT_FOUND, 6)
    assert sm.read("k").value == 1


@pytest.mark.parametrize(
    "sessions",
    [
        [["c", 1, 50, [False, 3, None, True, "bogus", None]]],
        [["c", 1, 50, [False, 3, None, True]]],
        [["c", 1, 50]],
    ],
)
def test_a_bad_version_1_session_is_an_invalid_snapshot(sessions: list[list[object]]) -> None:
    with pytest.raises(InvalidSnapshot):
        KVStateMachine().restore(_v1_snapshot(sessions))


@pytest.mark.parametrize(
    "item",
    [
        ["c", 1, 50, 3, 9, True, None],  # unknown outcome
        ["c", 1, 50, 3, 0, 1, None],  # found not a bool
        ["c", 1, 50, 3, 0, True, "XYZ"],  # bad owner
        ["c", 1, 50, "3", 0, True, None],
        ["c", 1, 50, 3, 0, True],
    ],
)
def test_a_bad_session_is_an_invalid_snapshot(item: list[object]) -> None:
    good = KVStateMachine().snapshot()
    body = msgpack.unpackb(good)
    with pytest.raises(InvalidSnapshot):
        KVStateMachine().restore(msgpack.packb({**body, "sessions": [item]}))
    with pytest.raises(InvalidSnapshot, match="twice"):
        item = ["c", 1, 50, 3, 0, True, None]
        KVStateMachine().restore(msgpack.packb({**body, "sessions": [item, item]}))
