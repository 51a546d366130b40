"""The HTTP fast path of the hot KV routes (raftkv.server.fasthttp, api Rule 5).

The parser is tested on bytes; the server on a live node, on asyncio's loop and
on uvloop's (whose transports differ), over raw sockets where HTTP details
matter: pipelining, hand-off to aiohttp, Connection: close, EOF, the guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.server.fasthttp import (
    HANDOFF,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    NEED_DATA,
    FastRequest,
    encode_response,
    parse_request,
)
from raftkv.server.http.connections import FastHttpServer
from raftkv.server.security import parse_tokens
from tests.cluster.harness import InProcCluster
from tests.security.conftest import RO_TOKEN, RW_TOKEN, TOKENS_TEXT, HubCluster

PUT = b"PUT /v1/kv/k1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n7"
GET = b"GET /v1/kv/k1 HTTP/1.1\r\nHost: x\r\n\r\n"


# --------------------------------------------------------------------------- parser


def parsed(raw: bytes, max_body: int = 1 << 20) -> FastRequest:
    result = parse_request(raw, max_body)
    assert isinstance(result, tuple), result
    request, consumed = result
    assert consumed == len(raw)
    return request


def test_parse_put_and_get() -> None:
    put = parsed(
        b"PUT /v1/kv/a.b_c~-9 HTTP/1.1\r\nHOST: x\r\nContent-Length:  3 \r\n"
        b"Idempotency-Key: c/1\r\nX-Raftkv-Forwarded: n2\r\n\r\n[1]"
    )
    assert (put.method, put.key, put.body, put.consistency) == ("PUT", "a.b_c~-9", b"[1]", None)
    assert put.headers["idempotency-key"] == "c/1" and put.headers["host"] == "x"
    assert put.headers["x-raftkv-forwarded"] == "n2"
    assert put.keep_alive and put.path_qs == "/v1/kv/a.b_c~-9"
    get = parsed(b"GET /v1/kv/k?consistency=stale HTTP/1.1\r\nConnection: close\r\nHost: h\r\n\r\n")
    assert (get.method, get.key, get.consistency, get.body) == ("GET", "k", "stale", b"")
    assert not get.keep_alive and get.path_qs == "/v1/kv/k?consistency=stale"
    assert parsed(b"GET /v1/kv/k HTTP/1.1\r\nHost: h\r\n\r\n").headers == {"host": "h"}
    many = b"GET /v1/kv/k HTTP/1.1\r\nHost: h\r\n" + b"X: a\r\n" * (MAX_HEADERS - 1) + b"\r\n"
    assert parsed(many).headers["x"] == "a"


def test_parse_multi_put() -> None:
    post = parsed(b'POST /v1/kv HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n{"a": 1}')
    assert (post.method, post.key, post.body, post.consistency) == ("POST", "", b'{"a": 1}', None)
    assert post.path_qs == "/v1/kv" and post.keep_alive


def test_parse_delete_and_plain_gets() -> None:
    delete = parsed(b"DELETE /v1/kv/k HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (delete.method, delete.route, delete.key, delete.body) == (
        "DELETE",
        "/v1/kv/{key}",
        "k",
        b"",
    )
    assert parsed(b"DELETE /v1/kv/k HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").key == "k"
    for path in ("/v1/status", "/v1/health/live", "/v1/health/ready"):
        get = parsed(b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path.encode())
        assert (get.method, get.route, get.key, get.path_qs) == ("GET", path, "", path)


def test_parse_pipelined_requests_one_at_a_time() -> None:
    buf = PUT + GET + b"GET /v1/me"
    first = parse_request(buf, 1024)
    assert isinstance(first, tuple) and first[0].method == "PUT" and first[1] == len(PUT)
    second = parse_request(buf[len(PUT) :], 1024)
    assert isinstance(second, tuple) and second[0].method == "GET" and second[1] == len(GET)
    assert parse_request(buf[len(PUT) + len(GET) :], 1024) is NEED_DATA


@pytest.mark.parametrize(
    "raw", [b"", b"PUT /v1/kv/k HTTP/1.1\r\nContent-Le", PUT[:-1], b"GET /v1/kv/k HTTP/1.1\r\n"]
)
def test_parse_needs_more_data(raw: bytes) -> None:
    assert parse_request(raw, 1024) is NEED_DATA


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/members HTTP/1.1\r\n\r\n",  # another route
        b"GET /v1/status?x=1 HTTP/1.1\r\n\r\n",  # a query on a plain GET
        b"GET /v1/health HTTP/1.1\r\n\r\n",
        b"GET /v1/status/ HTTP/1.1\r\n\r\n",
        b"PUT /v1/status HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
        b"DELETE /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",  # a DELETE with a body
        b"DELETE /v1/kv/k?consistency=stale HTTP/1.1\r\n\r\n",
        b"GET /v1/health/ready HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
        b"POST /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",  # another method
        b"HEAD /v1/kv/k HTTP/1.1\r\n\r\n",
        b"POST /v1/kv HTTP/1.1\r\n\r\n",  # a multi-put without Content-Length
        b"POST /v1/kv?x=1 HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
        b"POST /v1/kv/ HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
        b"POST /v1/kv/k/cas HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
        b"PUT /v1/kv HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
        b"GET /v1/kv HTTP/1.1\r\n\r\n",
        b"POST /v1/kv HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",  # over max_body
        b"GET /v1/kv/k%41 HTTP/1.1\r\n\r\n",  # percent-encoding
        b"GET /v1/kv/.. HTTP/1.1\r\n\r\n",  # dot segments
        b"GET /v1/kv/. HTTP/1.1\r\n\r\n",
        b"GET /v1/kv/a/b HTTP/1.1\r\n\r\n",
        b"GET /v1/kv/k/cas HTTP/1.1\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.0\r\n\r\n",  # not HTTP/1.1
        b"GET /v1/kv/k?consistency=bogus HTTP/1.1\r\n\r\n",
        b"GET /v1/kv/k?x=1 HTTP/1.1\r\n\r\n",
        b"PUT /v1/kv/k?consistency=stale HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
        b"GET  /v1/kv/k HTTP/1.1\r\n\r\n",
        b"PUT /v1/kv/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n1\r\n0\r\n\r\n",
        b"PUT /v1/kv/k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n1",
        b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n12",
        b"GET /v1/kv/k HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
        b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 0x1\r\n\r\n1",
        b"PUT /v1/kv/k HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",  # over max_body
        b"PUT /v1/kv/k HTTP/1.1\r\n\r\n",  # no Content-Length
        b"GET /v1/kv/k HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",  # a GET with a body
        b"GET /v1/kv/k HTTP/1.1\r\nX: a\r\n b\r\n\r\n",  # obs-fold
        b"GET /v1/kv/k HTTP/1.1\r\nX : a\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n",  # non-ASCII
        b"GET /v1/kv/k HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.1\r\nX: a\nY: b\r\n\r\n",  # a bare LF
        b"GET /v1/kv/k HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
        b"GET /v1/kv/k HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD_BYTES,  # never ends
        b"GET /v1/kv/k HTTP/1.1\r\n" + b"X: a\r\n" * MAX_HEADERS + b"\r\n",  # too many
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\r\n\r\n",  # TLS to a plain port
    ],
)
def test_parse_hands_everything_unusual_to_aiohttp(raw: bytes) -> None:
    # With a Host header, so that its absence is not why (tested below).
    with_host = raw.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nHost: h\r\n", 1)
    assert parse_request(with_host, 1024) is HANDOFF


def test_parse_hands_requests_without_host_to_aiohttp() -> None:
    """HTTP/1.1 requires Host; aiohttp answers 400 without one, and so must we."""
    assert parse_request(b"GET /v1/kv/k HTTP/1.1\r\n\r\n", 1024) is HANDOFF
    assert parse_request(b"GET /v1/kv/k HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 1024) is HANDOFF


def test_encode_response() -> None:
    raw = encode_response(503, b'{"error": "x"}', {"X-Raftkv-Leader": "n2"}, close=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Content-Type"] == "application/json; charset=utf-8"
    assert fields["Content-Length"] == str(len(body)) and body == b'{"error": "x"}'
    assert fields["X-Raftkv-Leader"] == "n2" and fields["Connection"] == "close"
    assert fields["Date"].endswith(" GMT") and "Server" in fields


# --------------------------------------------------------------------------- live


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    uvloop = pytest.importorskip("uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    factory = _uvloop_factory() if request.param == "uvloop" else asyncio.new_event_loop

    def go(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 30))

    return go


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def exchange(port: int, raw: bytes, answers: int, *, eof: bool = False) -> list[Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        if eof:
            writer.write_eof()
        out = []
        for _ in range(answers):
            status, headers, body = await read_response(reader)
            is_json = headers.get("content-type", "").startswith("application/json")
            out.append((status, headers, json.loads(body) if is_json else body))
        return out
    finally:
        writer.close()


def test_hot_routes_skip_aiohttp_on_leader_and_follower(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                for i, node in enumerate([leader, follower] * 2):
                    async with s.put(f"{c.url(node)}/v1/kv/k{i}", json={"i": i}) as r:
                        body = await r.json()
                        assert r.status == 200 and body["ok"] and body["leader"] == leader
                        assert r.content_type == "application/json"
                        if node == follower:
                            assert r.headers["X-Raftkv-Leader"] == leader
                    for q in ("", "?consistency=stale", "?consistency=linearizable"):
                        async with s.get(f"{c.url(node)}/v1/kv/k{i}{q}") as r:
                            body = await r.json()
                            assert r.status == 200 and body["value"] == {"i": i}, body
                async with s.get(f"{c.url(follower)}/v1/kv/nope") as r:
                    assert r.status == 404 and (await r.json())["error"] == "not found"
                async with s.put(f"{c.url(follower)}/v1/kv/k", data=b"{bad") as r:
                    assert r.status == 400 and "bad JSON" in (await r.json())["error"]
            for node in (leader, follower):
                fast = c.apis[node].fast
                assert fast is not None and fast.handed_off == 0
                text = c.nodes[node].metrics.render().decode()
                assert 'route="/v1/kv/{key}",status="200"' in text

    run(main())


def test_multi_put_stays_on_the_fast_path(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    """A client that multi-puts (as a bulk load does) keeps its connection on the
    fast path: later PUTs and GETs on it never reach aiohttp either."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                for node in (leader, follower):
                    async with s.post(f"{c.url(node)}/v1/kv", json={"m": node, "n": [1]}) as r:
                        body = await r.json()
                        assert r.status == 200 and body["ok"] and body["leader"] == leader, body
                    async with s.post(f"{c.url(node)}/v1/kv", json=[1]) as r:
                        assert r.status == 400 and "JSON object" in (await r.json())["error"]
                    async with s.put(f"{c.url(node)}/v1/kv/after", json=node) as r:
                        assert r.status == 200
                    async with s.get(f"{c.url(node)}/v1/kv/m") as r:
                        assert (await r.json())["value"] == node
                async with s.get(f"{c.url(leader)}/v1/kv/n?consistency=linearizable") as r:
                    assert (await r.json())["value"] == [1]
            for node in (leader, follower):
                fast = c.apis[node].fast
                assert fast is not None and fast.handed_off == 0
                text = c.nodes[node].metrics.render().decode()
                assert 'route="/v1/kv",status="200"' in text
                assert 'route="/v1/kv",status="400"' in text

    run(main())


def test_delete_status_and_probes_stay_on_the_fast_path(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    """A client that mixes DELETEs, status and health probes into its connection
    keeps it on the fast path, with the same answers aiohttp gives."""

    async def main() -> None:
        async with InProcCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                for node in (leader, follower):
                    async with s.put(f"{c.url(node)}/v1/kv/d", json=1) as r:
                        assert r.status == 200
                    async with s.delete(f"{c.url(node)}/v1/kv/d") as r:
                        body = await r.json()
                        assert r.status == 200 and body["ok"] and body["leader"] == leader, body
                    async with s.get(f"{c.url(node)}/v1/kv/d") as r:
                        assert r.status == 404
                    async with s.get(f"{c.url(node)}/v1/status") as r:
                        st = await r.json()
                        assert r.status == 200 and st["leader"] == leader and st["id"] == node
                    async with s.get(f"{c.url(node)}/v1/health/live") as r:
                        assert r.status == 200 and (await r.json())["status"] == "live"
                    async with s.get(f"{c.url(node)}/v1/health/ready") as r:
                        ready = await r.json()
                        assert r.status == 200 and ready["status"] == "ready", ready
                    async with s.put(f"{c.url(node)}/v1/kv/after", json=node) as r:
                        assert r.status == 200
            for node in (leader, follower):
                fast = c.apis[node].fast
                assert fast is not None and fast.handed_off == 0
                text = c.nodes[node].metrics.render().decode()
                for route in ("/v1/status", "/v1/health/live", "/v1/health/ready"):
                    assert f'route="{route}",status="200"' in text, route

    run(main())


def test_probes_need_no_token_on_the_fast_path(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    """As in aiohttp's middleware: the health probes skip the guard, status does not."""

    async def main() -> None:
        async with HubCluster(
            tmp_path, n=1, overrides={"client_tokens": parse_tokens(TOKENS_TEXT)}
        ) as c:
            node = await c.leader()
            port = c.apis[node].port
            rw = b"Authorization: Bearer " + RW_TOKEN.encode() + b"\r\n"
            ro = b"Authorization: Bearer " + RO_TOKEN.encode() + b"\r\n"
            delete = b"DELETE /v1/kv/x HTTP/1.1\r\nHost: h\r\n%s\r\n"
            raw = (
                b"GET /v1/health/live HTTP/1.1\r\nHost: h\r\n\r\n"
                b"GET /v1/health/ready HTTP/1.1\r\nHost: h\r\n\r\n"
                b"GET /v1/status HTTP/1.1\r\nHost: h\r\n\r\n"
                b"GET /v1/status HTTP/1.1\r\nHost: h\r\n" + ro + b"\r\n"
                + (delete % b"")
                + (delete % ro)
                + (delete % rw)
            )  # fmt: skip
            answers = await exchange(port, raw, 7)
            # The DELETE let through finds no key: 404, as aiohttp answers it.
            assert [a[0] for a in answers] == [200, 200, 401, 200, 401, 403, 404], answers
            fast = c.apis[node].fast
            assert fast is not None and fast.handed_off == 0
            api = c.apis[node].handlers
            assert api.guard.served == 2  # the status and the DELETE let through; not the probes

    run(main())


def test_pipelined_requests_answered_in_order_then_aiohttp_takes_over(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path, n=1) as c:
            node = await c.leader()
            port = c.apis[node].port
            raw = (
                b"PUT /v1/kv/p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n1"
                b"GET /v1/kv/p HTTP/1.1\r\nHost: h\r\n\r\n"
                b"PUT /v1/kv/p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n2"
                b"GET /v1/kv/p?consistency=stale HTTP/1.1\r\nHost: h\r\n\r\n"
                b"GET /v1/members HTTP/1.1\r\nHost: h\r\n\r\n"  # hands the connection to aiohttp
                b"GET /v1/kv/p HTTP/1.1\r\nHost: h\r\n\r\n"  # served by aiohttp now
                b"GET /v1/kv/%70 HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            answers = await exchange(port, raw, 7)
            assert [a[0] for a in answers] == [200] * 7
            assert answers[1][2]["value"] == 1 and answers[3][2]["value"] == 2
            assert answers[0][2]["index"] < answers[2][2]["index"]
            assert node in answers[4][2]["voters"]
            assert answers[5][2]["value"] == 2 and answers[6][2]["value"] == 2
            fast = c.apis[node].fast
            assert fast is not None and fast.handed_off == 1
            # Malformed input is aiohttp's to answer: a 4xx, never a 500.
            [(status, _, _)] = await exchange(
                port, b"PUT /v1/kv/p HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n", 1
            )
            assert 400 <= status < 500
            assert fast.handed_off == 2

    run(main())


def test_connection_close_and_eof(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    async def main() -> None:
        async with InProcCluster(tmp_path, n=1) as c:
            node = await c.leader()
            port = c.apis[node].port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"PUT /v1/kv/c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                b"Content-Length: 1\r\n\r\n5"
            )
            status, headers, _ = await read_response(reader)
            assert status == 200 and headers["connection"] == "close"
            assert await reader.read() == b""  # closed by the server
            writer.close()
            # Requests then EOF (a half-close): every request is answered, then closed.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(PUT + GET + GET)
            writer.write_eof()
            answers = [await read_response(reader) for _ in range(3)]
            assert [a[0] for a in answers] == [200, 200, 200]
            assert json.loads(answers[2][2])["value"] == 7
            assert await reader.read() == b""
            writer.close()
            fast = c.apis[node].fast
            assert fast is not None and fast.handed_off == 0

    run(main())


def test_guard_on_the_fast_path(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    """Tokens (401 with WWW-Authenticate, 403), the concurrency limit (503), refusal
    metrics and the served count: what the guard middleware does, on the fast path."""

    async def main() -> None:
        async with HubCluster(
            tmp_path,
            n=1,
            overrides={"client_tokens": parse_tokens(TOKENS_TEXT), "max_concurrent_requests": 4},
        ) as c:
            node = await c.leader()
            port = c.apis[node].port
            put = b"PUT /v1/kv/g HTTP/1.1\r\nHost: h\r\n%sContent-Length: 1\r\n\r\n1"
            get = b"GET /v1/kv/g HTTP/1.1\r\nHost: h\r\n%s\r\n"
            multi = b'POST /v1/kv HTTP/1.1\r\nHost: h\r\n%sContent-Length: 8\r\n\r\n{"m": 2}'
            rw = b"Authorization: Bearer " + RW_TOKEN.encode() + b"\r\n"
            ro = b"authorization: bearer " + RO_TOKEN.encode() + b"\r\n"
            answers = await exchange(
                port,
                (put % b"")
                + (put % b"Authorization: Bearer wrong-token-0123456789\r\n")
                + (put % b"Authorization: Basic abc\r\n")
                + (put % ro)
                + (put % rw)
                + (get % ro)
                + (get % b"")
                + (multi % ro)
                + (multi % rw),
                9,
            )
            statuses = [a[0] for a in answers]
            assert statuses == [401, 401, 401, 403, 200, 200, 401, 403, 200], answers
            assert answers[0][2] == {"error": "missing bearer token"}
            assert answers[0][1]["www-authenticate"].startswith("Bearer")
            assert answers[1][2] == {"error": "invalid token"}
            assert answers[3][2] == {"error": "this token is read-only"}
            assert answers[5][2]["value"] == 1
            fast = c.apis[node].fast
            assert fast is not None and fast.handed_off == 0
            api = c.apis[node].handlers
            assert api.guard.served == 3 and api.guard.inflight == 0
            api.guard.inflight = 4  # as if four requests were in flight
            [(status, _, body)] = await exchange(port, put % rw, 1)
            assert (status, body) == (503, {"error": "too many requests in flight"})
            api.guard.inflight = 0
            text = c.nodes[node].metrics.render().decode()
            for reason in ("unauthenticated", "forbidden", "overloaded"):
                assert f'reason="{reason}"' in text
            assert 'route="/v1/kv/{key}",status="401"' in text

    run(main())


def test_idle_keepalive_connections_are_closed(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    async def main() -> None:
        async def handler(request: FastRequest, remote: str) -> tuple[int, bytes, None]:
            return 200, b'{"remote": "%s"}' % remote.encode(), None

        def no_fallback() -> asyncio.Protocol:
            raise AssertionError("nothing is handed off here")

        server = FastHttpServer(handler, no_fallback, max_body=1024, keepalive_timeout=0.2)
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(GET)
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body) == {"remote": "127.0.0.1"}
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed when idle
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_fast_path_can_be_turned_off(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAFTKV_NO_FAST_HTTP=1: aiohttp serves every route, the hot ones too (the
    connections are still accepted, counted and timed by FastHttpServer)."""
    monkeypatch.setenv("RAFTKV_NO_FAST_HTTP", "1")

    async def main() -> None:
        async with InProcCluster(tmp_path, n=1) as c:
            node = await c.leader()
            fast = c.apis[node].fast
            assert fast is not None and not fast.fast_routes
            answers = await exchange(c.apis[node].port, PUT + GET, 2)
            assert [a[0] for a in answers] == [200, 200] and answers[1][2]["value"] == 7
            assert fast.handed_off == 1
            text = c.nodes[node].metrics.render().decode()
            assert 'raftkv_http_connection_events_total{event="handed_off",node="n1"} 1.0' in text

    run(main())


def test_back_pressure_both_ways_keeps_every_answer_in_order(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    """A client that pipelines far more than the buffer limit, and does not read
    for a while: reading pauses, writing pauses, and every answer arrives in order."""

    async def main() -> None:
        big = b"x" * 60_000

        async def handler(request: FastRequest, remote: str) -> tuple[int, bytes, None]:
            await asyncio.sleep(0)
            return 200, b'{"key": "%s", "pad": "%s"}' % (request.key.encode(), big), None

        def no_fallback() -> asyncio.Protocol:
            raise AssertionError("nothing is handed off here")

        server = FastHttpServer(handler, no_fallback, max_body=64)
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            n = 400  # about 16 KB of requests (over the buffer limit), 24 MB of answers
            writer.write(
                b"".join(b"GET /v1/kv/k%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(n))
            )
            await asyncio.sleep(0.3)  # not reading: the server's writes back up
            for i in range(n):
                status, _, body = await read_response(reader)
                assert status == 200 and json.loads(body)["key"] == f"k{i}"
            writer.close()
            assert server.reads_paused >= 1 and server.writes_paused >= 1
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# --------------------------------------------------------------------------- connections
# The cap and the deadlines of fasthttp's Rule 4. Deadlines here are short
# constructor (or config) values; the sweep runs every quarter of the shortest.


async def _echo(request: FastRequest, remote: str) -> tuple[int, bytes, None]:
    return 200, b'{"key": "%s"}' % request.key.encode(), None


def _no_fallback() -> asyncio.Protocol:
    raise AssertionError("nothing is handed off here")


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Write ``data`` one byte every ``every`` seconds until it is written or the
    connection breaks."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def _closed_after(reader: asyncio.StreamReader, start: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (since ``start``)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            received += chunk
    return received, asyncio.get_running_loop().time() - start


SLOW_HEAD = b"GET /v1/kv/k HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
def test_connections_beyond_the_cap_are_refused(
    tmp_path: Path,
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    monkeypatch: pytest.MonkeyPatch,
    fast: bool,
) -> None:
    """At --max-connections, one more connection is answered 503 and closed; the
    connections within the cap keep being served, and a slot that frees is used."""
    if not fast:
        monkeypatch.setenv("RAFTKV_NO_FAST_HTTP", "1")

    async def main() -> None:
        async with HubCluster(tmp_path, n=1, overrides={"max_connections": 3}) as c:
            node = await c.leader()
            port = c.apis[node].port
            server = c.apis[node].fast
            assert server is not None and server.fast_routes is fast
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            for reader, writer in conns:
                writer.write(PUT)
                assert (await read_response(reader))[0] == 200
            assert server.open_connections == 3
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(PUT)
                status, headers, body = await read_response(reader)
                assert (status, json.loads(body)) == (503, {"error": "too many connections"})
                assert headers["connection"] == "close" and await reader.read() == b""
                writer.close()
            for reader, writer in conns:  # still served
                writer.write(GET)
                status, _, body = await read_response(reader)
                assert status == 200 and json.loads(body)["value"] == 7
            assert server.stats["refused"] == 2 and server.open_connections == 3
            conns.pop()[1].close()
            while server.open_connections > 2:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(GET)
            assert (await read_response(reader))[0] == 200
            conns.append((reader, writer))
            text = c.nodes[node].metrics.render().decode()
            assert 'raftkv_http_connection_events_total{event="refused",node="n1"} 2.0' in text
            assert 'raftkv_http_connections{node="n1"} 3.0' in text
            for _, writer in conns:
                writer.close()

    run(main())


def test_trickled_head_is_closed_at_the_deadline(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    """One byte every 50 ms does not keep a request's head alive: the connection
    is closed (408) at the head deadline from its first byte, not later."""

    async def main() -> None:
        server = FastHttpServer(_echo, _no_fallback, max_body=1024, head_timeout=0.4)
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            start = asyncio.get_running_loop().time()
            trickle = asyncio.create_task(_trickle(writer, SLOW_HEAD, 0.05))
            received, elapsed = await _closed_after(reader, start)
            trickle.cancel()
            assert received.startswith(b"HTTP/1.1 408 "), received
            # deadline + sweep + slack for a loaded machine; the trickle needs 12 s to finish
            assert 0.39 <= elapsed < 0.4 + 0.1 + 1.5, elapsed  # libuv timers round to 1 ms
            assert server.stats["timeout_head"] == 1
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_a_trickle_does_not_extend_the_idle_timeout(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    """After an answer, a byte now and then does not keep a keep-alive connection
    open: the next request's head deadline runs from its first byte."""

    async def main() -> None:
        server = FastHttpServer(
            _echo, _no_fallback, max_body=1024, head_timeout=0.4, keepalive_timeout=0.4
        )
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(GET)
            assert (await read_response(reader))[0] == 200
            start = asyncio.get_running_loop().time()
            trickle = asyncio.create_task(_trickle(writer, SLOW_HEAD, 0.05))
            received, elapsed = await _closed_after(reader, start)
            trickle.cancel()
            assert received.startswith(b"HTTP/1.1 408 ") and elapsed < 0.4 + 0.1 + 1.5, (
                received,
                elapsed,
            )
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_a_silent_connection_is_closed_at_the_head_deadline(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    """A connection that never sends a byte holds its slot only until the head
    deadline of its first request (from the accept), closed without an answer."""

    async def main() -> None:
        server = FastHttpServer(
            _echo, _no_fallback, max_body=1024, head_timeout=0.3, keepalive_timeout=60
        )
        port = await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            start = asyncio.get_running_loop().time()
            received, elapsed = await _closed_after(reader, start)
            assert received == b"" and 0.29 <= elapsed < 0.3 + 0.075 + 0.5, elapsed
            assert server.stats["timeout_head"] == 1
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
def test_a_handed_off_connection_that_trickles_is_closed(
    tmp_path: Path,
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    monkeypatch: pytest.MonkeyPatch,
    fast: bool,
) -> None:
    """aiohttp has no head deadline: a connection handed to it keeps the fast
    path's. Fast: a request to a cold route hands the connection over, then the
    next head trickles. aiohttp alone: the head trickles from the start."""
    if not fast:
        monkeypatch.setenv("RAFTKV_NO_FAST_HTTP", "1")
    overrides = {"http_head_timeout_s": 0.4, "http_idle_timeout_s": 0.4}

    async def main() -> None:
        async with HubCluster(tmp_path, n=1, overrides=overrides) as c:
            node = await c.leader()
            server = c.apis[node].fast
            assert server is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", c.apis[node].port)
            if fast:
                writer.write(b"GET /v1/members HTTP/1.1\r\nHost: h\r\n\r\n")
                assert (await read_response(reader))[0] == 200
            assert server.handed_off == 1 and len(server.handed) == 1
            [handed] = server.handed.values()
            assert handed.reason == ("idle" if fast else "head")  # aiohttp's answer was seen
            start = asyncio.get_running_loop().time()
            trickle = asyncio.create_task(_trickle(writer, SLOW_HEAD, 0.05))
            received, elapsed = await _closed_after(reader, start)
            trickle.cancel()
            assert received.startswith(b"HTTP/1.1 408 "), received
            assert elapsed < 0.4 + 0.1 + 1.5, elapsed
            assert server.stats["timeout_head"] == 1 and not server.handed
            writer.close()

    run(main())


def test_a_handed_off_body_that_trickles_is_closed(
    tmp_path: Path, run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    """A cold route's body (served by aiohttp) must arrive within the body
    deadline of the end of its head, however it trickles."""
    overrides = {"http_body_timeout_s": 0.4}

    async def main() -> None:
        async with HubCluster(tmp_path, n=1, overrides=overrides) as c:
            node = await c.leader()
            server = c.apis[node].fast
            assert server is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", c.apis[node].port)
            body = b'{"expect": null, "value": "' + b"v" * 100 + b'"}'
            writer.write(
                b"POST /v1/kv/k/cas HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            start = asyncio.get_running_loop().time()
            trickle = asyncio.create_task(_trickle(writer, body, 0.05))
            _, elapsed = await _closed_after(reader, start)
            trickle.cancel()
            assert elapsed < 0.4 + 0.1 + 1.5, elapsed
            assert server.stats["timeout_body"] == 1
            writer.close()

    run(main())


def test_a_client_that_does_not_read_is_disconnected(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    """Writing paused (the client reads nothing) for longer than the write
    timeout closes the connection, as a slow head would."""

    async def main() -> None:
        big = b"x" * 200_000

        async def handler(request: FastRequest, remote: str) -> tuple[int, bytes, None]:
            return 200, b'{"pad": "%s"}' % big, None

        server = FastHttpServer(handler, _no_fallback, max_body=64, write_timeout=0.3)
        port = await server.start("127.0.0.1", 0)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(GET * 200)  # 40 MB of answers, never read
            while not server.stats["timeout_write"]:
                await asyncio.sleep(0.05)
            assert not server.connections
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's and a client's context."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=t",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=d, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "cert.pem", d / "key.pem")
    client = ssl.create_default_context(cafile=str(d / "cert.pem"))
    return server, client


def test_a_tls_handshake_holds_a_slot_until_its_deadline(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """TLS starts after the connection is counted: a client that never
    handshakes holds its slot only until the head deadline, and a connection
    beyond the cap is closed before any handshake."""
    server_ctx, client_ctx = tls_contexts

    async def main() -> None:
        server = FastHttpServer(
            _echo, _no_fallback, max_body=1024, max_connections=1, head_timeout=0.3
        )
        port = await server.start("127.0.0.1", 0, ssl=server_ctx)
        try:
            silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
            while server.open_connections < 1:
                await asyncio.sleep(0.01)
            with pytest.raises((ConnectionError, ssl.SSLError)):
                await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
            assert server.stats["refused_unanswered"] == 1
            with contextlib.suppress(ConnectionResetError):
                assert await silent_reader.read() == b""  # closed at the deadline
            silent.close()
            while server.open_connections:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
            writer.write(GET)
            assert (await read_response(reader))[0] == 200
            assert server.stats["tls_failed"] == 1
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())
