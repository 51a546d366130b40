"""The sync and asyncio clients against scripted fake nodes.

Sleeps and the clock are injected, so no test waits for a real backoff.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import sys

import pytest

from raftkv.client import (
    DEFAULT_ENDPOINTS,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    OutcomeUnknown,
    ServerError,
    TooManySessions,
    Unavailable,
    parse_endpoints,
)
from raftkv.client._sansio import Router, SessionLanes, backoff_delay
from raftkv.client.aio import AsyncClient
from tests.client.fakeserver import DROP, fake_nodes

OK = (200, {"ok": True, "index": 7})
NO_LEADER = (503, {"error": "no leader", "leader": ""})


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def client(endpoints: list[str], t: FakeTime, **kwargs: object) -> Client:
    return Client(
        endpoints,
        client_id="cid",
        rng=random.Random(1),
        sleep=t.sleep,
        clock=t.clock,
        **kwargs,  # type: ignore[arg-type]
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- sync


def test_put_retries_503_with_the_same_idempotency_key() -> None:
    t = FakeTime()
    with fake_nodes([NO_LEADER, NO_LEADER, OK]) as (node,):
        result = client([node.address], t).put("k", {"v": [1, None]})
    assert result.index == 7 and result.endpoint == node.address
    assert [s.method for s in node.seen] == ["PUT"] * 3
    assert node.keys() == ["cid.0/1"] * 3
    assert node.seen[0].path == "/v1/kv/k" and node.seen[0].body == {"v": [1, None]}
    assert len(t.sleeps) == 2 and t.sleeps[1] > 0


@pytest.mark.parametrize("failure", [DROP, (504, {"error": "timed out"})])
def test_unknown_outcome_is_retried_with_the_same_key(failure: object) -> None:
    t = FakeTime()
    with fake_nodes([failure, OK]) as (node,):
        c = client([node.address], t)
        assert c.multi_put({"a": 1, "b": 2}).index == 7
        c.put("x", 1)
    assert node.keys() == ["cid.0/1", "cid.0/1", "cid.0/2"]
    assert node.seen[0].path == "/v1/kv" and node.seen[0].body == {"a": 1, "b": 2}


def test_follows_the_leader_hint_by_address() -> None:
    t = FakeTime()
    with fake_nodes([OK], [OK]) as (leader, follower):
        follower.script = [(503, {"error": "not leader", "leader": leader.address})]
        c = client([follower.address, leader.address], t)
        c.delete("k")
        c.delete("k")  # sticks to the leader
    assert len(follower.seen) == 1 and len(leader.seen) == 2
    assert t.sleeps == []  # a fresh hint is tried at once
    assert leader.keys() == ["cid.0/1", "cid.0/2"]


def test_follows_the_leader_hint_by_node_id_after_status() -> None:
    t = FakeTime()
    with fake_nodes([OK], [OK]) as (leader, follower):
        members = {
            "n1": {"raft_addr": "127.0.0.1:1", "api_addr": follower.address},
            "n2": {"raft_addr": "127.0.0.1:2", "api_addr": leader.address},
        }
        follower.script = [
            (200, {"id": "n1", "role": "follower", "leader": "n2", "members": members}),
            (503, {"error": "not leader", "leader": "n2"}),
        ]
        c = client([follower.address, leader.address], t)
        assert c.status()["id"] == "n1"
        result = c.put("k", 1)
    assert result.endpoint == leader.address and result.leader == "n2"
    assert [s.path for s in follower.seen] == ["/v1/status", "/v1/kv/k"]


def test_connection_refused_moves_to_the_next_endpoint() -> None:
    t = FakeTime()
    with fake_nodes([OK]) as (node,):
        result = client([f"127.0.0.1:{closed_port()}", node.address], t).put("k", 1)
    assert result.endpoint == node.address and t.sleeps == []


def test_get_and_keys_are_quoted() -> None:
    t = FakeTime()
    answer = (200, {"key": "a/b c?", "value": None, "index": 3})
    with fake_nodes([answer]) as (node,):
        c = client([node.address], t)
        assert c.get("a/b c?") is None
        read = c.read("é", consistency="stale")
    assert read.index == 3
    assert [s.path for s in node.seen] == ["/v1/kv/a%2Fb%20c%3F", "/v1/kv/%C3%A9?consistency=stale"]
    assert node.keys() == [None, None]  # reads carry no idempotency key


def test_final_errors() -> None:
    t = FakeTime()
    with fake_nodes(
        [
            (404, {"error": "not found"}),
            (409, {"error": "conflict", "current": 5, "found": True}),
            (400, {"error": "bad key"}),
            (500, {"error": "boom"}),
        ]
    ) as (node,):
        c = client([node.address], t)
        with pytest.raises(NotFound, match="get 'k': not found") as nf:
            c.get("k")
        assert nf.value.key == "k"
        with pytest.raises(Conflict, match=r"current value: 5") as conflict:
            c.cas("k", None, 1)
        assert (conflict.value.current, conflict.value.found) == (5, True)
        with pytest.raises(BadRequest, match="bad key"):
            c.put("k", 1)
        with pytest.raises(ServerError, match="500 boom"):
            c.put("k", 1)
    assert node.seen[1].body == {"expect": None, "value": 1}
    assert node.seen[1].path == "/v1/kv/k/cas"


def test_a_replayed_conflict_and_a_full_session_table() -> None:
    t = FakeTime()
    full = "too many client sessions: no new client id is accepted until idle sessions expire"
    with fake_nodes(
        [
            (409, {"error": "conflict", "key": "k", "found": True, "replayed": True}),
            (429, {"error": full}),
            OK,
        ]
    ) as (node,):
        c = client([node.address], t)
        with pytest.raises(Conflict, match="repeated from an earlier attempt") as conflict:
            c.cas("k", 1, 2)
        assert (conflict.value.replayed, conflict.value.current, conflict.value.found) == (
            True,
            None,
            True,
        )
        with pytest.raises(TooManySessions, match="HTTP 429 too many client sessions"):
            c.put("k", 1)
        assert len(node.seen) == 2  # not retried
    assert not t.sleeps


def test_bad_input_is_rejected_before_sending() -> None:
    c = Client(["127.0.0.1:1"])
    with pytest.raises(BadRequest, match="non-empty"):
        c.put("", 1)
    with pytest.raises(BadRequest, match="not a JSON value"):
        c.put("k", float("nan"))
    with pytest.raises(ValueError, match="consistency"):
        c.get("k", consistency="eventual")


def test_gives_up_at_the_deadline() -> None:
    t = FakeTime()
    with (
        fake_nodes([NO_LEADER]) as (node,),
        pytest.raises(Unavailable, match=r"no node answered within 2s.*503 no leader"),
    ):
        client([node.address], t, deadline=2.0).put("k", 1)
    assert sum(t.sleeps) == pytest.approx(2.0)
    assert t.sleeps == sorted(t.sleeps[:-1]) + t.sleeps[-1:]  # backoff grows


def test_unknown_outcome_at_the_deadline() -> None:
    t = FakeTime()
    with (
        fake_nodes([(504, {"error": "timeout"}), NO_LEADER]) as (node,),
        pytest.raises(OutcomeUnknown, match="outcome unknown"),
    ):
        client([node.address], t, deadline=1.0).put("k", 1)


def test_unreachable_with_real_time() -> None:
    c = Client([f"127.0.0.1:{closed_port()}"], deadline=0.3)
    with pytest.raises(Unavailable, match="connection refused"):
        c.status()


def test_sync_client_does_not_import_aiohttp() -> None:
    code = "import sys, raftkv.client; assert 'aiohttp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- pieces


def test_parse_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAFTKV_ENDPOINTS", raising=False)
    assert parse_endpoints(None) == DEFAULT_ENDPOINTS
    monkeypatch.setenv("RAFTKV_ENDPOINTS", "h1:1, http://h2:2/")
    assert parse_endpoints(None) == ("h1:1", "h2:2")
    assert parse_endpoints(["[::1]:80", "[::1]:80"]) == ("[::1]:80",)
    for bad in ["nohost", "h:0", "h:x", ""]:
        with pytest.raises(ValueError):
            parse_endpoints(bad)


def test_session_lanes() -> None:
    lanes = SessionLanes("c")
    a, b = lanes.acquire(), lanes.acquire()
    assert (lanes.next_key(a), lanes.next_key(b), lanes.next_key(a)) == ("c.0/1", "c.1/1", "c.0/2")
    lanes.release(a)
    assert lanes.acquire() == a and lanes.next_key(a) == "c.0/3"


def test_router_ignores_unknown_hints() -> None:
    router = Router(["a:1", "b:2"])
    router.hint("n9", "a:1")
    assert router.current() == "b:2"
    router.hint("c:3", "b:2")
    assert router.current() == "c:3" and router.endpoints == ("a:1", "b:2", "c:3")


def test_backoff_is_bounded_and_jittered() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(n, initial=0.1, maximum=1.0, rng=rng) for n in range(40)]
    assert all(0.05 <= d <= 1.0 for d in delays) and delays[-1] >= 0.5


# ----------------------------------------------------------------------------- asyncio


def test_async_client_retries_and_follows_hints() -> None:
    t = FakeTime()

    async def run(leader: str, follower: str) -> None:
        async with AsyncClient(
            [follower, leader], client_id="cid", sleep=t.asleep, clock=t.clock
        ) as c:
            assert (await c.put("k", 1)).index == 7
            results = await asyncio.gather(*(c.put(f"k{i}", i) for i in range(3)))
            assert [r.index for r in results] == [7, 7, 7]
            assert await c.get("k") == 1

    get_answer = (200, {"key": "k", "value": 1, "index": 9})
    with fake_nodes([DROP, OK, OK, OK, OK, get_answer], []) as (leader, follower):
        follower.script = [(503, {"error": "not leader", "leader": leader.address})]
        asyncio.run(run(leader.address, follower.address))
    # follower: 503 + hint; leader: dropped, retried (by aiohttp itself for a PUT on a
    # kept-alive connection, or by the client via the follower); then OK -- one key.
    assert set(follower.keys()) == {"cid.0/1"}
    assert leader.keys()[:2] == ["cid.0/1", "cid.0/1"]
    # Concurrent writes use distinct lanes, so no seq overtakes another in a session.
    assert sorted(k for k in leader.keys()[2:5] if k) == ["cid.0/2", "cid.1/1", "cid.2/1"]
    assert leader.seen[-1].path == "/v1/kv/k"


def test_async_client_errors() -> None:
    async def run(address: str) -> None:
        async with AsyncClient([address], deadline=0.3) as c:
            with pytest.raises(NotFound):
                await c.delete("gone")
        async with AsyncClient([f"127.0.0.1:{closed_port()}"], deadline=0.3) as c:
            with pytest.raises(Unavailable, match="multi_put"):
                await c.multi_put({"a": 1})

    with fake_nodes([(404, {"error": "not found"})]) as (node,):
        asyncio.run(run(node.address))
