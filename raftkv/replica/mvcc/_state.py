"""The MVCC store's fields, their invariants, and the two writes that add a version.

Rule: every field of :class:`~raftkv.replica.mvcc.MVCCStore` is declared here,
once, as a slot of :class:`_StoreState`, with the invariant it keeps; the
other parts of the store (reads, transactions, compaction, the wire form) are
subclasses that add methods and no slots. A version is added only by
:meth:`_StoreState._write_put` and :meth:`_StoreState._write_tombstone`, which
keep the counters and the queue of superseded versions in step.
"""

from __future__ import annotations

from array import array

from raftkv.replica.keyindex import KeyIndex
from raftkv.replica.mvcc._versions import VERSION_OVERHEAD_BYTES, _Entry, _Version


class _StoreState:
    """The store's state (see the package rules); a base of :class:`MVCCStore`."""

    __slots__ = (
        "_entries",
        "_index",
        "_superseded_keys",
        "_superseded_revs",
        "_superseded_head",
        "_compact_cut",
        "_floor_tombstones",
        "_pending_compaction",
        "_revision",
        "_compact_revision",
        "_size",
        "_versions",
        "_live",
        "_feed",
        "_feed_key",
        "_feed_revision",
    )

    def __init__(self) -> None:
        """An empty store at revision 1, never compacted."""
        self._entries: dict[bytes, _Entry] = {}
        # Invariant: a key's entry holds its kept versions (at least one, at most
        # one per revision, in revision order). A tombstone follows a live
        # version, except as a key's first kept version, which then has
        # mod_revision == _compact_revision (package rule 6).
        self._index = KeyIndex()
        # Invariant: the keys of _index are exactly the keys of _entries.
        self._superseded_keys: list[bytes] = []
        self._superseded_revs = array("q")
        self._superseded_head = 0
        self._compact_cut = 0
        # Invariant: from _superseded_head on, one (revision, key) pair per kept
        # version that a later write superseded, in revision order: the key, and
        # the revision of the write that superseded it. A compaction at r can
        # drop a version only if it was superseded at or before r, so the keys
        # compact(r) must visit are those of the pairs up to r -- a pass that
        # costs what the history since the last compaction wrote, not the whole
        # key space.
        self._floor_tombstones: list[bytes] = []
        # Invariant: the keys whose first kept version is a tombstone (left at
        # the compact revision, rule 6): a later compaction drops it, though no
        # write superseded it.
        self._pending_compaction: list[bytes] = []
        # Invariant: the keys whose versions below _compact_revision may not be
        # freed yet (compact() is logical at once, compact_step() physical in
        # slices) are those of _pending_compaction and of the superseded pairs
        # from _superseded_head up to _compact_cut.
        self._revision = 1
        # Invariant: every kept version's mod_revision <= _revision.
        self._compact_revision = 0
        # Invariant: 0 <= _compact_revision <= _revision; only a key's first kept
        # version may have mod_revision <= _compact_revision -- except keys in
        # _pending_compaction, whose older versions no read can reach any more.
        self._size = 0
        # Invariant: _size == sum(len(key) + len(value) + VERSION_OVERHEAD_BYTES)
        # over all kept versions.
        self._versions = 0
        # Invariant: the number of kept versions, tombstones included.
        self._live = 0
        # Invariant: the number of keys whose newest version is live.
        self._feed_key: bytes | None = None
        self._feed: list[bytes] = []
        self._feed_revision = 0
        # Invariant: the change feed, only keys (the versions are in _entries):
        # the keys written at _feed_revision are [_feed_key] if it is not None
        # (a plain put: two stores on the hot path), else _feed.

    def __repr__(self) -> str:
        return (
            f"MVCCStore(revision={self._revision}, compact_revision={self._compact_revision}, "
            f"keys={self._live}, versions={self._versions}, size_bytes={self._size})"
        )

    # ------------------------------------------------------------------ state

    @property
    def revision(self) -> int:
        """The current store revision (1 for a fresh store)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction; 0 until the first one."""
        return self._compact_revision

    @property
    def size_bytes(self) -> int:
        """Logical size of every kept version (package rule 7)."""
        return self._size

    @property
    def key_count(self) -> int:
        """Number of live keys at the current revision."""
        return self._live

    @property
    def version_count(self) -> int:
        """Number of kept versions, tombstones included."""
        return self._versions

    @property
    def compacting(self) -> bool:
        """Whether a physical compaction pass is unfinished (:meth:`compact_step`)."""
        return bool(self._pending_compaction) or self._superseded_head < self._compact_cut

    def _write_put(self, key: bytes, value: bytes, lease: int, revision: int) -> _Version | None:
        """Append a put at ``revision``; return the previous version if it was live."""
        entries = self._entries
        entry = entries.get(key)
        prev: _Version | None
        if entry is None:
            entries[key] = (revision, revision, 1, lease, value)
            self._index.add(key)
            self._live += 1
            prev = None
        else:
            last = entry[-1] if isinstance(entry, list) else entry
            if last[2]:
                v = (revision, last[1], last[2] + 1, lease, value)
                prev = last
            else:
                v = (revision, revision, 1, lease, value)
                self._live += 1
                prev = None
            if isinstance(entry, list):
                entry.append(v)
            else:
                entries[key] = [entry, v]
            self._superseded_keys.append(key)
            self._superseded_revs.append(revision)
        self._size += len(key) + len(value) + VERSION_OVERHEAD_BYTES
        self._versions += 1
        return prev

    def _write_tombstone(self, key: bytes, revision: int) -> None:
        """Append a tombstone at ``revision`` to a key whose newest version is live."""
        tomb: _Version = (revision, 0, 0, 0, b"")
        entry = self._entries[key]
        if isinstance(entry, list):
            entry.append(tomb)
        else:
            self._entries[key] = [entry, tomb]
        self._superseded_keys.append(key)
        self._superseded_revs.append(revision)
        self._live -= 1
        self._size += len(key) + VERSION_OVERHEAD_BYTES
        self._versions += 1
