"""The WAL's syncs off the event loop: one thread of the node's own, one sync at a time.

A node on a slow disk syncs its WAL in this thread so that its event loop keeps
stepping messages and taking requests meanwhile (``RaftNode._handle_ready``).
A sync is handed over on a :class:`queue.SimpleQueue` and its end comes back
through ``loop.call_soon_threadsafe``: about a third of the event loop's CPU
that a ``ThreadPoolExecutor.submit`` plus ``asyncio.wrap_future`` round trip
costs (6 against 18 µs per hand-off, measured with uvloop), paid once per Ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SyncThread"]

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
T = TypeVar("T")


class SyncThread:
    """Runs the callables handed to :meth:`run` in one thread, in order.

    Args:
        name: the thread's name (shown by py-spy, ``top -H``, tracebacks).
    """

    __slots__ = ("_name", "_jobs", "_thread", "_unfinished", "_lock")

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started by the first run()
        # Handed over and not returned yet: counted by the thread itself, so a
        # cancelled awaiter does not make a sync that still blocks look finished.
        self._unfinished = 0
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Call ``fn`` in the thread; a future of the running loop with what it
        returns (or its exception)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._unfinished += 1
        self._jobs.put((fn, fut, loop))
        return fut

    @property
    def running(self) -> bool:
        """Whether a callable handed to :meth:`run` has not returned yet (even if
        whoever awaited it was cancelled)."""
        return self._unfinished > 0

    def close(self, *, wait: bool) -> None:
        """Let the thread end after what it was handed; with ``wait``, wait for that."""
        if self._thread is None:
            return
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut, loop = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the loop, which decides
                error = exc
            with self._lock:
                self._unfinished -= 1
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_finish, fut, result, error)


def _finish(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if error is None:
        fut.set_result(result)
    else:
        fut.set_exception(error)
