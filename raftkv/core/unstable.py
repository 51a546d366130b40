"""Entries accepted by the core but not yet persisted by the driver.

Rule: the unstable part always sits at the end of the log; each entry is handed
to the driver in one Ready (``in_progress`` marks how far), and forgotten
(``stable_to``) once the driver says it is durable. An entry replaced before
that is handed out again, as the replacement.
"""

from __future__ import annotations

from raftkv.core.errors import bug
from raftkv.core.types import Entry, Index, Snapshot, Term


class Unstable:
    __slots__ = ("offset", "entries", "snapshot", "in_progress")

    def __init__(self, offset: Index) -> None:
        # Invariant: entries[i].index == offset + i.
        self.offset: Index = offset
        self.entries: list[Entry] = []
        # The last index handed to the driver in a Ready (being written, not
        # known durable). Invariant: offset - 1 <= in_progress <= last index.
        self.in_progress: Index = offset - 1
        # A snapshot from the leader not yet persisted by the driver.
        # Invariant: if set, offset == snapshot.metadata.index + 1.
        self.snapshot: Snapshot | None = None

    def first_index(self) -> Index | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def last_index(self) -> Index | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def term(self, index: Index) -> Term | None:
        """The term at ``index`` if the unstable part holds it."""
        i = index - self.offset
        if 0 <= i < len(self.entries):
            return self.entries[i].term
        if self.snapshot is not None and index == self.snapshot.metadata.index:
            return self.snapshot.metadata.term
        return None

    def unsent(self) -> list[Entry]:
        """The entries not handed to the driver yet."""
        return self.entries[self.in_progress + 1 - self.offset :]

    def has_unsent(self) -> bool:
        return self.offset + len(self.entries) - 1 > self.in_progress

    def restore(self, snapshot: Snapshot) -> None:
        """Replace everything with a snapshot from the leader."""
        self.offset = snapshot.metadata.index + 1
        self.entries = []
        self.in_progress = snapshot.metadata.index
        self.snapshot = snapshot

    def stable_snap_to(self, index: Index) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def stable_to(self, index: Index, term: Term) -> None:
        """Forget entries up to ``index`` if the entry there still has ``term``.

        A mismatch means the persisted entries were replaced while the driver
        wrote them; the replacements are still unstable and will be written again.
        """
        t = self.term(index)
        if t is None or t != term:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1
        if self.in_progress < index:
            self.in_progress = index

    def truncate_and_append(self, entries: list[Entry]) -> None:
        """Append ``entries``, dropping any unstable entries they replace."""
        first = entries[0].index
        end = self.offset + len(self.entries)
        if first <= self.in_progress:
            self.in_progress = first - 1  # the replacements go out in the next Ready
        if first == end:
            self.entries.extend(entries)
        elif first <= self.offset:
            # Replaces everything unstable (and possibly part of stable storage:
            # the driver's append overwrites that suffix).
            self.offset = first
            self.entries = list(entries)
        else:
            if first > end:
                bug(f"unstable append leaves a gap: end {end}, appending {first}")
            del self.entries[first - self.offset :]
            self.entries.extend(entries)

    def slice(self, lo: Index, hi: Index) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]
