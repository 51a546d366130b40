"""The KV state machine: semantics, exactly-once sessions (§6.3), snapshots, determinism."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.replica.kv import (
    ABSENT,
    DEFAULT_SESSION_TTL_MS,
    ERR_CONFLICT,
    ERR_NOT_FOUND,
    ERR_STALE_SEQUENCE,
    Cas,
    Command,
    Delete,
    Get,
    InvalidCommand,
    InvalidSnapshot,
    Item,
    KVError,
    KVResult,
    KVStateMachine,
    MultiPut,
    Put,
    Session,
    check_key,
    check_value,
    decode_command,
    encode_command,
    json_equal,
    parse_idempotency_key,
)
from raftkv.replica.statemachine import StateMachine


class Log:
    """Feeds encoded commands to a state machine with increasing indexes."""

    def __init__(self, sm: KVStateMachine, start: int = 0) -> None:
        self.sm = sm
        self.index = start

    def apply(self, command: Command | bytes) -> KVResult:
        self.index += 1
        data = command if isinstance(command, bytes) else encode_command(command)
        return self.sm.apply(self.index, data)


def s(client_id: str, seq: int) -> Session:
    return Session(client_id=client_id, seq=seq)


@pytest.fixture
def log() -> Log:
    return Log(KVStateMachine())


# ----------------------------------------------------------------------------- semantics


def test_is_a_state_machine() -> None:
    assert isinstance(KVStateMachine(), StateMachine)


def test_put_get_delete(log: Log) -> None:
    # A fresh store is at revision 1; every write that changes something bumps it.
    assert log.apply(Put(key="a", value={"x": [1, 2.5, None]}, time_ms=1)) == KVResult(
        ok=True, index=1, revision=2
    )
    got = log.apply(Get(key="a", time_ms=1))
    assert (got.ok, got.index, got.revision, got.found) == (True, 2, 2, True)
    assert got.value == {"x": [1, 2.5, None]}
    assert got.item == Item(
        key="a", value_json=b'{"x":[1,2.5,null]}', create_revision=2, mod_revision=2, version=1
    )
    assert log.apply(Put(key="a", value=2, time_ms=1)).found is True
    read = log.sm.read("a")
    assert (read.ok, read.index, read.revision, read.value) == (True, 3, 3, 2)
    assert read.item is not None
    assert (read.item.create_revision, read.item.mod_revision, read.item.version) == (2, 3, 2)
    assert log.apply(Delete(key="a", time_ms=1)) == KVResult(
        ok=True, index=4, revision=4, found=True
    )
    # Deleting a missing key is still a log entry, but changes no revision.
    assert log.apply(Delete(key="a", time_ms=1)) == KVResult(
        ok=False, index=5, revision=4, error=ERR_NOT_FOUND
    )
    assert log.apply(Get(key="a", time_ms=1)).error == ERR_NOT_FOUND
    assert log.sm.read("a") == KVResult(ok=False, index=6, revision=4, error=ERR_NOT_FOUND)
    assert len(log.sm) == 0
    # Re-created: version 1 again, a new create_revision.
    log.apply(Put(key="a", value=3, time_ms=1))
    item = log.sm.read("a").item
    assert item is not None and (item.create_revision, item.version) == (5, 1)


def test_null_is_a_value_not_absence(log: Log) -> None:
    log.apply(Put(key="n", value=None, time_ms=1))
    read = log.sm.read("n")
    assert (read.ok, read.value, read.found) == (True, None, True)
    assert read.item is not None and read.item.value_json == b"null"
    assert "n" in log.sm and len(log.sm) == 1
    # expect=ABSENT fails: the key exists (holding null).
    r = log.apply(Cas(key="n", expect=ABSENT, value=1, time_ms=1))
    assert (r.ok, r.error, r.found, r.current) == (False, ERR_CONFLICT, True, None)
    # expect=None matches null.
    assert log.apply(Cas(key="n", expect=None, value=1, time_ms=1)).ok
    assert log.sm.read("n").value == 1


def test_cas(log: Log) -> None:
    r = log.apply(Cas(key="k", expect=ABSENT, value="v1", time_ms=1))
    assert (r.ok, r.found, r.revision) == (True, False, 2)
    r = log.apply(Cas(key="k", expect="other", value="v2", time_ms=1))
    assert r == KVResult(
        ok=False, index=2, revision=2, found=True, error=ERR_CONFLICT, current="v1"
    )
    assert log.apply(Cas(key="k", expect="v1", value="v2", time_ms=1)).revision == 3
    # expecting a value on an absent key: conflict, current absent.
    r = log.apply(Cas(key="missing", expect=None, value=1, time_ms=1))
    assert (r.ok, r.error, r.found, r.current) == (False, ERR_CONFLICT, False, None)
    assert "missing" not in log.sm


def test_cas_compares_json_not_python(log: Log) -> None:
    log.apply(Put(key="b", value=True, time_ms=1))
    assert not log.apply(Cas(key="b", expect=1, value=0, time_ms=1)).ok
    log.apply(Put(key="o", value={"a": 1, "b": [1, 2]}, time_ms=1))
    assert log.apply(Cas(key="o", expect={"b": [1, 2], "a": 1}, value=0, time_ms=1)).ok


def test_json_equal() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal(False, 0)
    assert not json_equal([1], {"0": 1})
    assert json_equal({"a": [None, "x"]}, {"a": [None, "x"]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})


def test_multi_put_is_one_entry(log: Log) -> None:
    log.apply(Put(key="a", value=0, time_ms=1))
    # One entry, one revision for all three keys.
    assert log.apply(MultiPut(pairs={"a": 1, "b": [2], "c": None}, time_ms=1)) == KVResult(
        ok=True, index=2, revision=3
    )
    assert list(log.sm.items()) == [("a", 1), ("b", [2]), ("c", None)]
    mods = {k: log.sm.read(k).item.mod_revision for k in "abc"}  # type: ignore[union-attr]
    assert mods == {"a": 3, "b": 3, "c": 3}


def test_noop_entry(log: Log) -> None:
    assert log.apply(b"") == KVResult(ok=True, index=1, revision=1)
    assert log.sm.applied_index == 1


def test_indexes_must_increase(log: Log) -> None:
    log.sm.apply(5, b"")
    with pytest.raises(KVError, match="must increase"):
        log.sm.apply(5, b"")


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"op": "explode", "key": "a", "time_ms": 1}),
        msgpack.packb({"op": "put", "key": "", "value": 1, "time_ms": 1}),
        msgpack.packb({"op": "put", "key": "a", "value": b"bytes", "time_ms": 1}),
        msgpack.packb({"op": "put", "key": "a", "value": 1, "time_ms": -1}),
        msgpack.packb({"op": "put", "key": "a", "value": 1, "time_ms": 1, "session": ["x", 0]}),
        msgpack.packb({"op": "cas", "key": "a", "value": 1, "time_ms": 1}),
    ],
)
def test_bad_entries_give_error_results(log: Log, data: bytes) -> None:
    r = log.apply(data)
    assert not r.ok and r.error and r.error.startswith("invalid command")
    assert len(log.sm) == 0 and log.sm.applied_index == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("a\nb", "control"),
        ("a\x7f", "control"),
        ("é" * 513, "1026 bytes"),
        ("\ud800", "surrogate"),
        (7, "string"),
    ],
)
def test_bad_keys(key: object, message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        check_key(key)


def test_good_keys() -> None:
    for key in ["a", "a/b/c", "x y?&=%", "é" * 512, "🙂"]:
        assert check_key(key) == key


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 2**64, -(2**63) - 1, (1, 2), b"x", {1: "a"}, {"a": {1, 2}}],
)
def test_bad_values(value: object) -> None:
    with pytest.raises(InvalidCommand):
        check_value(value)
    with pytest.raises(InvalidCommand):
        Put(key="k", value=value, time_ms=0)  # type: ignore[arg-type]


def test_too_deep_value() -> None:
    value: object = 1
    for _ in range(100):
        value = [value]
    with pytest.raises(InvalidCommand, match="nested"):
        check_value(value)


def test_command_round_trip() -> None:
    sess = s("c1", 3)
    commands: list[Command] = [
        Put(key="a", value={"x": [1, None]}, time_ms=5, session=sess),
        Delete(key="a", time_ms=5),
        Cas(key="a", expect=ABSENT, value=1, time_ms=5),
        Cas(key="a", expect=None, value=1, time_ms=5),
        MultiPut(pairs={"a": 1, "b": 2}, time_ms=5, session=sess),
        Get(key="a", time_ms=0),
    ]
    for cmd in commands:
        assert decode_command(encode_command(cmd)) == cmd


def test_encode_with_another_log_time() -> None:
    """The leader stamps a forwarded command's log time while encoding it."""
    cmd = Put(key="a", value=[1], time_ms=5, session=s("c1", 3))
    stamped = encode_command(cmd, time_ms=99)
    assert stamped == encode_command(Put(key="a", value=[1], time_ms=99, session=s("c1", 3)))
    assert decode_command(stamped).time_ms == 99
    with pytest.raises(InvalidCommand):
        encode_command(cmd, time_ms=-1)


def test_encode_rejects_lone_surrogate_in_value() -> None:
    with pytest.raises(InvalidCommand):
        encode_command(Put(key="a", value="\udcff", time_ms=0))


@pytest.mark.parametrize(
    ("header", "expected"),
    [("abc/1", ("abc", 1)), ("c-1.x:y/42", ("c-1.x:y", 42)), (" f00d/7 ", ("f00d", 7))],
)
def test_parse_idempotency_key(header: str, expected: tuple[str, int]) -> None:
    assert parse_idempotency_key(header) == expected


@pytest.mark.parametrize("header", ["", "abc", "/1", "abc/", "abc/0", "abc/-1", "a b/1", "a/1x"])
def test_parse_idempotency_key_rejects(header: str) -> None:
    with pytest.raises(ValueError):
        parse_idempotency_key(header)


# ----------------------------------------------------------------------------- sessions


def test_duplicate_is_applied_once_and_gets_the_first_result(log: Log) -> None:
    first = log.apply(Put(key="n", value=1, time_ms=10, session=s("c", 1)))
    log.apply(Put(key="n", value=2, time_ms=11))  # someone else writes in between
    again = log.apply(Put(key="n", value=1, time_ms=12, session=s("c", 1)))
    assert again == replace(first, replayed=True)  # same result, same original index
    assert log.sm.read("n").value == 2  # the retry did not overwrite


def test_duplicate_cas_returns_its_first_success(log: Log) -> None:
    first = log.apply(Cas(key="k", expect=ABSENT, value=1, time_ms=1, session=s("c", 1)))
    assert first.ok
    # Applying it again would conflict; the session says it succeeded.
    again = log.apply(Cas(key="k", expect=ABSENT, value=1, time_ms=2, session=s("c", 1)))
    assert again == replace(first, replayed=True)


def test_stale_sequence(log: Log) -> None:
    log.apply(Put(key="a", value=1, time_ms=1, session=s("c", 1)))
    log.apply(Put(key="a", value=2, time_ms=1, session=s("c", 2)))
    r = log.apply(Put(key="a", value=3, time_ms=1, session=s("c", 1)))
    assert (r.ok, r.error) == (False, ERR_STALE_SEQUENCE)
    assert log.sm.read("a").value == 2
    # seqs may skip; sessions are independent per client.
    assert log.apply(Put(key="a", value=4, time_ms=1, session=s("c", 10))).ok
    assert log.apply(Put(key="a", value=5, time_ms=1, session=s("d", 1))).ok
    assert log.sm.sessions() == {"c": (10, 1), "d": (1, 1)}


def test_sessions_expire_by_log_time() -> None:
    log = Log(KVStateMachine(session_ttl_ms=1000))
    first = log.apply(Put(key="a", value=1, time_ms=0, session=s("c", 1)))
    log.apply(Put(key="x", value=0, time_ms=1000))  # exactly ttl later: still alive
    again = log.apply(Put(key="a", value=1, time_ms=1000, session=s("c", 1)))
    assert again == replace(first, replayed=True)
    log.apply(Put(key="x", value=0, time_ms=2001, session=s("other", 1)))
    assert "c" not in log.sm.sessions()
    # An expired session is forgotten: the same seq is applied as new.
    r = log.apply(Put(key="a", value=7, time_ms=2001, session=s("c", 1)))
    assert r.index == log.index and log.sm.read("a").value == 7


def test_log_time_never_goes_back() -> None:
    log = Log(KVStateMachine(session_ttl_ms=1000))
    log.apply(Put(key="a", value=1, time_ms=5000, session=s("c", 1)))
    log.apply(Put(key="a", value=1, time_ms=10, session=s("d", 1)))  # a leader with a slow clock
    assert log.sm.log_time_ms == 5000
    assert log.sm.sessions() == {"c": (1, 5000), "d": (1, 5000)}


def test_expiry_is_identical_on_two_replicas() -> None:
    commands: list[Command] = []
    for t in range(0, 50_000, 700):
        cid = f"c{(t // 700) % 7}"
        commands.append(Put(key="k", value=t, time_ms=t, session=s(cid, t + 1)))
        commands.append(Get(key="k", time_ms=t + 100))
    a, b = Log(KVStateMachine(session_ttl_ms=3000)), Log(KVStateMachine(session_ttl_ms=3000))
    seen_expiry = False
    for cmd in commands:
        assert a.apply(cmd) == b.apply(cmd)
        assert a.sm.sessions() == b.sm.sessions()
        seen_expiry |= len(a.sm.sessions()) < 7 and a.sm.log_time_ms > 7 * 700
    assert seen_expiry
    assert a.sm.snapshot() == b.sm.snapshot()


# ----------------------------------------------------------------------------- snapshots


def test_snapshot_restore_round_trip_keeps_sessions() -> None:
    log = Log(KVStateMachine())
    log.apply(MultiPut(pairs={"b": [1], "a": {"z": None}}, time_ms=100))
    first = log.apply(Cas(key="c", expect=ABSENT, value=1, time_ms=200, session=s("cl", 4)))
    log.apply(Delete(key="nope", time_ms=300, session=s("other", 1)))
    data = log.sm.snapshot()

    restored = KVStateMachine()
    restored.restore(data)
    assert restored.snapshot() == data
    assert restored.applied_index == 3 and restored.log_time_ms == 300
    assert list(restored.items()) == list(log.sm.items())
    assert restored.sessions() == log.sm.sessions()

    # A duplicate after restore is still not re-applied.
    follower = Log(restored, start=restored.applied_index)
    again = follower.apply(Cas(key="c", expect=ABSENT, value=1, time_ms=400, session=s("cl", 4)))
    assert again == replace(first, replayed=True)
    assert follower.apply(Put(key="x", value=1, time_ms=400, session=s("cl", 3))).error == (
        ERR_STALE_SEQUENCE
    )


def test_restore_rebuilds_expiry_order() -> None:
    log = Log(KVStateMachine(session_ttl_ms=100))
    log.apply(Put(key="a", value=1, time_ms=50, session=s("z", 1)))
    log.apply(Put(key="a", value=1, time_ms=60, session=s("a", 1)))
    log.apply(Put(key="a", value=1, time_ms=70, session=s("z", 1)))  # z touched again
    restored = KVStateMachine(session_ttl_ms=100)
    restored.restore(log.sm.snapshot())
    other = Log(restored, start=3)
    log.apply(Get(key="a", time_ms=165))
    other.apply(Get(key="a", time_ms=165))
    assert log.sm.sessions() == restored.sessions() == {"z": (1, 70)}


def test_restore_replaces_state() -> None:
    sm = KVStateMachine()
    Log(sm).apply(Put(key="old", value=1, time_ms=1, session=s("c", 9)))
    sm.restore(KVStateMachine().snapshot())
    assert len(sm) == 0 and sm.sessions() == {} and sm.applied_index == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"junk",
        msgpack.packb({"version": 3}),
        msgpack.packb(
            {"version": 1, "applied_index": 1, "log_time_ms": 0, "data": [["", 1]], "sessions": []}
        ),
    ],
)
def test_restore_rejects_garbage_and_keeps_state(data: bytes) -> None:
    sm = KVStateMachine()
    Log(sm).apply(Put(key="keep", value=1, time_ms=1))
    before = sm.snapshot()
    with pytest.raises(InvalidSnapshot):
        sm.restore(data)
    assert sm.snapshot() == before


# ----------------------------------------------------------------------------- determinism

_keys = st.sampled_from(["a", "b", "c", "d/e"])
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
_sessions = st.none() | st.builds(
    Session, client_id=st.sampled_from(["c1", "c2", "c3"]), seq=st.integers(1, 6)
)
_times = st.integers(0, 5000)
_commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Put, key=_keys, value=_values, time_ms=_times, session=_sessions),
    st.builds(Delete, key=_keys, time_ms=_times, session=_sessions),
    st.builds(
        Cas,
        key=_keys,
        expect=st.just(ABSENT) | _values,
        value=_values,
        time_ms=_times,
        session=_sessions,
    ),
    st.builds(
        MultiPut,
        pairs=st.dictionaries(_keys, _values, max_size=3),
        time_ms=_times,
        session=_sessions,
    ),
    st.builds(Get, key=_keys, time_ms=_times, session=_sessions),
)


@settings(max_examples=150, deadline=None)
@given(commands=st.lists(_commands, max_size=40), cut=st.integers(0, 40))
def test_same_log_same_snapshot(commands: list[Command], cut: int) -> None:
    """Two replicas fed the same log agree after every entry, also across a restore."""
    entries = [encode_command(cmd) for cmd in commands]
    a = KVStateMachine(session_ttl_ms=1000)
    b = KVStateMachine(session_ttl_ms=1000)
    for index, data in enumerate(entries, start=1):
        assert a.apply(index, data) == b.apply(index, data)
        if index == cut:  # b is rebuilt from a snapshot mid-log
            b = KVStateMachine(session_ttl_ms=1000)
            b.restore(a.snapshot())
        assert a.snapshot() == b.snapshot()
    assert DEFAULT_SESSION_TTL_MS == 600_000
