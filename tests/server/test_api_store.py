"""The /v1 routes of the MVCC store (issue 16): revisions in answers, range reads,
transactions, delete-range, compaction, and their errors -- on the leader and
through a follower."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.core.types import NodeId
from raftkv.replica.kv import (
    MAX_TXN_OPS,
    Alarm,
    KeyRange,
    KVStateMachine,
    Range,
    encode_command,
)
from raftkv.server.http.forwarding import COMMAND_CONTENT_TYPE, FORWARD_ROUTE
from raftkv.server.http.request import FORWARDED_HEADER
from raftkv.server.security import parse_tokens
from tests.security.conftest import RW_TOKEN, TOKENS_TEXT, HubCluster, run

Session = aiohttp.ClientSession


async def call(
    s: Session,
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if raw is not None:
        kwargs["data"] = raw
    elif body is not None:
        kwargs["json"] = body
    async with s.request(method, url, **kwargs) as r:
        return r.status, await r.json(content_type=None)


def q(**params: object) -> str:
    return "?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()})


def sm(c: HubCluster, node_id: NodeId) -> KVStateMachine:
    machine = c.nodes[node_id].state_machine
    assert isinstance(machine, KVStateMachine)
    return machine


async def leader_and_follower(c: HubCluster) -> tuple[str, str, NodeId]:
    leader = await c.leader()
    follower = next(n for n in c.nodes if n != leader)
    return c.url(leader), c.url(follower), leader


# ----------------------------------------------------------------------------- revisions


def test_write_answers_and_key_reads_carry_revisions(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, leader = await leader_and_follower(c)
            async with Session() as s:
                for base in (lead, follow):
                    status, body = await call(s, "PUT", f"{base}/v1/kv/k", {"v": 1})
                    assert status == 200, body
                    assert set(body) == {"ok", "index", "revision", "leader"}
                    assert body["ok"] is True and body["leader"] == leader
                # A fresh store is at 1: the two puts made 2 and 3.
                assert body["revision"] == 3
                for base in (lead, follow):
                    status, body = await call(s, "GET", f"{base}/v1/kv/k")
                    assert status == 200, body
                    assert body == {
                        "key": "k",
                        "value": {"v": 1},
                        "index": body["index"],
                        "create_revision": 2,
                        "mod_revision": 3,
                        "version": 2,
                        "revision": 3,
                    }
                    # The same answer through aiohttp (a query the fast path leaves to it).
                    status, other = await call(s, "GET", f"{base}/v1/kv/k?consistency=stale&x=1")
                    assert status == 200 and other == body, other
                status, body = await call(s, "POST", f"{follow}/v1/kv", {"a": 1, "b": 2})
                assert (status, body["revision"]) == (200, 4), body
                cas = {"expect": 1, "value": 5}
                status, body = await call(s, "POST", f"{follow}/v1/kv/a/cas", cas)
                assert (status, body["revision"]) == (200, 5), body
                status, body = await call(s, "POST", f"{follow}/v1/kv/a/cas", cas)
                assert status == 409 and body["revision"] == 5 and body["current"] == 5, body
                status, body = await call(s, "DELETE", f"{follow}/v1/kv/b")
                assert (status, body["revision"]) == (200, 6), body
                status, body = await call(s, "DELETE", f"{follow}/v1/kv/b")
                assert status == 404 and body["revision"] == 6, body
                status, body = await call(s, "GET", f"{follow}/v1/kv/b")
                assert status == 404 and body["revision"] == 6, body
                # Reads as of an older revision.
                for base in (lead, follow):
                    status, body = await call(s, "GET", f"{base}/v1/kv/b{q(revision=5)}")
                    assert (status, body["value"], body["mod_revision"]) == (200, 2, 4), body
                    assert body["revision"] == 6
                    status, body = await call(s, "GET", f"{base}/v1/kv/k{q(revision=2)}")
                    assert (status, body["value"], body["version"]) == (200, {"v": 1}, 1)
                    status, body = await call(s, "GET", f"{base}/v1/kv/b{q(revision=3)}")
                    assert (status, body["error"], body["revision"]) == (404, "not found", 6)
                    status, body = await call(s, "GET", f"{base}/v1/kv/b{q(revision=7)}")
                    assert status == 400, body
                    assert body == {
                        "error": "required revision is a future revision",
                        "revision": 6,
                    }
                    for bad in ("-1", "x", "1.5"):
                        status, body = await call(s, "GET", f"{base}/v1/kv/k?revision={bad}")
                        assert status == 400 and "revision" in body["error"], body

    run(main())


# ----------------------------------------------------------------------------- range


def test_range_reads(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                await call(s, "PUT", f"{lead}/v1/kv/a%2F1", 1)  # revision 2
                await call(s, "PUT", f"{lead}/v1/kv/a%2F2", {"x": [2]})  # 3
                await call(s, "PUT", f"{lead}/v1/kv/b", "bee")  # 4
                await call(s, "PUT", f"{lead}/v1/kv/a%2F1", 11)  # 5
                for base in (lead, follow):
                    status, body = await call(s, "GET", f"{base}/v1/kv{q(prefix='a/')}")
                    assert status == 200, body
                    assert body == {
                        "kvs": [
                            {
                                "key": "a/1",
                                "value": 11,
                                "create_revision": 2,
                                "mod_revision": 5,
                                "version": 2,
                            },
                            {
                                "key": "a/2",
                                "value": {"x": [2]},
                                "create_revision": 3,
                                "mod_revision": 3,
                                "version": 1,
                            },
                        ],
                        "count": 2,
                        "more": False,
                        "revision": 5,
                    }
                    url = f"{base}/v1/kv{q(prefix='', limit=2)}"
                    status, body = await call(s, "GET", url)
                    assert [kv["key"] for kv in body["kvs"]] == ["a/1", "a/2"]
                    assert (body["count"], body["more"]) == (3, True)
                    url = f"{base}/v1/kv{q(prefix='a/', keys_only='true')}"
                    status, body = await call(s, "GET", url)
                    assert [sorted(kv) for kv in body["kvs"]] == [
                        ["create_revision", "key", "mod_revision", "version"]
                    ] * 2
                    url = f"{base}/v1/kv{q(prefix='', count_only='true')}"
                    status, body = await call(s, "GET", url)
                    assert (body["kvs"], body["count"], body["more"]) == ([], 3, False)
                    url = f"{base}/v1/kv{q(prefix='a/', revision=4)}"
                    status, body = await call(s, "GET", url)
                    assert [kv["value"] for kv in body["kvs"]] == [1, {"x": [2]}]
                    assert body["revision"] == 5
                    url = f"{base}/v1/kv{q(key='a/2', range_end='c')}"
                    status, body = await call(s, "GET", url)
                    assert [kv["key"] for kv in body["kvs"]] == ["a/2", "b"]
                    status, body = await call(s, "GET", f"{base}/v1/kv?key=a0&range_end=%00")
                    assert [kv["key"] for kv in body["kvs"]] == ["b"]
                    status, body = await call(s, "GET", f"{base}/v1/kv{q(key='b')}")
                    assert [kv["value"] for kv in body["kvs"]] == ["bee"]
                    by_mod = q(prefix="", sort_order="descend", sort_target="mod_revision")
                    url = f"{base}/v1/kv{by_mod}"
                    status, body = await call(s, "GET", url)
                    assert [kv["key"] for kv in body["kvs"]] == ["a/1", "b", "a/2"]
                    url = f"{base}/v1/kv{q(prefix='', sort_order='ascend', sort_target='value')}"
                    status, body = await call(s, "GET", url)
                    assert status == 200 and len(body["kvs"]) == 3
                    url = f"{base}/v1/kv{q(prefix='a/', consistency='stale')}"
                    status, body = await call(s, "GET", url)
                    assert status == 200 and body["count"] == 2

    run(main())


BAD_RANGES = [
    ("", "give prefix=P, or key=K"),
    ("?limit=3", "give prefix=P, or key=K"),
    ("?prefix=a&key=b", "not both"),
    ("?prefix=a&range_end=b", "range_end"),
    ("?key=", "key must not be empty"),
    ("?prefix=a&limit=-1", "limit"),
    ("?prefix=a&limit=x", "limit"),
    ("?prefix=a&revision=x", "revision"),
    ("?prefix=a&keys_only=yes", "keys_only"),
    ("?prefix=a&count_only=1", "count_only"),
    ("?prefix=a&sort_order=up", "sort_order"),
    ("?prefix=a&sort_target=size", "sort_target"),
    ("?prefix=a&consistency=eventual", "consistency"),
    ("?prefix=a&limt=2", "unknown parameter"),
    ("?prefix=a&prefix=b", "more than once"),
    ("?key=a%01b", "control characters"),
]


def test_range_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"max_key_bytes": 8}) as c:
            _, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                for query, words in BAD_RANGES:
                    status, body = await call(s, "GET", f"{follow}/v1/kv{query}")
                    assert status == 400 and words in body["error"], (query, body)
                status, body = await call(s, "GET", f"{follow}/v1/kv{q(prefix='x' * 9)}")
                assert status == 400 and "longer than 8 bytes" in body["error"], body
                status, body = await call(s, "GET", f"{follow}/v1/kv{q(prefix='', revision=9)}")
                assert status == 400, body
                assert body == {"error": "required revision is a future revision", "revision": 1}

    run(main())


# ----------------------------------------------------------------------------- delete-range


def test_delete_range(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, leader = await leader_and_follower(c)
            async with Session() as s:
                pairs = {"p/1": 1, "p/2": 2, "q/1": 3, "q/2": 4, "r": 5}
                await call(s, "POST", f"{lead}/v1/kv", pairs)  # revision 2
                status, body = await call(s, "DELETE", f"{follow}/v1/kv{q(prefix='p/')}")
                assert status == 200, body
                assert body == {
                    "ok": True,
                    "deleted": 2,
                    "revision": 3,
                    "index": body["index"],
                    "leader": leader,
                }
                url = f"{follow}/v1/kv{q(key='q/1', range_end='r', prev_kv='true')}"
                status, body = await call(s, "DELETE", url)
                assert (status, body["deleted"], body["revision"]) == (200, 2, 4), body
                assert [(kv["key"], kv["value"], kv["version"]) for kv in body["prev_kvs"]] == [
                    ("q/1", 3, 1),
                    ("q/2", 4, 1),
                ]
                # Nothing to delete: not an error, and no new revision.
                status, body = await call(s, "DELETE", f"{lead}/v1/kv{q(prefix='p/')}")
                assert (status, body["deleted"], body["revision"]) == (200, 0, 4), body
                status, body = await call(s, "DELETE", f"{lead}/v1/kv?key=a&range_end=%00")
                assert (status, body["deleted"]) == (200, 1), body
                await c.nodes[leader].read_barrier()
                assert list(sm(c, leader).items()) == []
                for query, words in [
                    ("", "give prefix=P, or key=K"),
                    ("?prefix=a&prev_kv=maybe", "prev_kv"),
                    ("?prefix=a&revision=3", "unknown parameter"),
                ]:
                    status, body = await call(s, "DELETE", f"{follow}/v1/kv{query}")
                    assert status == 400 and words in body["error"], (query, body)

    run(main())


# ----------------------------------------------------------------------------- txn


def test_txn_branches_and_responses(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, leader = await leader_and_follower(c)
            async with Session() as s:
                await call(s, "POST", f"{lead}/v1/kv", {"cfg/a": 1, "cfg/b": 2})  # revision 2
                txn = {
                    "compare": [
                        {"key": "cfg/b", "target": "value", "op": "==", "value": 2},
                        {"key": "cfg/", "prefix": True, "target": "version", "op": ">", "value": 0},
                    ],
                    "success": [
                        {"put": {"key": "cfg/c", "value": {"n": 3}}},
                        {"delete": {"key": "cfg/b", "prev_kv": True}},
                        {"range": {"key": "cfg/", "prefix": True}},
                        {"range": {"key": "cfg/", "prefix": True, "count_only": True}},
                    ],
                    "failure": [{"range": {"key": "cfg/a"}}],
                }
                status, body = await call(s, "POST", f"{follow}/v1/txn", txn)
                assert status == 200, body
                assert body == {
                    "succeeded": True,
                    "revision": 3,
                    "index": body["index"],
                    "leader": leader,
                    "responses": [
                        {"put": {"revision": 3}},
                        {
                            "delete": {
                                "deleted": 1,
                                "prev_kvs": [
                                    {
                                        "key": "cfg/b",
                                        "value": 2,
                                        "create_revision": 2,
                                        "mod_revision": 2,
                                        "version": 1,
                                    }
                                ],
                            }
                        },
                        {
                            "range": {
                                "kvs": [
                                    {
                                        "key": "cfg/a",
                                        "value": 1,
                                        "create_revision": 2,
                                        "mod_revision": 2,
                                        "version": 1,
                                    },
                                    {
                                        "key": "cfg/c",
                                        "value": {"n": 3},
                                        "create_revision": 3,
                                        "mod_revision": 3,
                                        "version": 1,
                                    },
                                ],
                                "count": 2,
                                "more": False,
                            }
                        },
                        {"range": {"kvs": [], "count": 2, "more": False}},
                    ],
                }
                # The compare fails now: the failure branch runs, nothing changes.
                status, body = await call(s, "POST", f"{lead}/v1/txn", txn)
                assert status == 200, body
                assert (body["succeeded"], body["revision"]) == (False, 3)
                assert body["responses"] == [
                    {
                        "range": {
                            "kvs": [
                                {
                                    "key": "cfg/a",
                                    "value": 1,
                                    "create_revision": 2,
                                    "mod_revision": 2,
                                    "version": 1,
                                }
                            ],
                            "count": 1,
                            "more": False,
                        }
                    }
                ]
                await c.nodes[leader].read_barrier()
                assert dict(sm(c, leader).items()) == {"cfg/a": 1, "cfg/c": {"n": 3}}
                # An empty transaction succeeds and writes nothing.
                status, body = await call(s, "POST", f"{follow}/v1/txn", {})
                assert (status, body["succeeded"], body["responses"]) == (200, True, []), body

    run(main())


def test_a_retried_txn_is_answered_once_without_responses(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            _, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                txn = {"success": [{"put": {"key": "once", "value": 1}}]}
                headers = {"Idempotency-Key": "cli/1"}
                status, first = await call(s, "POST", f"{follow}/v1/txn", txn, headers=headers)
                assert status == 200 and "replayed" not in first, first
                status, again = await call(s, "POST", f"{follow}/v1/txn", txn, headers=headers)
                assert status == 200, again
                assert again == {
                    "succeeded": True,
                    "revision": first["revision"],
                    "index": first["index"],
                    "leader": first["leader"],
                    "replayed": True,
                }
                delete = f"{follow}/v1/kv{q(prefix='once')}"
                headers = {"Idempotency-Key": "cli/2"}
                status, first = await call(s, "DELETE", delete, headers=headers)
                assert (status, first["deleted"]) == (200, 1), first
                status, again = await call(s, "DELETE", delete, headers=headers)
                assert status == 200 and again["replayed"] is True and "deleted" not in again
                assert again["revision"] == first["revision"]

    run(main())


def _ops(n: int) -> list[dict[str, Any]]:
    return [{"put": {"key": f"k{i}", "value": i}} for i in range(n)]


BAD_TXNS: list[tuple[Any, str]] = [
    ([], "must be a JSON object"),
    ({"compare": [], "succes": []}, "unknown field 'succes'"),
    ({"compare": {}}, "compare must be a list"),
    ({"success": [{"put": {"key": "a"}}]}, "put needs key and value"),
    ({"success": [{"put": {"key": "a", "value": 1, "ttl": 3}}]}, "unknown field 'ttl'"),
    ({"success": [{"put": {"key": "a", "value": 1}, "range": {"key": "a"}}]}, "exactly one of"),
    ({"success": [{"get": {"key": "a"}}]}, "exactly one of"),
    ({"success": ["put"]}, "exactly one of"),
    ({"success": [{"delete": {"key": "a", "prefix": "yes"}}]}, "prefix must be true or false"),
    ({"success": [{"range": {"key": "a", "limit": -1}}]}, "limit"),
    ({"success": [{"range": {"prefix": True}}]}, "needs a key"),
    ({"success": [*_ops(2), {"put": {"key": "k1", "value": 9}}]}, "duplicate key"),
    (
        {
            "failure": [
                {"put": {"key": "p/1", "value": 1}},
                {"delete": {"key": "p/", "prefix": True}},
            ]
        },
        "duplicate key",
    ),
    ({"success": _ops(MAX_TXN_OPS + 1)}, f"the limit is {MAX_TXN_OPS}"),
    ({"compare": [{"key": "a", "target": "size", "op": "==", "value": 1}]}, "compare target"),
    ({"compare": [{"key": "a", "target": "version", "op": "~", "value": 1}]}, "compare op"),
    ({"compare": [{"key": "a", "target": "value", "op": "<", "value": 1}]}, "== or !="),
    ({"compare": [{"key": "a", "target": "version", "op": "==", "value": "1"}]}, "integer"),
    ({"compare": [{"key": "a", "target": "version", "op": "=="}]}, "compare needs"),
    (
        {"compare": [{"key": "a", "target": "version", "op": "==", "value": 1, "x": 1}]},
        "unknown field 'x'",
    ),
]


def test_txn_validation_on_the_receiving_node(tmp_path: Path) -> None:
    async def main() -> None:
        overrides = {"max_key_bytes": 8, "max_value_bytes": 16}
        async with HubCluster(tmp_path, overrides=overrides) as c:
            _, follow, leader = await leader_and_follower(c)
            async with Session() as s:
                for txn, words in BAD_TXNS:
                    status, body = await call(s, "POST", f"{follow}/v1/txn", txn)
                    assert status == 400 and words in body["error"], (txn, body)
                status, body = await call(s, "POST", f"{follow}/v1/txn", raw=b"{nope")
                assert status == 400 and "bad JSON" in body["error"], body
                big = {"success": [{"put": {"key": "k", "value": "v" * 20}}]}
                status, body = await call(s, "POST", f"{follow}/v1/txn", big)
                assert status == 413 and "the limit is 16" in body["error"], body
                guard = {"key": "k", "target": "value", "op": "==", "value": "v" * 20}
                status, body = await call(s, "POST", f"{follow}/v1/txn", {"compare": [guard]})
                assert status == 413, body
                for long_key in (
                    {"success": [{"put": {"key": "k" * 9, "value": 1}}]},
                    {"success": [{"delete": {"key": "k", "range_end": "z" * 9}}]},
                    {"compare": [{"key": "k" * 9, "target": "version", "op": "==", "value": 0}]},
                ):
                    status, body = await call(s, "POST", f"{follow}/v1/txn", long_key)
                    assert status == 400 and "longer than 8 bytes" in body["error"], body
            # Nothing of it reached the log.
            assert sm(c, leader).revision == 1

    run(main())


# ----------------------------------------------------------------------------- compact


def test_compaction_and_reads_below_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, leader = await leader_and_follower(c)
            async with Session() as s:
                for v in (1, 2, 3):
                    await call(s, "PUT", f"{lead}/v1/kv/k", v)  # revisions 2, 3, 4
                status, body = await call(s, "POST", f"{follow}/v1/compact", {"revision": 3})
                assert status == 200, body
                assert body == {
                    "ok": True,
                    "revision": 4,
                    "compact_revision": 3,
                    "index": body["index"],
                    "leader": leader,
                }
                compacted = {
                    "error": "required revision has been compacted",
                    "compact_revision": 3,
                    "revision": 4,
                }
                for base in (lead, follow):
                    status, body = await call(s, "GET", f"{base}/v1/kv/k{q(revision=2)}")
                    assert (status, body) == (410, compacted)
                    status, body = await call(s, "GET", f"{base}/v1/kv{q(key='k', revision=2)}")
                    assert (status, body) == (410, compacted)
                    status, body = await call(s, "GET", f"{base}/v1/kv/k{q(revision=3)}")
                    assert (status, body["value"]) == (200, 2)
                # Compacting at or below the point again, or above the revision.
                status, body = await call(s, "POST", f"{follow}/v1/compact", {"revision": 3})
                assert (status, body) == (410, compacted)
                status, body = await call(s, "POST", f"{follow}/v1/compact", {"revision": 5})
                assert status == 400, body
                assert body == {"error": "required revision is a future revision", "revision": 4}
                for bad in ({}, {"revision": "3"}, {"revision": 0}, {"revision": 3, "x": 1}, [3]):
                    status, body = await call(s, "POST", f"{follow}/v1/compact", bad)
                    assert status == 400, (bad, body)

    run(main())


# ----------------------------------------------------------------------------- forwarding


MODES = ["peer-link", "tokens", "link-down"]


@pytest.mark.parametrize("mode", MODES)
def test_new_writes_travel_from_a_follower_as_commands(tmp_path: Path, mode: str) -> None:
    overrides: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if mode == "tokens":
        overrides["client_tokens"] = parse_tokens(TOKENS_TEXT)
        headers["Authorization"] = f"Bearer {RW_TOKEN}"

    async def main() -> None:
        async with HubCluster(tmp_path, overrides=overrides) as c:
            _, follow, leader = await leader_and_follower(c)
            follower = next(n for n in c.nodes if n != leader)
            if mode == "link-down":
                c.nodes[follower].can_forward = lambda _leader: False  # type: ignore[method-assign]
            async with Session() as s:
                awkward = "a/?#%"
                txn = {
                    "success": [
                        {"put": {"key": awkward, "value": 1}},
                        {"put": {"key": "b", "value": 2}},
                    ]
                }
                status, body = await call(s, "POST", f"{follow}/v1/txn", txn, headers=headers)
                assert (status, body["succeeded"]) == (200, True), body
                url = f"{follow}/v1/kv{q(prefix='a/')}"
                status, body = await call(s, "DELETE", url, headers=headers)
                assert (status, body["deleted"]) == (200, 1), body
                status, body = await call(
                    s, "POST", f"{follow}/v1/compact", {"revision": 3}, headers=headers
                )
                assert (status, body["compact_revision"]) == (200, 3), body
            await c.nodes[leader].read_barrier()
            assert list(sm(c, leader).items()) == [("b", 2)]
            assert sm(c, leader).compact_revision == 3

    run(main())


def test_forward_route_refuses_reads_and_alarms(tmp_path: Path) -> None:
    """``POST /v1/forward`` takes writes only: never a read through the log, and
    never an Alarm, which only the leader's quota check proposes."""

    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, _, leader = await leader_and_follower(c)
            headers = {FORWARDED_HEADER: "n9", "Content-Type": COMMAND_CONTENT_TYPE}
            async with Session() as s:
                for command in (
                    Alarm(active=True, time_ms=1),
                    Range(range=KeyRange(key="a", prefix=True), time_ms=1),
                ):
                    status, body = await call(
                        s,
                        "POST",
                        lead + FORWARD_ROUTE,
                        raw=encode_command(command),
                        headers=headers,
                    )
                    assert status == 400 and "not a write" in body["error"], body
            assert not sm(c, leader).alarm

    run(main())
