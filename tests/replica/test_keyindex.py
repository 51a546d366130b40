"""The blocked sorted key index against a plain sorted list."""

from __future__ import annotations

from bisect import insort

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftkv.replica.keyindex import LOAD, KeyIndex

# Short keys over a small alphabet collide often, so adds of present keys and
# removals of absent ones happen; b"" and 0xff bytes are the edge cases.
keys = st.binary(min_size=0, max_size=3).map(lambda b: bytes(x % 4 * 85 for x in b))
bounds = st.one_of(st.none(), keys)


def model_range(model: list[bytes], lo: bytes, hi: bytes | None) -> list[bytes]:
    return [k for k in model if lo <= k and (hi is None or k < hi)]


class KeyIndexMachine(RuleBasedStateMachine):
    """Random adds and discards with a tiny block length, so blocks split and merge."""

    def __init__(self) -> None:
        super().__init__()
        self.index = KeyIndex(load=4)
        self.model: list[bytes] = []

    @rule(key=keys)
    def add(self, key: bytes) -> None:
        absent = key not in self.model
        assert self.index.add(key) is absent
        if absent:
            insort(self.model, key)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def discard_present(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.model))
        assert self.index.discard(key) is True
        self.model.remove(key)

    @rule(key=keys)
    def discard_any(self, key: bytes) -> None:
        present = key in self.model
        assert self.index.discard(key) is present
        if present:
            self.model.remove(key)

    @rule(key=keys)
    def contains(self, key: bytes) -> None:
        assert (key in self.index) == (key in self.model)

    @rule(lo=keys, hi=bounds)
    def irange(self, lo: bytes, hi: bytes | None) -> None:
        assert list(self.index.irange(lo, hi)) == model_range(self.model, lo, hi)

    @invariant()
    def same_keys(self) -> None:
        self.index.check()
        assert list(self.index) == self.model
        assert len(self.index) == len(self.model)


TestKeyIndexMachine = KeyIndexMachine.TestCase
TestKeyIndexMachine.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)


@given(st.lists(keys), keys, bounds)
def test_built_from_keys_matches_sorted_set(initial: list[bytes], lo: bytes, hi: bytes | None):
    index = KeyIndex(initial, load=3)
    model = sorted(set(initial))
    index.check()
    assert list(index) == model
    assert list(index.irange(lo, hi)) == model_range(model, lo, hi)


def test_default_load_splits_and_merges_large_blocks():
    index = KeyIndex()
    n = 5 * LOAD
    # Insert in an order that hits the front, the middle and the end of blocks.
    for i in [*range(0, n, 2), *range(n - 1, 0, -2)]:
        assert index.add(b"k%06d" % i)
    index.check()
    assert len(index) == n
    assert list(index) == [b"k%06d" % i for i in range(n)]
    for i in range(0, n, 3):
        assert index.discard(b"k%06d" % i)
    index.check()
    assert list(index) == [b"k%06d" % i for i in range(n) if i % 3]
    lo, hi = b"k%06d" % 100, b"k%06d" % 2000
    expected = [b"k%06d" % i for i in range(100, 2000) if i % 3]
    assert list(index.irange(lo, hi)) == expected


def test_empty_index():
    index = KeyIndex()
    assert len(index) == 0
    assert list(index) == []
    assert list(index.irange(b"a")) == []
    assert b"a" not in index
    assert index.discard(b"a") is False
    index.check()


def test_irange_bounds_are_half_open_and_none_is_unbounded():
    index = KeyIndex([b"a", b"b", b"c", b"d"], load=2)
    assert list(index.irange(b"b", b"d")) == [b"b", b"c"]
    assert list(index.irange(b"b")) == [b"b", b"c", b"d"]
    assert list(index.irange(b"bb", b"c")) == []
    assert list(index.irange(b"c", b"b")) == []  # an inverted range is empty
    assert list(index.irange(b"e")) == []


def test_keys_compare_as_unsigned_bytes_with_prefixes_first():
    """etcd orders keys with bytes.Compare: a prefix first, then unsigned bytes."""
    raw = [b"\xff", b"a\x00", b"a", b"\x00", b"ab", b"\x7f\xff"]
    index = KeyIndex(raw)
    assert list(index) == [b"\x00", b"a", b"a\x00", b"ab", b"\x7f\xff", b"\xff"]


def test_load_must_allow_a_split():
    with pytest.raises(ValueError, match="load"):
        KeyIndex(load=1)
