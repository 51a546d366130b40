"""GET /v1/watch (issue 17): a stream of JSON lines on any node -- ordered,
exactly once, resumable, bounded -- and its errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.replica.watch import WatchHub
from tests.cluster.harness import eventually
from tests.security.conftest import HubCluster, run
from tests.server.test_api_store import Session, call, leader_and_follower, q


class Stream:
    """One watch stream: its lines, decoded."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def line(self, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
            assert raw, "the stream ended"
            if raw.strip():
                body: dict[str, Any] = json.loads(raw)
                return body

    async def events(self, n: int) -> list[tuple[int, str, str, Any]]:
        """The next ``n`` events as (revision, type, key, value)."""
        out: list[tuple[int, str, str, Any]] = []
        while len(out) < n:
            body = await self.line()
            assert not body.get("canceled"), body
            for e in body["events"]:
                assert e["kv"]["mod_revision"] == body["revision"]
                out.append((body["revision"], e["type"], e["kv"]["key"], e["kv"].get("value")))
        return out


async def open_watch(s: Session, url: str) -> tuple[Stream, dict[str, Any]]:
    resp = await s.get(url)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    stream = Stream(resp)
    created = await stream.line()
    assert created["created"] is True, created
    return stream, created


def test_a_watch_on_a_follower_streams_every_change_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                stream, created = await open_watch(s, f"{follow}/v1/watch{q(prefix='a/')}")
                assert created["revision"] == 1  # a fresh store
                await call(s, "PUT", f"{lead}/v1/kv/a%2Fx", {"n": 1})
                await call(s, "PUT", f"{lead}/v1/kv/b", 2)  # outside the prefix
                await call(s, "POST", f"{follow}/v1/kv", {"a/y": 3, "a/z": [4]})
                await call(s, "DELETE", f"{lead}/v1/kv/a%2Fx")
                assert await stream.events(4) == [
                    (2, "put", "a/x", {"n": 1}),
                    (4, "put", "a/y", 3),  # one revision: one line, key order
                    (4, "put", "a/z", [4]),
                    (5, "delete", "a/x", None),
                ]
                # The delete's kv is etcd's tombstone: key and revision only.
                await call(s, "PUT", f"{lead}/v1/kv/a%2Fx", 6)
                body = await stream.line()
                assert body == {
                    "watch_id": created["watch_id"],
                    "revision": 6,
                    "events": [
                        {
                            "type": "put",
                            "kv": {
                                "key": "a/x",
                                "value": 6,
                                "create_revision": 6,
                                "mod_revision": 6,
                                "version": 1,
                                "lease": 0,
                            },
                        }
                    ],
                }
                stream.resp.close()

    run(main())


def test_start_revision_prev_kv_and_filters(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                for v in (1, 2):
                    await call(s, "PUT", f"{lead}/v1/kv/k", v)
                await call(s, "DELETE", f"{lead}/v1/kv/k")  # revision 4
                # From the past: the history, then what comes.
                url = f"{follow}/v1/watch{q(key='k', start_revision=2, prev_kv='true')}"
                stream, _ = await open_watch(s, url)
                body = await stream.line()
                assert body["revision"] == 2 and "prev_kv" not in body["events"][0]
                body = await stream.line()
                assert body["events"][0]["prev_kv"]["value"] == 1
                body = await stream.line()
                assert body["events"][0]["type"] == "delete"
                assert body["events"][0]["prev_kv"]["value"] == 2
                await call(s, "PUT", f"{lead}/v1/kv/k", 9)
                assert (await stream.events(1)) == [(5, "put", "k", 9)]
                # Filters: deletes only.
                url = f"{follow}/v1/watch{q(key='k', start_revision=2, filters='noput')}"
                only, _ = await open_watch(s, url)
                assert await only.events(1) == [(4, "delete", "k", None)]
                # A range [k, l) sees k but not l.
                url = f"{lead}/v1/watch{q(key='k', range_end='l')}"
                ranged, _ = await open_watch(s, url)
                await call(s, "PUT", f"{lead}/v1/kv/l", 1)
                await call(s, "PUT", f"{lead}/v1/kv/k1", 1)
                assert await ranged.events(1) == [(7, "put", "k1", 1)]
                for st in (stream, only, ranged):
                    st.resp.close()

    run(main())


def test_a_compacted_start_revision_is_cancelled_with_the_compact_revision(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                for v in range(4):
                    await call(s, "PUT", f"{lead}/v1/kv/k", v)
                status, body = await call(s, "POST", f"{lead}/v1/compact", {"revision": 4})
                assert status == 200, body
                stream, _ = await open_watch(s, f"{follow}/v1/watch{q(key='k', start_revision=2)}")
                body = await stream.line()
                assert body["canceled"] is True and body["compact_revision"] == 4, body
                assert body["cancel_reason"] == "compacted"
                assert await stream.resp.content.read() == b""  # the stream ended
                # From the compact revision itself: fine.
                stream, _ = await open_watch(s, f"{follow}/v1/watch{q(key='k', start_revision=4)}")
                assert await stream.events(2) == [(4, "put", "k", 2), (5, "put", "k", 3)]
                stream.resp.close()

    run(main())


def test_bad_watch_requests_are_400(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead = c.url(await c.leader())
            async with Session() as s:
                for query, words in [
                    ("", "give prefix"),
                    (q(prefix="a", key="b"), "not both"),
                    (q(prefix="a", range_end="b"), "range_end goes with key"),
                    (q(key="a", start_revision=-1), "start_revision"),
                    (q(key="a", filters="noputs"), "unknown filter"),
                    (q(key="a", prev_kv="yes"), "prev_kv"),
                    (q(key="a", foo=1), "unknown parameter"),
                ]:
                    status, body = await call(s, "GET", f"{lead}/v1/watch{query}")
                    assert status == 400 and words in body["error"], (query, body)

    run(main())


def test_a_client_that_goes_away_closes_its_watcher(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            _, follow, _ = await leader_and_follower(c)
            node = next(n for n in c.nodes.values() if not n.is_leader)
            async with Session() as s:
                stream, _ = await open_watch(s, f"{follow}/v1/watch{q(prefix='')}")
                assert node.watchers == 1
                async with s.get(f"{follow}/metrics") as r:
                    text = await r.text()
                assert f'raftkv_watchers{{node="{node.node_id}"}} 1.0' in text
                assert f'raftkv_leases{{node="{node.node_id}"}} 0.0' in text
                stream.resp.close()
                await eventually(lambda: node.watchers == 0, "the watcher closed", 2.0)

    run(main())


def test_watches_need_a_leader_and_end_when_it_is_gone(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            alone = next(n for n in c.nodes if n != leader)
            url = c.url(alone)
            async with Session() as s:
                stream, _ = await open_watch(s, f"{url}/v1/watch{q(prefix='a')}")
                lax, _ = await open_watch(
                    s, f"{url}/v1/watch{q(prefix='a', require_leader='false')}"
                )
                for other in [n for n in c.nodes if n != alone]:
                    await c.stop_node(other)
                body = await stream.line()
                assert body["canceled"] is True and body["cancel_reason"] == "no leader", body
                status, body = await call(s, "GET", f"{url}/v1/watch{q(prefix='a')}")
                assert status == 503 and "no leader" in body["error"], body
                # require_leader=false keeps watching (nothing to see, but alive).
                assert c.nodes[alone].watchers == 1
                lax.resp.close()

    run(main())


def test_a_stopping_node_ends_its_streams_with_a_reason(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            _, follow, _ = await leader_and_follower(c)
            follower = next(n for n, node in c.nodes.items() if not node.is_leader)
            async with Session() as s:
                stream, _ = await open_watch(s, f"{follow}/v1/watch{q(prefix='a')}")
                stopping = asyncio.create_task(c.stop_node(follower))
                body = await stream.line()
                assert body["canceled"] is True and body["cancel_reason"] == "node stopping"
                await stopping

    run(main())


def test_watch_streams_count_against_connections_not_concurrent_requests(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        overrides = {"max_concurrent_requests": 2, "max_connections": 4}
        async with HubCluster(tmp_path, overrides=overrides) as c:
            leader = await c.leader()
            url = c.url(leader)
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            async with Session(connector=connector) as s:
                streams = [
                    (await open_watch(s, f"{url}/v1/watch{q(key=f'k{i}')}"))[0] for i in range(3)
                ]
                # Three streams, yet requests are served (the limit is 2 at once).
                status, body = await call(s, "PUT", f"{url}/v1/kv/k0", 1)
                assert status == 200, body
                assert await streams[0].events(1) == [(2, "put", "k0", 1)]
                # Four streams: a fifth connection is over --max-connections.
                streams.append((await open_watch(s, f"{url}/v1/watch{q(key='k')}"))[0])
                status, body = await call(s, "GET", f"{url}/v1/watch{q(key='k')}")
                assert status == 503, body
                for st in streams:
                    st.resp.close()

    run(main())


def test_progress_notifications_only_when_asked(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"watch_progress_interval_s": 0.1}) as c:
            lead, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                await call(s, "PUT", f"{lead}/v1/kv/x", 1)
                url = f"{follow}/v1/watch{q(key='k', progress_notify='true')}"
                stream, _ = await open_watch(s, url)
                quiet, _ = await open_watch(s, f"{follow}/v1/watch{q(key='k')}")
                body = await stream.line()
                assert body == {
                    "watch_id": body["watch_id"],
                    "revision": 2,
                    "events": [],
                    "progress": True,
                }
                await call(s, "PUT", f"{lead}/v1/kv/k", 1)
                # The quiet one sees only the event.
                assert (await quiet.line())["events"][0]["kv"]["mod_revision"] == 3
                for st in (stream, quiet):
                    st.resp.close()

    run(main())


def test_a_watcher_that_does_not_read_is_cancelled_not_grown(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path, overrides={"watch_buffer_bytes": 64 << 10}) as c:
            lead, follow, _ = await leader_and_follower(c)
            connector = aiohttp.TCPConnector(limit=0)
            async with Session(connector=connector) as s:
                stream, _ = await open_watch(s, f"{follow}/v1/watch{q(prefix='big/')}")
                # Not reading: the socket buffers fill, then the watcher's queue.
                value = "x" * (256 << 10)
                for i in range(80):
                    status, body = await call(s, "PUT", f"{lead}/v1/kv/big%2F{i}", value)
                    assert status == 200, body
                revisions = []
                while True:
                    body = await stream.line()
                    if body.get("canceled"):
                        break
                    revisions.append(body["revision"])
                assert body["cancel_reason"].startswith("slow watcher"), body
                # Whatever it got before is in order, without a gap; the rest is a resume away.
                assert revisions == list(range(2, 2 + len(revisions)))
                assert len(revisions) < 80
                assert await stream.resp.content.read() == b""

    run(main())


def test_a_broken_hub_stops_the_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            lead = c.url(leader)
            node = c.nodes[leader]
            async with Session() as s:
                stream, _ = await open_watch(s, f"{lead}/v1/watch{q(prefix='a')}")

                def broken(self: WatchHub) -> None:
                    raise RuntimeError("broken invariant")

                monkeypatch.setattr(WatchHub, "applied", broken)
                await call(s, "PUT", f"{lead}/v1/kv/a", 1)
                failure = await asyncio.wait_for(node.failed, 5)
                assert "broken invariant" in str(failure)
                body = await stream.line()
                assert body["canceled"] is True and body["cancel_reason"] == "node failed", body

    run(main())


def test_a_watch_on_a_connection_the_fast_path_served_goes_to_aiohttp(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            host, port = c.members[leader].api
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert head.startswith(b"HTTP/1.1 200") and b"revision" in await reader.readexactly(
                length
            )
            writer.write(b"GET /v1/watch?key=k&start_revision=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower(), head
            body = b""
            while b'"mod_revision": 2' not in body:
                body += await asyncio.wait_for(reader.read(4096), 5)
            assert b'"created": true' in body
            writer.close()
            await writer.wait_closed()

    run(main())
