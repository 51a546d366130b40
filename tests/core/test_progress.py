"""Progress / Inflights: the leader's per-follower replication state machine
(etcd's tracker; paper §5.3 nextIndex/matchIndex, dissertation §10.2.1 pipelining)."""

from __future__ import annotations

from raftkv.core.progress import Inflights, Progress, ProgressState
from raftkv.core.types import Snapshot, SnapshotMetadata


def test_new_progress_probes_from_leader_last_plus_one():
    """Paper Figure 2 (leaders): nextIndex starts at leader last log index + 1,
    matchIndex at 0."""
    pr = Progress(11, max_inflight=4)
    assert (pr.match, pr.next, pr.state) == (0, 11, ProgressState.PROBE)
    assert not pr.is_paused()


def test_probe_pauses_after_one_send_until_answer():
    pr = Progress(5, max_inflight=4)
    pr.sent_entries(7)
    assert pr.is_paused() and pr.next == 5  # probes do not advance next
    assert pr.maybe_update(6)
    assert not pr.is_paused()
    assert (pr.match, pr.next) == (6, 7)


def test_replicate_advances_next_optimistically_and_is_bounded_by_window():
    pr = Progress(1, max_inflight=2)
    pr.maybe_update(3)
    pr.become_replicate()
    assert pr.next == 4
    pr.sent_entries(5)
    assert pr.next == 6 and not pr.is_paused()
    pr.sent_entries(8)
    assert pr.next == 9 and pr.is_paused()
    pr.sent_entries(None)  # an empty append does not use the window
    assert pr.inflights.count() == 2
    pr.maybe_update(5)
    pr.inflights.free_le(5)
    assert not pr.is_paused() and pr.inflights.count() == 1


def test_maybe_update_ignores_old_acks():
    pr = Progress(1, max_inflight=2)
    assert pr.maybe_update(5)
    assert not pr.maybe_update(3)
    assert pr.match == 5 and pr.next == 6


def test_probe_rejection_uses_hint_but_never_below_match():
    """Paper §5.3: after a rejection, decrement nextIndex (here: jump using the
    follower's hint), never below match + 1."""
    pr = Progress(11, max_inflight=2)
    pr.sent_entries(11)
    assert pr.maybe_decr_to(10, 3)
    assert pr.next == 4 and not pr.is_paused()
    # A stale rejection (not of the last probe) is ignored.
    assert not pr.maybe_decr_to(10, 0)
    pr.maybe_update(2)
    pr.next = 4
    assert pr.maybe_decr_to(3, 0)
    assert pr.next == 3  # match + 1


def test_replicate_rejection_falls_back_to_match_and_stale_ones_ignored():
    pr = Progress(1, max_inflight=8)
    pr.maybe_update(5)
    pr.become_replicate()
    pr.sent_entries(9)
    assert not pr.maybe_decr_to(4, 0)  # below match: stale
    assert pr.next == 10
    assert pr.maybe_decr_to(7, 6)
    assert pr.next == 6
    pr.become_probe()
    assert pr.state is ProgressState.PROBE and pr.inflights.count() == 0


def test_inflights_fifo():
    infl = Inflights(3)
    for i in (2, 4, 6):
        infl.add(i)
    assert infl.full()
    infl.free_le(4)
    assert infl.count() == 1 and not infl.full()
    infl.free_le(100)
    assert infl.count() == 0
    infl.add(7)
    infl.reset()
    assert infl.count() == 0


# -- the transitions the leader asks for (raft.py writes no Progress field) ----


def test_a_new_leaders_own_progress_counts_only_what_is_durable():
    """§10.2.1: the leader's own entry matches its durable log, not its last index."""
    pr = Progress(11, max_inflight=4, recent_active=True)
    pr.become_own(durable=8, last=10)
    assert (pr.match, pr.next, pr.state) == (8, 11, ProgressState.REPLICATE)
    pr.own_appended(12)
    assert (pr.match, pr.next) == (8, 13)


def test_check_quorum_takes_the_activity_mark_once():
    pr = Progress(1, max_inflight=4)
    assert not pr.take_recent_active()
    pr.mark_recent_active()
    assert pr.take_recent_active()
    assert not pr.take_recent_active()  # cleared for the next election timeout


def test_an_accepted_append_ends_probing_and_frees_the_window():
    pr = Progress(5, max_inflight=2)
    pr.sent_entries(6)
    assert pr.append_acked(6)
    assert (pr.state, pr.match, pr.next) == (ProgressState.REPLICATE, 6, 7)
    pr.sent_entries(8)
    pr.sent_entries(9)
    assert pr.is_paused()
    assert pr.append_acked(8)
    assert pr.inflights.count() == 1 and not pr.is_paused()
    assert not pr.append_acked(7)  # old news


def test_an_accepted_empty_probe_at_the_known_match_ends_probing():
    """The empty append after a snapshot of the whole log answers at ``match``."""
    pr = Progress(1, max_inflight=2)
    pr.snapshot_installed(10)
    pr.become_probe()
    assert pr.append_acked(10)
    assert pr.state is ProgressState.REPLICATE


def test_a_rejected_append_sends_a_replicating_follower_back_to_probing():
    pr = Progress(1, max_inflight=4)
    pr.maybe_update(5)
    pr.become_replicate()
    pr.sent_entries(8)
    assert not pr.append_rejected(5, match_hint=5)  # at or below match: stale
    assert pr.state is ProgressState.REPLICATE
    assert pr.append_rejected(7, match_hint=3)
    assert (pr.state, pr.next, pr.inflights.count()) == (ProgressState.PROBE, 6, 0)


def test_a_heartbeat_answer_unpauses_a_probe_and_frees_a_full_window():
    probe = Progress(5, max_inflight=2)
    probe.sent_entries(6)
    probe.heartbeat_acked()
    assert not probe.is_paused() and probe.recent_active
    full = Progress(1, max_inflight=2)
    full.become_replicate()
    full.sent_entries(2)
    full.sent_entries(3)
    full.heartbeat_acked()
    assert full.inflights.count() == 1 and not full.is_paused()


def test_an_installed_snapshot_resumes_by_probing_after_it():
    pr = Progress(1, max_inflight=2)
    pr.become_snapshot(Snapshot(metadata=SnapshotMetadata(index=10, term=2), data=b"x"))
    pr.snapshot_installed(10)
    assert (pr.state, pr.match, pr.next) == (ProgressState.PROBE, 10, 11)
    assert pr.pending_snapshot is None
