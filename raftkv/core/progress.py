"""What a leader knows about each follower's log (etcd's ``tracker``).

Rule: :class:`Progress` owns every transition of the replication state of one
follower; the leader asks it what to send and tells it what was acknowledged.

States:

* PROBE -- the leader does not know where the follower's log matches; it sends
  one AppendEntries at a time and waits for the answer (or a heartbeat reply).
* REPLICATE -- the follower is known to match up to ``match``; the leader sends
  optimistically (``next`` runs ahead of ``match``), bounded by the inflight
  window (pipelining, dissertation §10.2.1).
* SNAPSHOT -- the entries the follower needs are compacted away; the leader
  sends its snapshot instead, in chunks (``pending_snapshot``, ``snap_sent``,
  ``snap_acked``, a bounded window of chunks in flight, §7), and no
  AppendEntries until the follower reports the snapshot installed, which moves
  it to PROBE. A heartbeat reply while in this state resends from the last
  acknowledged chunk.
"""

from __future__ import annotations

import enum
from collections import deque

from raftkv.core.types import Index, Snapshot


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


# The states as module constants: in CPython 3.11 reading an attribute of an
# Enum class costs several times a global lookup, and these are read for every
# AppendEntries sent or acknowledged.
_PROBE = ProgressState.PROBE
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT


class Inflights:
    """A bounded FIFO of the last index of each AppendEntries not yet acknowledged."""

    __slots__ = ("capacity", "_queue")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: deque[Index] = deque()

    def add(self, last_index: Index) -> None:
        self._queue.append(last_index)

    def free_le(self, index: Index) -> None:
        """Forget every message whose last index is at or below ``index``."""
        q = self._queue
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._queue:
            self._queue.popleft()

    def full(self) -> bool:
        return len(self._queue) >= self.capacity

    def count(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self._queue.clear()


class Progress:
    """Replication progress of one follower, as seen by the leader."""

    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "recent_active",
        "inflights",
        "pending_snapshot",
        "snap_sent",
        "snap_acked",
        "snap_done_sent",
    )

    def __init__(
        self, next_index: Index, max_inflight: int, *, recent_active: bool = False
    ) -> None:
        # Invariant: 0 <= match < next.
        self.match: Index = 0
        self.next: Index = next_index
        self.state = _PROBE
        # Invariant: probe_sent implies state is PROBE; it pauses sending until
        # a reply (or a heartbeat reply) arrives.
        self.probe_sent = False
        # Set on any message from the follower; cleared every election timeout
        # by CheckQuorum (dissertation §9.6). A leader starts out counting
        # every member as active.
        self.recent_active = recent_active
        self.inflights = Inflights(max_inflight)
        # SNAPSHOT state: the snapshot being sent and how far it got.
        # Invariant: snap_acked <= snap_sent <= len(pending_snapshot.data).
        self.pending_snapshot: Snapshot | None = None
        self.snap_sent = 0
        self.snap_acked = 0
        self.snap_done_sent = False

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"inflight={self.inflights.count()})"
        )

    def become_probe(self) -> None:
        self.state = _PROBE
        self.probe_sent = False
        self.next = self.match + 1
        self.inflights.reset()
        self.pending_snapshot = None

    def become_snapshot(self, snapshot: Snapshot) -> None:
        """Send ``snapshot`` instead of entries (the follower is behind our first index)."""
        self.state = _SNAPSHOT
        self.probe_sent = False
        self.inflights.reset()
        self.pending_snapshot = snapshot
        self.snap_sent = 0
        self.snap_acked = 0
        self.snap_done_sent = False

    def become_replicate(self) -> None:
        self.state = _REPLICATE
        self.probe_sent = False
        self.next = self.match + 1
        self.inflights.reset()
        self.pending_snapshot = None

    def become_own(self, durable: Index, last: Index) -> None:
        """This is a new leader's own progress: it matches what is ``durable``
        (only that counts toward commitment) and has appended up to ``last``."""
        self.maybe_update(durable)
        self.become_replicate()
        self.next = last + 1

    def own_appended(self, last: Index) -> None:
        """The leader appended to its own log up to ``last`` (not yet durable)."""
        self.next = last + 1

    # -- what the follower said ----------------------------------------------

    def mark_recent_active(self) -> None:
        """The follower answered (CheckQuorum counts it as active)."""
        self.recent_active = True

    def take_recent_active(self) -> bool:
        """Whether the follower answered since the last call (CheckQuorum's
        check, once per election timeout); clears the mark."""
        active = self.recent_active
        self.recent_active = False
        return active

    def heartbeat_acked(self) -> None:
        """The follower answered a heartbeat: it is alive, so a probe may go out
        again."""
        self.recent_active = True
        self.probe_sent = False
        if self.state is _REPLICATE and self.inflights.full():
            # Appends in a full window may all have been lost; free a slot so
            # the next append goes out and, if the follower lacks its
            # predecessor, its rejection drops us back to probing (§5.3: the
            # leader retries indefinitely).
            self.inflights.free_first_one()

    def append_acked(self, index: Index) -> bool:
        """The follower accepted an AppendEntries up to ``index``; False if that
        is old news (nothing changed). A first acceptance ends probing."""
        if not self.maybe_update(index) and not (self.state is _PROBE and self.match == index):
            # Old news -- unless it answers a probe at the match we already knew
            # (the empty append after a snapshot of our whole log): that ends
            # the probe too, or replication would wait for a heartbeat reply.
            return False
        if self.state is _PROBE:
            self.become_replicate()
        elif self.state is _REPLICATE:
            self.inflights.free_le(index)
        return True

    def append_rejected(self, rejected: Index, match_hint: Index) -> bool:
        """The follower rejected the append after ``rejected``; False if the
        rejection is stale. Otherwise ``next`` steps back (see
        :meth:`maybe_decr_to`) and a replicating follower is probed again."""
        if not self.maybe_decr_to(rejected, match_hint):
            return False
        if self.state is _REPLICATE:
            self.become_probe()
        return True

    def snapshot_installed(self, index: Index) -> None:
        """The follower installed (or already held) a snapshot up to ``index``:
        replication resumes by probing after it."""
        self.maybe_update(index)
        if self.state is _SNAPSHOT:
            self.become_probe()

    # -- SNAPSHOT: chunked transfer (flow control by acknowledged offset) ------

    def next_snapshot_chunk(self, chunk: int, window: int) -> tuple[int, int, bool] | None:
        """The next chunk of the pending snapshot to send, as ``(offset, end,
        done)``, recorded as sent; None when the window is full or everything
        is out. An empty snapshot is one empty chunk."""
        snapshot = self.pending_snapshot
        if snapshot is None or self.snap_sent - self.snap_acked >= window:
            return None
        total = len(snapshot.data)
        offset = self.snap_sent
        if offset >= total and (total > 0 or self.snap_done_sent):
            return None
        end = min(offset + chunk, total)
        done = end >= total
        self.snap_sent = end
        if done:
            self.snap_done_sent = True
        return offset, end, done

    def rewind_snapshot(self, chunk: int) -> None:
        """Send again from the last acknowledged chunk (chunks were lost; §7)."""
        snapshot = self.pending_snapshot
        if snapshot is None:
            return
        total = len(snapshot.data)
        last_chunk = ((total - 1) // chunk) * chunk if total else 0
        self.snap_sent = min(self.snap_acked, last_chunk)
        self.snap_done_sent = False

    def snapshot_acked(self, offset: int, *, reject: bool) -> None:
        """The follower holds ``offset`` bytes; with ``reject`` it asks to go on from there."""
        if reject:
            self.snap_acked = offset
            self.snap_sent = offset
            self.snap_done_sent = False
        elif offset > self.snap_acked:
            self.snap_acked = offset

    def is_paused(self) -> bool:
        """Whether the leader should hold back AppendEntries to this follower."""
        state = self.state
        if state is _PROBE:
            return self.probe_sent
        if state is _REPLICATE:
            inflights = self.inflights
            return len(inflights._queue) >= inflights.capacity  # Inflights.full(), inlined
        return True

    def sent_entries(self, last_index: Index | None) -> None:
        """Record an AppendEntries whose last entry is ``last_index`` (None: no entries)."""
        if self.state is _REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state is _PROBE:
            self.probe_sent = True

    def maybe_update(self, index: Index) -> bool:
        """Record that the follower matches up to ``index``; False if that is old news."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: Index, match_hint: Index) -> bool:
        """Handle a rejection of the append after ``rejected``; False if it is stale.

        ``match_hint`` is the leader's best guess, from the follower's hint, of
        the last index where the logs may match (fast backtracking, paper §5.3).
        """
        if self.state is _REPLICATE:
            # Rejections of appends below what we know to match are stale.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # In PROBE only the answer to the last probe counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
