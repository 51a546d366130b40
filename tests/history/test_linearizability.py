"""Tests for the WGL linearizability checker over KV histories."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.history.linearizability import (
    CheckResult,
    KVModel,
    Operation,
    check_history,
    read_history,
    write_history,
)

_ABSENT = object()


class _Builder:
    """Hand-writes histories: ``h.put("x", 1, 0, 1)`` etc."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []

    def _add(self, **kw: Any) -> Operation:
        kw.setdefault("client_id", len(self.ops))
        op = Operation(op_id=len(self.ops), **kw)
        self.ops.append(op)
        return op

    def put(self, key: str, value: Any, call: float, ret: float | None, **kw: Any) -> Operation:
        return self._add(key=key, kind="put", value=value, call=call, ret=ret, **kw)

    def get(self, key: str, out: Any, call: float, ret: float | None, **kw: Any) -> Operation:
        if out is _ABSENT:
            return self._add(
                key=key, kind="get", output=None, found=False, call=call, ret=ret, **kw
            )
        return self._add(key=key, kind="get", output=out, call=call, ret=ret, **kw)

    def cas(
        self,
        key: str,
        expect: Any,
        value: Any,
        out: bool,
        call: float,
        ret: float | None,
        **kw: Any,
    ) -> Operation:
        return self._add(
            key=key, kind="cas", expect=expect, value=value, output=out, call=call, ret=ret, **kw
        )

    def delete(self, key: str, out: bool, call: float, ret: float | None, **kw: Any) -> Operation:
        return self._add(key=key, kind="delete", output=out, call=call, ret=ret, **kw)

    def check(self, **kw: Any) -> CheckResult:
        return check_history(self.ops, **kw)


# --- a reference sequential KV store -------------------------------------------------

_values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["a", "b", "c"]),
    st.none(),
    st.booleans(),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 1), max_size=2),
)
_keys = st.sampled_from(["k1", "k2", "k3"])


@st.composite
def _commands(draw: st.DrawFn) -> tuple[str, str, Any, Any]:
    kind = draw(st.sampled_from(["put", "get", "cas", "delete"]))
    key = draw(_keys)
    value = draw(_values)
    # cas: expect None means "absent"; otherwise often a recently-plausible value
    expect = draw(st.one_of(st.none(), _values))
    return kind, key, value, expect


def _apply(store: dict[str, Any], kind: str, key: str, value: Any, expect: Any) -> dict[str, Any]:
    """Run one command atomically; return the Operation fields describing its result."""
    if kind == "put":
        store[key] = value
        return {"output": None}
    if kind == "get":
        if key in store:
            return {"output": store[key], "found": True}
        return {"output": None, "found": False}
    if kind == "cas":
        current_matches = (
            (key not in store) if expect is None else (key in store and _same(store[key], expect))
        )
        if current_matches:
            store[key] = value
        return {"output": current_matches}
    existed = key in store
    store.pop(key, None)
    return {"output": existed}


def _same(a: Any, b: Any) -> bool:
    import json

    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _sequential(cmds: list[tuple[str, str, Any, Any]], clients: list[int]) -> list[Operation]:
    store: dict[str, Any] = {}
    ops = []
    for i, (kind, key, value, expect) in enumerate(cmds):
        fields: dict[str, Any] = {"value": value, "expect": expect}
        fields.update(_apply(store, kind, key, value, expect))
        ops.append(
            Operation(
                op_id=i,
                client_id=clients[i % len(clients)],
                key=key,
                kind=kind,
                call=2.0 * i,
                ret=2.0 * i + 1,
                **fields,
            )
        )
    return ops


@given(
    cmds=st.lists(_commands(), max_size=40),
    clients=st.lists(st.integers(0, 4), min_size=1, max_size=5),
)
def test_sequential_histories_are_linearizable(
    cmds: list[tuple[str, str, Any, Any]], clients: list[int]
) -> None:
    result = check_history(_sequential(cmds, clients))
    assert result.ok is True, result.describe()


@given(
    cmds=st.lists(_commands(), min_size=1, max_size=30), pick=st.integers(0, 10_000), data=st.data()
)
def test_corrupted_sequential_history_is_rejected(
    cmds: list[tuple[str, str, Any, Any]], pick: int, data: st.DataObject
) -> None:
    # A sequential history has exactly one linearization, so changing any observed
    # result of a get/cas/delete must make it non-linearizable.
    ops = _sequential(cmds, [0])
    observable = [op for op in ops if op.kind != "put"]
    if not observable:
        return
    victim = observable[pick % len(observable)]
    if victim.kind in ("cas", "delete"):
        bad = Operation(**{**victim.to_json(), "output": not victim.output})
    else:
        alternatives = [(None, False), (7, True), ("zzz", True), (None, True)]
        current = (victim.output, victim.found)
        choice = data.draw(st.sampled_from([a for a in alternatives if a != current]))
        bad = Operation(**{**victim.to_json(), "output": choice[0], "found": choice[1]})
    ops[ops.index(victim)] = bad
    result = check_history(ops)
    assert result.ok is False
    assert result.failures[0].key == victim.key


# --- concurrent histories from an atomic store --------------------------------------


@st.composite
def _concurrent_history(
    draw: st.DrawFn, max_ops: int = 40, allow_uncertain: bool = True
) -> list[Operation]:
    """Clients issue commands back to back; each takes effect at a random instant in
    its [call, ret] interval (info ops: after call, or never; fail ops: never)."""
    n_clients = draw(st.integers(1, 6))
    n = draw(st.integers(0, max_ops))
    plans = []
    clock = [0] * n_clients
    for i in range(n):
        c = draw(st.integers(0, n_clients - 1))
        kind, key, value, expect = draw(_commands())
        call = clock[c] + draw(st.integers(0, 3))
        ret = call + draw(st.integers(0, 8))
        clock[c] = ret
        status = "ok"
        if allow_uncertain:
            status = draw(st.sampled_from(["ok"] * 8 + ["info", "fail"]))
        effect: float | None = call + draw(st.floats(0, 1)) * (ret - call)
        if status == "fail":
            effect = None
        elif status == "info":
            effect = draw(st.one_of(st.none(), st.integers(call, call + 30).map(float)))
        plans.append((effect, i, c, kind, key, value, expect, call, ret, status))
    store: dict[str, Any] = {}
    results: dict[int, dict[str, Any]] = {}
    for plan in sorted((p for p in plans if p[0] is not None), key=lambda p: (p[0], p[1])):
        _, i, _, kind, key, value, expect, *_ = plan
        results[i] = _apply(store, kind, key, value, expect)
    ops = []
    for _, i, c, kind, key, value, expect, call, ret, status in plans:
        fields: dict[str, Any] = {"value": value, "expect": expect}
        if status == "ok":
            fields.update(results[i])
        ops.append(
            Operation(
                op_id=i,
                client_id=c,
                key=key,
                kind=kind,
                call=float(call),
                ret=None if status == "info" else float(ret),
                status=status,
                **fields,
            )
        )
    return ops


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_concurrent_history(allow_uncertain=False))
def test_concurrent_atomic_histories_are_linearizable(ops: list[Operation]) -> None:
    result = check_history(ops)
    assert result.ok is True, result.describe()


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_concurrent_history())
def test_concurrent_histories_with_info_and_fail_are_linearizable(ops: list[Operation]) -> None:
    result = check_history(ops)
    assert result.ok is True, result.describe()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_concurrent_history(), data=st.data())
def test_witness_is_a_legal_real_time_order(ops: list[Operation], data: st.DataObject) -> None:
    result = check_history(ops)
    assert result.ok is True
    model = KVModel()
    for part in result.partitions:
        witness = part.linearization
        assert {op.op_id for op in part.ops if op.status == "ok"} <= {op.op_id for op in witness}
        state = model.init()
        for op in witness:
            legal, state = model.step(state, op)
            assert legal
        for i, a in enumerate(witness):
            for b in witness[i + 1 :]:
                assert not (b.ret is not None and b.status == "ok" and b.ret < a.call)


# --- hand-written anomalies ----------------------------------------------------------


def test_stale_read_after_completed_write() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.put("x", 2, 2, 3)
    h.get("x", 1, 4, 5)
    result = h.check()
    assert result.ok is False
    assert result.failures[0].key == "x"


def test_overlapping_read_may_see_old_or_new_value() -> None:
    for seen in (1, 2):
        h = _Builder()
        h.put("x", 1, 0, 1)
        h.put("x", 2, 2, 6)
        h.get("x", seen, 3, 4)
        assert h.check().ok is True


def test_read_of_value_never_written() -> None:
    h = _Builder()
    h.put("x", 1, 0, 10)
    h.get("x", 3, 1, 5)
    assert h.check().ok is False


def test_read_of_json_null_is_not_absent() -> None:
    h = _Builder()
    h.get("x", None, 0, 1)  # found=True: the key holds null -- never written
    assert h.check().ok is False
    h = _Builder()
    h.get("x", _ABSENT, 0, 1)
    h.put("x", None, 2, 3)
    h.get("x", None, 4, 5)
    assert h.check().ok is True


def test_values_compare_as_json() -> None:
    h = _Builder()
    h.put("x", {"a": [1, 2], "b": 1}, 0, 1)
    h.get("x", {"b": 1, "a": [1, 2]}, 2, 3)
    assert h.check().ok is True
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.get("x", True, 2, 3)
    assert h.check().ok is False


def test_sequential_reads_going_back_in_time() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.put("x", 2, 2, 20)  # concurrent with both reads
    h.get("x", 2, 3, 4)
    h.get("x", 1, 5, 6)
    result = h.check()
    assert result.ok is False
    text = result.describe()
    assert "'x'" in text and "NOT linearizable" in text


def test_lost_update_via_cas() -> None:
    h = _Builder()
    h.put("x", 0, 0, 1)
    h.cas("x", 0, 1, True, 2, 3)
    h.cas("x", 0, 2, True, 4, 5)
    assert h.check().ok is False
    # concurrently, exactly one of them may win
    h = _Builder()
    h.put("x", 0, 0, 1)
    h.cas("x", 0, 1, True, 2, 5)
    h.cas("x", 0, 2, False, 3, 6)
    h.get("x", 1, 7, 8)
    assert h.check().ok is True


def test_cas_semantics() -> None:
    h = _Builder()
    h.cas("x", None, "a", True, 0, 1)  # expect None: create if absent
    h.cas("x", None, "b", False, 2, 3)
    h.cas("x", "a", "c", True, 4, 5)
    h.get("x", "c", 6, 7)
    assert h.check().ok is True
    h = _Builder()
    h.put("x", 5, 0, 1)
    h.cas("x", 5, 6, False, 2, 3)  # failing cas requires current != expect
    assert h.check().ok is False


def test_write_that_un_happens() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.get("x", 1, 2, 3)
    h.get("x", _ABSENT, 4, 5)
    assert h.check().ok is False


def test_delete_semantics() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.delete("x", True, 2, 3)
    h.get("x", _ABSENT, 4, 5)
    h.delete("x", False, 6, 7)
    assert h.check().ok is True
    h = _Builder()
    h.delete("x", True, 0, 1)  # key never existed
    assert h.check().ok is False
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.delete("x", True, 2, 3)
    h.get("x", 1, 4, 5)  # read after a completed delete
    assert h.check().ok is False


# --- unknown outcomes ----------------------------------------------------------------


def test_read_may_observe_info_write() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.put("x", 2, 2, None, status="info")
    h.get("x", 2, 10, 11)
    h.get("x", 2, 12, 13)
    assert h.check().ok is True


def test_info_write_may_never_happen() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.put("x", 2, 2, None, status="info")
    h.get("x", 1, 10, 11)
    h.get("x", 1, 100, 101)
    assert h.check().ok is True


def test_info_write_cannot_take_effect_before_its_call() -> None:
    h = _Builder()
    h.get("x", 2, 0, 1)
    h.put("x", 2, 5, None, status="info")
    result = h.check()
    assert result.ok is False


def test_info_write_happens_once() -> None:
    h = _Builder()
    h.put("x", 2, 0, None, status="info")
    h.get("x", 2, 1, 2)
    h.put("x", 3, 3, 4)
    h.get("x", 2, 5, 6)  # only a second effect of the info put could explain this
    assert h.check().ok is False


def test_info_cas_and_delete() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.cas("x", 1, 2, False, 2, None, status="info")  # output unknown: ignored
    h.delete("x", True, 3, None, status="info")
    h.get("x", _ABSENT, 10, 11)
    assert h.check().ok is True


def test_fail_ops_are_excluded() -> None:
    h = _Builder()
    h.put("x", 1, 0, 1)
    h.put("x", 2, 2, 3, status="fail")
    h.get("x", 2, 4, 5)
    assert h.check().ok is False


def test_many_info_ops_that_never_happened_check_quickly() -> None:
    h = _Builder()
    for i in range(40):
        h.put("x", i + 100, i, None, status="info")
    for i in range(200):
        h.get("x", _ABSENT, 50 + 2 * i, 51 + 2 * i)
    result = h.check(max_steps=200_000)
    assert result.ok is True


# --- against a brute-force oracle -----------------------------------------------------


def _brute_force(ops: list[Operation]) -> bool:
    """Definition-level check: some order of all ok ops and some of the info ops that
    respects real time (a before b when a.ret < b.call) is legal for the model."""
    model = KVModel()
    live = [
        op for op in ops if op.status != "fail" and not (op.kind == "get" and op.status != "ok")
    ]

    def search(rest: list[Operation], state: str | None) -> bool:
        if all(op.status != "ok" for op in rest):
            return True
        for op in rest:
            blocked = any(
                o.status == "ok" and o.ret is not None and o.ret < op.call
                for o in rest
                if o is not op
            )
            if blocked:
                continue
            legal, after = model.step(state, op)
            if legal and search([o for o in rest if o is not op], after):
                return True
        return False

    return all(
        search([op for op in live if op.key == key], model.init())
        for key in sorted({op.key for op in live})
    )


@st.composite
def _arbitrary_history(draw: st.DrawFn) -> list[Operation]:
    """Small single-key histories with arbitrary (often wrong) outputs."""
    n = draw(st.integers(1, 7))
    ops = []
    small = st.sampled_from([1, 2])
    for i in range(n):
        kind = draw(st.sampled_from(["put", "get", "cas", "delete"]))
        call = draw(st.integers(0, 8))
        ret = call + draw(st.integers(0, 4))
        status = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
        fields: dict[str, Any] = {}
        if kind == "put":
            fields["value"] = draw(small)
        elif kind == "get":
            found = draw(st.booleans())
            fields = {"found": found, "output": draw(small) if found else None}
        elif kind == "cas":
            fields = {
                "expect": draw(st.one_of(st.none(), small)),
                "value": draw(small),
                "output": draw(st.booleans()),
            }
        else:
            fields["output"] = draw(st.booleans())
        ops.append(
            Operation(
                op_id=i,
                client_id=i,
                key="x",
                kind=kind,
                call=float(call),
                ret=None if status == "info" else float(ret),
                status=status,
                **fields,
            )
        )
    return ops


@settings(max_examples=500)
@given(ops=_arbitrary_history())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    assert check_history(ops).ok is _brute_force(ops)


# --- partitioning, bounds, reporting --------------------------------------------------


def test_anomaly_is_reported_with_its_key() -> None:
    h = _Builder()
    for key in ("a", "b", "c"):
        h.put(key, 1, 0, 1)
        h.get(key, 1, 2, 3)
    h.get("b", 5, 4, 5)
    result = h.check()
    assert result.ok is False
    assert result.verdicts() == {"a": True, "b": False, "c": True}
    (failure,) = result.failures
    assert failure.key == "b"
    assert [op.op_id for op in failure.linearization] == [2, 3]
    assert [op.op_id for op in failure.stuck] == [6]
    assert failure.state == "1"
    assert "key 'b'" in str(result)


def test_step_bound_gives_unknown_not_a_hang() -> None:
    # n concurrent puts, then a read of a value no put wrote: refuting it needs
    # about n * 2**n states.
    h = _Builder()
    n = 22
    for i in range(n):
        h.put("x", i, 0, 100)
    h.get("x", "never", 101, 102)
    h.put("y", 1, 0, 1)
    started = time.process_time()
    result = h.check(max_steps=20_000)
    assert time.process_time() - started < 5
    assert result.ok is None
    assert result.verdicts() == {"x": None, "y": True}
    assert "unknown" in result.describe()
    # a small instance of the same shape is decided
    h = _Builder()
    for i in range(6):
        h.put("x", i, 0, 100)
    h.get("x", "never", 101, 102)
    assert h.check().ok is False


def test_empty_history_and_validation() -> None:
    assert check_history([]).ok is True
    with pytest.raises(ValueError):
        Operation(op_id=1, client_id=1, key="x", kind="put", value=1, call=0, ret=None)
    with pytest.raises(ValueError):
        Operation(op_id=1, client_id=1, key="x", kind="incr", call=0, ret=1)
    with pytest.raises(ValueError):
        Operation(op_id=1, client_id=1, key="x", kind="get", call=2, ret=1)
    op = Operation(op_id=1, client_id=1, key="x", kind="put", value=1, call=0, ret=1)
    with pytest.raises(ValueError):
        check_history([op, op])


def test_large_history_is_fast() -> None:
    import random

    rng = random.Random(7)
    ops = _random_concurrent(rng, n_ops=3000, n_keys=10, n_clients=8)
    started = time.process_time()
    result = check_history(ops)
    elapsed = time.process_time() - started
    assert result.ok is True, result.describe()
    assert elapsed < 5


def _random_concurrent(rng: Any, n_ops: int, n_keys: int, n_clients: int) -> list[Operation]:
    clock = [0.0] * n_clients
    plans = []
    for i in range(n_ops):
        c = rng.randrange(n_clients)
        key = f"k{rng.randrange(n_keys)}"
        kind = rng.choice(["put", "get", "get", "cas", "delete"])
        value = rng.randrange(5)
        expect = rng.choice([None, 0, 1, 2, 3, 4])
        call = clock[c] + rng.random()
        ret = call + rng.random() * 3
        clock[c] = ret
        status = "info" if rng.random() < 0.02 else "ok"
        effect = call + rng.random() * (ret - call)
        if status == "info" and rng.random() < 0.5:
            effect = None
        plans.append((effect, i, c, kind, key, value, expect, call, ret, status))
    store: dict[str, Any] = {}
    results: dict[int, dict[str, Any]] = {}
    for plan in sorted((p for p in plans if p[0] is not None), key=lambda p: (p[0], p[1])):
        _, i, _, kind, key, value, expect, *_ = plan
        results[i] = _apply(store, kind, key, value, expect)
    return [
        Operation(
            op_id=i,
            client_id=c,
            key=key,
            kind=kind,
            call=call,
            ret=None if status == "info" else ret,
            status=status,
            value=value,
            expect=expect,
            **(results[i] if status == "ok" else {}),
        )
        for _, i, c, kind, key, value, expect, call, ret, status in plans
    ]


@settings(max_examples=50)
@given(ops=_concurrent_history(max_ops=15))
def test_jsonl_round_trip(ops: list[Operation]) -> None:
    buf = io.StringIO()
    write_history(buf, ops)
    assert buf.getvalue().count("\n") == len(ops)
    buf.seek(0)
    assert read_history(buf) == ops


def test_jsonl_round_trip_via_path(tmp_path: Path) -> None:
    h = _Builder()
    h.put("x", {"n": [1, 2.5, None]}, 0, 1)
    h.get("x", _ABSENT, 0.5, 0.75)
    h.get("x", None, 2, 3)
    h.put("x", 1, 4, None, status="info")
    path = tmp_path / "history.jsonl"
    write_history(path, h.ops)
    back = read_history(str(path))
    assert back == h.ops
    assert back[1].found is False and back[2].found is True
    assert check_history(back).ok == check_history(h.ops).ok
    path.write_text('{"op_id": 1}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_history(path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(value=_json)
def test_canonical_encoding_matches_json(value: Any) -> None:
    import json

    from raftkv.history.linearizability import _canon

    assert _canon(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))
