"""Request bodies decode as ``json.loads`` decodes bytes: UTF-8 (the common case,
on a fast path) and UTF-16/32 with or without a byte order mark."""

from __future__ import annotations

import itertools
import json

import pytest

from raftkv.server.errors import BadRequest
from raftkv.server.http.request import NOT_PLAIN_UTF8_FIRST, parse_json

VALUE = {"k": "vålue ✓", "n": [1, 2.5, None, True]}


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]
)
def test_every_encoding_json_accepts_decodes_alike(encoding: str) -> None:
    for text in (json.dumps(VALUE), '"x"', "7", "[]"):
        raw = text.encode(encoding)
        assert parse_json(raw) == json.loads(raw)


def test_the_fast_path_is_taken_only_where_detect_encoding_says_utf8() -> None:
    for a, b in itertools.product(range(256), repeat=2):
        for tail in (b"", b"\0", b"ab", b"\0\0"):
            raw = bytes((a, b)) + tail
            if a not in NOT_PLAIN_UTF8_FIRST and raw[1:2] not in (b"\0", b""):
                assert json.detect_encoding(raw) == "utf-8", raw


@pytest.mark.parametrize("raw", [b"", b"  ", b"{", b"\xff\xfe{", b"7 7", b"\x80\x81"])
def test_bad_bodies_are_a_bad_request(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json(raw)
