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

__all__ = ["SyncThread"]

_Job = tuple[Callable[[], None], asyncio.Future[None], asyncio.AbstractEventLoop]


class SyncThread:
    """Runs the callables handed to :meth:`run` in one thread, in order.

    Args:
        name: the thread's name (shown by py-spy, ``top -H``, tracebacks).
    """

    __slots__ = ("_name", "_jobs", "_thread", "_last")

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started by the first run()
        self._last: asyncio.Future[None] | None = None

    def run(self, fn: Callable[[], None]) -> asyncio.Future[None]:
        """Call ``fn`` in the thread; a future of the running loop that ends as it
        returns (with its exception, if it raised)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        self._last = fut
        return fut

    @property
    def running(self) -> bool:
        """Whether a callable handed to :meth:`run` has not finished (as far as
        the event loop has heard)."""
        return self._last is not None and not self._last.done()

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
            error: BaseException | None = None
            try:
                fn()
            except BaseException as exc:  # handed to the loop, which decides
                error = exc
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_finish, fut, error)


def _finish(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
