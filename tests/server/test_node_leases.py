"""The node's lease driver (raftkv.server.node.leases) with a fake clock: promoted
only once the leader applied an entry of its term, deadlines extended by an
election timeout, expiries proposed on the leader's ticks only, demoted on a
lost leadership."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from raftkv.core.types import Role
from raftkv.replica.kv import KVStateMachine, LeaseGrant, LeaseRevoke, decode_command
from raftkv.server.errors import NoLeader
from raftkv.server.node.leases import Leases
from tests.replica.test_kv import Log


@dataclass
class FakeRaw:
    role: Role = Role.FOLLOWER
    term: int = 1


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def setup() -> tuple[Leases, Log, FakeRaw, Clock, list[bytes]]:
    sm = KVStateMachine()
    proposed: list[bytes] = []
    clock = Clock()
    leases = Leases(sm, election_timeout_ms=1000, propose=proposed.append, clock_ms=clock)
    log = Log(sm)
    return leases, log, FakeRaw(), clock, proposed


def test_promotion_waits_for_an_entry_of_the_leaders_term_and_extends_every_lease() -> None:
    leases, log, raw, clock, proposed = setup()
    log.apply(LeaseGrant(id=5, ttl_s=10, time_ms=1))
    raw.role, raw.term = Role.LEADER, 2
    leases.role_changed(Role.LEADER)
    leases.applied(raw, 1)  # an entry of an older term: not yet
    with pytest.raises(NoLeader):
        leases.keepalive(5)
    leases.tick(raw)  # type: ignore[arg-type]
    assert proposed == []
    leases.applied(raw, 2)  # its no-op: promoted
    view = leases.time_to_live(5, keys=False)
    assert view is not None and view.ttl_s == 11  # TTL + one election timeout
    clock.ms += 1
    view = leases.time_to_live(5, keys=False)
    assert view is not None and view.ttl_s == 10  # whole seconds left: 10.999 s (etcd's)
    clock.ms += 10_998
    leases.tick(raw)  # type: ignore[arg-type]
    assert proposed == []
    clock.ms += 1
    leases.tick(raw)  # type: ignore[arg-type]
    assert [decode_command(p) for p in proposed] == [
        LeaseRevoke(id=5, time_ms=decode_command(proposed[0]).time_ms, expired=True)
    ]
    # An expired lease is not renewed.
    assert leases.keepalive(5) is None


def test_a_follower_never_times_leases_and_a_deposed_leader_stops() -> None:
    leases, log, raw, clock, proposed = setup()
    log.apply(LeaseGrant(id=5, ttl_s=1, time_ms=1))
    leases.applied(raw, 1)  # a follower
    clock.ms += 60_000
    leases.tick(raw)  # type: ignore[arg-type]
    assert proposed == []
    raw.role = Role.LEADER
    leases.applied(raw, 1)
    assert leases.keepalive(5) == 1
    raw.role = Role.FOLLOWER
    leases.role_changed(Role.FOLLOWER)
    clock.ms += 60_000
    leases.tick(raw)  # type: ignore[arg-type]
    assert proposed == []
    with pytest.raises(NoLeader):
        leases.keepalive(5)


def test_grants_are_raised_to_the_minimum_ttl() -> None:
    leases, *_ = setup()
    assert leases.min_ttl_s == 2
    assert (leases.grant_ttl(1), leases.grant_ttl(2), leases.grant_ttl(30)) == (2, 2, 30)
