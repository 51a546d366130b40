"""The Raft log as the core sees it: stable storage followed by unstable entries.

Rule: every read of the log goes through :class:`RaftLog`; every change to it is
an append at the end (possibly replacing a suffix that is not committed).
"""

from __future__ import annotations

from raftkv.core.errors import LogCompacted, LogUnavailable, bug
from raftkv.core.storage import Storage, limit_size
from raftkv.core.types import Entry, Index, Snapshot, Term
from raftkv.core.unstable import Unstable


class RaftLog:
    __slots__ = ("storage", "unstable", "committed", "applied", "applying")

    def __init__(self, storage: Storage, applied: Index = 0) -> None:
        self.storage = storage
        first = storage.first_index()
        self.unstable = Unstable(storage.last_index() + 1)
        # Invariant: applied <= committed <= last_index().
        self.committed: Index = first - 1
        self.applied: Index = max(applied, first - 1)
        # The last committed index handed to the driver for applying; above
        # ``applied`` while a Ready carrying committed entries is in flight.
        self.applying: Index = self.applied

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, last={self.last_index()})"
        )

    # -- reading -----------------------------------------------------------

    def first_index(self) -> Index:
        # Unstable.first_index() inlined: this is on the replication hot path.
        snapshot = self.unstable.snapshot
        if snapshot is not None:
            return snapshot.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> Index:
        # Unstable.last_index() inlined: this is on the replication hot path.
        unstable = self.unstable
        if unstable.entries:
            return unstable.offset + len(unstable.entries) - 1
        if unstable.snapshot is not None:
            return unstable.snapshot.metadata.index
        return self.storage.last_index()

    def snapshot(self) -> Snapshot:
        """The newest snapshot: a pending one from the leader, else storage's."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log with a leader's snapshot; everything in it is committed (§7)."""
        self.committed = snapshot.metadata.index
        self.unstable.restore(snapshot)

    def stable_last_index(self) -> Index:
        """The last index known to be durable in storage and still in the log."""
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot.metadata.index - 1
        return min(self.storage.last_index(), self.unstable.offset - 1)

    def term(self, index: Index) -> Term:
        """The term of the entry at ``index``.

        Raises:
            LogCompacted: ``index`` is below ``first_index() - 1``.
            LogUnavailable: ``index`` is above ``last_index()``.
        """
        # Unstable.term() inlined, and the order of checks arranged so that
        # both common cases (unstable entry, stable entry) cost few lookups.
        unstable = self.unstable
        i = index - unstable.offset
        if i >= 0:
            if i < len(unstable.entries):
                return unstable.entries[i].term
            snapshot = unstable.snapshot
            if snapshot is not None and index == snapshot.metadata.index:
                return snapshot.metadata.term
            raise LogUnavailable(f"index {index} is beyond last index {self.last_index()}")
        snapshot = unstable.snapshot
        if snapshot is not None:
            if index == snapshot.metadata.index:
                return snapshot.metadata.term
            raise LogCompacted(f"index {index} is covered by a pending snapshot")
        return self.storage.term(index)

    def term_or_none(self, index: Index) -> Term | None:
        """:meth:`term`, or ``None`` where it would raise (without raising)."""
        unstable = self.unstable
        i = index - unstable.offset
        snapshot = unstable.snapshot
        if i >= 0:
            if i < len(unstable.entries):
                return unstable.entries[i].term
            if snapshot is not None and index == snapshot.metadata.index:
                return snapshot.metadata.term
            return None
        if snapshot is not None:
            return snapshot.metadata.term if index == snapshot.metadata.index else None
        try:
            return self.storage.term(index)
        except (LogCompacted, LogUnavailable):
            return None

    def last_term(self) -> Term:
        return self.term(self.last_index())

    def match_term(self, index: Index, term: Term) -> bool:
        return self.term_or_none(index) == term

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date
        as this one (paper §5.4.1)."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def slice(self, lo: Index, hi: Index, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)`` limited to ``max_size`` bytes (at least one)."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise LogCompacted(f"index {lo} is compacted")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"index {hi - 1} is beyond last index {self.last_index()}")
        off = self.unstable.offset
        if hi <= off:
            return self.storage.entries(lo, hi, max_size)
        if lo >= off:
            return limit_size(self.unstable.slice(lo, hi), max_size)
        stable = self.storage.entries(lo, off, max_size)
        if len(stable) < off - lo:
            return stable
        return limit_size(stable + self.unstable.slice(off, hi), max_size)

    def entries_from(self, lo: Index, max_size: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_size)

    def find_conflict(self, entries: tuple[Entry, ...] | list[Entry]) -> Index:
        """The index of the first entry that is new or disagrees with the log (0: none)."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: Index, term: Term) -> tuple[Index, Term]:
        """The largest index at or below ``index`` whose term is at most ``term``.

        Used on both sides of fast backtracking: every entry in between has a
        term greater than ``term`` and so cannot match (paper §5.3).
        """
        index = min(index, self.last_index())
        while True:
            t = self.term_or_none(index)
            if t is None:
                # Compacted: the entry before the first index is committed and matches.
                return index, 0
            if t <= term:
                return index, t
            index -= 1

    # -- changing ----------------------------------------------------------

    def append(self, entries: list[Entry]) -> Index:
        """Append ``entries`` (replacing any suffix they overlap); returns the last index."""
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        if after < self.committed:
            bug(f"append after {after} would overwrite committed index {self.committed}")
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def maybe_append(
        self,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: tuple[Entry, ...],
    ) -> Index | None:
        """The follower side of AppendEntries (paper Figure 2, receiver steps 2-5).

        Returns the last index the leader's message proves to match, or None if
        the consistency check fails.
        """
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                bug(f"entry {conflict} conflicts with committed index {self.committed}")
            self.append(list(entries[conflict - prev_index - 1 :]))
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: Index) -> None:
        if index > self.committed:
            if index > self.last_index():
                bug(f"commit index {index} is beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: Index, term: Term) -> bool:
        """Commit up to ``index`` if the entry there is from ``term`` (paper §5.4.2)."""
        if index > self.committed and self.term_or_none(index) == term:
            self.commit_to(index)
            return True
        return False

    def stable_to(self, index: Index, term: Term) -> None:
        self.unstable.stable_to(index, term)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_next_committed(self) -> bool:
        return self.committed > self.applied

    def next_committed_entries(self, max_size: int | None) -> list[Entry]:
        """Committed entries not yet handed out for applying (after any pending snapshot)."""
        lo = max(self.applied + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1, max_size)

    def applied_to(self, index: Index) -> None:
        if index > self.committed or index < self.applied:
            bug(f"applied index {index} out of range [{self.applied}, {self.committed}]")
        self.applied = index

    def applied_snapshot(self, index: Index) -> None:
        """The driver installed the snapshot at ``index`` and restored the state machine."""
        self.unstable.stable_snap_to(index)
        if index > self.applied:
            self.applied = index
