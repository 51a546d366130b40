"""Codec: every message kind round-trips; decoding is total (values or CodecError)."""

from __future__ import annotations

import contextlib
import struct
import typing

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftkv.core.types import ConfState, Entry, EntryType, NodeId
from raftkv.transport import codec
from raftkv.transport.codec import (
    MAX_CONTEXT_LEN,
    MAX_NODE_ID_LEN,
    Auth,
    Challenge,
    Hello,
    Reject,
    Welcome,
    decode_batch,
    decode_control,
    encode_batch,
    encode_control,
    encode_frame,
    frame_length,
)
from raftkv.transport.errors import CodecError, FrameTooLarge, TransportError
from raftkv.transport.forward import ForwardRequest, ForwardResponse, PeerMessage

N = NodeId
U64 = 2**64 - 1
uints = st.one_of(st.integers(0, 1000), st.integers(0, U64))
# Valid ids (raftkv.limits); invalid ones are tested below.
node_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,11}\Z").map(NodeId)
contexts = st.binary(max_size=64)
node_lists = st.lists(node_ids, max_size=4).map(tuple)
conf_states = st.builds(
    ConfState,
    voters=node_lists,
    learners=node_lists,
    voters_outgoing=node_lists,
    learners_next=node_lists,
    auto_leave=st.booleans(),
)
entries = st.builds(
    Entry,
    term=uints,
    index=uints,
    data=st.binary(max_size=64),
    type=st.sampled_from(list(EntryType)),
)

MESSAGE_STRATEGIES: dict[type, st.SearchStrategy[Message]] = {
    AppendEntries: st.builds(
        AppendEntries,
        term=uints,
        sender=node_ids,
        to=node_ids,
        prev_log_index=uints,
        prev_log_term=uints,
        entries=st.lists(entries, max_size=5).map(tuple),
        commit=uints,
    ),
    AppendEntriesResponse: st.builds(
        AppendEntriesResponse,
        term=uints,
        sender=node_ids,
        to=node_ids,
        index=uints,
        reject=st.booleans(),
        hint_index=uints,
        hint_term=uints,
    ),
    Heartbeat: st.builds(
        Heartbeat, term=uints, sender=node_ids, to=node_ids, commit=uints, context=contexts
    ),
    HeartbeatResponse: st.builds(
        HeartbeatResponse, term=uints, sender=node_ids, to=node_ids, context=contexts
    ),
    RequestVote: st.builds(
        RequestVote,
        term=uints,
        sender=node_ids,
        to=node_ids,
        last_log_index=uints,
        last_log_term=uints,
        pre_vote=st.booleans(),
        transfer=st.booleans(),
    ),
    RequestVoteResponse: st.builds(
        RequestVoteResponse,
        term=uints,
        sender=node_ids,
        to=node_ids,
        granted=st.booleans(),
        pre_vote=st.booleans(),
    ),
    TimeoutNow: st.builds(TimeoutNow, term=uints, sender=node_ids, to=node_ids),
    InstallSnapshot: st.builds(
        InstallSnapshot,
        term=uints,
        sender=node_ids,
        to=node_ids,
        snapshot_index=uints,
        snapshot_term=uints,
        conf_state=conf_states,
        offset=uints,
        data=st.binary(max_size=64),
        done=st.booleans(),
        total=uints,
        checksum=st.integers(0, 2**32 - 1),
    ),
    InstallSnapshotResponse: st.builds(
        InstallSnapshotResponse,
        term=uints,
        sender=node_ids,
        to=node_ids,
        snapshot_index=uints,
        offset=uints,
        done=st.booleans(),
        reject=st.booleans(),
    ),
    ReadIndex: st.builds(ReadIndex, term=uints, sender=node_ids, to=node_ids, context=contexts),
    ReadIndexResponse: st.builds(
        ReadIndexResponse, term=uints, sender=node_ids, to=node_ids, index=uints, context=contexts
    ),
    # Not core messages: writes forwarded to the leader over the peer link.
    ForwardRequest: st.builds(
        ForwardRequest,
        term=uints,
        sender=node_ids,
        to=node_ids,
        request_id=uints,
        payload=st.binary(max_size=64),
    ),
    ForwardResponse: st.builds(
        ForwardResponse,
        term=uints,
        sender=node_ids,
        to=node_ids,
        request_id=uints,
        status=st.sampled_from([200, 400, 404, 409, 503, 504]),
        body=st.binary(max_size=64),
    ),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())


def test_every_message_kind_has_a_strategy_and_a_code() -> None:
    kinds = set(typing.get_args(PeerMessage))
    assert set(typing.get_args(Message)) < kinds
    assert set(MESSAGE_STRATEGIES) == kinds
    assert set(codec.message_codes()) == kinds
    assert len(set(codec.message_codes().values())) == len(kinds)


@pytest.mark.parametrize("kind", list(MESSAGE_STRATEGIES), ids=lambda k: k.__name__)
@settings(max_examples=50)
@given(data=st.data())
def test_round_trip_each_kind(kind: type, data: st.DataObject) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[kind])
    assert decode_batch(encode_batch([msg])) == [msg]


@settings(max_examples=50)
@given(st.lists(messages, max_size=8))
def test_batch_round_trip(batch: list[Message]) -> None:
    decoded = decode_batch(encode_batch(batch))
    assert decoded == batch
    assert [type(m) for m in decoded] == [type(m) for m in batch]


def test_wire_layout_is_compact_arrays() -> None:
    # Guards the documented wire format: [code, term, sender, to, *fields], entries as
    # [term, index, type, data]. Changing it breaks mixed-version clusters.
    ae = AppendEntries(
        term=2,
        sender=N("n1"),
        to=N("n2"),
        prev_log_index=4,
        prev_log_term=1,
        entries=(Entry(2, 5, b"x", EntryType.CONF_CHANGE),),
        commit=3,
    )
    hb = Heartbeat(term=2, sender=N("n1"), to=N("n3"), commit=3, context=b"c")
    raw = msgpack.unpackb(encode_batch([ae, hb]))
    assert raw == [[1, 2, "n1", "n2", 4, 1, [[2, 5, 1, b"x"]], 3], [3, 2, "n1", "n3", 3, b"c"]]


def test_install_snapshot_layout_carries_the_checksum_last() -> None:
    msg = InstallSnapshot(
        term=3,
        sender=N("n1"),
        to=N("n2"),
        snapshot_index=9,
        snapshot_term=2,
        conf_state=ConfState(voters=(N("n1"), N("n2"))),
        offset=4,
        data=b"efgh",
        done=True,
        total=8,
        checksum=0xDEADBEEF,
    )
    raw = msgpack.unpackb(encode_batch([msg]))
    conf = [["n1", "n2"], [], [], [], False]
    assert raw == [[8, 3, "n1", "n2", 9, 2, conf, 4, b"efgh", True, 8, 0xDEADBEEF]]
    assert decode_batch(encode_batch([msg])) == [msg]


@pytest.mark.parametrize(
    "msg",
    [
        Heartbeat(term=-1, sender=N("a"), to=N("b"), commit=0),
        Heartbeat(term=1, sender=N(""), to=N("b"), commit=0),
        Heartbeat(term=1, sender=N("a"), to=N("b"), commit=0, context=b"x" * (MAX_CONTEXT_LEN + 1)),
        Heartbeat(term=1, sender=N("a" * (MAX_NODE_ID_LEN + 1)), to=N("b"), commit=0),
        Heartbeat(term=2**64, sender=N("a"), to=N("b"), commit=0),
        AppendEntriesResponse(term=1, sender=N("a"), to=N("b"), index=-5),
        AppendEntries(
            term=1,
            sender=N("a"),
            to=N("b"),
            prev_log_index=0,
            prev_log_term=0,
            entries=(Entry(1, -1),),
            commit=0,
        ),
        RequestVoteResponse(term=1, sender=N("a"), to=N("b"), granted=1),  # type: ignore[arg-type]
        InstallSnapshot(
            term=1,
            sender=N("a"),
            to=N("b"),
            snapshot_index=1,
            snapshot_term=1,
            conf_state=ConfState(),
            offset=0,
            data=b"",
            done=True,
            checksum=2**32,  # a CRC-32 has 32 bits
        ),
    ],
)
def test_encode_rejects_what_decode_would_reject(msg: Message) -> None:
    with pytest.raises(CodecError):
        encode_batch([msg])


def test_encode_rejects_unknown_kinds() -> None:
    with pytest.raises(CodecError):
        encode_batch([object()])  # type: ignore[list-item]


def _payload(*items: object) -> bytes:
    packed: bytes = msgpack.packb(list(items), use_bin_type=True)
    return packed


GOOD_HB = [3, 1, "a", "b", 0, b""]
GOOD_SNAP = [8, 1, "a", "b", 1, 1, [["a"], [], [], [], False], 0, b"", True, 0, 0]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(msgpack.packb({"a": 1}), id="map-not-array"),
        pytest.param(msgpack.packb(7), id="int-not-array"),
        pytest.param(_payload(GOOD_HB) + b"\x00", id="trailing-bytes"),
        pytest.param(_payload(GOOD_HB)[:-1], id="truncated"),
        pytest.param(_payload([]), id="empty-message"),
        pytest.param(_payload([99, 1, "a", "b"]), id="unknown-kind"),
        pytest.param(_payload(["3", 1, "a", "b", 0, b""]), id="str-kind"),
        pytest.param(_payload([3, 1, "a", "b", 0]), id="too-few-fields"),
        pytest.param(_payload([*GOOD_HB, 0]), id="too-many-fields"),
        pytest.param(_payload([3, -1, "a", "b", 0, b""]), id="negative-term"),
        pytest.param(_payload([3, 1, "a", "b", -7, b""]), id="negative-commit"),
        pytest.param(_payload([3, True, "a", "b", 0, b""]), id="bool-as-int"),
        pytest.param(_payload([3, 1.5, "a", "b", 0, b""]), id="float-term"),
        pytest.param(_payload([3, 1, 7, "b", 0, b""]), id="int-node-id"),
        pytest.param(_payload([3, 1, b"a", "b", 0, b""]), id="bytes-node-id"),
        pytest.param(_payload([3, 1, "", "b", 0, b""]), id="empty-node-id"),
        pytest.param(_payload([3, 1, "a" * 256, "b", 0, b""]), id="long-node-id"),
        pytest.param(_payload([3, 1, "a", "b", 0, "ctx"]), id="str-context"),
        pytest.param(_payload([3, 1, "a", "b", 0, b"x" * (MAX_CONTEXT_LEN + 1)]), id="big-ctx"),
        pytest.param(_payload([3, 1, "a", "b", 0, None]), id="nil-context"),
        pytest.param(_payload([6, 1, "a", "b", 1, False]), id="int-as-bool"),
        pytest.param(_payload([1, 1, "a", "b", 0, 0, "x", 0]), id="entries-not-array"),
        pytest.param(_payload([1, 1, "a", "b", 0, 0, [[1, 1, 0]], 0]), id="entry-arity"),
        pytest.param(_payload([1, 1, "a", "b", 0, 0, [[1, -1, 0, b""]], 0]), id="entry-neg-index"),
        pytest.param(_payload([1, 1, "a", "b", 0, 0, [[1, 1, 9, b""]], 0]), id="entry-bad-type"),
        pytest.param(_payload([1, 1, "a", "b", 0, 0, [[1, 1, 0, "s"]], 0]), id="entry-str-data"),
        pytest.param(_payload([1, 1, "a", "b", 0, 0, [(1, 1, 0, b"")], 0])[:-2], id="cut"),
        pytest.param(_payload([*GOOD_SNAP[:-1]]), id="snapshot-without-checksum"),
        pytest.param(_payload([*GOOD_SNAP[:-1], 2**32]), id="snapshot-checksum-over-32-bits"),
        pytest.param(_payload([*GOOD_SNAP[:-1], -1]), id="snapshot-negative-checksum"),
        pytest.param(b"\x91" + msgpack.packb(msgpack.ExtType(5, b"xx")), id="ext-type"),
        pytest.param(b"\x91\x96\x03\x01\xa1a\xa1b\x00\xc7\x00\xff", id="timestamp-ext"),
        pytest.param(b"\x91" * 5000 + b"\x90", id="deep-nesting"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32-huge-count"),
        pytest.param(b"\x91\xc6\xff\xff\xff\xff", id="bin32-huge-length"),
        pytest.param(b"\x91\x96\x03\x01\xa2\xff\xfe\xa1b\x00\xc4\x00", id="invalid-utf8"),
    ],
)
def test_decode_rejects_malformed(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_batch(payload)


def _decode_total(payload: bytes) -> None:
    """decode_batch must return messages or raise CodecError -- nothing else."""
    try:
        result = decode_batch(payload)
    except CodecError:
        return
    assert isinstance(result, list)
    for msg in result:
        assert type(msg) in codec.message_codes()
    # Anything that decodes must re-encode to an equivalent batch.
    assert decode_batch(encode_batch(result)) == result


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_random_bytes_is_total(payload: bytes) -> None:
    _decode_total(payload)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(messages, min_size=1, max_size=3),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_decode_mutated_payloads_is_total(
    batch: list[Message], edits: list[tuple[str, int, int]]
) -> None:
    data = bytearray(encode_batch(batch))
    for op, pos, byte in edits:
        if not data:
            break
        i = pos % len(data)
        if op == "flip":
            data[i] = byte
        elif op == "insert":
            data.insert(i, byte)
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    _decode_total(bytes(data))


_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), U64)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
msgpack_values = (
    _leaves
    | st.lists(_leaves, max_size=4)
    | st.dictionaries(st.text(max_size=2), _leaves, max_size=2)
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(msgpack_values, max_size=9), max_size=2), st.integers(1, 6))
def test_decode_structured_garbage_is_total(items: list[list[object]], code: int) -> None:
    # Give most arrays a valid kind code so validation goes past the first field.
    for item in items:
        if item:
            item[0] = code
    _decode_total(msgpack.packb(items, use_bin_type=True))


# --------------------------------------------------------------------------- frames


def test_frame_round_trip() -> None:
    payload = encode_batch([Heartbeat(term=1, sender=N("a"), to=N("b"), commit=2)])
    frame = encode_frame(payload)
    assert frame[:4] == struct.pack(">I", len(payload))
    assert frame_length(frame[:4]) == len(payload)
    assert decode_batch(frame[4 : 4 + frame_length(frame[:4])]) == [
        Heartbeat(term=1, sender=N("a"), to=N("b"), commit=2)
    ]


def test_huge_length_prefix_rejected_from_the_header_alone() -> None:
    # Only the 4 header bytes exist: the check must not need (or allocate) the payload.
    with pytest.raises(FrameTooLarge) as info:
        frame_length(b"\xff\xff\xff\xff")
    assert info.value.length == 2**32 - 1
    assert frame_length(struct.pack(">I", 100), max_frame_size=100) == 100
    with pytest.raises(FrameTooLarge):
        frame_length(struct.pack(">I", 101), max_frame_size=100)
    with pytest.raises(CodecError):
        frame_length(b"\x00\x01")
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 101, max_frame_size=100)


def test_errors_form_one_hierarchy() -> None:
    from raftkv.core.errors import RaftKVError

    assert issubclass(FrameTooLarge, CodecError)
    assert issubclass(CodecError, TransportError)
    assert issubclass(TransportError, RaftKVError)


# --------------------------------------------------------------------------- control frames


NONCE = bytes(range(32))


@pytest.mark.parametrize(
    "frame",
    [
        Hello(version=1, cluster_id="c", node_id=N("a"), to=N("b"), nonce=NONCE),
        Challenge(node_id=N("b"), nonce=NONCE),
        Auth(proof=NONCE),
        Auth(proof=b""),
        Welcome(proof=NONCE),
        Reject(reason="no"),
    ],
)
def test_control_round_trip(frame: object) -> None:
    assert decode_control(encode_control(frame)) == frame  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [
        _payload(100, 1, "c", "a", "b", b"short"),
        _payload(102, b"x" * 31),
        _payload(999),
        msgpack.packb([]),
        b"\xff",
    ],
)
def test_control_rejects_malformed(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_control(payload)


@settings(max_examples=200)
@given(st.binary(max_size=100))
def test_control_random_bytes_is_total(payload: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_control(payload)


def test_node_ids_seen_before_are_still_checked_by_type_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "_SEEN_NODE_IDS", set())
    hb = Heartbeat(term=1, sender=NodeId("n1"), to=NodeId("n2"), commit=0)
    for _ in range(2):  # the second decode takes the seen-ids path
        assert decode_batch(encode_batch([hb])) == [hb]
    assert sorted(codec._SEEN_NODE_IDS) == ["n1", "n2"]

    # A valid id as bytes, or an invalid string, is refused after its text was seen.
    def frame(sender: object) -> bytes:
        return msgpack.packb([[codec.message_codes()[Heartbeat], 1, sender, "n2", 0, b""]])

    assert decode_batch(frame("n1")) == [hb]  # the frame is right: only the sender varies
    for sender in (b"n1", "n1/x", "", ["n1"]):
        with pytest.raises(CodecError, match="sender"):
            decode_batch(frame(sender))
    # A peer sending ever new ids does not grow the set past its bound.
    for i in range(codec._MAX_SEEN_NODE_IDS + 50):
        decode_batch(encode_batch([Heartbeat(term=1, sender=NodeId(f"x{i}"), to=hb.to, commit=0)]))
    assert len(codec._SEEN_NODE_IDS) == codec._MAX_SEEN_NODE_IDS
