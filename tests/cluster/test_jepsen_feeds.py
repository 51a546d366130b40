"""The watch and lease checks of ``raftkv jepsen`` on hand-made histories.

Each check passes a correct history and catches a planted bug: a watcher with
a gap, a duplicate, an event never committed, a progress notification ahead
of an event, a watcher that stalled; an acknowledged write missing from (or
twice in) the history; a lease expired before its renewed TTL ran out; the
keys of one lease deleted in two revisions; an acknowledged revoke whose
answer the log contradicts. The committed history is always the one
:func:`raftkv.jepsen.analysis.replay` rebuilds from a log, as in a real run.
"""

from __future__ import annotations

import json
from dataclasses import replace

from raftkv.core.types import Entry, EntryType, NodeId
from raftkv.history.leasecheck import LeaseRecord
from raftkv.history.linearizability import OK
from raftkv.history.revisions import check_revisions
from raftkv.history.watchcheck import RevisionLog, WatchRecord
from raftkv.jepsen.analysis import NodeLog, Replay, replay, revision_history
from raftkv.jepsen.feeds import (
    CLOCK_ALLOWANCE_US,
    AckedWrite,
    acknowledged_writes,
    check_acknowledged,
    check_lease_feeds,
    check_watch_feeds,
)
from raftkv.jepsen.leasing import LeaseOp
from raftkv.jepsen.watchers import event_of
from raftkv.jepsen.workload import OpRecord
from raftkv.replica.kv import (
    Command,
    Delete,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Session,
    encode_command,
    json_text,
)
from raftkv.replica.mvcc import Event, prefix_range_end

T0_MS = 1_700_000_000_000
"""The wall clock (ms) at which the hand-made histories happen."""
ORIGIN_US = T0_MS * 1000


class _Log:
    """A committed log of commands, as a node's data dir would hold it."""

    def __init__(self) -> None:
        self.entries: list[Entry] = [Entry(1, 1, b"", EntryType.CONF_CHANGE)]
        self._seq = 0

    def session(self) -> Session:
        self._seq += 1
        return Session(client_id="c", seq=self._seq)

    def add(self, cmd: Command) -> str:
        """Append ``cmd``; its session as ``CLIENT/SEQ`` (or "")."""
        self.entries.append(Entry(1, len(self.entries) + 1, encode_command(cmd)))
        s = cmd.session
        return f"{s.client_id}/{s.seq}" if s is not None else ""

    def put(self, key: str, value: object, lease: int = 0) -> str:
        return self.add(
            Put(key=key, value=value, time_ms=T0_MS, session=self.session(), lease=lease)
        )

    def grant(self, lease_id: int, ttl_s: int) -> str:
        return self.add(LeaseGrant(id=lease_id, ttl_s=ttl_s, time_ms=T0_MS, session=self.session()))

    def revoke(self, lease_id: int, *, expired_at_ms: int | None = None) -> str:
        if expired_at_ms is not None:
            return self.add(LeaseRevoke(id=lease_id, time_ms=expired_at_ms, expired=True))
        return self.add(LeaseRevoke(id=lease_id, time_ms=T0_MS, session=self.session()))

    def replay(self) -> Replay:
        n = len(self.entries)
        logs = {NodeId(f"n{i}"): NodeLog(NodeId(f"n{i}"), n, tuple(self.entries)) for i in (1, 2)}
        rp = replay(logs)
        assert not rp.disagreements
        return rp


def _record(history: RevisionLog, prefix: bytes, start: int = 2, name: str = "w") -> WatchRecord:
    """A watcher of ``prefix`` from ``start`` that received exactly the history."""
    rec = WatchRecord(
        name=name, key=prefix, range_end=prefix_range_end(prefix), start=start, prev_kv=True
    )
    for revision in sorted(history.events):
        if revision >= start:
            rec.got.extend(e for e in history.events[revision] if rec.matches(e.kv.key))
    return rec


def _kv_history() -> tuple[_Log, Replay]:
    log = _Log()
    log.put("a/1", 1)  # revision 2
    log.put("a/2", 2)  # 3
    log.put("b/1", 3)  # 4 (outside the watched range)
    log.put("a/1", 4)  # 5
    log.add(Delete(key="a/2", time_ms=T0_MS, session=log.session()))  # 6
    return log, log.replay()


def _watch(rp: Replay, *records: WatchRecord, target: int = 0) -> list[str]:
    v = check_watch_feeds(
        rp.history,
        records,
        acknowledged=(),
        target=target,
        lasts=[max((e.kv.mod_revision for e in r.got), default=0) for r in records],
    )
    assert v.ok is (not v.problems)
    return v.problems


# ----------------------------------------------------------------------------- watches


def test_the_committed_history_is_rebuilt_from_the_log() -> None:
    _, rp = _kv_history()
    assert sorted(rp.history.events) == [2, 3, 4, 5, 6]
    assert rp.history.missing() == []
    (ev,) = rp.history.events[6]
    assert (ev.kind, ev.kv.key, ev.kv.mod_revision) == ("delete", b"a/2", 6)
    assert isinstance(rp.history.commands[6], Delete)


def test_a_watcher_that_saw_exactly_the_history_passes() -> None:
    _, rp = _kv_history()
    full = _record(rp.history, b"a/")
    late = _record(rp.history, b"a/", start=4, name="late")
    assert [e.kv.mod_revision for e in full.got] == [2, 3, 5, 6]
    full.progress.append((4, 2))  # "everything up to 4": it had 2 events then
    assert _watch(rp, full, late, target=6) == []


def test_a_watcher_with_a_gap_is_caught() -> None:
    _, rp = _kv_history()
    rec = _record(rp.history, b"a/")
    del rec.got[1]  # revision 3 never arrived: a resume from the wrong revision
    (problem,) = _watch(rp, rec)
    assert "a gap, a duplicate or a reordering" in problem


def test_a_duplicate_event_is_caught() -> None:
    _, rp = _kv_history()
    rec = _record(rp.history, b"a/")
    rec.got.insert(2, rec.got[1])  # revision 3 twice: a resume from the last revision, not +1
    (problem,) = _watch(rp, rec)
    assert "revision 3" in problem and "revision 5" in problem


def test_an_event_never_committed_is_caught() -> None:
    _, rp = _kv_history()
    rec = _record(rp.history, b"a/")
    fake = rec.got[2]
    rec.got[2] = replace(fake, kv=replace(fake.kv, value=json_text(99)))
    assert len(_watch(rp, rec)) == 1
    rec = _record(rp.history, b"a/")
    rec.got.append(replace(fake, kv=replace(fake.kv, mod_revision=7)))  # past the history
    (problem,) = _watch(rp, rec)
    assert "not in the history (extra or duplicate)" in problem


def test_a_progress_notification_ahead_of_an_event_is_caught() -> None:
    _, rp = _kv_history()
    rec = _record(rp.history, b"a/")
    rec.progress.append((5, 2))  # "everything up to 5" with the event of 5 still pending
    (problem,) = _watch(rp, rec)
    assert "progress overtook events" in problem


def test_a_stalled_watcher_is_caught() -> None:
    _, rp = _kv_history()
    rec = _record(rp.history, b"a/")
    del rec.got[-1]
    (problem,) = _watch(rp, rec, target=6)
    assert "stalled" in problem


def test_watch_lines_parse_into_the_stores_events() -> None:
    """A /v1/watch line's events equal the history's (docs/api.md shapes)."""
    _, rp = _kv_history()
    line = json.loads(
        '{"watch_id": 1, "revision": 6, "events": [{"type": "delete", "kv": {"key": "a/2", '
        '"mod_revision": 6}, "prev_kv": {"key": "a/2", "value": 2, "create_revision": 3, '
        '"mod_revision": 3, "version": 1, "lease": 0}}]}'
    )
    assert tuple(event_of(e) for e in line["events"]) == rp.history.events[6]
    put = event_of(
        {
            "type": "put",
            "kv": {
                "key": "a/1",
                "value": 4,
                "create_revision": 2,
                "mod_revision": 5,
                "version": 2,
                "lease": 0,
            },
        }
    )
    assert isinstance(put, Event) and put.kv == rp.history.events[5][0].kv


def test_acknowledged_writes_must_be_in_the_history_exactly_once() -> None:
    _, rp = _kv_history()
    ops = [
        OpRecord(
            op_id=1,
            client=0,
            kind="put",
            key="a/1",
            call=0.0,
            value=4,
            status=OK,
            answer={"ok": True, "revision": 5},
        ),
    ]
    acked = acknowledged_writes(ops)
    assert acked == [AckedWrite(b"a/1", b"4", 5, "op 1 put None")]
    assert check_acknowledged(rp.history, acked) == []
    lost = AckedWrite(b"a/1", b"77", None, "lost")
    (problem,) = check_acknowledged(rp.history, [lost])
    assert "revisions [] (want exactly one)" in problem
    wrong = AckedWrite(b"a/1", b"4", 4, "wrong revision")
    assert "answered revision 4" in check_acknowledged(rp.history, [wrong])[0]
    # The same write made twice (a retry applied again) is two events.
    log, _ = _kv_history()
    log.put("a/1", 4)
    (problem,) = check_acknowledged(log.replay().history, acked)
    assert "revisions [5, 7]" in problem


# ----------------------------------------------------------------------------- leases

LEASE = 7


def _lease_log(*, expired_at_ms: int | None) -> tuple[_Log, dict[str, str]]:
    """A lease of 2 s granted at T0 with keys l/1 and l/2; then expired at
    ``expired_at_ms``, or revoked by its client."""
    log = _Log()
    sessions = {
        "grant": log.grant(LEASE, 2),
        "put1": log.put("l/1", "v1", lease=LEASE),  # revision 2
        "put2": log.put("l/2", "v2", lease=LEASE),  # 3
    }
    log.put("g/1", 1)  # 4
    if expired_at_ms is None:
        sessions["revoke"] = log.revoke(LEASE)
    else:
        log.revoke(LEASE, expired_at_ms=expired_at_ms)  # 5: both keys
    return log, sessions


def _lease_ops(sessions: dict[str, str], revoke_answer: dict[str, object]) -> list[LeaseOp]:
    ops = [
        LeaseOp("grant", LEASE, ORIGIN_US, sessions["grant"], status=OK, answer={"status": 200}),
        LeaseOp(
            "put", LEASE, ORIGIN_US, sessions["put1"], key="l/1", value="v1", status=OK,
            answer={"status": 200, "revision": 2},
        ),
    ]  # fmt: skip
    if "revoke" in sessions:
        ops.append(LeaseOp("revoke", LEASE, ORIGIN_US, sessions["revoke"], status=OK,
                           answer={"status": 200, **revoke_answer}))  # fmt: skip
    return ops


def _leases(rp: Replay, renewals_ms: list[int], ops: list[LeaseOp] | None = None) -> list[str]:
    record = LeaseRecord(LEASE, 2, [t * 1000 for t in renewals_ms])
    v = check_lease_feeds(rp, [record], ops or [], origin_us=ORIGIN_US)
    assert v.ok is (not v.problems)
    return v.problems


def test_an_expiry_after_the_renewed_ttl_passes() -> None:
    log, _ = _lease_log(expired_at_ms=T0_MS + 3_000)
    rp = log.replay()
    assert rp.expiries == [(LEASE, T0_MS + 3_000, 6)]
    assert rp.revokes == [(LEASE, 5, 2)]
    # Granted at T0, kept alive (confirmed) 1 s later: the TTL runs to T0 + 3 s.
    assert _leases(rp, [T0_MS, T0_MS + 1_000]) == []
    # Within the clock allowance of that end: not early (rounding, module docstring).
    assert CLOCK_ALLOWANCE_US == 5_000
    assert _leases(rp, [T0_MS, T0_MS + 1_004]) == []


def test_a_lease_expired_early_is_caught() -> None:
    log, _ = _lease_log(expired_at_ms=T0_MS + 3_000)
    rp = log.replay()
    # A keep-alive sent at T0 + 1.5 s was confirmed: the lease had until T0 + 3.5 s.
    (problem,) = _leases(rp, [T0_MS, T0_MS + 1_500])
    assert "expired 500 ms early" in problem
    # A keep-alive sent after the expiry does not count (it must have failed).
    assert _leases(rp, [T0_MS, T0_MS + 3_100]) == []


def test_the_keys_of_one_lease_deleted_in_two_revisions_are_caught() -> None:
    log, _ = _lease_log(expired_at_ms=T0_MS + 3_000)
    rp = log.replay()
    # Plant it: the expiry deletes only l/1; l/2 goes in a revision of its own.
    history = rp.history
    (d1, d2) = history.events[5]
    history.events[5] = (d1,)
    history.record(6, (replace(d2, kv=replace(d2.kv, mod_revision=6)),), history.commands[5])
    (problem,) = _leases(rp, [T0_MS])
    assert f"lease {LEASE} revoked but its keys [b'l/2'] survive" in problem


def test_a_leased_key_deleted_by_something_else_is_caught() -> None:
    log = _Log()
    log.grant(LEASE, 2)
    log.put("l/1", "v1", lease=LEASE)
    log.add(Delete(key="l/1", time_ms=T0_MS, session=log.session()))
    (problem,) = _leases(log.replay(), [T0_MS])
    assert "deleted by Delete, not by its lease's revoke" in problem


def test_acknowledged_revokes_are_checked_against_the_log() -> None:
    log, sessions = _lease_log(expired_at_ms=None)
    rp = log.replay()
    good = _lease_ops(sessions, {"revision": 5, "deleted": 2})
    assert _leases(rp, [T0_MS], good) == []
    bad = _lease_ops(sessions, {"revision": 5, "deleted": 1})
    (problem,) = _leases(rp, [T0_MS], bad)
    assert "answered (revision, deleted)=(5, 1)" in problem
    # A revoke acknowledged but not in the log.
    missing = _lease_ops({**sessions, "revoke": "c/99"}, {"revision": 5, "deleted": 2})
    (problem,) = _leases(rp, [T0_MS], missing)
    assert "is not in the committed log" in problem


def test_lease_writes_enter_the_revision_check() -> None:
    """The model has no leases: the lease clients' puts enter as puts and a
    revoke as a transaction deleting its keys, so revisions stay accounted for."""
    log, sessions = _lease_log(expired_at_ms=T0_MS + 3_000)
    rp = log.replay()
    # Every revision but 4 (g/1, an op of the main workload here) is a lease write.
    ops = revision_history([], rp, [sessions["put1"], sessions["put2"]])
    assert sorted(op.answer.revision for op in ops if op.answer is not None) == [2, 3, 5]
    check = check_revisions(ops)
    assert check.ok is False and "revision 4 was made by no operation" in check.problems[0]
    log.entries.pop(4)  # without g/1
    log.entries[4:] = [replace(e, index=e.index - 1) for e in log.entries[4:]]
    rp = log.replay()
    assert check_revisions(revision_history([], rp, [sessions["put1"], sessions["put2"]])).ok
