"""The etcd JSON gateway on the HTTP API's port: grpc-gateway's paths and encoding."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.etcd.convert import name_id
from raftkv.server.security import parse_tokens
from tests.cluster.harness import eventually
from tests.etcd.conftest import etcd_cluster, follower
from tests.security.conftest import RO_TOKEN, RW_TOKEN, TOKENS_TEXT, run


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def post(
    s: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    async with s.post(url, json=body, headers=headers or {}) as r:
        return r.status, await r.read()


def test_gateway_put_range_txn_in_grpc_gateway_json(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            node = follower(c, leader)
            url = c.url(node)
            async with aiohttp.ClientSession() as s:
                status, body = await post(
                    s, url + "/v3/kv/put", {"key": b64(b"foo"), "value": b64(b"\xffbar")}
                )
                assert status == 200
                term = c.nodes[node].term
                assert body == (
                    b'{"header":{"cluster_id":"%d","member_id":"%d","revision":"2",'
                    b'"raft_term":"%d"}}' % (name_id("n1,n2,n3"), name_id(node), term)
                )
                # camelCase input is accepted too; /v3beta is the same API.
                status, body = await post(
                    s, url + "/v3beta/kv/range", {"key": b64(b"f"), "rangeEnd": b64(b"g")}
                )
                assert status == 200
                assert body.endswith(
                    b',"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2",'
                    b'"version":"1","value":"/2Jhcg=="}],"count":"1"}'
                )
                txn = {
                    "compare": [
                        {"key": b64(b"foo"), "target": "VERSION", "result": "EQUAL", "version": "1"}
                    ],
                    "success": [{"request_delete_range": {"key": b64(b"foo"), "prev_kv": True}}],
                }
                status, body = await post(s, url + "/v3/kv/txn", txn)
                assert status == 200 and b'"succeeded":true' in body and b'"deleted":"1"' in body
                status, body = await post(s, url + "/v3/kv/range", {"key": b64(b"foo")})
                assert status == 200 and b'"kvs"' not in body and b'"count"' not in body
                status, body = await post(s, url + "/v3/kv/range", {"key": ""})
                assert status == 400
                assert body == (
                    b'{"error":"etcdserver: key is not provided",'
                    b'"message":"etcdserver: key is not provided","code":3}'
                )
                status, body = await post(s, url + "/v3/maintenance/status", {})
                assert status == 200 and b'"version":"3.5.0"' in body
                status, body = await post(s, url + "/v3/cluster/member/list", {})
                assert status == 200 and b'"name":"n1"' in body
                async with s.get(url + "/version") as r:
                    assert await r.read() == b'{"etcdserver":"3.5.0","etcdcluster":"3.5.0"}'
                async with s.get(url + "/health") as r:
                    assert (r.status, await r.read()) == (200, b'{"health":"true","reason":""}')

    run(scenario())


def test_v1_shows_an_etcd_value_that_is_not_json_as_base64(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            url = c.url(await c.leader())
            async with aiohttp.ClientSession() as s:
                for key, value in ((b"raw", b"\xff\x00"), (b"json", b'{"a":[1]}')):
                    await post(s, url + "/v3/kv/put", {"key": b64(key), "value": b64(value)})
                async with s.get(url + "/v1/kv/raw") as r:
                    assert (await r.json())["value_base64"] == "/wA="
                async with s.get(url + "/v1/kv/json") as r:
                    assert (await r.json())["value"] == {"a": [1]}
                async with s.get(url + "/v1/kv?prefix=") as r:
                    kvs = (await r.json())["kvs"]
                assert [(kv["key"], kv.get("value"), kv.get("value_base64")) for kv in kvs] == [
                    ("json", {"a": [1]}, None),
                    ("raw", None, "/wA="),
                ]

    run(scenario())


def test_gateway_reads_take_a_read_only_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path, client_tokens=parse_tokens(TOKENS_TEXT)) as c:
            leader = await c.leader()
            url = c.url(follower(c, leader))
            ro = {"Authorization": f"Bearer {RO_TOKEN}"}
            rw = {"Authorization": f"Bearer {RW_TOKEN}"}
            put = {"key": b64(b"k"), "value": b64(b"v")}
            async with aiohttp.ClientSession() as s:
                assert (await post(s, url + "/v3/kv/put", put))[0] == 401
                assert (await post(s, url + "/v3/kv/put", put, ro))[0] == 403
                assert (await post(s, url + "/v3/kv/put", put, rw))[0] == 200
                status, body = await post(s, url + "/v3/kv/range", {"key": b64(b"k")}, ro)
                assert status == 200 and b'"value":"dg=="' in body
                async with s.get(url + "/health") as r:
                    assert r.status == 200  # a probe: no token

    run(scenario())


def test_v1_get_of_an_empty_etcd_value_is_valid_json(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            url = c.url(await c.leader())
            async with aiohttp.ClientSession() as s:
                await post(s, url + "/v3/kv/put", {"key": b64(b"empty")})
                async with s.get(url + "/v1/kv/empty") as r:
                    body = await r.json()
                assert body["value_base64"] == "" and "value" not in body

    run(scenario())


def test_gateway_leases_and_keepalive_stream(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            url = c.url(follower(c, leader))
            async with aiohttp.ClientSession() as s:
                status, body = await post(s, url + "/v3/lease/grant", {"TTL": "60", "ID": "5"})
                assert status == 200 and body.endswith(b',"ID":"5","TTL":"60"}'), body
                put = {"key": b64(b"k"), "value": b64(b"v"), "lease": "5"}
                assert (await post(s, url + "/v3/kv/put", put))[0] == 200
                status, body = await post(
                    s, url + "/v3/kv/lease/timetolive", {"ID": 5, "keys": True}
                )
                assert status == 200 and b'"grantedTTL":"60","keys":["aw=="]' in body, body
                status, body = await post(s, url + "/v3/lease/leases", {})
                assert status == 200 and body.endswith(b'"leases":[{"ID":"5"}]}'), body
                async with s.post(url + "/v3/lease/keepalive", data=b'{"ID":5}\n{"ID":6}') as r:
                    lines = (await r.read()).splitlines()
                assert len(lines) == 2
                assert lines[0].startswith(b'{"result":{"header":{')
                assert lines[0].endswith(b'},"ID":"5","TTL":"60"}}')
                assert lines[1].endswith(b'},"ID":"6"}}')  # TTL 0: gone
                assert (await post(s, url + "/v3/kv/lease/revoke", {"ID": "5"}))[0] == 200
                status, body = await post(s, url + "/v3/lease/revoke", {"ID": "5"})
                assert (status, body) == (
                    404,
                    b'{"error":"etcdserver: requested lease not found",'
                    b'"message":"etcdserver: requested lease not found","code":5}',
                )

    run(scenario())


def test_gateway_watch_streams_result_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path) as c:
            leader = await c.leader()
            url = c.url(follower(c, leader))
            create = {"create_request": {"key": b64(b"a/"), "range_end": b64(b"a0")}}
            term = c.nodes[follower(c, leader)].term
            async with (
                aiohttp.ClientSession() as s,
                s.post(url + "/v3/watch", json=create) as r,
            ):
                assert r.status == 200
                created = await asyncio.wait_for(r.content.readline(), 5)
                assert created.startswith(b'{"result":{"header":{')
                assert created.endswith(
                    b'"revision":"1","raft_term":"%d"},"created":true}}\n' % term
                )
                put = {"key": b64(b"a/1"), "value": b64(b"x")}
                await post(s, c.url(leader) + "/v3/kv/put", put)
                event = await asyncio.wait_for(r.content.readline(), 5)
                assert event.endswith(
                    b'"events":[{"kv":{"key":"YS8x","create_revision":"2",'
                    b'"mod_revision":"2","version":"1","value":"eA=="}}]}}\n'
                ), event
            await eventually(lambda: all(n.watchers == 0 for n in c.nodes.values()), "closed")
            # The client went away mid-stream: the stream ended quietly.
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    run(scenario())
