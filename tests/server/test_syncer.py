"""The WAL sync thread: order, errors, waiting for a sync before the files close."""

from __future__ import annotations

import asyncio
import threading

import pytest

from raftkv.server.node.syncer import SyncThread


def test_runs_each_callable_off_the_loop_thread_in_order() -> None:
    calls: list[tuple[int, str]] = []

    async def main() -> None:
        syncer = SyncThread("test-wal")
        loop_thread = threading.current_thread().name
        futures = [
            syncer.run(lambda i=i: calls.append((i, threading.current_thread().name)))
            for i in range(5)
        ]
        await asyncio.gather(*futures)
        assert not syncer.running
        syncer.close(wait=True)
        assert all(name == "test-wal" != loop_thread for _, name in calls)

    asyncio.run(main())
    assert [i for i, _ in calls] == [0, 1, 2, 3, 4]


def test_an_exception_reaches_the_awaiting_loop() -> None:
    def broken() -> None:
        raise OSError(5, "Input/output error")

    async def main() -> None:
        syncer = SyncThread("test-wal")
        with pytest.raises(OSError, match="Input/output error"):
            await syncer.run(broken)
        await syncer.run(lambda: None)  # the thread survives a failed call
        syncer.close(wait=True)

    asyncio.run(main())


def test_close_waits_for_a_running_sync_unless_told_not_to() -> None:
    release = threading.Event()
    finished = threading.Event()

    def slow_sync() -> None:
        release.wait(5)
        finished.set()

    async def main() -> None:
        syncer = SyncThread("test-wal")
        fut = syncer.run(slow_sync)
        await asyncio.sleep(0)
        assert syncer.running
        syncer.close(wait=False)  # a stuck sync does not hold up a failed node's stop
        assert not finished.is_set()
        # A waiting close returns only once the sync returned.
        threading.Timer(0.05, release.set).start()
        syncer.close(wait=True)
        assert finished.is_set()
        fut.cancel()

    asyncio.run(main())


def test_a_sync_whose_awaiter_was_cancelled_still_counts_as_running() -> None:
    """A stopping node cancels the Ready that awaited a sync; a sync stuck on a
    dead disk must still count as running, or stop() would wait for it forever."""
    release = threading.Event()

    async def main() -> None:
        syncer = SyncThread("test-wal")
        fut = syncer.run(lambda: release.wait(5))
        fut.cancel()
        await asyncio.sleep(0)
        assert syncer.running
        release.set()
        syncer.close(wait=True)
        assert not syncer.running

    asyncio.run(main())


def test_the_future_carries_what_the_callable_returned() -> None:
    async def main() -> None:
        syncer = SyncThread("test-wal")
        assert await syncer.run(lambda: 0.25) == 0.25
        syncer.close(wait=True)

    asyncio.run(main())


def test_close_without_a_sync_starts_no_thread() -> None:
    before = threading.active_count()
    SyncThread("test-wal").close(wait=True)
    assert threading.active_count() == before
