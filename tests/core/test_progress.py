"""Progress / Inflights: the leader's per-follower replication state machine
(etcd's tracker; paper §5.3 nextIndex/matchIndex, dissertation §10.2.1 pipelining)."""

from __future__ import annotations

from raftkv.core.progress import Inflights, Progress, ProgressState


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
