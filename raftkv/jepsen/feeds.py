"""Checking watches and leases on real nodes against the committed log.

Rule: the committed history is rebuilt from the replicated log, never asked of
the nodes. :func:`~raftkv.jepsen.analysis.replay` reads every node's log from
its data dir after the nodes stopped, checks that they agree, and replays the
committed entries through a fresh :class:`~raftkv.replica.kv.KVStateMachine`
(the code the servers run); each entry that makes a revision records its
events and its command (:attr:`~raftkv.jepsen.analysis.Replay.history`, the
simulator's :class:`~raftkv.history.watchcheck.RevisionLog`). Why this and not a
final read of the store's history over HTTP (every key's versions by
``?revision=R``, or a watch from revision 1 at the end):

* it is complete whatever the clients did: with ``--txn`` they compact, and a
  read or a watch below the compaction point is refused, while the log keeps
  every entry (the nodes never snapshot during the test);
* it is independent of the code under test: a final watch would be served by
  the same watch hub whose streams are being checked, and a bug in it could
  make both sides agree;
* it is the linearizable truth by construction: the committed log is what
  every replica applies, and the log-agreement check has already compared it
  across nodes.

It is cross-checked against the clients: every write a client saw
acknowledged must appear in it exactly once -- one put event of that key with
that (unique) value, at the revision the answer named -- (:func:`check_acknowledged`).

Checks, each with the simulator's checker where one exists:

* **watch** -- :func:`~raftkv.history.watchcheck.check_watches` over every
  watcher's record: the events of its range from its start revision, minus the
  revisions a ``compacted`` cancel said were gone, exactly once, in revision
  order, nothing never committed; progress revisions never go back and never
  overtake an event. Plus liveness: every watcher caught up to the revision
  read when the clients stopped, and no watcher saw a malformed line.
* **lease** -- :func:`~raftkv.history.leasecheck.check_leases`: a leased key
  disappears only by a revoke (a client's or an expiry) of its lease, every
  key of the lease in that one revision; no lease is expired before the end of
  the TTL its last confirmed grant or keep-alive started, measured from when
  the client *sent* it, less :data:`CLOCK_ALLOWANCE_US`. The expiry's instant
  is the ``time_ms`` its ``LeaseRevoke(expired=True)`` entry carries: the
  deciding leader's wall clock when its lessor ticked. Plus the clients'
  acknowledgements: an acknowledged grant, leased put or revoke is executed in
  the log, and an acknowledged revoke's revision and deleted count are what
  the log's execution made. (Who decided an expiry, and the extension a new
  leader gives, are checked in the simulator, which sees every node's clock
  and role; the log does not say.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkv.history.leasecheck import LeaseCheck, LeaseLog, LeaseRecord, check_leases
from raftkv.history.linearizability import OK
from raftkv.history.watchcheck import RevisionLog, WatchCheck, WatchRecord, check_watches
from raftkv.jepsen.analysis import Replay
from raftkv.jepsen.leasing import LeaseOp
from raftkv.jepsen.workload import OpRecord
from raftkv.replica.kv import Txn, TxnPut, json_text

__all__ = [
    "CLOCK_ALLOWANCE_US",
    "AckedWrite",
    "FeedVerdict",
    "acknowledged_writes",
    "check_acknowledged",
    "check_watch_feeds",
    "check_lease_feeds",
]

CLOCK_ALLOWANCE_US = 5_000
"""How much earlier than a renewed TTL's end an expiry may be dated.

The client and the nodes read one kernel clock, so the only error is rounding:
the leader's lessor counts whole milliseconds of the monotonic clock (a
deadline up to 1 ms early), and the expiry's ``time_ms`` is the wall clock
truncated to a millisecond (up to 1 ms early). 2 ms covers both; 5 ms leaves
room for the wall clock being slewed while a TTL runs (at most 500 ppm, 1.5 ms
over a 3 s TTL). A clock *step* (an NTP jump) during a run is not covered."""


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A put a client saw acknowledged: ``value`` is the stored JSON text."""

    key: bytes
    value: bytes
    revision: int | None
    what: str


def acknowledged_writes(
    ops: Iterable[OpRecord], lease_ops: Iterable[LeaseOp] = ()
) -> list[AckedWrite]:
    """Every acknowledged put: ``ok`` puts, cas that succeeded, the puts of a
    transaction whose success branch ran, the lease clients' ``ok`` puts."""
    out: list[AckedWrite] = []
    for rec in ops:
        if rec.status != OK or not isinstance(rec.answer, dict):
            continue
        revision = rec.answer.get("revision")
        rev = revision if isinstance(revision, int) else None
        what = f"op {rec.op_id} {rec.kind} {rec.session}"
        if rec.kind == "put" or (rec.kind == "cas" and rec.output is True):
            out.append(AckedWrite(rec.key.encode(), json_text(rec.value), rev, what))
        elif (
            rec.kind == "txn"
            and isinstance(rec.command, Txn)
            and rec.answer.get("succeeded") is True
        ):
            for op in rec.command.success:
                if isinstance(op, TxnPut):
                    out.append(AckedWrite(op.key.encode(), json_text(op.value), rev, what))
    for lop in lease_ops:
        if lop.kind == "put" and lop.status == OK and lop.answer.get("status") == 200:
            revision = lop.answer.get("revision")
            out.append(
                AckedWrite(
                    lop.key.encode(),
                    json_text(lop.value),
                    revision if isinstance(revision, int) else None,
                    f"lease put {lop.session}",
                )
            )
    return out


def check_acknowledged(history: RevisionLog, writes: Sequence[AckedWrite]) -> list[str]:
    """Every acknowledged write is exactly one put event of the history, at
    the revision its answer named (module docstring); the problems found."""
    seen: dict[tuple[bytes, bytes], list[int]] = {}
    for revision, events in history.events.items():
        for ev in events:
            if ev.kind == "put":
                seen.setdefault((ev.kv.key, ev.kv.value), []).append(revision)
    problems: list[str] = []
    for w in writes:
        at = seen.get((w.key, w.value), [])
        if len(at) != 1:
            problems.append(
                f"{w.what}: {w.key!r}={w.value.decode()} acknowledged, but the committed "
                f"history has it at revisions {sorted(at)} (want exactly one)"
            )
        elif w.revision is not None and at[0] != w.revision:
            problems.append(
                f"{w.what}: answered revision {w.revision}, the committed history made "
                f"it at revision {at[0]}"
            )
    return problems


@dataclass(slots=True)
class FeedVerdict:
    """One checker's verdict (``ok`` is None when it did not run)."""

    ok: bool | None
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def check_watch_feeds(
    history: RevisionLog,
    records: Sequence[WatchRecord],
    *,
    acknowledged: Sequence[AckedWrite],
    target: int,
    lasts: Sequence[int] = (),
    errors: Sequence[str] = (),
) -> FeedVerdict:
    """The watch check (module docstring).

    Args:
        history: the committed history (``Replay.history``).
        records: every watcher's record.
        acknowledged: the writes clients saw acknowledged.
        target: the revision every watcher must have reached (0: no such check).
        lasts: per record, the revision up to which the watcher had everything.
        errors: lines no watcher could read.
    """
    v = FeedVerdict(ok=True)
    problems = v.problems
    problems.extend(f"watch: unreadable line: {e}" for e in errors)
    problems.extend(f"history: {p}" for p in check_acknowledged(history, acknowledged))
    wc: WatchCheck = check_watches(history, records)
    if not wc.ok:
        problems.append(f"watch: {wc.message}")
    for rec, last in zip(records, lasts, strict=False):
        if target and last < target:
            problems.append(
                f"watch: watcher {rec.name} stalled: has everything up to revision {last}, "
                f"not {target} (read when the clients stopped)"
            )
    v.ok = not problems
    v.counts = {
        "watchers": len(records),
        "events": sum(len(r.got) for r in records),
        "checked": wc.events,
        "progress": wc.progress,
        "missed": sum(hi - lo + 1 for r in records for lo, hi in r.missed),
        "revisions": len(history.events),
        "acknowledged": len(acknowledged),
    }
    return v


def check_lease_feeds(
    replay: Replay,
    records: Sequence[LeaseRecord],
    ops: Sequence[LeaseOp],
    *,
    origin_us: int,
    allowance_us: int = CLOCK_ALLOWANCE_US,
) -> FeedVerdict:
    """The lease check (module docstring).

    Args:
        replay: the committed log's replay (its history, revokes and expiries).
        records: every granted lease with its confirmed renewals (wall-clock µs).
        ops: every lease request the clients made.
        origin_us: the wall clock at the run's start (times print from it).
        allowance_us: see :data:`CLOCK_ALLOWANCE_US`.
    """
    log = LeaseLog()
    for lease_id, time_ms, _ in replay.expiries:
        log.expiry(lease_id, time_ms * 1000 - origin_us, "the leader", True, None)
    for lease_id, revision, deleted in replay.revokes:
        log.revoked(lease_id, revision, deleted)
    shifted = [
        LeaseRecord(r.lease_id, r.ttl_s, [t - origin_us for t in r.renewals]) for r in records
    ]
    lc: LeaseCheck = check_leases(
        log, replay.history, shifted, extend_us=0, allowance_us=allowance_us
    )
    v = FeedVerdict(ok=True)
    if not lc.ok:
        v.problems.append(f"lease: {lc.message}")
    v.problems.extend(_acknowledgements(replay, ops))
    v.ok = not v.problems
    kinds: Counter[str] = Counter(f"{op.kind}-{_outcome(op)}" for op in ops)
    slack = _min_slack_ms(replay, records)
    v.counts = {
        **({"min_slack_ms": slack} if slack is not None else {}),
        "leases": len(records),
        "renewals": lc.renewals,
        "expiries": len({lease for lease, _, _ in replay.expiries}),
        "revokes": len(replay.revokes),
        **dict(sorted(kinds.items())),
    }
    return v


def _min_slack_ms(replay: Replay, records: Sequence[LeaseRecord]) -> int | None:
    """The least time (ms) by which an expiry came after the end of the TTL
    its lease's last confirmed renewal started (None: no such expiry)."""
    by_id = {r.lease_id: r for r in records}
    slacks = []
    for lease_id, time_ms, _ in replay.expiries:
        record = by_id.get(lease_id)
        sent = [t for t in record.renewals if t <= time_ms * 1000] if record else []
        if record is not None and sent:
            slacks.append(time_ms - (max(sent) // 1000 + record.ttl_s * 1000))
    return min(slacks, default=None)


def _outcome(op: LeaseOp) -> str:
    if op.status != OK:
        return op.status
    return "ok" if op.answer.get("status") == 200 else str(op.answer.get("status"))


def _acknowledgements(replay: Replay, ops: Sequence[LeaseOp]) -> list[str]:
    """An acknowledged grant, put or revoke is in the log as answered."""
    problems: list[str] = []
    revokes = {lease: (revision, deleted) for lease, revision, deleted in replay.revokes}
    for op in ops:
        if op.session is None or op.status != OK or op.answer.get("status") != 200:
            continue
        executed = replay.executed(op.session)
        if not executed:
            problems.append(
                f"lease: acknowledged {op.kind} of lease {op.lease_id} ({op.session}) is not "
                f"in the committed log"
            )
            continue
        if op.kind != "revoke":
            continue
        made = revokes.get(op.lease_id)
        answer: Any = (op.answer.get("revision"), op.answer.get("deleted"))
        first = executed[0]
        if made is None or first.answer is None:
            problems.append(f"lease: acknowledged revoke of lease {op.lease_id} deleted nothing")
        elif (
            first.answer.revision != made[0]
            or answer[0] != made[0]
            or (op.answer.get("replayed") is not True and answer[1] != made[1])
        ):
            problems.append(
                f"lease: revoke of lease {op.lease_id} answered (revision, deleted)={answer}, "
                f"the log's revoke made {made}"
            )
    return problems
