"""Linearizable reads: ReadIndex requests shared by many reads, and waits for the applied index.

Rule: reads share ReadIndex requests, as etcd's do (dissertation §6.4, on
followers too: the core asks the leader). Every read that arrives while no
request is in flight joins the next one, and one ReadState answers them all. A
read that arrives while a request is in flight waits for the next: the index
must be fixed after the read began. A request not answered within an election
timeout, or in flight when a new leader becomes known, is given up; its reads
join the next request, whose index is fixed later than theirs needs to be --
still linearizable. A read is served once the state machine applied its index.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from raftkv.core.errors import ProposalDropped
from raftkv.core.rawnode import RawNode
from raftkv.core.types import Index, NodeId, ReadState, Role
from raftkv.server.errors import NoLeader, ReadTimeout, ServerError
from raftkv.server.metrics import NodeMetrics

__all__ = ["Reads"]


def _time_out(fut: asyncio.Future[Any], what: str) -> None:
    """Fail ``fut`` with :class:`ReadTimeout` unless it is already resolved."""
    if not fut.done():
        fut.set_exception(ReadTimeout(f"timed out {what}"))


class Reads:
    """The reads waiting for a read index, and the waits for the applied index.

    Args:
        node_id: this node (part of each request's context).
        rng: makes each request's context unique across restarts.
        metrics: counts reads by path.
        timeout_s: how long a read may take when the caller gives no timeout.
        retry_after_s: how long a request may go unanswered (an election timeout).
        applied_index: the state machine's applied index now.
        wake: wakes the drive loop (a request is in the core's next Ready).
    """

    __slots__ = (
        "_node_id",
        "_rng",
        "_metrics",
        "_timeout_s",
        "_retry_after_s",
        "_applied_index",
        "_wake",
        "_batches",
        "_queue",
        "_in_flight",
        "_sent_at",
        "_seq",
        "_apply_waiters",
    )

    def __init__(
        self,
        node_id: NodeId,
        rng: random.Random,
        metrics: NodeMetrics,
        *,
        timeout_s: float,
        retry_after_s: float,
        applied_index: Callable[[], Index],
        wake: Callable[[], None],
    ) -> None:
        self._node_id = node_id
        self._rng = rng
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._applied_index = applied_index
        self._wake = wake
        # The reads each request in flight (by context) answers.
        # Invariant: _in_flight is None or a key of _batches.
        self._batches: dict[bytes, list[asyncio.Future[Index]]] = {}
        # Reads waiting for the next request.
        self._queue: list[asyncio.Future[Index]] = []
        self._in_flight: bytes | None = None
        self._sent_at = 0.0
        self._seq = itertools.count(1)
        # (index, future) waiting for applied >= index.
        self._apply_waiters: list[tuple[Index, asyncio.Future[None]]] = []

    # ------------------------------------------------------------------ reads

    async def barrier(self, raw: RawNode, *, timeout: float | None) -> Index:
        """Wait until a linearizable read may be served locally; return the read index.

        Raises:
            NoLeader: no leader known.
            ReadTimeout: the read index was not confirmed in time.
        """
        timeout = timeout if timeout is not None else self._timeout_s
        deadline = time.monotonic() + timeout
        if raw.leader is None:
            raise NoLeader("no leader")
        path = "read_index_leader" if raw.role is Role.LEADER else "read_index_follower"
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Index] = loop.create_future()
        self._queue.append(fut)
        if self._in_flight is None:
            self._issue(raw)
        timer = loop.call_later(timeout, _time_out, fut, "confirming leadership for a read")
        try:
            index = await fut
        finally:
            timer.cancel()
        self._metrics.read(path)
        await self.wait_applied(index, timeout=max(0.0, deadline - time.monotonic()))
        return index

    def _issue(self, raw: RawNode) -> None:
        """Ask the core for one read index on behalf of every queued read."""
        batch = [f for f in self._queue if not f.done()]
        self._queue = []
        if not batch:
            return
        ctx = f"{self._node_id}:{next(self._seq)}:{self._rng.getrandbits(32)}".encode()
        try:
            raw.read_index(ctx)
        except ProposalDropped as exc:
            for f in batch:
                f.set_exception(NoLeader(f"read dropped: {exc}", leader=raw.leader))
            return
        self._batches[ctx] = batch
        self._in_flight = ctx
        self._sent_at = asyncio.get_running_loop().time()
        self._wake()

    def retry(self, raw: RawNode) -> None:
        """Give up on the request in flight (its answer may never come: a lost
        message, a new leader); its reads join the next request."""
        ctx = self._in_flight
        if ctx is None:
            return
        self._in_flight = None
        self._queue[:0] = self._batches.pop(ctx, [])
        self._issue(raw)

    def tick(self, raw: RawNode) -> None:
        """On each tick: retry the request in flight if it went unanswered too long."""
        if (
            self._in_flight is not None
            and asyncio.get_running_loop().time() - self._sent_at > self._retry_after_s
        ):
            self.retry(raw)

    def answered(self, raw: RawNode, read_states: Iterable[ReadState]) -> bool:
        """A Ready's read states: resolve the reads they answer, and send the
        next request if reads are queued; whether any read was answered."""
        answered = False
        for rs in read_states:
            for fut in self._batches.pop(rs.context, ()):
                if not fut.done():
                    fut.set_result(rs.index)
                    answered = True
            if rs.context == self._in_flight:
                self._in_flight = None
        if self._in_flight is None and self._queue:
            self._issue(raw)
        return answered

    # ------------------------------------------------------------------ applied index

    async def wait_applied(self, index: Index, *, timeout: float) -> None:
        """Wait until the state machine applied ``index``.

        Raises:
            ReadTimeout: it did not within ``timeout``.
        """
        if self._applied_index() >= index:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._apply_waiters.append((index, fut))
        timer = loop.call_later(
            timeout, _time_out, fut, "waiting for the state machine to catch up"
        )
        try:
            await fut
        finally:
            timer.cancel()

    def wake_appliers(self) -> bool:
        """Resolve the waits the applied index now satisfies; whether there were any."""
        if not self._apply_waiters:
            return False
        keep = []
        woke = False
        applied = self._applied_index()
        for idx, fut in self._apply_waiters:
            if fut.done():
                continue
            if idx <= applied:
                fut.set_result(None)
                woke = True
            else:
                keep.append((idx, fut))
        self._apply_waiters = keep
        return woke

    # ------------------------------------------------------------------ stopping

    def fail_all(self, exc: ServerError) -> None:
        """The node stops: fail every read and every wait with ``exc``."""
        for f in [f for batch in self._batches.values() for f in batch] + self._queue:
            if not f.done():
                f.set_exception(exc)
        self._batches.clear()
        self._queue.clear()
        self._in_flight = None
        for _, w in self._apply_waiters:
            if not w.done():
                w.set_exception(exc)
        self._apply_waiters.clear()
