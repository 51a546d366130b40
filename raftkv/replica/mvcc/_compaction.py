"""The MVCC store's compaction: logical at once, physical in slices (package rules 6 and 7).

Rule: :meth:`_Compaction.compact` moves the compact revision and a cut in the
queue of superseded versions, in O(log n); :meth:`_Compaction.compact_step`
frees the old versions a slice of keys at a time. How far the physical pass
got reaches nothing observable but ``size_bytes`` and memory.
"""

from __future__ import annotations

from bisect import bisect_right

from raftkv.replica.mvcc._errors import CompactedError, FutureRevisionError
from raftkv.replica.mvcc._state import _StoreState
from raftkv.replica.mvcc._versions import VERSION_OVERHEAD_BYTES, _compacted


class _Compaction(_StoreState):
    """The store's compaction; a base of :class:`~raftkv.replica.mvcc.MVCCStore`."""

    __slots__ = ()

    def compact(self, revision: int) -> None:
        """Drop the history no read at ``revision`` or later needs (package rule 6).

        Logically at once: from now on reads below ``revision`` raise
        :class:`CompactedError`, and :meth:`to_wire` holds only what rule 6
        keeps. Physically in slices: the old versions are freed by
        :meth:`compact_step`, which walks the versions superseded since the last
        compaction (about 0.5 µs each, seconds for millions -- too long for one
        call on a node's event loop). Nothing observable depends on how far the
        physical pass got but :attr:`size_bytes` and memory.

        Raises:
            CompactedError: ``revision`` is not above the compact revision.
            FutureRevisionError: ``revision`` is above the current revision.
        """
        if revision <= self._compact_revision:
            raise CompactedError(self._compact_revision)
        if revision > self._revision:
            raise FutureRevisionError(self._revision)
        self._compact_revision = revision
        # The pass visits the keys with a version superseded at or before
        # ``revision`` -- the superseded pairs up to the cut -- and those left
        # with a tombstone first (the invariants in __init__). A pass under way
        # just goes on to the new cut (compacting a key is idempotent, and uses
        # the newest compact revision). O(log n) here: the keys are visited by
        # compact_step, not listed now.
        self._compact_cut = bisect_right(
            self._superseded_revs, revision, lo=max(self._superseded_head, self._compact_cut)
        )
        self._pending_compaction.extend(self._floor_tombstones)
        self._floor_tombstones = []

    def compact_step(self, budget: int) -> bool:
        """Free the old versions of up to ``budget`` keys; whether work is left.

        The order of the pass (set order) reaches nothing observable: each key
        is compacted on its own, and reads and :meth:`to_wire` see the compacted
        store whatever the pass reached.
        """
        pending = self._pending_compaction
        head, cut = self._superseded_head, self._compact_cut
        if not pending and head >= cut:
            return False
        # This slice's keys: the tombstones left first, then the next pairs.
        batch = [pending.pop() for _ in range(min(budget, len(pending)))]
        take = min(budget - len(batch), cut - head)
        if take > 0:
            keys = self._superseded_keys
            batch += keys[head : head + take]
            head += take
            if head > 4096 and head * 2 > len(keys):
                # Forget the pairs visited (amortized: once per halving).
                del keys[:head]
                del self._superseded_revs[:head]
                self._compact_cut = cut - head
                head = 0
            self._superseded_head = head
        revision = self._compact_revision
        entries = self._entries
        floor_tombstones = self._floor_tombstones
        index = self._index
        dropped_size = 0
        dropped_versions = 0
        for key in batch:
            entry = entries.get(key)
            if entry is None:
                continue
            if entry.__class__ is list:
                last = entry[-1]
                if last[2] and last[0] <= revision:
                    # The common case: every version at or below the point, the
                    # newest live -- it alone stays (rule 6).
                    drop = len(entry) - 1
                    dropped_versions += drop
                    dropped_size += drop * (len(key) + VERSION_OVERHEAD_BYTES) + sum(
                        [len(v[4]) for v in entry[:drop]]
                    )
                    entries[key] = last
                    continue
            kept = _compacted(entry, revision)
            if kept is entry:
                continue
            if kept is None:
                versions = entry if isinstance(entry, list) else [entry]
                dropped_versions += len(versions)
                dropped_size += len(versions) * (len(key) + VERSION_OVERHEAD_BYTES) + sum(
                    [len(v[4]) for v in versions]
                )
                del entries[key]
                index.discard(key)
                continue
            assert isinstance(entry, list)
            drop = len(entry) - len(kept)
            dropped_versions += drop
            dropped_size += drop * (len(key) + VERSION_OVERHEAD_BYTES) + sum(
                [len(v[4]) for v in entry[:drop]]
            )
            first = entry[drop]
            # A new list, not ``del entry[:drop]``: a capture (snapshot) taken
            # before may still share the old one (capture()).
            entries[key] = kept if len(kept) > 1 else first
            if not first[2]:
                floor_tombstones.append(key)
        self._size -= dropped_size
        self._versions -= dropped_versions
        return self.compacting
