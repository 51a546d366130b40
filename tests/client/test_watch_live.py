"""The clients' watch, leases and lock recipes against an in-process cluster
(issue 17): a watch resumes across a stopped node with every event once; a
compacted resume is final; keep-alive helpers keep a lease; locks exclude.

The sync client runs in threads (asyncio.to_thread), the cluster in the loop."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import pytest

from raftkv.client import Client, Compacted, LeaseNotFound, WatchResponse
from raftkv.client.aio import AsyncClient
from raftkv.client.concurrency import Election, Lock, Session, observe_leader
from raftkv.core.types import NodeId
from tests.cluster.harness import eventually
from tests.security.conftest import HubCluster, run


def endpoint(c: HubCluster, node_id: NodeId) -> str:
    host, port = c.members[node_id].api
    return f"{host}:{port}"


def fast_client(endpoints: list[str]) -> Client:
    return Client(endpoints, deadline=10.0, timeout=2.0, backoff_initial=0.01, backoff_max=0.1)


def test_a_watch_resumes_on_another_node_with_every_event_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            other = next(n for n in c.nodes if n not in (leader, follower))
            # The follower first: the watch starts there.
            watcher = fast_client([endpoint(c, follower), endpoint(c, other)])
            writer = fast_client([endpoint(c, leader)])
            seen: list[tuple[int, str, object]] = []
            started = threading.Event()
            done = threading.Event()
            watch = watcher.watch(prefix="k/", start_revision=2)  # a fresh store: the first write

            def consume() -> None:
                for response in watch:
                    for e in response.events:
                        seen.append((e.revision, e.kv.key, e.kv.value))
                    if seen:
                        started.set()
                    if len(seen) >= 40:
                        done.set()
                        return

            def write(lo: int, hi: int) -> None:
                for i in range(lo, hi):
                    writer.put(f"k/{i % 3}", i)

            consumer = asyncio.create_task(asyncio.to_thread(consume))
            await asyncio.to_thread(write, 0, 10)
            await asyncio.to_thread(started.wait, 5)
            await c.stop_node(follower)  # its stream ends: "node stopping"
            await asyncio.to_thread(write, 10, 40)
            await asyncio.to_thread(done.wait, 10)
            await asyncio.wait_for(consumer, 5)
            watch.close()
            assert [v for _, _, v in seen] == list(range(40))
            revisions = [r for r, _, _ in seen]
            assert revisions == list(range(2, 42))  # no gap, no duplicate
            assert watch.next_revision == 42

    run(main())


def test_a_resume_below_the_compaction_raises_compacted(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            kv = fast_client([endpoint(c, leader)])
            for i in range(5):
                await asyncio.to_thread(kv.put, "k", i)
            await asyncio.to_thread(kv.compact, 5)

            def first() -> WatchResponse:
                with kv.watch("k", start_revision=2) as w:
                    return next(iter(w))

            with pytest.raises(Compacted) as info:
                await asyncio.to_thread(first)
            assert info.value.compact_revision == 5

    run(main())


def test_leases_and_the_keep_alive_helper(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:  # minimum TTL: 1 s
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            kv = fast_client([endpoint(c, follower)])

            def scenario() -> None:
                kept = kv.lease_grant(1)
                assert kept.ttl == 1
                lost = kv.lease_grant(1, lease_id=99)
                assert lost.id == 99
                kv.put("kept", 1, lease=kept.id)
                kv.put("lost", 1, lease=lost.id)
                with kv.keep_alive(kept.id, interval=0.2) as ka:
                    deadline = time.monotonic() + 5
                    while time.monotonic() < deadline:
                        try:
                            kv.lease_ttl(lost.id)
                        except LeaseNotFound:
                            break
                        time.sleep(0.05)
                    else:
                        raise AssertionError("the unrenewed lease did not expire")
                    time.sleep(1.2)  # a whole TTL more: kept alive meanwhile
                    assert not ka.expired() and not ka.lost.is_set()
                    info = kv.lease_ttl(kept.id, keys=True)
                    assert info.keys == ("kept",) and info.granted_ttl == 1
                assert kv.range(prefix="").kvs[0].key == "kept"
                assert [(le.id, le.ttl) for le in kv.leases()] == [(kept.id, 1)]
                kv.lease_revoke(kept.id)
                assert kv.range(prefix="").kvs == ()
                with pytest.raises(LeaseNotFound):
                    kv.lease_keepalive(kept.id)
                with pytest.raises(LeaseNotFound):
                    kv.put("x", 1, lease=kept.id)

            await asyncio.to_thread(scenario)

    run(main())


def test_lock_holders_never_overlap(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            await c.leader()
            endpoints = [endpoint(c, n) for n in c.nodes]
            intervals: list[tuple[float, float]] = []
            inside = [0]
            guard = threading.Lock()

            def contender(i: int) -> None:
                kv = fast_client(endpoints[i % 3 :] + endpoints[: i % 3])
                for _ in range(3):
                    with Session(kv, ttl=5) as session, Lock(session, "locks/x"):
                        with guard:
                            inside[0] += 1
                            assert inside[0] == 1, "two holders at once"
                        start = time.monotonic()
                        time.sleep(0.02)
                        with guard:
                            inside[0] -= 1
                        intervals.append((start, time.monotonic()))

            await asyncio.gather(*(asyncio.to_thread(contender, i) for i in range(3)))
            intervals.sort()
            assert len(intervals) == 9
            for (_, end), (start, _) in itertools.pairwise(intervals):
                assert end <= start

    run(main())


def test_a_lock_passes_on_when_its_holders_lease_ends(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            await c.leader()
            kv = fast_client([endpoint(c, n) for n in c.nodes])

            def scenario() -> float:
                # The first holder's key, with a lease nobody renews: it expires.
                first = kv.lease_grant(1)
                kv.put(f"locks/y/{first.id:x}", "", lease=first.id)
                start = time.monotonic()
                with Session(kv, ttl=5) as session, Lock(session, "locks/y"):
                    return time.monotonic() - start

            waited = await asyncio.to_thread(scenario)
            assert 0.8 <= waited < 4.0, waited

    run(main())


def test_the_async_client_watches_and_keeps_alive(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            async with AsyncClient([endpoint(c, follower)], deadline=10.0) as kv:
                lease = await kv.lease_grant(1)
                async with kv.keep_alive(lease.id, interval=0.2) as ka:
                    await kv.put("a/1", 1, lease=lease.id)
                    got = []
                    async with kv.watch(prefix="a/", start_revision=2, prev_kv=True) as w:
                        await kv.put("a/1", 2)
                        async for event in w.events():
                            got.append((event.type, event.kv.value, event.prev_kv))
                            if len(got) == 2:
                                break
                    assert got[0][:2] == ("put", 1) and got[1][:2] == ("put", 2)
                    assert got[1][2] is not None and got[1][2].value == 1
                    await asyncio.sleep(1.3)
                    assert not ka.expired() and not ka.lost.is_set()
                    assert (await kv.lease_ttl(lease.id)).granted_ttl == 1
                await kv.lease_revoke(lease.id)
                with pytest.raises(LeaseNotFound):
                    await kv.lease_keepalive(lease.id)

    run(main())


def test_a_watch_moves_off_a_partitioned_node_with_every_event_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            other = next(n for n in c.nodes if n not in (leader, follower))
            watcher = fast_client([endpoint(c, follower), endpoint(c, other)])
            writer = fast_client([endpoint(c, leader)])
            seen: list[int] = []
            done = threading.Event()
            watch = watcher.watch(prefix="k/", start_revision=2)  # a fresh store: the first write

            def consume() -> None:
                for response in watch:  # until watch.close()
                    seen.extend(e.kv.value for e in response.events)  # type: ignore[misc]
                    if len(seen) >= 30:
                        done.set()

            def write(lo: int, hi: int) -> None:
                for i in range(lo, hi):
                    writer.put(f"k/{i % 4}", i)

            consumer = asyncio.create_task(asyncio.to_thread(consume))
            await asyncio.to_thread(write, 0, 10)
            await eventually(lambda: len(seen) == 10, "the first events", 5.0)
            # Cut the watched node off: it sees nothing new, and after an
            # election timeout without a leader its watch ends ("no leader");
            # the client resumes on the other follower.
            c.hub.isolate(follower)
            await asyncio.to_thread(write, 10, 30)
            await asyncio.to_thread(done.wait, 10)
            assert c.nodes[follower].watchers == 0  # its watch ended there
            assert c.nodes[other].watchers == 1  # and goes on here
            watch.close()
            await asyncio.wait_for(consumer, 5)
            c.hub.heal()
            assert seen == list(range(30))

    run(main())


def test_an_async_watch_closed_from_another_task_ends(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            async with AsyncClient([endpoint(c, leader)], deadline=10.0) as kv:
                watch = kv.watch("k")

                async def consume() -> list[WatchResponse]:
                    return [r async for r in watch]

                task = asyncio.create_task(consume())
                await kv.put("k", 1)
                await asyncio.sleep(0.2)
                await watch.aclose()
                got = await asyncio.wait_for(task, 5)
                assert [e.kv.value for r in got for e in r.events] == [1]
                await asyncio.sleep(0.1)
                assert c.nodes[leader].watchers == 0

    run(main())


def test_an_election_hands_over_and_observers_see_each_leader(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            await c.leader()
            kv = fast_client([endpoint(c, n) for n in c.nodes])

            def scenario() -> list[object]:
                seen: list[object] = []
                observed = observe_leader(kv, "elect/web")
                seen.append(next(observed))  # nobody yet
                with Session(kv, ttl=5) as one:
                    first = Election(one, "elect/web", "host-1")
                    assert first.campaign().value == "host-1"
                    seen.append(next(observed).value)  # type: ignore[union-attr]
                    two = Session(kv, ttl=5)
                    second = Election(two, "elect/web", "host-2")
                    waiter = threading.Thread(target=second.campaign)
                    waiter.start()
                    time.sleep(0.2)
                    assert waiter.is_alive()  # host-1 leads
                    assert first.leader() is not None and first.leader().value == "host-1"  # type: ignore[union-attr]
                    first.resign()
                    waiter.join(5)
                    assert not waiter.is_alive()
                    seen.append(next(observed).value)  # type: ignore[union-attr]
                    two.close()
                seen.append(next(observed))
                return seen

            assert await asyncio.to_thread(scenario) == [None, "host-1", "host-2", None]

    run(main())
