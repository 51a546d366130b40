"""The clients' calls for the MVCC store (issue 16): revisions on reads and
writes, range, delete_range, txn, compact; Compacted and NoSpace -- sync and
asyncio, against scripted fake nodes."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest

from raftkv.client import (
    BadRequest,
    Client,
    Compacted,
    KeyValue,
    NoSpace,
    NotFound,
    RangeResult,
)
from raftkv.client.aio import AsyncClient
from tests.client.fakeserver import fake_nodes
from tests.client.test_client import NO_LEADER, FakeTime, client

KV = {"key": "a/1", "value": 1, "create_revision": 2, "mod_revision": 5, "version": 2}
LISTING = (200, {"kvs": [KV], "count": 3, "more": True, "revision": 7})
COMPACTED = (
    410,
    {"error": "required revision has been compacted", "compact_revision": 4, "revision": 7},
)
NOSPACE = (507, {"error": "database space exceeded", "alarm": "NOSPACE"})


def query(path: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)


def test_reads_and_writes_carry_revisions() -> None:
    t = FakeTime()
    read = (200, {**KV, "key": "k", "value": 3, "index": 9, "revision": 7})
    with fake_nodes([(200, {"ok": True, "index": 8, "revision": 6}), read, read]) as (node,):
        c = client([node.address], t)
        assert c.put("k", 3).revision == 6
        assert c.get("k", revision=5) == 3
        got = c.read("k", consistency="stale", revision=5)
    assert (got.value, got.index, got.revision) == (3, 9, 7)
    assert (got.create_revision, got.mod_revision, got.version) == (2, 5, 2)
    assert [s.path for s in node.seen[1:]] == [
        "/v1/kv/k?revision=5",
        "/v1/kv/k?revision=5&consistency=stale",
    ]


def test_range_requests_and_result() -> None:
    t = FakeTime()
    with fake_nodes([NO_LEADER, LISTING]) as (node,):
        c = client([node.address], t)
        result = c.range(
            prefix="a/",
            limit=1,
            revision=6,
            keys_only=False,
            sort_order="descend",
            sort_target="mod_revision",
            consistency="stale",
        )
        c.range(key="a/?#", range_end="\0", count_only=True, keys_only=True)
        c.range(key="b")
    assert result == RangeResult(
        kvs=(KeyValue(key="a/1", value=1, create_revision=2, mod_revision=5, version=2),),
        count=3,
        more=True,
        revision=7,
    )
    assert node.seen[0].path == node.seen[1].path  # the 503 was retried
    assert query(node.seen[1].path) == {
        "prefix": ["a/"],
        "limit": ["1"],
        "revision": ["6"],
        "sort_order": ["descend"],
        "sort_target": ["mod_revision"],
        "consistency": ["stale"],
    }
    assert node.seen[1].path.startswith("/v1/kv?")
    assert query(node.seen[2].path) == {
        "key": ["a/?#"],
        "range_end": ["\0"],
        "keys_only": ["true"],
        "count_only": ["true"],
    }
    assert query(node.seen[3].path) == {"key": ["b"]}
    assert node.keys() == [None] * 4  # reads carry no idempotency key


def test_range_arguments_are_checked_before_sending() -> None:
    c = Client(["127.0.0.1:1"])
    with pytest.raises(BadRequest, match="prefix or key"):
        c.range()
    with pytest.raises(BadRequest, match="prefix or key"):
        c.range(prefix="a", key="b")
    with pytest.raises(BadRequest, match="range_end"):
        c.range(prefix="a", range_end="b")
    with pytest.raises(BadRequest, match="limit"):
        c.range(prefix="a", limit=-1)
    with pytest.raises(BadRequest, match="prefix or key"):
        c.delete_range()


def test_delete_range_txn_compact_are_retried_writes() -> None:
    t = FakeTime()
    deleted = (200, {"ok": True, "deleted": 2, "revision": 8, "index": 11, "prev_kvs": [KV]})
    replayed = (200, {"ok": True, "revision": 8, "index": 11, "replayed": True})
    txn = (
        200,
        {"succeeded": False, "revision": 8, "index": 12, "responses": [{"range": {"kvs": []}}]},
    )
    compacted = (200, {"ok": True, "revision": 8, "compact_revision": 5, "index": 13})
    script = [NO_LEADER, deleted, replayed, (504, {"error": "timeout"}), txn, compacted]
    with fake_nodes(script) as (node,):
        c = client([node.address], t)
        d = c.delete_range(prefix="a/", prev_kv=True)
        again = c.delete_range(key="a", range_end="b")
        body = {
            "compare": [{"key": "x", "target": "version", "op": ">", "value": 0}],
            "success": [{"put": {"key": "x", "value": 1}}],
            "failure": [{"range": {"key": "x"}}],
        }
        r = c.txn(**body)
        comp = c.compact(5)
    assert (d.deleted, d.revision, d.index, d.replayed) == (2, 8, 11, False)
    assert d.prev_kvs == (
        KeyValue(key="a/1", value=1, create_revision=2, mod_revision=5, version=2),
    )
    assert (again.deleted, again.revision, again.replayed) == (None, 8, True)
    assert (r.succeeded, r.revision, r.index, r.replayed) == (False, 8, 12, False)
    assert r.responses == ({"range": {"kvs": []}},)
    assert (comp.revision, comp.compact_revision, comp.index) == (8, 5, 13)
    methods = [(s.method, s.path.split("?")[0]) for s in node.seen]
    assert methods == [
        ("DELETE", "/v1/kv"),
        ("DELETE", "/v1/kv"),
        ("DELETE", "/v1/kv"),
        ("POST", "/v1/txn"),
        ("POST", "/v1/txn"),
        ("POST", "/v1/compact"),
    ]
    assert query(node.seen[0].path) == {"prefix": ["a/"], "prev_kv": ["true"]}
    assert query(node.seen[2].path) == {"key": ["a"], "range_end": ["b"]}
    # One idempotency key per logical write, the same on each retry.
    keys = node.keys()
    assert keys[0] == keys[1] and keys[3] == keys[4]
    assert len(set(keys)) == 4 and None not in keys
    assert node.seen[3].body == body
    assert node.seen[5].body == {"revision": 5}


def test_compacted_and_nospace_are_final() -> None:
    t = FakeTime()
    with fake_nodes([COMPACTED, COMPACTED, NOSPACE, NOSPACE, (404, {"error": "not found"})]) as (
        node,
    ):
        c = client([node.address], t)
        with pytest.raises(Compacted, match="compacted") as compacted:
            c.get("k", revision=2)
        assert (compacted.value.compact_revision, compacted.value.revision) == (4, 7)
        with pytest.raises(Compacted):
            c.range(prefix="", revision=2)
        with pytest.raises(NoSpace, match="database space exceeded"):
            c.put("k", 1)
        with pytest.raises(NoSpace):
            c.txn(success=[{"put": {"key": "k", "value": 1}}])
        with pytest.raises(NotFound):
            c.get("k", revision=3)
    assert len(node.seen) == 5 and not t.sleeps  # nothing retried


def test_async_client_store_calls() -> None:
    t = FakeTime()
    deleted = (200, {"ok": True, "deleted": 1, "revision": 8, "index": 11})
    txn = (200, {"succeeded": True, "revision": 9, "index": 12, "responses": []})
    compacted = (200, {"ok": True, "revision": 9, "compact_revision": 9, "index": 13})

    async def run(address: str) -> None:
        async with AsyncClient([address], client_id="cid", sleep=t.asleep, clock=t.clock) as c:
            listing = await c.range(prefix="a/")
            assert listing.kvs[0].key == "a/1" and listing.revision == 7
            assert (await c.delete_range(prefix="a/")).deleted == 1
            assert (await c.txn()).succeeded
            assert (await c.compact(9)).compact_revision == 9
            with pytest.raises(Compacted):
                await c.get("k", revision=1)
            with pytest.raises(NoSpace):
                await c.multi_put({"a": 1})
            read = await c.read("a/1", revision=5)
            assert (read.mod_revision, read.revision) == (5, 7)

    read = (200, {**KV, "index": 3, "revision": 7})
    with fake_nodes([LISTING, deleted, txn, compacted, COMPACTED, NOSPACE, read]) as (node,):
        asyncio.run(run(node.address))
    assert node.keys()[1:4] == ["cid.0/1", "cid.0/2", "cid.0/3"]
    assert node.seen[2].body == {"compare": [], "success": [], "failure": []}
