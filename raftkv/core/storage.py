"""The read side of stable storage, as the core sees it.

Rule: the core only ever *reads* from :class:`Storage`. The driver writes to it
(entries and hard state from each :class:`~raftkv.core.Ready`) before calling
``advance()``. :class:`MemoryStorage` is the reference implementation, used by
tests and by the simulator's disk model.
"""

from __future__ import annotations

from typing import Protocol

from raftkv.core.errors import LogCompacted, LogUnavailable, bug
from raftkv.core.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMetadata,
    Term,
)


class Storage(Protocol):
    """Stable storage: every entry here survived an fsync (or will, before advance)."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The hard state and membership to start from."""
        ...

    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> list[Entry]:
        """Entries with indexes in ``[lo, hi)``, at least one, at most ``max_size`` bytes.

        Raises:
            LogCompacted: ``lo`` is at or below the compaction point.
            LogUnavailable: ``hi`` is beyond ``last_index() + 1``.
        """
        ...

    def term(self, index: Index) -> Term:
        """The term of the entry at ``index`` (``first_index() - 1`` is allowed).

        Raises:
            LogCompacted: ``index`` is below ``first_index() - 1``.
            LogUnavailable: ``index`` is beyond ``last_index()``.
        """
        ...

    def first_index(self) -> Index:
        """The index of the first entry still available (1 when nothing was compacted)."""
        ...

    def last_index(self) -> Index:
        """The index of the last stable entry (``first_index() - 1`` when empty)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (an empty ``Snapshot()`` if there is none)."""
        ...


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_size`` bytes, never empty."""
    if max_size is None or not entries:
        return entries
    size = entries[0].size()
    for i in range(1, len(entries)):
        size += entries[i].size()
        if size > max_size:
            return entries[:i]
    return entries


class MemoryStorage:
    """An in-memory :class:`Storage` that the driver appends to."""

    __slots__ = ("_hard_state", "_conf_state", "_entries", "_snapshot")

    def __init__(self, voters: tuple[NodeId, ...] = ()) -> None:
        self._hard_state = HardState()
        self._conf_state = ConfState(voters=tuple(voters))
        self._snapshot = Snapshot()
        # _entries[0] is a dummy marking the compaction point: its index and term
        # are those of the last compacted entry (0/0 when nothing was compacted).
        # Invariant: _entries[i].index == _entries[0].index + i.
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    # -- Storage -----------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf_state

    def entries(self, lo: Index, hi: Index, max_size: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise LogCompacted(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"index {hi - 1} is beyond last index {self.last_index()}")
        return limit_size(self._entries[lo - offset : hi - offset], max_size)

    def term(self, index: Index) -> Term:
        offset = self._entries[0].index
        if index < offset:
            raise LogCompacted(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._entries):
            raise LogUnavailable(f"index {index} is beyond last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> Index:
        return self._entries[0].index + 1

    def last_index(self) -> Index:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- driver side -------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        """Record ``hard_state`` (the driver's persist step)."""
        self._hard_state = hard_state

    def set_conf_state(self, conf_state: ConfState) -> None:
        self._conf_state = conf_state

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``entries``, replacing any existing suffix they overlap."""
        if not entries:
            return
        first = entries[0].index
        offset = self._entries[0].index
        if first <= offset:
            # Entries at or below the compaction point are already committed
            # and identical; skip them.
            entries = [e for e in entries if e.index > offset]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            bug(f"append leaves a gap: last index {self.last_index()}, appending {first}")
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def create_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a state machine image taken at applied index ``index``.

        Raises:
            LogCompacted: ``index`` is not newer than the current snapshot.
            LogUnavailable: ``index`` is beyond the last entry.
        """
        if index <= self._snapshot.metadata.index:
            raise LogCompacted(f"snapshot at {index} is not newer than the current one")
        if index > self.last_index():
            raise LogUnavailable(f"snapshot index {index} beyond last index {self.last_index()}")
        term = self.term(index)
        self._snapshot = Snapshot(
            metadata=SnapshotMetadata(index=index, term=term, conf_state=conf_state), data=data
        )
        self._conf_state = conf_state
        return self._snapshot

    def compact(self, index: Index) -> None:
        """Drop entries up to and including ``index`` (keeping its term as the dummy).

        Raises:
            LogCompacted: already compacted past ``index``.
            LogUnavailable: ``index`` is beyond the last entry.
        """
        offset = self._entries[0].index
        if index <= offset:
            raise LogCompacted(f"index {index} is already compacted")
        if index > self.last_index():
            raise LogUnavailable(f"compact index {index} beyond last index {self.last_index()}")
        i = index - offset
        dummy = Entry(term=self._entries[i].term, index=index)
        self._entries = [dummy, *self._entries[i + 1 :]]

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with ``snapshot`` (a snapshot sent by the leader).

        Raises:
            LogCompacted: the snapshot is older than the one already held.
        """
        md = snapshot.metadata
        if md.index <= self._snapshot.metadata.index:
            raise LogCompacted(f"snapshot at {md.index} is out of date")
        self._snapshot = snapshot
        self._conf_state = md.conf_state
        self._entries = [Entry(term=md.term, index=md.index)]

    def truncate_after(self, index: Index) -> None:
        """Drop every entry above ``index`` (used by the simulator's crash model)."""
        offset = self._entries[0].index
        del self._entries[max(index - offset + 1, 1) :]

    def all_entries(self) -> list[Entry]:
        """Every stored entry after the compaction point (for checkers and tests)."""
        return self._entries[1:]
