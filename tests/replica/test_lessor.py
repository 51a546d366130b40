"""The leader's lease clock (issue 17)."""

from __future__ import annotations

import pytest

from raftkv.replica.kv import (
    KVStateMachine,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    Put,
    encode_command,
)
from raftkv.replica.lessor import REVOKE_RETRY_MS, Lessor
from tests.replica.test_kv import Log


@pytest.fixture
def log() -> Log:
    return Log(KVStateMachine())


def lessor_of(log: Log, **kw: int) -> Lessor:
    return Lessor(lambda: log.sm.leases, **kw)


def test_a_follower_times_nothing(log: Log) -> None:
    log.apply(LeaseGrant(id=1, ttl_s=2, time_ms=0))
    lessor = lessor_of(log)
    assert lessor.tick(10**9, time_ms=0) == []
    assert lessor.keepalive(1, 0) is None and lessor.remaining_ms(1, 0) is None
    lessor.promote(0, 1000)
    lessor.demote()
    assert lessor.tick(10**9, time_ms=0) == [] and not lessor.is_leader


def test_promote_extends_every_lease_by_the_election_timeout(log: Log) -> None:
    log.apply(LeaseGrant(id=1, ttl_s=2, time_ms=0))
    log.apply(LeaseGrant(id=2, ttl_s=60, time_ms=0))
    log.apply(LeaseCheckpoint(checkpoints=((2, 500),), time_ms=0))
    lessor = lessor_of(log)
    lessor.promote(10_000, 1_000)
    assert lessor.remaining_ms(1, 10_000) == 3_000  # full TTL + extend
    assert lessor.remaining_ms(2, 10_000) == 1_500  # checkpointed remaining + extend
    assert lessor.tick(11_499, time_ms=5) == []
    assert lessor.tick(11_500, time_ms=5) == [LeaseRevoke(id=2, time_ms=5, expired=True)]
    assert lessor.tick(11_600, time_ms=6) == []  # proposed already
    assert lessor.tick(13_000, time_ms=7) == [LeaseRevoke(id=1, time_ms=7, expired=True)]


def test_an_unapplied_expiry_is_proposed_again(log: Log) -> None:
    log.apply(LeaseGrant(id=1, ttl_s=2, time_ms=0))
    lessor = lessor_of(log)
    lessor.promote(0, 0)
    assert len(lessor.tick(2_000, time_ms=0)) == 1
    assert lessor.tick(2_000 + REVOKE_RETRY_MS - 1, time_ms=0) == []
    assert len(lessor.tick(2_000 + REVOKE_RETRY_MS, time_ms=0)) == 1
    log.apply(LeaseRevoke(id=1, time_ms=0, expired=True))
    assert lessor.tick(10**6, time_ms=0) == []


def test_keepalive_restarts_the_ttl(log: Log) -> None:
    log.apply(LeaseGrant(id=1, ttl_s=2, time_ms=0))
    lessor = lessor_of(log)
    lessor.promote(0, 1_000)
    assert lessor.keepalive(1, 2_500) == 2
    assert lessor.tick(4_499, time_ms=0) == []
    assert len(lessor.tick(4_500, time_ms=0)) == 1
    assert lessor.keepalive(99, 0) is None
    assert lessor.keepalive(1, 4_500) is None  # expired: its revoke is on its way


def test_a_keepalive_after_a_periodic_checkpoint_goes_through_the_log(log: Log) -> None:
    """A checkpoint proposed before a keep-alive may apply after it: the reset
    must follow it in the log, or a new leader would take its older remaining time."""
    log.apply(LeaseGrant(id=1, ttl_s=10, time_ms=0))
    lessor = lessor_of(log, checkpoint_interval_ms=1_000)
    lessor.promote(0, 0)
    assert len(lessor.tick(1_000, time_ms=0)) == 1  # proposed, not applied yet
    assert lessor.keepalive(1, 1_100) == 10
    assert lessor.keepalive_checkpoint(1, 0) == LeaseCheckpoint(
        checkpoints=((1, 10_000),), time_ms=0
    )


def test_a_keepalive_needs_no_log_entry_while_remaining_plus_extend_covers_the_ttl(
    log: Log,
) -> None:
    """A new leader promoted after the keep-alive gives ``remaining + extend``
    from its promotion: enough when ``remaining >= ttl - extend``."""
    log.apply(LeaseGrant(id=1, ttl_s=10, time_ms=0))
    lessor = lessor_of(log, checkpoint_interval_ms=1_000)
    lessor.promote(0, 2_000)
    (cp,) = lessor.tick(1_000, time_ms=0)  # remaining 11_000 - 1_000 = 10_000
    log.apply(cp)
    assert lessor.keepalive(1, 1_500) == 10
    assert lessor.keepalive_checkpoint(1, 0) is None
    log.apply(LeaseCheckpoint(checkpoints=((1, 7_999),), time_ms=0))  # below 10_000 - 2_000
    assert lessor.keepalive_checkpoint(1, 0) is not None


def test_a_lease_granted_while_leading_gets_its_ttl_from_the_next_tick(log: Log) -> None:
    lessor = lessor_of(log)
    lessor.promote(0, 1_000)
    log.apply(LeaseGrant(id=5, ttl_s=3, time_ms=0))
    assert lessor.remaining_ms(5, 100) == 3_000
    assert lessor.tick(100, time_ms=0) == []
    assert lessor.tick(3_099, time_ms=0) == []
    assert lessor.tick(3_100, time_ms=0) == [LeaseRevoke(id=5, time_ms=0, expired=True)]


def test_revokes_per_tick_are_bounded(log: Log) -> None:
    for i in range(1, 8):
        log.apply(LeaseGrant(id=i, ttl_s=1, time_ms=0))
    lessor = lessor_of(log, max_revokes_per_tick=3)
    lessor.promote(0, 0)
    ids = [c.id for c in lessor.tick(5_000, time_ms=0) if isinstance(c, LeaseRevoke)]
    assert ids == [1, 2, 3]
    ids = [c.id for c in lessor.tick(5_001, time_ms=0) if isinstance(c, LeaseRevoke)]
    assert ids == [4, 5, 6]


def test_checkpoints_carry_the_remaining_times_periodically(log: Log) -> None:
    log.apply(LeaseGrant(id=1, ttl_s=100, time_ms=0))
    log.apply(LeaseGrant(id=2, ttl_s=10, time_ms=0))
    lessor = lessor_of(log, checkpoint_interval_ms=5_000)
    lessor.promote(0, 0)
    assert lessor.tick(4_999, time_ms=0) == []
    (cp,) = lessor.tick(5_000, time_ms=9)
    assert cp == LeaseCheckpoint(checkpoints=((1, 95_000), (2, 5_000)), time_ms=9)
    # Applied, a new leader starts from there (plus the extend).
    log.apply(cp)
    successor = lessor_of(log)
    successor.promote(6_000, 1_000)
    assert successor.remaining_ms(1, 6_000) == 96_000


def test_a_keepalive_of_a_checkpointed_lease_resets_it_through_the_log(log: Log) -> None:
    log.apply(LeaseGrant(id=1, ttl_s=10, time_ms=0))
    lessor = lessor_of(log)
    lessor.promote(0, 0)
    assert lessor.keepalive_checkpoint(1, 0) is None  # never checkpointed: ReadIndex will do
    log.apply(LeaseCheckpoint(checkpoints=((1, 2_000),), time_ms=0))
    assert lessor.keepalive(1, 8_000) == 10
    reset = lessor.keepalive_checkpoint(1, 33)
    assert reset == LeaseCheckpoint(checkpoints=((1, 10_000),), time_ms=33)
    log.apply(reset)
    successor = lessor_of(log)
    successor.promote(9_000, 1_000)  # the old leader died right after answering
    assert successor.remaining_ms(1, 9_000) == 11_000  # not 2_000 + 1_000
    assert successor.keepalive_checkpoint(1, 0) is None


def test_a_revoked_lease_is_forgotten(log: Log) -> None:
    log.apply(LeaseGrant(id=1, ttl_s=5, time_ms=0))
    log.sm.apply(log.index + 1, encode_command(Put(key="k", value=1, time_ms=0, lease=1)))
    log.index += 1
    lessor = lessor_of(log)
    lessor.promote(0, 0)
    log.apply(LeaseRevoke(id=1, time_ms=0))
    assert lessor.tick(10**6, time_ms=0) == []
    assert lessor.remaining_ms(1, 0) is None
