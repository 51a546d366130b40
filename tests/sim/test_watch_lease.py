"""``raftkv sim --watches --leases``: whole runs, and the two checkers on hand-made records."""

from __future__ import annotations

from collections import Counter

from raftkv.replica.kv import Delete, LeaseRevoke, Put
from raftkv.replica.mvcc import EVENT_DELETE, EVENT_PUT, Event, KeyValue
from raftkv.sim.faults import parse_faults
from raftkv.sim.leases import LeaseLog, LeaseRecord, check_leases
from raftkv.sim.runner import SimConfig, run_simulation
from raftkv.sim.watches import RevisionLog, WatchRecord, check_watches

ALL = parse_faults("all")


def test_runs_exercise_every_path_and_pass() -> None:
    totals: Counter[str] = Counter()
    cluster: Counter[str] = Counter()
    for seed in (1, 2, 3):
        result = run_simulation(SimConfig(seed=seed, faults=ALL, watches=True, leases=True))
        assert result.violation is None, result.violation.describe()
        assert result.verdicts["watch"] == "ok" and result.verdicts["lease"] == "ok"
        totals.update(result.watch_stats)
        totals.update(result.lease_stats)
        cluster.update(result.cluster)
    for what in (
        "events",
        "progress",
        "compacted",
        "canceled-no leader",
        "ended-gap",
        "ended-silence",
        "ended-hang-up",
        "checked_events",
        "granted",
        "keepalives",
        "revoked",
        "abandoned",
    ):
        assert totals[what] > 0, (what, dict(totals))
    for what in ("lease_expiries", "lease_checkpoints", "lessor_promotions", "keepalive_reads"):
        assert cluster[what] > 0, (what, dict(cluster))


def test_membership_and_snapshots_with_watches_and_leases() -> None:
    result = run_simulation(
        SimConfig(seed=5, faults=ALL, watches=True, leases=True, membership=True, snapshot_every=20)
    )
    assert result.violation is None, result.violation.describe()
    assert result.cluster["snapshots_installed"] > 0


# ----------------------------------------------------------------------------- checkers


def kv(key: bytes, rev: int, *, lease: int = 0, deleted: bool = False) -> KeyValue:
    if deleted:
        return KeyValue(key=key, value=b"", create_revision=0, mod_revision=rev, version=0)
    return KeyValue(
        key=key, value=b"1", create_revision=rev, mod_revision=rev, version=1, lease=lease
    )


def history() -> RevisionLog:
    log = RevisionLog()
    log.record(2, (Event(kind=EVENT_PUT, kv=kv(b"a", 2)),), Put(key="a", value=1, time_ms=0))
    log.record(3, (Event(kind=EVENT_PUT, kv=kv(b"b", 3)),), Put(key="b", value=1, time_ms=0))
    log.record(
        4, (Event(kind=EVENT_DELETE, kv=kv(b"a", 4, deleted=True)),), Delete(key="a", time_ms=0)
    )
    return log


def record(got: list[Event], **kw: object) -> WatchRecord:
    rec = WatchRecord(name="w1", key=b"\0", range_end=b"\0", start=2, prev_kv=False)
    rec.got = got
    for name, value in kw.items():
        setattr(rec, name, value)
    return rec


def test_watch_check_accepts_the_history_and_a_prefix_of_it() -> None:
    log = history()
    every = [e for rev in (2, 3, 4) for e in log.events[rev]]
    assert check_watches(log, [record(every)]).ok
    assert check_watches(log, [record(every[:2], progress=[(3, 2)])]).ok


def test_watch_check_catches_a_gap_a_duplicate_and_an_unknown_event() -> None:
    log = history()
    a, b, c = (log.events[r][0] for r in (2, 3, 4))
    assert "gap" in check_watches(log, [record([a, c])]).message
    assert not check_watches(log, [record([a, a, b])]).ok
    stranger = Event(kind=EVENT_PUT, kv=kv(b"z", 5))
    assert "not in the history" in check_watches(log, [record([a, b, c, stranger])]).message


def test_watch_check_catches_progress_ahead_of_events_and_going_back() -> None:
    log = history()
    a = log.events[2][0]
    ahead = check_watches(log, [record([a], progress=[(3, 1)])])
    assert "overtook" in ahead.message
    back = check_watches(log, [record([a], progress=[(2, 1), (1, 1)])])
    assert "went back" in back.message


def test_watch_check_honours_declared_gaps_and_missing_revisions() -> None:
    log = history()
    c = log.events[4][0]
    assert check_watches(log, [record([c], missed=[(2, 3)])]).ok
    log.events.pop(3)
    assert "never applied" in check_watches(log, [record([])]).message


def leased_history(revoker: object) -> RevisionLog:
    log = RevisionLog()
    log.record(2, (Event(kind=EVENT_PUT, kv=kv(b"l/1", 2, lease=7)),), None)
    log.record(3, (Event(kind=EVENT_DELETE, kv=kv(b"l/1", 3, deleted=True)),), revoker)  # type: ignore[arg-type]
    return log


def test_lease_check_accepts_a_clean_expiry() -> None:
    leases = LeaseLog()
    leases.expiry(7, 5_000_000, "n1", True, 1_000_000)
    rec = LeaseRecord(lease_id=7, ttl_s=2, renewals=[1_000_000, 2_900_000])
    revoke = LeaseRevoke(id=7, time_ms=5_000, expired=True)
    assert check_leases(leases, leased_history(revoke), [rec], extend_us=1_000_000).ok


def test_lease_check_catches_each_broken_rule() -> None:
    revoke = LeaseRevoke(id=7, time_ms=5_000, expired=True)
    rec = LeaseRecord(lease_id=7, ttl_s=2, renewals=[1_000_000, 3_500_000])

    def check(expiry: tuple[int, int, str, bool, int | None], log: RevisionLog) -> str:
        leases = LeaseLog()
        leases.expiry(*expiry)
        return check_leases(leases, log, [rec], extend_us=1_000_000).message

    assert "did not lead" in check((7, 9_000_000, "n2", False, None), leased_history(revoke))
    assert "ms early" in check((7, 5_000_000, "n1", True, 1_000_000), leased_history(revoke))
    assert "election timeout" in check(
        (7, 9_000_000, "n1", True, 8_500_000), leased_history(revoke)
    )
    wrong = Delete(key="l/1", time_ms=0)
    assert "not by its lease's revoke" in check(
        (7, 9_000_000, "n1", True, None), leased_history(wrong)
    )
