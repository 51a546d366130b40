"""The watch checker: what watchers received against the committed history.

Rule: a leaf, shared by the simulator (:mod:`raftkv.sim.watches`) and the fault
test of real nodes (:mod:`raftkv.jepsen.feeds`). It knows nothing of how the
history was recorded or how the watchers talked to the nodes:

* :class:`RevisionLog` holds every committed revision -- its events and the
  command that made it. The simulator records it as nodes apply entries; the
  fault test rebuilds it by replaying the committed log.
* :class:`WatchRecord` is what one watcher received: its range, its start
  revision, every event in the order it arrived, the ranges it was told it
  missed (a compacted cancel), and each progress notification with the
  number of events it had then.

:func:`check_watches` requires, for every watcher: every event of its range
from its start revision, minus the declared gaps, exactly once, in revision
order, nothing else (an event never committed, a duplicate, a gap or a
reordering all fail); every progress revision at least the one before it and
never ahead of an event the watcher had not received yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raftkv.replica.kv import Command
from raftkv.replica.mvcc import Event

__all__ = ["RevisionLog", "WatchRecord", "WatchCheck", "check_watches"]


class RevisionLog:
    """Every revision the nodes applied: its events and the command that made it.

    Recorded by the cluster when a node first applies the revision (every node
    applies the same ones: state machine safety is checked elsewhere).
    """

    def __init__(self) -> None:
        self.events: dict[int, tuple[Event, ...]] = {}
        self.commands: dict[int, Command | None] = {}
        self.compact_revisions: list[int] = []

    def record(self, revision: int, events: tuple[Event, ...], command: Command | None) -> None:
        if revision not in self.events:
            self.events[revision] = events
            self.commands[revision] = command

    def missing(self) -> list[int]:
        """Revisions below the newest that nobody recorded (should be none)."""
        if not self.events:
            return []
        return [r for r in range(2, max(self.events) + 1) if r not in self.events]


@dataclass(slots=True)
class WatchRecord:
    """What one watcher saw, for the checker."""

    name: str
    key: bytes
    range_end: bytes
    start: int
    prev_kv: bool
    got: list[Event] = field(default_factory=list)
    missed: list[tuple[int, int]] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)
    """(revision, how many events it had received then)."""

    def matches(self, key: bytes) -> bool:
        end = self.range_end
        if not end:
            return key == self.key
        if end == b"\0":
            return key >= self.key
        return self.key <= key < end


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchCheck:
    ok: bool
    message: str
    events: int
    progress: int


def check_watches(log: RevisionLog, records: Sequence[WatchRecord]) -> WatchCheck:
    """Check every watcher against the applied revisions (see the module rules)."""
    missing = log.missing()
    if missing:
        return WatchCheck(
            ok=False,
            message=f"revisions never applied anywhere: {missing[:10]}",
            events=0,
            progress=0,
        )
    revisions = sorted(log.events)
    checked = progressed = 0
    for rec in records:
        if not rec.start:
            continue  # never got a first response
        expected: list[Event] = []
        upto: list[int] = []  # revision of each expected event
        for rev in revisions:
            if rev < rec.start or any(lo <= rev <= hi for lo, hi in rec.missed):
                continue
            for ev in log.events[rev]:
                if rec.matches(ev.kv.key):
                    expected.append(ev)
                    upto.append(rev)
        got = rec.got
        for i, ev in enumerate(got):
            where = f"watcher {rec.name} ({rec.key!r}..{rec.range_end!r} from {rec.start})"
            if i >= len(expected):
                return WatchCheck(
                    ok=False,
                    message=f"{where}: event {i} at revision {ev.kv.mod_revision} "
                    f"({ev.kind} {ev.kv.key!r}) is not in the history (extra or duplicate)",
                    events=checked,
                    progress=progressed,
                )
            want = expected[i]
            if ev.kind != want.kind or ev.kv != want.kv:
                return WatchCheck(
                    ok=False,
                    message=f"{where}: event {i} is {ev.kind} {ev.kv.key!r} at revision "
                    f"{ev.kv.mod_revision}, the history has {want.kind} {want.kv.key!r} at "
                    f"revision {want.kv.mod_revision} (a gap, a duplicate or a reordering)",
                    events=checked,
                    progress=progressed,
                )
            if not rec.prev_kv and ev.prev_kv is not None:
                return WatchCheck(
                    ok=False,
                    message=f"{where}: prev_kv it did not ask for",
                    events=checked,
                    progress=progressed,
                )
            if rec.prev_kv and ev.prev_kv is not None and ev.prev_kv != want.prev_kv:
                return WatchCheck(
                    ok=False,
                    message=f"{where}: event {i} has a wrong prev_kv",
                    events=checked,
                    progress=progressed,
                )
            checked += 1
        last = 0
        for revision, had in rec.progress:
            where = f"watcher {rec.name} ({rec.key!r}..{rec.range_end!r} from {rec.start})"
            if revision < last:
                return WatchCheck(
                    ok=False,
                    message=f"{where}: progress went back from {last} to {revision}",
                    events=checked,
                    progress=progressed,
                )
            last = revision
            due = sum(1 for r in upto if r <= revision)
            if had < due:
                return WatchCheck(
                    ok=False,
                    message=f"{where}: progress at revision {revision} with {had} events "
                    f"received, but the history has {due} up to it (progress overtook events)",
                    events=checked,
                    progress=progressed,
                )
            progressed += 1
    return WatchCheck(ok=True, message="", events=checked, progress=progressed)
