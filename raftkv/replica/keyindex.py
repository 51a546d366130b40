"""A sorted set of byte keys: the order behind range reads.

Rule: a :class:`KeyIndex` is a list of sorted blocks. Finding a key is a
bisect over the blocks' last keys and a bisect inside one block; adding or
removing a key moves at most one block's worth of references, so a new key
costs ``O(log n + LOAD)`` instead of the ``O(n)`` of one plain sorted list (a
million keys would make every insert move megabytes). This is the layout of
``sortedcontainers.SortedList``, kept to the few operations the MVCC store
needs, with no dependency.

Keys compare as Python ``bytes`` do, which is etcd's ``bytes.Compare``:
unsigned bytes, lexicographic, a proper prefix first. The index holds no
values and knows nothing about revisions; :mod:`raftkv.replica.mvcc` decides
which keys it holds. Nothing here depends on hashing or dict order.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

from raftkv.core.errors import bug

__all__ = ["KeyIndex"]

LOAD: Final = 512
"""Target block length. A block splits in two above ``2 * LOAD`` keys and is
merged into a neighbour below ``LOAD // 2`` (if there is a neighbour)."""


class KeyIndex:
    """A sorted set of ``bytes`` keys with ordered iteration over ``[lo, hi)``.

    Do not add or remove keys while iterating over it (collect first, as
    ``list(index.irange(lo, hi))`` does).
    """

    __slots__ = ("_load", "_blocks", "_maxes", "_len")

    def __init__(self, keys: Iterable[bytes] = (), *, load: int = LOAD) -> None:
        """Build an index holding ``keys`` (any order; duplicates collapse).

        Args:
            keys: the initial keys.
            load: the target block length (tests use small ones to exercise
                splits and merges).
        """
        if load < 2:
            raise ValueError(f"load must be at least 2, not {load}")
        self._load = load
        ordered = sorted(set(keys))
        self._blocks: list[list[bytes]] = [
            ordered[i : i + load] for i in range(0, len(ordered), load)
        ]
        # Invariant: every block is non-empty and strictly increasing, and each
        # block's last key is below the next block's first key (so the whole
        # index is strictly increasing when the blocks are concatenated).
        self._maxes: list[bytes] = [block[-1] for block in self._blocks]
        # Invariant: _maxes[i] == _blocks[i][-1] for every i.
        self._len = len(ordered)
        # Invariant: _len == sum(len(block) for block in _blocks).

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        maxes = self._maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return False
        block = self._blocks[i]
        j = bisect_left(block, key)
        return block[j] == key

    def __iter__(self) -> Iterator[bytes]:
        for block in self._blocks:
            yield from block

    def __repr__(self) -> str:
        return f"KeyIndex(<{self._len} keys in {len(self._blocks)} blocks>)"

    def add(self, key: bytes) -> bool:
        """Insert ``key``; return whether it was absent."""
        maxes = self._maxes
        blocks = self._blocks
        if not maxes:
            blocks.append([key])
            maxes.append(key)
            self._len = 1
            return True
        i = bisect_left(maxes, key)
        if i == len(maxes):
            # Above every key: append to the last block.
            i -= 1
            block = blocks[i]
            block.append(key)
            maxes[i] = key
        else:
            block = blocks[i]
            j = bisect_left(block, key)
            if block[j] == key:
                return False
            block.insert(j, key)
        self._len += 1
        if len(block) > 2 * self._load:
            half = len(block) // 2
            blocks.insert(i + 1, block[half:])
            del block[half:]
            maxes.insert(i, block[-1])
        return True

    def discard(self, key: bytes) -> bool:
        """Remove ``key`` if present; return whether it was present."""
        maxes = self._maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return False
        blocks = self._blocks
        block = blocks[i]
        j = bisect_left(block, key)
        if block[j] != key:
            return False
        del block[j]
        self._len -= 1
        if not block:
            del blocks[i]
            del maxes[i]
            return True
        maxes[i] = block[-1]
        if len(block) < self._load // 2 and len(blocks) > 1:
            self._merge(i)
        return True

    def _merge(self, i: int) -> None:
        """Merge block ``i`` into a neighbour, splitting again if that overflows."""
        blocks = self._blocks
        maxes = self._maxes
        if i == len(blocks) - 1:
            i -= 1
        # Merge blocks[i + 1] into blocks[i] (they are adjacent, so the result
        # stays sorted).
        left = blocks[i]
        left.extend(blocks[i + 1])
        del blocks[i + 1]
        del maxes[i + 1]
        maxes[i] = left[-1]
        if len(left) > 2 * self._load:
            half = len(left) // 2
            blocks.insert(i + 1, left[half:])
            del left[half:]
            maxes.insert(i, left[-1])

    def irange(self, lo: bytes, hi: bytes | None = None) -> Iterator[bytes]:
        """Keys ``k`` with ``lo <= k < hi`` in increasing order (``hi=None``: no upper bound)."""
        maxes = self._maxes
        i = bisect_left(maxes, lo)
        blocks = self._blocks
        n = len(blocks)
        if i == n:
            return
        block = blocks[i]
        j = bisect_left(block, lo)
        while True:
            if hi is not None and not block[-1] < hi:
                yield from block[j : bisect_left(block, hi, j)]
                return
            yield from block[j:] if j else block
            i += 1
            if i == n:
                return
            block = blocks[i]
            j = 0

    def check(self) -> None:
        """Verify the invariants (for tests).

        Raises:
            AssertionError: an invariant does not hold.
        """
        blocks = self._blocks
        if len(blocks) != len(self._maxes):
            bug("KeyIndex: blocks and maxes differ in length")
        total = 0
        previous: bytes | None = None
        for block, last in zip(blocks, self._maxes, strict=True):
            if not block:
                bug("KeyIndex: empty block")
            if len(block) > 2 * self._load:
                bug(f"KeyIndex: a block of {len(block)} keys")
            if block[-1] != last:
                bug("KeyIndex: stale block max")
            for key in block:
                if previous is not None and not previous < key:
                    bug(f"KeyIndex: {previous!r} is not below {key!r}")
                previous = key
            total += len(block)
        if total != self._len:
            bug(f"KeyIndex: length {self._len} but {total} keys")
