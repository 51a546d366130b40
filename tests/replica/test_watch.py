"""The watch hub: ordered, exactly-once, resumable watches over the applied history (issue 17)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.replica.kv import (
    Command,
    Compact,
    Delete,
    DeleteRange,
    KeyRange,
    KVStateMachine,
    LeaseGrant,
    LeaseRevoke,
    MultiPut,
    Put,
    encode_command,
)
from raftkv.replica.mvcc import prefix_range_end
from raftkv.replica.watch import (
    CANCEL_COMPACTED,
    CANCEL_NO_LEADER,
    CANCEL_SLOW,
    EVENT_DELETE,
    EVENT_PUT,
    FILTER_NO_DELETE,
    FILTER_NO_PUT,
    Event,
    InvalidWatch,
    Watcher,
    WatchHub,
    WatchResponse,
)


class Node:
    """A state machine, its hub, and a log to feed it."""

    def __init__(self) -> None:
        self.sm = KVStateMachine()
        self.hub = WatchHub(self.sm)
        self.index = 0

    def apply(self, cmd: Command, *, notify: bool = True) -> Any:
        self.index += 1
        result = self.sm.apply(self.index, encode_command(cmd))
        if notify:
            self.hub.applied()
        return result

    def put(self, key: str, value: int = 1, **kw: Any) -> None:
        self.apply(Put(key=key, value=value, time_ms=1), **kw)


def events_of(responses: list[WatchResponse]) -> list[tuple[int, str, bytes]]:
    return [(r.revision, e.kind, e.kv.key) for r in responses for e in r.events]


@pytest.fixture
def node() -> Node:
    return Node()


def test_a_key_watch_sees_its_key_only(node: Node) -> None:
    w = node.hub.create(b"a")
    node.put("a")
    node.put("b")
    node.apply(Delete(key="a", time_ms=1))
    got = w.take()
    assert events_of(got) == [(2, EVENT_PUT, b"a"), (4, EVENT_DELETE, b"a")]
    assert w.take() == []


def test_a_prefix_watch_gets_whole_revisions(node: Node) -> None:
    w = node.hub.create(b"p/", prefix_range_end(b"p/"))
    node.apply(MultiPut(pairs={"p/2": 1, "q": 1, "p/1": 2}, time_ms=1))
    (r,) = w.take()
    assert r.revision == 2 and [e.kv.key for e in r.events] == [b"p/1", b"p/2"]


def test_start_revision_zero_is_the_next_one(node: Node) -> None:
    node.put("a")
    w = node.hub.create(b"a")
    assert w.take() == []
    node.put("a")
    assert events_of(w.take()) == [(3, EVENT_PUT, b"a")]


def test_a_watch_from_the_past_catches_up_then_follows(node: Node) -> None:
    for _ in range(5):
        node.put("a")  # revisions 2..6
    w = node.hub.create(b"a", start_revision=3)
    assert node.hub.catching_up == 1
    assert node.hub.step(budget=2)  # revisions 3, 4
    node.put("a")  # 7: not given yet, it is still catching up
    assert [r.revision for r in w.take()] == [3, 4]
    assert not node.hub.synced(w.id)  # a progress answer now would overtake 5..7
    assert not node.hub.step()
    assert node.hub.synced(w.id)
    node.put("a")
    assert [r.revision for r in w.take()] == [5, 6, 7, 8]
    node.hub.close(w.id)
    assert not node.hub.synced(w.id)


def test_a_future_start_revision_waits(node: Node) -> None:
    w = node.hub.create(b"a", start_revision=4)
    node.put("a")  # 2
    node.put("a")  # 3
    node.put("a")  # 4
    assert [r.revision for r in w.take()] == [4]


def test_filters_and_prev_kv(node: Node) -> None:
    no_put = node.hub.create(b"a", filters=frozenset({FILTER_NO_PUT}))
    no_del = node.hub.create(b"a", filters=frozenset({FILTER_NO_DELETE}), prev_kv=True)
    plain = node.hub.create(b"a")
    node.put("a", 1)
    node.put("a", 2)
    node.apply(Delete(key="a", time_ms=1))
    assert events_of(no_put.take()) == [(4, EVENT_DELETE, b"a")]
    got = no_del.take()
    assert [r.revision for r in got] == [2, 3]
    assert got[1].events[0].prev_kv is not None and got[1].events[0].prev_kv.value == b"1"
    assert all(e.prev_kv is None for r in plain.take() for e in r.events)
    with pytest.raises(InvalidWatch):
        node.hub.create(b"a", filters=frozenset({"nothing"}))
    with pytest.raises(InvalidWatch):
        node.hub.create(b"")


def test_a_batch_of_revisions_is_dispatched_from_history(node: Node) -> None:
    w = node.hub.create(b"a")
    node.put("a", notify=False)
    node.put("b", notify=False)
    node.put("a", notify=False)
    node.hub.applied()
    assert [r.revision for r in w.take()] == [2, 4]


def test_compacted_start_is_cancelled_with_the_compact_revision(node: Node) -> None:
    for _ in range(4):
        node.put("a")  # 2..5
    node.apply(Compact(revision=4, time_ms=1))
    w = node.hub.create(b"a", start_revision=2)
    (r,) = w.take()
    assert r.canceled and r.cancel_reason == CANCEL_COMPACTED and r.compact_revision == 4
    assert w.canceled and len(node.hub) == 0
    again = node.hub.create(b"a", start_revision=4)  # a client restarts there
    node.hub.step()
    assert [r.revision for r in again.take()] == [4, 5]


def test_compaction_while_catching_up_cancels(node: Node) -> None:
    for _ in range(6):
        node.put("a")  # 2..7
    w = node.hub.create(b"a", start_revision=2)
    node.hub.step(budget=1)  # got 2
    node.apply(Compact(revision=5, time_ms=1))
    node.hub.step()
    got = w.take()
    assert [r.revision for r in got[:-1]] == [2]
    assert got[-1].canceled and got[-1].compact_revision == 5


def test_progress_only_when_synced_and_drained(node: Node) -> None:
    w = node.hub.create(b"a")
    other = node.hub.create(b"zzz")
    node.put("a")
    node.hub.progress()
    assert [(r.revision, r.progress) for r in w.take()] == [(2, False)]  # no progress: pending
    assert [(r.revision, r.progress) for r in other.take()] == [(2, True)]
    node.put("b")
    node.hub.progress()
    assert [(r.revision, r.progress) for r in w.take()] == [(3, True)]
    behind = node.hub.create(b"a", start_revision=2)
    node.hub.progress()
    assert behind.take() == []  # catching up: nothing to promise yet
    ahead = node.hub.create(b"a", start_revision=9)  # resumed on a node that lags
    node.hub.progress()
    assert ahead.take() == []  # revision 3 would be below what its client has


def test_a_slow_watcher_is_cancelled_and_freed(node: Node) -> None:
    w = node.hub.create(b"a", max_pending_bytes=300)
    fine = node.hub.create(b"a")
    for i in range(10):
        node.put("a", i)
    (r,) = w.take()
    assert r.canceled and r.cancel_reason.startswith(CANCEL_SLOW)
    assert w.pending_bytes == 0 and len(node.hub) == 1
    assert len(fine.take()) == 10


def test_catching_up_pauses_for_a_slow_reader_instead_of_cancelling(node: Node) -> None:
    for i in range(20):
        node.put("a", i)
    w = node.hub.create(b"a", start_revision=2, max_pending_bytes=600)
    got: list[WatchResponse] = []
    for _ in range(40):
        node.hub.step()
        got.extend(w.take())
    assert [r.revision for r in got] == list(range(2, 22)) and not w.canceled


def test_leader_lost_cancels_watchers_that_require_one(node: Node) -> None:
    needs = node.hub.create(b"a", require_leader=True)
    keeps = node.hub.create(b"a")
    assert node.hub.leader_lost() == 1
    (r,) = needs.take()
    assert r.canceled and r.cancel_reason == CANCEL_NO_LEADER
    node.put("a")
    assert len(keeps.take()) == 1 and needs.take() == []


def test_cancel_and_close(node: Node) -> None:
    w = node.hub.create(b"a")
    assert node.hub.cancel(w.id, "bye")
    (r,) = w.take()
    assert r.canceled and r.cancel_reason == "bye"
    assert not node.hub.cancel(w.id, "again")
    v = node.hub.create(b"a")
    assert v.id > w.id
    node.put("a")
    assert node.hub.close(v.id) and v.take() == [] and len(node.hub) == 0


def test_restore_resyncs_every_watcher_from_history(node: Node) -> None:
    w = node.hub.create(b"a")
    node.put("a")  # 2, seen
    ahead = Node()
    ahead.index = node.index
    ahead.sm.restore(node.sm.snapshot())
    for _ in range(3):
        ahead.put("a")  # 3..5 on the node that moved on
    assert events_of(w.take()) == [(2, EVENT_PUT, b"a")]
    node.sm.restore(ahead.sm.snapshot())  # an InstallSnapshot
    node.index = ahead.index
    node.hub.applied()
    node.hub.step()
    assert [r.revision for r in w.take()] == [3, 4, 5]
    node.put("a")
    assert [r.revision for r in w.take()] == [6]


# ----------------------------------------------------------------------------- property

KEYS = ("a", "ab", "b", "c")
WATCHES: tuple[tuple[bytes, bytes], ...] = (
    (b"a", b""),
    (b"a", prefix_range_end(b"a")),
    (b"\0", b"\0"),
    (b"b", b"c"),
    (b"c", b""),
)


@dataclass
class Client:
    """One logical watch stream: resumes across disconnects, as a client would."""

    key: bytes
    range_end: bytes
    start: int
    prev_kv: bool
    watcher: Watcher | None = None
    last: int = 0  # last revision it has everything up to (events or progress)
    got: list[Event] = field(default_factory=list)
    missed: list[tuple[int, int]] = field(default_factory=list)  # declared by compacted cancels
    progress: list[int] = field(default_factory=list)


op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.booleans()),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.booleans()),
    st.tuples(st.just("multi"), st.sampled_from(KEYS), st.sampled_from(KEYS)),
    st.tuples(st.just("delete_prefix"), st.sampled_from(("a", "b", ""))),
    st.tuples(
        st.just("grant"),
    ),
    st.tuples(
        st.just("revoke"),
    ),
    st.tuples(st.just("compact"), st.integers(0, 5)),
    st.tuples(st.just("watch"), st.integers(0, len(WATCHES) - 1), st.integers(0, 8), st.booleans()),
    st.tuples(st.just("disconnect"), st.integers(0, 9)),
    st.tuples(st.just("resume"), st.integers(0, 9)),
    st.tuples(st.just("take"), st.integers(0, 9)),
    st.tuples(st.just("step"), st.integers(1, 4)),
    st.tuples(
        st.just("progress"),
    ),
    st.tuples(
        st.just("flush"),
    ),
    st.tuples(
        st.just("restore"),
    ),
)


def _receive(client: Client, responses: list[WatchResponse], node: Node) -> None:
    for r in responses:
        if r.canceled:
            assert r.cancel_reason == CANCEL_COMPACTED, r
            # A client restarts from the compact revision, knowing what it missed.
            client.missed.append((client.last + 1, r.compact_revision - 1))
            client.last = max(client.last, r.compact_revision - 1)
            client.watcher = None
            continue
        if r.progress:
            assert r.revision >= client.last, "progress went back or overtook events"
            client.progress.append(r.revision)
            client.last = r.revision
            continue
        assert r.events and r.revision > client.last, (r.revision, client.last)
        assert all(e.kv.mod_revision == r.revision for e in r.events)
        client.got.extend(r.events)
        client.last = r.revision


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=80))
def test_every_watcher_gets_the_history_exactly_once_in_order(ops: list[tuple[Any, ...]]) -> None:
    node = Node()
    history: list[Event] = []  # every event ever applied, in revision then key order
    progress_points: dict[int, int] = {}  # revision -> len(history) at it
    clients: list[Client] = []
    leases: list[int] = []

    def apply(cmd: Command, notify: bool) -> Any:
        before = node.sm.revision
        result = node.apply(cmd, notify=notify)
        if node.sm.revision != before:
            got = node.sm.last_events()
            assert got is not None and got[0] == node.sm.revision
            history.extend(got[1])
        return result

    def connect(c: Client) -> None:
        start = c.last + 1
        w = node.hub.create(c.key, c.range_end, start_revision=start, prev_kv=c.prev_kv)
        c.watcher = w
        _receive(c, w.take(), node)

    for item in ops:
        kind = item[0]
        if kind == "put":
            lease = leases[-1] if item[2] and leases else 0
            apply(Put(key=item[1], value=len(history), time_ms=1, lease=lease), True)
        elif kind == "delete":
            if item[1] in node.sm:
                apply(Delete(key=item[1], time_ms=1), item[2])
        elif kind == "multi":
            apply(MultiPut(pairs={item[1]: 1, item[2]: 2}, time_ms=1), False)
        elif kind == "delete_prefix":
            apply(DeleteRange(range=KeyRange(key=item[1], prefix=True), time_ms=1), True)
        elif kind == "grant":
            r = apply(LeaseGrant(id=0, ttl_s=5, time_ms=1), True)
            leases.append(r.id)
        elif kind == "revoke" and leases:
            apply(LeaseRevoke(id=leases.pop(0), time_ms=1), True)
        elif kind == "compact":
            target = node.sm.revision - item[1]
            if target > node.sm.compact_revision:
                apply(Compact(revision=target, time_ms=1), True)
        elif kind == "watch" and len(clients) < 10:
            key, end = WATCHES[item[1]]
            start = max(1, node.sm.revision + 1 - item[2])
            c = Client(key=key, range_end=end, start=start, prev_kv=item[3], last=start - 1)
            clients.append(c)
            connect(c)
        elif kind == "disconnect" and item[1] < len(clients):
            c = clients[item[1]]
            if c.watcher is not None:
                # What was queued but not read is lost with the connection.
                node.hub.close(c.watcher.id)
                c.watcher = None
        elif kind == "resume" and item[1] < len(clients):
            c = clients[item[1]]
            if c.watcher is None:
                connect(c)
        elif kind == "take" and item[1] < len(clients):
            c = clients[item[1]]
            if c.watcher is not None:
                _receive(c, c.watcher.take(), node)
        elif kind == "step":
            node.hub.step(budget=item[1])
        elif kind == "progress":
            node.hub.progress()
        elif kind == "flush":
            node.hub.applied()
        elif kind == "restore":
            node.sm.restore(node.sm.snapshot())
        progress_points[node.sm.revision] = len(history)

    # Drain: everyone reconnects and reads everything.
    node.hub.applied()
    for _ in range(1000):
        busy = node.hub.step(budget=64)
        for c in clients:
            if c.watcher is not None:
                _receive(c, c.watcher.take(), node)
            if c.watcher is None:
                connect(c)
                busy = True
        if not busy:
            break
    else:
        raise AssertionError("the watchers never caught up")

    for c in clients:

        def wanted(e: Event, c: Client = c) -> bool:
            rev = e.kv.mod_revision
            key = e.kv.key
            if c.range_end == b"":
                inside = key == c.key
            elif c.range_end == b"\0":
                inside = key >= c.key
            else:
                inside = c.key <= key < c.range_end
            return inside and rev >= c.start and not any(lo <= rev <= hi for lo, hi in c.missed)

        expected = [e for e in history if wanted(e)]
        got = c.got
        assert [(e.kind, e.kv) for e in got] == [(e.kind, e.kv) for e in expected]
        for g, e in zip(got, expected, strict=True):
            if c.prev_kv:
                assert g.prev_kv is None or g.prev_kv == e.prev_kv
                if g.prev_kv is None and e.prev_kv is not None:
                    # Only compaction may drop a prev_kv, at the compact revision.
                    assert e.kv.mod_revision <= node.sm.compact_revision
            else:
                assert g.prev_kv is None
        for p in c.progress:
            # Everything up to a progress revision had been delivered (checked
            # in order by _receive), and it is never ahead of the applied state.
            assert p <= node.sm.revision
