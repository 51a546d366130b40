"""The etcd API's writes in the KV state machine: raw bytes, etcd's answers and errors."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.replica.kv import (
    ERR_COMPACTED,
    ERR_NOSPACE,
    ERR_NOT_FOUND,
    NOT_JSON,
    Alarm,
    Cas,
    Compact,
    Compare,
    EtcdAnswer,
    EtcdTxn,
    InvalidCommand,
    KeyRange,
    KVResult,
    KVStateMachine,
    Put,
    Txn,
    TxnAnswer,
    TxnPut,
    decode_command,
    encode_command,
    is_json_text,
    stored_json,
)
from raftkv.replica.mvcc import Compare as StoreCompare
from raftkv.replica.mvcc import (
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    PutOp,
    PutResult,
    RangeOp,
    SortOrder,
    SortTarget,
    TxnOp,
)

RAW = b"\xff\x00not json\x80"


class Log:
    def __init__(self) -> None:
        self.sm = KVStateMachine()
        self.index = itertools.count(1)

    def apply(self, cmd: object) -> object:
        return self.sm.apply(next(self.index), encode_command(cmd))  # type: ignore[arg-type]


def etcd(*success: object, compares: tuple[StoreCompare, ...] = (), failure=()) -> EtcdTxn:
    return EtcdTxn(compares=compares, success=success, failure=tuple(failure), time_ms=1)  # type: ignore[arg-type]


def test_a_put_stores_the_clients_bytes_exactly() -> None:
    log = Log()
    answer = log.apply(etcd(PutOp(key=b"\xfek", value=RAW)))
    assert isinstance(answer, EtcdAnswer) and answer.ok
    assert answer.result is not None and answer.result.responses == (PutResult(revision=2),)
    kv = log.sm.etcd_range(RangeOp(key=b"\xfek")).kvs[0]
    assert (kv.key, kv.value, kv.version, kv.create_revision) == (b"\xfek", RAW, 1, 2)


def test_round_trip_of_every_op_kind() -> None:
    cmd = etcd(
        PutOp(key=b"a", value=b"1", prev_kv=True),
        DeleteRangeOp(key=b"b", range_end=b"c", prev_kv=True),
        RangeOp(
            key=b"c",
            range_end=b"d",
            revision=3,
            limit=2,
            keys_only=True,
            sort_order=SortOrder.DESCEND,
            sort_target=SortTarget.MOD,
            min_mod_revision=1,
            max_create_revision=9,
        ),
        TxnOp(
            compares=(
                StoreCompare(
                    key=b"x", target=CompareTarget.VALUE, result=CompareResult.EQUAL, operand=RAW
                ),
            ),
            success=(PutOp(key=b"y", value=b""),),
        ),
        compares=(
            StoreCompare(
                key=b"z",
                range_end=b"zz",
                target=CompareTarget.MOD,
                result=CompareResult.LESS,
                operand=5,
            ),
        ),
        failure=(PutOp(key=b"f", value=b"v", ignore_lease=True),),
    )
    assert decode_command(encode_command(cmd)) == cmd


def test_invalid_requests_are_refused_when_built() -> None:
    with pytest.raises(InvalidCommand, match="key is not provided"):
        etcd(PutOp(key=b"", value=b"v"))
    with pytest.raises(InvalidCommand, match="duplicate key"):
        etcd(PutOp(key=b"a"), DeleteRangeOp(key=b"a", range_end=b"b"))


def test_a_put_of_an_absent_key_with_ignore_value_is_not_found() -> None:
    log = Log()
    answer = log.apply(etcd(PutOp(key=b"a", ignore_value=True)))
    assert isinstance(answer, EtcdAnswer) and answer.error == ERR_NOT_FOUND
    assert log.sm.revision == 1


def test_nospace_refuses_puts_but_not_deletes() -> None:
    log = Log()
    log.apply(etcd(PutOp(key=b"a", value=b"1")))
    log.apply(Alarm(active=True, time_ms=1))
    refused = log.apply(etcd(PutOp(key=b"b", value=b"1")))
    assert isinstance(refused, EtcdAnswer) and refused.error == ERR_NOSPACE
    nested = etcd(TxnOp(failure=(PutOp(key=b"b", value=b"1"),)))
    assert nested.may_put
    deleted = log.apply(etcd(DeleteRangeOp(key=b"a")))
    assert isinstance(deleted, EtcdAnswer) and deleted.ok and log.sm.revision == 3


def test_a_compacted_range_in_a_txn_is_an_error_with_the_compact_revision() -> None:
    log = Log()
    for n in range(3):
        log.apply(etcd(PutOp(key=b"a", value=b"%d" % n)))
    log.apply(Compact(revision=3, time_ms=1))
    answer = log.apply(etcd(RangeOp(key=b"a", revision=2)))
    assert isinstance(answer, EtcdAnswer)
    assert (answer.error, answer.compact_revision) == (ERR_COMPACTED, 3)


def test_v1_sees_a_raw_value_as_base64_and_never_equal_to_json() -> None:
    log = Log()
    log.apply(etcd(PutOp(key=b"k", value=RAW), PutOp(key=b"j", value=b'{"a": 1}')))
    item = log.sm.read("k").item
    assert item is not None and not item.is_json and item.value is None
    assert item.to_json()["value_base64"] == "/wBub3QganNvboA="
    assert log.sm.read("j").value == {"a": 1}  # JSON an etcd client wrote reads as JSON
    assert dict(log.sm.items())["k"] is NOT_JSON
    conflict = log.apply(Cas(key="k", expect=None, value=1, time_ms=1))
    assert isinstance(conflict, KVResult) and conflict.error == "conflict"
    for cmp, holds in (("==", False), ("!=", True)):
        guard = Compare(range=KeyRange(key="k"), target="value", cmp=cmp, value=None)
        txn = log.apply(Txn(compares=(guard,), success=(), failure=(), time_ms=1))
        assert isinstance(txn, TxnAnswer) and txn.succeeded is holds


def test_nan_is_not_json_text() -> None:
    log = Log()
    log.apply(etcd(PutOp(key=b"k", value=b"NaN")))
    item = log.sm.read("k").item
    assert item is not None and not item.is_json


def test_v1_puts_still_decode_and_apply_as_before() -> None:
    log = Log()
    answer = log.apply(Put(key="a", value=[1, "x"], time_ms=1))
    assert isinstance(answer, KVResult) and answer.ok
    assert log.sm.etcd_range(RangeOp(key=b"a")).kvs[0].value == b'[1,"x"]'
    log.apply(Txn(compares=(), success=(TxnPut(key="b", value=2),), failure=(), time_ms=1))
    assert log.sm.read("b").value == 2


def test_an_empty_etcd_value_is_not_json() -> None:
    log = Log()
    log.apply(etcd(PutOp(key=b"k", value=b"")))
    item = log.sm.read("k").item
    assert item is not None and not item.is_json
    assert item.to_json()["value_base64"] == ""


@given(
    st.one_of(
        st.binary(max_size=40),
        st.text(max_size=30).map(lambda t: json.dumps(t, ensure_ascii=False).encode()),
        st.text(max_size=30).map(lambda t: b'"' + t.encode("utf-8", "surrogatepass") + b'"'),
        st.text(alphabet='a"\\\x01\x7f\u00e9', max_size=6).map(lambda t: b'"' + t.encode() + b'"'),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=5,
        ).map(lambda v: json.dumps(v, separators=(",", ":")).encode()),
    )
)
def test_the_fast_json_check_agrees_with_the_decoder(raw: bytes) -> None:
    """is_json_text's fast path for plain strings never answers otherwise than
    decoding does (a read shows a value as JSON only if it is JSON)."""
    assert is_json_text(raw) == (stored_json(raw) is not NOT_JSON)
