"""Fuzzing the peer frame decoder: random and mutated bytes never escape as anything
but CodecError, and whatever decodes is a valid message that encodes back."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from raftkv.transport.codec import (
    HEADER_SIZE,
    NONCE_LEN,
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    Hello,
    Reject,
    Welcome,
    decode_batch,
    decode_control,
    encode_batch,
    encode_control,
    frame_length,
)
from raftkv.transport.errors import CodecError
from tests.security.fuzz import fuzz, mutated
from tests.transport.test_codec import messages


def check_batch(payload: bytes) -> None:
    try:
        decoded = decode_batch(payload)
    except CodecError:
        return
    # Total: anything accepted is a valid batch that round-trips.
    assert decode_batch(encode_batch(decoded)) == decoded


def check_control(payload: bytes) -> None:
    try:
        frame = decode_control(payload)
    except CodecError:
        return
    assert decode_control(encode_control(frame)) == frame


@fuzz
@given(st.binary(max_size=2048))
def test_random_bytes(payload: bytes) -> None:
    check_batch(payload)
    check_control(payload)


@fuzz
@given(st.lists(messages, min_size=1, max_size=6).map(encode_batch).flatmap(mutated))
def test_mutated_batches(payload: bytes) -> None:
    check_batch(payload)
    check_control(payload)


nodes = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,7}\Z")
nonces = st.binary(min_size=NONCE_LEN, max_size=NONCE_LEN)
controls = st.one_of(
    st.builds(
        Hello,
        version=st.just(PROTOCOL_VERSION),
        cluster_id=st.text(max_size=8),
        node_id=nodes,
        to=nodes,
        nonce=nonces,
    ),
    st.builds(Challenge, node_id=nodes, nonce=nonces),
    st.builds(Auth, proof=nonces),
    st.builds(Welcome, proof=nonces),
    st.builds(Reject, reason=st.text(max_size=32)),
)


@fuzz
@given(controls.map(encode_control).flatmap(mutated))
def test_mutated_handshake_frames(payload: bytes) -> None:
    check_control(payload)
    check_batch(payload)


@fuzz
@given(st.binary(max_size=8), st.integers(1, 2**32 - 1))
def test_frame_header(header: bytes, limit: int) -> None:
    try:
        length = frame_length(header, max_frame_size=limit)
    except CodecError:
        assert len(header) != HEADER_SIZE or struct.unpack(">I", header)[0] > limit
        return
    assert len(header) == HEADER_SIZE and 0 <= length <= limit
