"""The admission of pending inbound handshakes (raftkv.transport.admission): which
connection a flood displaces, as pure bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.transport.admission import Admission, Limit, PendingHandshakes, source_of


def fill(p: PendingHandshakes[str], items: list[tuple[str, str, bool]]) -> None:
    for key, source, member in items:
        assert p.admit(key, source, member=member) == Admission()


def test_room_admits_without_a_victim() -> None:
    p: PendingHandshakes[str] = PendingHandshakes(per_source=2, total=4)
    fill(p, [("a", "s1", False), ("b", "s1", False), ("c", "s2", False)])
    assert len(p) == 3 and p.count("s1") == 2 and "c" in p


def test_at_the_per_source_limit_that_source_s_oldest_goes() -> None:
    p: PendingHandshakes[str] = PendingHandshakes(per_source=2, total=8)
    fill(p, [("a", "s1", False), ("x", "s2", False), ("b", "s1", False)])
    assert p.admit("c", "s1", member=False) == Admission(victim="a", limit=Limit.PER_SOURCE)
    assert [k for k in "abcx" if k in p] == ["b", "c", "x"]
    assert p.count("s1") == 2 and p.count("s2") == 1


def test_at_the_global_limit_the_most_crowded_source_s_oldest_goes() -> None:
    p: PendingHandshakes[str] = PendingHandshakes(per_source=4, total=4)
    fill(p, [("a", "s1", False), ("b", "s2", False), ("c", "s2", False), ("d", "s3", False)])
    assert p.admit("e", "s4", member=False) == Admission(victim="b", limit=Limit.GLOBAL)
    # All sources now hold one (s2 one, s1, s3, s4 one): the oldest overall goes.
    assert p.admit("f", "s5", member=False) == Admission(victim="a", limit=Limit.GLOBAL)


def test_a_flood_from_elsewhere_never_displaces_a_member() -> None:
    p: PendingHandshakes[str] = PendingHandshakes(per_source=2, total=3)
    fill(p, [("peer", "m", True), ("x1", "s1", False), ("x2", "s2", False)])
    for i in range(20):
        admission = p.admit(f"y{i}", f"t{i}", member=False)
        assert admission.victim != "peer" and admission.limit is Limit.GLOBAL
    assert "peer" in p
    # Only members left pending: a newcomer from elsewhere is refused.
    q: PendingHandshakes[str] = PendingHandshakes(per_source=2, total=2)
    fill(q, [("m1", "m", True), ("m2", "n", True)])
    assert q.admit("x", "s", member=False) == Admission(victim="x", limit=Limit.GLOBAL)
    assert "x" not in q and len(q) == 2
    # A member newcomer displaces the oldest member instead.
    assert q.admit("m3", "o", member=True) == Admission(victim="m1", limit=Limit.GLOBAL)


def test_in_a_shared_source_the_member_outlasts_the_others() -> None:
    """One IPv6 /64 with a member's address and an attacker's."""
    p: PendingHandshakes[str] = PendingHandshakes(per_source=2, total=8)
    fill(p, [("peer", "net", True), ("x1", "net", False)])
    assert p.admit("x2", "net", member=False) == Admission(victim="x1", limit=Limit.PER_SOURCE)
    assert p.admit("x3", "net", member=False) == Admission(victim="x2", limit=Limit.PER_SOURCE)
    assert "peer" in p
    q: PendingHandshakes[str] = PendingHandshakes(per_source=2, total=8)
    fill(q, [("p1", "net", True), ("p2", "net", True)])
    assert q.admit("x", "net", member=False) == Admission(victim="x", limit=Limit.PER_SOURCE)


def test_discard_forgets_and_is_idempotent() -> None:
    p: PendingHandshakes[str] = PendingHandshakes(per_source=1, total=1)
    fill(p, [("a", "s", False)])
    p.discard("a")
    p.discard("a")
    assert len(p) == 0 and p.count("s") == 0
    fill(p, [("b", "s", False)])
    with pytest.raises(ValueError, match="already pending"):
        p.admit("b", "s", member=False)


def test_limits_must_be_sane() -> None:
    with pytest.raises(ValueError):
        PendingHandshakes[str](per_source=0, total=4)
    with pytest.raises(ValueError):
        PendingHandshakes[str](per_source=5, total=4)


@pytest.mark.parametrize(
    ("host", "source"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1:2", "2001:db8::/64"),
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("node-1.example", "node-1.example"),
    ],
)
def test_source_of(host: str, source: str) -> None:
    assert source_of(host) == source


ops = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("discard"), st.integers(0, 200), st.just(False)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, per_source=st.integers(1, 4), extra=st.integers(0, 6))
def test_bounds_hold_and_members_are_displaced_only_by_members(
    ops: list[tuple[str, int, bool]], per_source: int, extra: int
) -> None:
    total = per_source + extra
    p: PendingHandshakes[int] = PendingHandshakes(per_source=per_source, total=total)
    model: dict[int, tuple[str, bool]] = {}  # key -> (source, member)
    for n, (op, arg, member) in enumerate(ops):
        if op == "discard":
            p.discard(arg)
            model.pop(arg, None)
            continue
        source = f"s{arg}"
        admission = p.admit(n, source, member=member)
        if admission.victim is None:
            model[n] = (source, member)
        else:
            if admission.victim != n:
                victim_source, victim_member = model.pop(admission.victim)
                model[n] = (source, member)
                assert member or not victim_member, "a member displaced by a stranger"
                if admission.limit is Limit.PER_SOURCE:
                    assert victim_source == source
            else:
                # Refused only when every candidate is a member and it is not.
                assert not member
        assert len(p) == len(model) <= total
        for s in {src for src, _ in model.values()}:
            assert p.count(s) == sum(1 for src, _ in model.values() if src == s) <= per_source
        assert all(k in p for k in model)
