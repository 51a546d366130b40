"""Sessions over HTTP: bound to the client token that created them (issue 15 #9)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import raftkv.server.node.runtime as node_module
from raftkv.client import TooManySessions
from raftkv.client.aio import AsyncClient
from raftkv.replica.kv import KVStateMachine
from raftkv.server.security import bearer_token, parse_tokens
from tests.security.conftest import HubCluster, run

TOKEN_A = "token-a-0123456789abcdef"
TOKEN_B = "token-b-0123456789abcdef"


async def _put(
    s: aiohttp.ClientSession, url: str, token: str | None, idempotency_key: str, value: Any
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": idempotency_key}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with s.put(url, data=json.dumps(value), headers=headers) as resp:
        return resp.status, await resp.json()


def test_a_session_belongs_to_the_token_that_created_it(tmp_path: Path) -> None:
    tokens = parse_tokens(f"rw {TOKEN_A}\nrw {TOKEN_B}\n")

    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"client_tokens": tokens}) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            sm = c.nodes[leader].state_machine
            assert isinstance(sm, KVStateMachine)
            async with aiohttp.ClientSession() as s:
                url = c.url(follower) + "/v1/kv/x"
                status, body = await _put(s, url, TOKEN_A, "c1/1", "a1")
                assert status == 200, body
                # Another token pushing c1's sequence far ahead: refused, not applied.
                for node in (leader, follower):
                    other = c.url(node) + "/v1/kv/x"
                    status, body = await _put(s, other, TOKEN_B, "c1/1000000000", "b")
                    assert status == 403, body
                    assert "another client token" in body["error"], body
                    assert sm.sessions()["c1"][0] == 1
                # Nor may it replay A's write to learn its answer.
                status, body = await _put(s, url, TOKEN_B, "c1/1", "a1")
                assert status == 403, body
                status, body = await _put(s, url, TOKEN_A, "c1/2", "a2")
                assert status == 200, body
                assert sm.sessions()["c1"][0] == 2
                assert sm.read("x").value == "a2"
                # B's own sessions work.
                status, body = await _put(s, url, TOKEN_B, "c2/1", "b1")
                assert status == 200, body

    run(main())


def test_a_full_session_table_is_429_and_a_replayed_conflict_has_no_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        node_module, "default_state_machine", lambda: KVStateMachine(max_sessions=2)
    )

    async def main() -> None:
        async with HubCluster(tmp_path, n=1) as c:
            url = c.url(await c.leader())
            endpoint = url.removeprefix("http://")
            async with aiohttp.ClientSession() as s:
                assert (await _put(s, url + "/v1/kv/k", None, "c1/1", "v1"))[0] == 200
                cas = {"expect": "v0", "value": "v2"}
                headers = {"Idempotency-Key": "c2/1"}
                for attempt in range(2):
                    async with s.post(url + "/v1/kv/k/cas", json=cas, headers=headers) as resp:
                        status, body = resp.status, await resp.json()
                    assert (status, body["error"], body["found"]) == (409, "conflict", True)
                    if attempt == 0:
                        assert body["current"] == "v1" and "replayed" not in body
                    else:  # the retry: the first conflict again, without the value
                        assert "current" not in body and body["replayed"] is True
                # Two sessions exist: a third is refused, c1 keeps working.
                status, body = await _put(s, url + "/v1/kv/k", None, "c3/1", "v3")
                assert status == 429 and body["error"].startswith("too many client sessions")
                assert (await _put(s, url + "/v1/kv/k", None, "c1/2", "v4"))[0] == 200
            async with AsyncClient([endpoint], client_id="c4", deadline=2) as kv:
                with pytest.raises(TooManySessions, match="HTTP 429 too many client sessions"):
                    await kv.put("k", "v5")
            sm = c.nodes[next(iter(c.nodes))].state_machine
            assert isinstance(sm, KVStateMachine)
            assert sm.read("k").value == "v4" and sorted(sm.sessions()) == ["c1", "c2"]

    run(main())


def test_a_token_owner_is_stable_and_reveals_nothing_of_the_token() -> None:
    one = parse_tokens(f"rw {TOKEN_A} alice\nrw {TOKEN_B}\n")
    other = parse_tokens(f"ro x{TOKEN_B}\nrw {TOKEN_B} bob\nrw {TOKEN_A}\n")  # moved, renamed
    a, b = one.lookup(TOKEN_A), one.lookup(TOKEN_B)
    assert a is not None and b is not None
    assert re.fullmatch("[0-9a-f]{16}", a.owner) and a.owner != b.owner
    assert [e.owner for e in (other.lookup(TOKEN_A), other.lookup(TOKEN_B))] == [a.owner, b.owner]
    assert a.owner not in (a.digest.hex()[:16], TOKEN_A.encode().hex()[:16])
    assert bearer_token(f"Bearer  {TOKEN_A} ") == TOKEN_A
    assert [bearer_token(h) for h in (None, "", "Bearer", "Bearer  ", f"Basic {TOKEN_A}")] == [
        None
    ] * 5


def test_a_forged_owner_in_a_forwarded_command_is_replaced(tmp_path: Path) -> None:
    """``POST /v1/forward`` takes an encoded command from anyone with a write
    token; the owner in it is replaced by the one of the token the leader checked."""
    from raftkv.replica.kv import Put, Session, encode_command
    from raftkv.server.http.forwarding import COMMAND_CONTENT_TYPE, FORWARD_ROUTE
    from raftkv.server.http.request import FORWARDED_HEADER

    tokens = parse_tokens(f"rw {TOKEN_A}\nrw {TOKEN_B}\n")
    owner_a = tokens.lookup(TOKEN_A).owner  # type: ignore[union-attr]

    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"client_tokens": tokens}) as c:
            leader = await c.leader()
            sm = c.nodes[leader].state_machine
            assert isinstance(sm, KVStateMachine)
            async with aiohttp.ClientSession() as s:
                status, body = await _put(s, c.url(leader) + "/v1/kv/x", TOKEN_A, "c1/1", "a")
                assert status == 200, body
                forged = Put(
                    key="x",
                    value="b",
                    time_ms=1,
                    session=Session(client_id="c1", seq=9, owner=owner_a),
                )
                headers = {
                    "Authorization": f"Bearer {TOKEN_B}",
                    FORWARDED_HEADER: "n2",
                    "Content-Type": COMMAND_CONTENT_TYPE,
                }
                url = c.url(leader) + FORWARD_ROUTE
                async with s.post(url, data=encode_command(forged), headers=headers) as r:
                    assert r.status == 403, await r.text()
                assert sm.sessions()["c1"][0] == 1 and sm.read("x").value == "a"
                # Without the member header the route is refused outright.
                del headers[FORWARDED_HEADER]
                async with s.post(url, data=encode_command(forged), headers=headers) as r:
                    assert r.status == 400, await r.text()

    run(main())
