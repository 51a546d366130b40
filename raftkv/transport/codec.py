"""msgpack encoding of core messages and of the connection handshake; frames.

Rule 1: this module is sans-I/O -- bytes in, values out. It never logs and
never touches a socket; :mod:`raftkv.transport.tcp` decides what to drop.

Rule 2: decoding is strict and total. Any input either decodes to valid values
or raises :class:`~raftkv.transport.errors.CodecError`; no other exception type
escapes :func:`decode_batch`, :func:`decode_control` or :func:`frame_length`.
Encoding applies the same checks, so a value that encodes also decodes.

Rule 3: the wire layout is a table. Each kind is one row of ``_MESSAGE_KINDS``
(or ``_CONTROL_KINDS``): a code and its fields in order. Adding a message kind
(TimeoutNow, InstallSnapshot, ...) is one row; a new *field type* is one more
``_Field`` helper. Codes are never reused or renumbered.

Wire format::

    frame    = u32 big-endian length, then `length` bytes of payload
    payload  = msgpack array of messages                (data phase)
             | msgpack array [control_code, *fields]    (handshake phase)
    message  = [kind_code, term, sender, to, *kind fields]
    entry    = [term, index, type, data]

Integers are unsigned (msgpack uint, <= 2**64 - 1; a snapshot's CRC-32
checksum <= 2**32 - 1), node ids are non-empty
UTF-8 strings, contexts and entry data are msgpack ``bin``. Maps and ext types
never appear and are rejected.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import msgpack

from raftkv.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftkv.core.types import ConfState, Entry, EntryType, NodeId
from raftkv.limits import MAX_MEMBERS, MAX_NODE_ID_CHARS, NODE_ID_RULE, is_node_id
from raftkv.transport.errors import CodecError, FrameTooLarge
from raftkv.transport.forward import ForwardRequest, ForwardResponse, PeerMessage

__all__ = [
    "PROTOCOL_VERSION",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_NODE_ID_LEN",
    "MAX_CONTEXT_LEN",
    "MAX_TEXT_LEN",
    "NONCE_LEN",
    "HEADER_SIZE",
    "encode_batch",
    "decode_batch",
    "encode_frame",
    "frame_length",
    "message_codes",
    "Hello",
    "Challenge",
    "Auth",
    "Welcome",
    "Reject",
    "ControlFrame",
    "encode_control",
    "decode_control",
]

PROTOCOL_VERSION: Final = 1
"""Sent in :class:`Hello`; peers speaking another version are refused."""

DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024
"""Largest payload accepted by default (64 MiB), checked before reading it."""

MAX_NODE_ID_LEN: Final = MAX_NODE_ID_CHARS
"""Longest node id, in characters (:mod:`raftkv.limits`: one table for every layer)."""

MAX_CONTEXT_LEN: Final = 64 * 1024
"""Longest heartbeat (ReadIndex) context, in bytes."""

MAX_TEXT_LEN: Final = 1024
"""Longest free-text field of a control frame (cluster id, reject reason)."""

NONCE_LEN: Final = 32
"""Length of the handshake nonces and of an HMAC-SHA256 proof."""

HEADER_SIZE: Final = 4
"""Size of the frame length prefix."""

_HEADER: Final = struct.Struct(">I")
_MAX_HEADER_VALUE: Final = 2**32 - 1

Decoder: TypeAlias = Callable[[object, str], object]
"""Validates one decoded msgpack value for a named field and returns the field value."""
Encoder: TypeAlias = Callable[[object], object]
"""Turns one field value into plain msgpack data (validating it as it goes)."""


# --------------------------------------------------------------------------- fields


def _fail(name: str, what: str, value: object) -> CodecError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return CodecError(f"{name}: expected {what}, got {shown}")


def _dec_uint(value: object, name: str) -> int:
    # `type(...) is int` rejects bool, which msgpack decodes separately.
    if type(value) is not int or value < 0:
        raise _fail(name, "an unsigned integer", value)
    return value


def _dec_u32(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= 0xFFFFFFFF:
        raise _fail(name, "an unsigned 32-bit integer", value)
    return value


def _dec_bool(value: object, name: str) -> bool:
    if type(value) is not bool:
        raise _fail(name, "a bool", value)
    return value


_SEEN_NODE_IDS: set[str] = set()
"""Node ids that passed :func:`is_node_id`: every message names two, and a set
lookup is a fifth of the regular expression's cost. Bounded, so a peer sending
ever new ids cannot grow it."""
_MAX_SEEN_NODE_IDS = 1024


def _dec_node(value: object, name: str) -> NodeId:
    if type(value) is str and value in _SEEN_NODE_IDS:
        return NodeId(value)
    if not is_node_id(value):
        raise _fail(name, f"a node id ({NODE_ID_RULE})", value)
    if len(_SEEN_NODE_IDS) < _MAX_SEEN_NODE_IDS:
        _SEEN_NODE_IDS.add(value)  # type: ignore[arg-type]  # is_node_id: a str
    return NodeId(value)  # type: ignore[arg-type]  # is_node_id: a str


def _bytes_decoder(limit: int, *, exact: frozenset[int] | None = None) -> Decoder:
    def dec(value: object, name: str) -> bytes:
        if type(value) is not bytes or len(value) > limit:
            raise _fail(name, f"bytes of at most {limit}", value)
        if exact is not None and len(value) not in exact:
            raise _fail(name, f"bytes of length {sorted(exact)}", value)
        return value

    return dec


def _text_decoder(limit: int) -> Decoder:
    def dec(value: object, name: str) -> str:
        if type(value) is not str or len(value) > limit:
            raise _fail(name, f"a string of at most {limit} characters", value)
        return value

    return dec


_ENTRY_TYPES: Final = {t.value: t for t in EntryType}


def _dec_entries(value: object, name: str) -> tuple[Entry, ...]:
    if type(value) is not list:
        raise _fail(name, "an array of entries", value)
    out: list[Entry] = []
    for i, item in enumerate(value):
        if type(item) is not list or len(item) != 4:
            raise _fail(f"{name}[{i}]", "[term, index, type, data]", item)
        term, index, kind, data = item
        entry_type = _ENTRY_TYPES.get(kind) if type(kind) is int else None
        if entry_type is None:
            raise _fail(f"{name}[{i}].type", "an EntryType value", kind)
        if type(data) is not bytes:
            raise _fail(f"{name}[{i}].data", "bytes", data)
        out.append(
            Entry(
                _dec_uint(term, f"{name}[{i}].term"),
                _dec_uint(index, f"{name}[{i}].index"),
                data,
                entry_type,
            )
        )
    return tuple(out)


def _enc_entries(value: object) -> object:
    if type(value) is not tuple:
        raise _fail("entries", "a tuple of Entry", value)
    out = []
    for e in value:
        if type(e) is not Entry or type(e.data) is not bytes:
            raise _fail("entries", "Entry with bytes data", e)
        out.append(
            [
                _dec_uint(e.term, "entry.term"),
                _dec_uint(e.index, "entry.index"),
                e.type.value,
                e.data,
            ]
        )
    return out


@dataclass(frozen=True, slots=True)
class _Field:
    """One positional field: its attribute name, validator and optional encoder."""

    name: str
    decode: Decoder
    encode: Encoder | None = None


def _uint(name: str) -> _Field:
    return _Field(name, _dec_uint)


def _u32(name: str) -> _Field:
    return _Field(name, _dec_u32)


def _bool(name: str) -> _Field:
    return _Field(name, _dec_bool)


def _node(name: str) -> _Field:
    return _Field(name, _dec_node)


def _bytes(name: str, limit: int, *, exact: frozenset[int] | None = None) -> _Field:
    return _Field(name, _bytes_decoder(limit, exact=exact))


def _text(name: str, limit: int = MAX_TEXT_LEN) -> _Field:
    return _Field(name, _text_decoder(limit))


def _entries(name: str) -> _Field:
    return _Field(name, _dec_entries, _enc_entries)


def _dec_node_list(value: object, name: str) -> tuple[NodeId, ...]:
    if type(value) is not list or len(value) > MAX_MEMBERS:
        raise _fail(name, f"an array of at most {MAX_MEMBERS} node ids", value)
    return tuple(_dec_node(v, f"{name}[{i}]") for i, v in enumerate(value))


def _dec_conf_state(value: object, name: str) -> ConfState:
    if type(value) is not list or len(value) != 5:
        raise _fail(name, "[voters, learners, voters_outgoing, learners_next, auto_leave]", value)
    voters, learners, outgoing, learners_next, auto_leave = value
    return ConfState(
        voters=_dec_node_list(voters, f"{name}.voters"),
        learners=_dec_node_list(learners, f"{name}.learners"),
        voters_outgoing=_dec_node_list(outgoing, f"{name}.voters_outgoing"),
        learners_next=_dec_node_list(learners_next, f"{name}.learners_next"),
        auto_leave=_dec_bool(auto_leave, f"{name}.auto_leave"),
    )


def _enc_conf_state(value: object) -> object:
    if type(value) is not ConfState:
        raise _fail("conf_state", "a ConfState", value)
    out: list[object] = [
        list(value.voters),
        list(value.learners),
        list(value.voters_outgoing),
        list(value.learners_next),
        value.auto_leave,
    ]
    _dec_conf_state(out, "conf_state")  # anything that encodes also decodes
    return out


def _conf_state(name: str) -> _Field:
    return _Field(name, _dec_conf_state, _enc_conf_state)


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True, slots=True)
class _Kind:
    """One row of a kind table: a wire code and the class it (de)serializes."""

    code: int
    cls: type
    fields: tuple[_Field, ...]

    def values(self, obj: object) -> list[object]:
        """The field values of ``obj`` in wire order, validated and encoded."""
        out: list[object] = [self.code]
        for field in self.fields:
            value = getattr(obj, field.name)
            if field.encode is not None:
                value = field.encode(value)
            else:
                # Same check as decoding, so anything that encodes also decodes.
                field.decode(value, field.name)
            out.append(value)
        return out

    def build(self, item: list[object]) -> object:
        """Construct the value from a decoded ``[code, *fields]`` array."""
        if len(item) != len(self.fields) + 1:
            raise CodecError(
                f"{self.cls.__name__}: expected {len(self.fields)} fields, got {len(item) - 1}"
            )
        kwargs = {}
        for i, field in enumerate(self.fields, 1):
            kwargs[field.name] = field.decode(item[i], field.name)
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as exc:  # a dataclass __post_init__ may validate
            raise CodecError(f"{self.cls.__name__}: {exc}") from exc


_HEAD: Final = (_uint("term"), _node("sender"), _node("to"))


def _message(code: int, cls: type, *fields: _Field) -> _Kind:
    return _Kind(code, cls, _HEAD + fields)


# One row per message kind; codes are permanent.
_MESSAGE_KINDS: Final[tuple[_Kind, ...]] = (
    _message(
        1,
        AppendEntries,
        _uint("prev_log_index"),
        _uint("prev_log_term"),
        _entries("entries"),
        _uint("commit"),
    ),
    _message(
        2,
        AppendEntriesResponse,
        _uint("index"),
        _bool("reject"),
        _uint("hint_index"),
        _uint("hint_term"),
    ),
    _message(3, Heartbeat, _uint("commit"), _bytes("context", MAX_CONTEXT_LEN)),
    _message(4, HeartbeatResponse, _bytes("context", MAX_CONTEXT_LEN)),
    _message(
        5,
        RequestVote,
        _uint("last_log_index"),
        _uint("last_log_term"),
        _bool("pre_vote"),
        _bool("transfer"),
    ),
    _message(6, RequestVoteResponse, _bool("granted"), _bool("pre_vote")),
    _message(7, TimeoutNow),
    _message(
        8,
        InstallSnapshot,
        _uint("snapshot_index"),
        _uint("snapshot_term"),
        _conf_state("conf_state"),
        _uint("offset"),
        _bytes("data", DEFAULT_MAX_FRAME_SIZE),
        _bool("done"),
        _uint("total"),
        _u32("checksum"),
    ),
    _message(
        9,
        InstallSnapshotResponse,
        _uint("snapshot_index"),
        _uint("offset"),
        _bool("done"),
        _bool("reject"),
    ),
    _message(10, ReadIndex, _bytes("context", MAX_CONTEXT_LEN)),
    _message(11, ReadIndexResponse, _uint("index"), _bytes("context", MAX_CONTEXT_LEN)),
    # Not core messages: writes a follower forwards to the leader (forward.py).
    _message(12, ForwardRequest, _uint("request_id"), _bytes("payload", DEFAULT_MAX_FRAME_SIZE)),
    _message(
        13,
        ForwardResponse,
        _uint("request_id"),
        _uint("status"),
        _bytes("body", DEFAULT_MAX_FRAME_SIZE),
    ),
)


def _index(kinds: Iterable[_Kind]) -> tuple[dict[int, _Kind], dict[type, _Kind]]:
    by_code: dict[int, _Kind] = {}
    by_type: dict[type, _Kind] = {}
    for kind in kinds:
        assert kind.code not in by_code, f"duplicate wire code {kind.code}"
        by_code[kind.code] = kind
        by_type[kind.cls] = kind
    return by_code, by_type


_MSG_BY_CODE, _MSG_BY_TYPE = _index(_MESSAGE_KINDS)


def message_codes() -> dict[type, int]:
    """The wire code of every message class the codec knows."""
    return {cls: kind.code for cls, kind in _MSG_BY_TYPE.items()}


# --------------------------------------------------------------------------- msgpack boundary


def _pack(obj: object) -> bytes:
    try:
        packed = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from exc
    assert isinstance(packed, bytes)
    return packed


def _unpack(payload: bytes, *, max_str: int) -> object:
    """Unpack one msgpack value with hard limits; maps and ext types are refused."""
    try:
        obj: object = msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            max_str_len=max_str,
            max_map_len=0,
            max_ext_len=0,
        )
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        # ExtraData, FormatError, StackError, OutOfData and UnicodeDecodeError all land here.
        raise CodecError(f"malformed msgpack: {exc}") from exc
    return obj


# --------------------------------------------------------------------------- batches


def encode_batch(msgs: Sequence[PeerMessage]) -> bytes:
    """Encode ``msgs`` as one payload (a single msgpack call per batch).

    Raises:
        CodecError: a message is of an unknown kind or holds a value that
            :func:`decode_batch` would reject (negative index, bad node id, ...).
    """
    items: list[object] = []
    for msg in msgs:
        kind = _MSG_BY_TYPE.get(type(msg))
        if kind is None:
            raise CodecError(f"cannot encode {type(msg).__name__}: not a known message kind")
        items.append(kind.values(msg))
    return _pack(items)


def decode_batch(payload: bytes) -> list[PeerMessage]:
    """Decode a payload made by :func:`encode_batch`.

    Raises:
        CodecError: for any malformed, unknown or out-of-range content.
    """
    obj = _unpack(payload, max_str=max(MAX_NODE_ID_LEN * 4, MAX_TEXT_LEN))
    if type(obj) is not list:
        raise _fail("batch", "an array of messages", obj)
    out: list[PeerMessage] = []
    for item in obj:
        if type(item) is not list or not item:
            raise _fail("message", "a non-empty array", item)
        code = item[0]
        kind = _MSG_BY_CODE.get(code) if type(code) is int else None
        if kind is None:
            raise _fail("message", "a known kind code", code)
        msg = kind.build(item)
        out.append(msg)  # type: ignore[arg-type]  # the table maps codes to Message classes
    return out


# --------------------------------------------------------------------------- frames


def encode_frame(payload: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Prefix ``payload`` with its u32 big-endian length.

    Raises:
        FrameTooLarge: the payload exceeds ``max_frame_size``.
    """
    limit = min(max_frame_size, _MAX_HEADER_VALUE)
    if len(payload) > limit:
        raise FrameTooLarge(len(payload), limit)
    return _HEADER.pack(len(payload)) + payload


def frame_length(header: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> int:
    """The payload length announced by a 4-byte frame header.

    Call this before reading (or allocating for) the payload.

    Raises:
        FrameTooLarge: the announced length exceeds ``max_frame_size``.
        CodecError: ``header`` is not exactly 4 bytes.
    """
    if len(header) != HEADER_SIZE:
        raise CodecError(f"frame header must be {HEADER_SIZE} bytes, got {len(header)}")
    (length,) = _HEADER.unpack(header)
    assert isinstance(length, int)
    if length > max_frame_size:
        raise FrameTooLarge(length, max_frame_size)
    return length


# --------------------------------------------------------------------------- handshake frames


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Client -> server, first frame: who I am and whom I expect to reach."""

    version: int
    cluster_id: str
    node_id: NodeId
    to: NodeId
    nonce: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """Server -> client: the server's id and its nonce for the client's proof."""

    node_id: NodeId
    nonce: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    """Client -> server: HMAC proof over the session (empty without a secret)."""

    proof: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """Server -> client: accepted; the server's own proof (empty without a secret)."""

    proof: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Server -> client: refused, with a reason for the client's log."""

    reason: str


ControlFrame: TypeAlias = Hello | Challenge | Auth | Welcome | Reject
"""A handshake frame; exchanged before any message batch."""

_PROOF: Final = frozenset({0, NONCE_LEN})

_CONTROL_KINDS: Final[tuple[_Kind, ...]] = (
    _Kind(
        100,
        Hello,
        (
            _uint("version"),
            _text("cluster_id"),
            _node("node_id"),
            _node("to"),
            _bytes("nonce", NONCE_LEN, exact=frozenset({NONCE_LEN})),
        ),
    ),
    _Kind(
        101,
        Challenge,
        (_node("node_id"), _bytes("nonce", NONCE_LEN, exact=frozenset({NONCE_LEN}))),
    ),
    _Kind(102, Auth, (_bytes("proof", NONCE_LEN, exact=_PROOF),)),
    _Kind(103, Welcome, (_bytes("proof", NONCE_LEN, exact=_PROOF),)),
    _Kind(104, Reject, (_text("reason"),)),
)
_CTL_BY_CODE, _CTL_BY_TYPE = _index(_CONTROL_KINDS)


def encode_control(frame: ControlFrame) -> bytes:
    """Encode one handshake frame's payload.

    Raises:
        CodecError: a field is out of range (e.g. a nonce of the wrong length).
    """
    return _pack(_CTL_BY_TYPE[type(frame)].values(frame))


def decode_control(payload: bytes) -> ControlFrame:
    """Decode one handshake frame's payload.

    Raises:
        CodecError: for any malformed or unknown content.
    """
    obj = _unpack(payload, max_str=max(MAX_NODE_ID_LEN * 4, MAX_TEXT_LEN * 4))
    if type(obj) is not list or not obj:
        raise _fail("control frame", "a non-empty array", obj)
    code = obj[0]
    kind = _CTL_BY_CODE.get(code) if type(code) is int else None
    if kind is None:
        raise _fail("control frame", "a known control code", code)
    frame = kind.build(obj)
    assert isinstance(frame, Hello | Challenge | Auth | Welcome | Reject)
    return frame
