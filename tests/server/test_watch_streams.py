"""A node's watch streams as the etcd Watch service reads them: a shared wake-up,
and progress that waits for catch-up and an empty queue."""

from __future__ import annotations

import asyncio

import pytest

from raftkv.replica.kv import KVStateMachine, Put, encode_command
from raftkv.server.errors import TooManyWatchers
from raftkv.server.node.watches import Watches, WatchStream


def _fail(what: str, exc: BaseException) -> None:
    raise AssertionError(f"{what}: {exc!r}")


def test_progress_revision_waits_for_catch_up_and_an_empty_queue() -> None:
    async def scenario() -> None:
        sm = KVStateMachine()
        for index in range(1, 4):  # revisions 2..4
            sm.apply(index, encode_command(Put(key="k", value=index, time_ms=1)))
        watches = Watches(
            sm,
            election_timeout_s=1.0,
            progress_interval_s=600.0,
            buffer_bytes=1 << 20,
            max_watchers=10,
            fail=_fail,
        )
        ready = asyncio.Event()
        streams = [
            watches.open(
                key,
                b"",
                start_revision=start,
                prev_kv=False,
                filters=frozenset(),
                progress_notify=False,
                require_leader=False,
                ready=ready,
            )
            for key, start in ((b"k", 2), (b"other", 0))
        ]
        old, new = streams
        assert new.progress_revision() == 4  # synced, nothing queued
        assert old.progress_revision() is None  # catching up: 2..4 not given yet
        await asyncio.sleep(0)  # the scheduled catch-up step runs
        assert ready.is_set()  # one event wakes every stream's reader
        assert old.progress_revision() is None  # its events wait in the queue
        assert [r.revision for r in old.take()] == [2, 3, 4]
        assert old.progress_revision() == 4
        old.close()
        assert old.progress_revision() is None

    asyncio.run(scenario())


def test_watchers_beyond_the_node_limit_are_refused_until_one_closes() -> None:
    async def scenario() -> None:
        watches = Watches(
            KVStateMachine(),
            election_timeout_s=1.0,
            progress_interval_s=600.0,
            buffer_bytes=1 << 20,
            max_watchers=2,
            fail=_fail,
        )

        def open_one() -> WatchStream:
            return watches.open(
                b"k",
                b"",
                start_revision=0,
                prev_kv=False,
                filters=frozenset(),
                progress_notify=False,
                require_leader=False,
            )

        first, _ = open_one(), open_one()
        with pytest.raises(TooManyWatchers, match=r"serves 2 \(--max-watchers\)"):
            open_one()
        assert len(watches) == 2
        first.close()
        open_one()
        assert len(watches) == 2

    asyncio.run(scenario())
