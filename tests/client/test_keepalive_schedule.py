"""The renewal schedule of the keep-alive helpers (raftkv.client._keepalive): the
holder's deadline counts from when the renewing keep-alive was sent, renewals
go every third of the TTL, failures are retried soon."""

from __future__ import annotations

from raftkv.client._keepalive import RenewalSchedule


def test_the_deadline_counts_from_the_send_not_the_answer() -> None:
    s = RenewalSchedule(ttl=3, renewed_at=100.0)
    assert s.deadline == 103.0 and s.next_attempt() == 101.0
    assert s.wait(100.0) == 1.0
    # A keep-alive sent at 101 and answered at 101.9: the lease runs from 101.
    s.renewed(101.0, 3)
    assert s.deadline == 104.0 and not s.expired(103.99) and s.expired(104.0)


def test_a_failed_keep_alive_is_retried_soon_until_the_deadline() -> None:
    s = RenewalSchedule(ttl=3, renewed_at=100.0)
    s.failed()
    assert s.wait(101.0) == 0.25
    assert abs(s.wait(102.9) - 0.1) < 1e-9
    assert s.wait(103.5) == 0.0 and s.expired(103.5)
    s.renewed(102.5, 3)
    assert not s.failing and s.next_attempt() == 103.5


def test_an_interval_overrides_a_third_of_the_ttl() -> None:
    s = RenewalSchedule(ttl=30, renewed_at=0.0, interval=2.0)
    assert s.next_attempt() == 2.0
    assert RenewalSchedule(ttl=30, renewed_at=0.0).next_attempt() == 10.0
