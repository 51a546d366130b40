"""A simulated disk for one node: buffered writes, slow fsync, crash loses the buffer.

Rule: a write is visible to the node at once (it lands in ``storage``, the
:class:`~raftkv.core.MemoryStorage` the core reads) but is *durable* only once an
fsync that began after it completes. The disk keeps a separate copy of the
durable state -- hard state, snapshot, entries and their chain hashes --
because an unsynced write may have replaced a durable suffix;
:meth:`SimDisk.crash` rebuilds ``storage`` from that copy, so after a crash the
node sees exactly what was durable, no more and no less.

Snapshots: a snapshot the node takes of its own state machine
(:meth:`SimDisk.take_snapshot`) is written as a real node writes one -- to a
temporary file, fsynced, renamed -- so it is durable at once, and it covers
only entries already durable. A snapshot received from the leader is a write
like any other: durable only after the next fsync. Chain hashes are kept for
the whole log, compacted prefix included, so checkers can compare logs
whatever was compacted.
"""

from __future__ import annotations

from collections import deque

from raftkv.core.storage import MemoryStorage
from raftkv.core.types import ConfState, Entry, HardState, Index, NodeId, Snapshot
from raftkv.sim.loghash import extend_hashes


class SimDisk:
    """The durable and visible state of one node's storage."""

    __slots__ = (
        "_voters",
        "storage",
        "_durable_hard_state",
        "_durable_snapshot",
        "_durable_entries",
        "_durable_hashes",
        "_unsynced",
        "_write_seq",
        "_epoch",
        "writes",
        "fsyncs",
        "crashes",
        "lost_writes",
        "overwrote_durable",
    )

    def __init__(self, voters: tuple[NodeId, ...]) -> None:
        self._voters = tuple(voters)
        self.storage = MemoryStorage(voters=self._voters)
        """What the node reads: durable state plus unsynced writes. Replaced on crash."""
        self._durable_hard_state = HardState()
        self._durable_snapshot = Snapshot()
        # Invariant: _durable_entries[i].index == base + 1 + i, where base is the
        # durable snapshot's index (0 without one).
        self._durable_entries: list[Entry] = []
        # Invariant: len(_durable_hashes) == base + len(_durable_entries) + 1.
        self._durable_hashes: list[int] = [0]
        # (seq, hard state or None, entries, received snapshot and its chain
        # hashes or None), oldest first; all newer than the durable state.
        self._unsynced: deque[
            tuple[int, HardState | None, tuple[Entry, ...], tuple[Snapshot, list[int]] | None]
        ] = deque()
        self._write_seq = 0
        # Set when an fsync made an overwrite of durable entries durable; the
        # cluster clears it after re-checking durability.
        self.overwrote_durable = False
        self._epoch = 0
        self.writes = 0
        self.fsyncs = 0
        self.crashes = 0
        self.lost_writes = 0

    # -- writes --------------------------------------------------------------

    def write(self, hard_state: HardState | None, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Apply a Ready's writes to the visible storage; they are not yet durable."""
        if not entries and hard_state is None:
            return
        ents = tuple(entries)
        if ents:
            self.storage.append(ents)
        if hard_state is not None:
            self.storage.set_hard_state(hard_state)
        self._write_seq += 1
        self.writes += 1
        self._unsynced.append((self._write_seq, hard_state, ents, None))

    def write_snapshot(self, snapshot: Snapshot, hashes: list[int]) -> None:
        """Install a snapshot received from the leader; durable after the next fsync.

        ``hashes`` are the chain hashes of the log prefix the snapshot covers
        (``hashes[snapshot.metadata.index]`` is the hash at its index).
        """
        self.storage.apply_snapshot(snapshot)
        self._write_seq += 1
        self.writes += 1
        self._unsynced.append((self._write_seq, None, (), (snapshot, list(hashes))))

    def take_snapshot(self, index: Index, conf_state: ConfState, data: bytes) -> Snapshot:
        """Snapshot the state machine at applied ``index`` and compact the log up to it.

        Durable at once (written aside, fsynced, renamed). ``index`` must be
        durable already; the durable log and the visible one are compacted alike.
        """
        if index > self.durable_last_index:
            raise ValueError(f"snapshot at {index} beyond durable index {self.durable_last_index}")
        snapshot = self.storage.create_snapshot(index, conf_state, data)
        self.storage.compact(index)
        base = self._durable_snapshot.metadata.index
        self._durable_snapshot = snapshot
        del self._durable_entries[: index - base]
        self.fsyncs += 1
        return snapshot

    @property
    def has_unsynced(self) -> bool:
        return bool(self._unsynced)

    @property
    def write_seq(self) -> int:
        """The number of the last write (what an fsync begun now covers)."""
        return self._write_seq

    def begin_fsync(self) -> tuple[int, int]:
        """Start an fsync covering every write so far; pass the token to :meth:`complete_fsync`."""
        return (self._epoch, self._write_seq)

    def complete_fsync(self, token: tuple[int, int]) -> bool:
        """Make the writes covered by ``token`` durable.

        Returns ``False`` (and does nothing) if the disk crashed since the
        fsync began: that fsync never finished.
        """
        epoch, upto = token
        if epoch != self._epoch:
            return False
        self.fsyncs += 1
        unsynced = self._unsynced
        while unsynced and unsynced[0][0] <= upto:
            _, hs, ents, snap = unsynced.popleft()
            if snap is not None:
                snapshot, hashes = snap
                if snapshot.metadata.index > self._durable_snapshot.metadata.index:
                    self._durable_snapshot = snapshot
                    self._durable_entries = []
                    self._durable_hashes = hashes[: snapshot.metadata.index + 1]
            if hs is not None:
                self._durable_hard_state = hs
            if ents:
                base = self._durable_snapshot.metadata.index
                if ents[0].index <= base:
                    ents = tuple(e for e in ents if e.index > base)
                    if not ents:
                        continue
                pos = ents[0].index - base - 1
                if pos < len(self._durable_entries):
                    self.overwrote_durable = True
                del self._durable_entries[pos:]
                self._durable_entries.extend(ents)
                extend_hashes(self._durable_hashes, ents)
        return True

    def sync_now(self) -> None:
        """Make every write so far durable at once (tests and bootstrap)."""
        self.complete_fsync(self.begin_fsync())

    # -- crash ---------------------------------------------------------------

    def crash(self) -> None:
        """Lose every unsynced write and rebuild ``storage`` from the durable copy."""
        self.crashes += 1
        self.lost_writes += len(self._unsynced)
        self._unsynced.clear()
        self._epoch += 1
        storage = MemoryStorage(voters=self._voters)
        if not self._durable_snapshot.is_empty():
            storage.apply_snapshot(self._durable_snapshot)
        if self._durable_entries:
            storage.append(list(self._durable_entries))
        storage.set_hard_state(self._durable_hard_state)
        self.storage = storage

    # -- durable view (for checkers) -----------------------------------------

    @property
    def durable_hard_state(self) -> HardState:
        return self._durable_hard_state

    @property
    def durable_snapshot(self) -> Snapshot:
        return self._durable_snapshot

    @property
    def durable_last_index(self) -> Index:
        return self._durable_snapshot.metadata.index + len(self._durable_entries)

    def durable_entries(self) -> list[Entry]:
        """A copy of the durable entries after the durable snapshot, oldest first."""
        return list(self._durable_entries)

    def durable_hash(self, index: Index) -> int | None:
        """The chain hash of the durable log at ``index``, or ``None`` if it is shorter."""
        if index < len(self._durable_hashes):
            return self._durable_hashes[index]
        return None

    def durable_hashes(self) -> list[int]:
        """A copy of the durable chain hashes (``[0]`` is the empty prefix)."""
        return list(self._durable_hashes)
