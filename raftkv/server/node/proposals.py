"""Pending proposals: the futures of the commands this node handed to the core.

Rule: a proposal is identified by the (term, index) the core gave it. If the
entry applied at that index has another term, the proposal was overwritten by
a new leader and is failed with :class:`~raftkv.server.errors.ProposalLost`
(retryable); so is a proposal whose index was passed without an entry of its
own being applied. A proposal that does not apply in time fails with
:class:`~raftkv.server.errors.OutcomeUnknown`, but stays registered: its entry
is still applied (once) if it commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from raftkv.core.errors import NotLeader, ProposalDropped
from raftkv.core.rawnode import RawNode
from raftkv.core.types import Entry, Index, Term
from raftkv.server.errors import NoLeader, OutcomeUnknown, ProposalLost, ServerError
from raftkv.server.metrics import NodeMetrics

__all__ = ["Proposals"]


class _Proposal:
    __slots__ = ("term", "future")

    def __init__(self, term: Term, future: asyncio.Future[object]) -> None:
        self.term = term
        self.future = future


class Proposals:
    """The proposals made on this node that are not applied yet.

    Args:
        metrics: counts proposals and their failures.
        timeout_s: how long a proposal may take when the caller gives no timeout.
        wake: wakes the drive loop (a new proposal is in the core's next Ready).
    """

    __slots__ = ("_pending", "_metrics", "_timeout_s", "_wake")

    def __init__(self, metrics: NodeMetrics, *, timeout_s: float, wake: Callable[[], None]) -> None:
        # Invariant: every key is an index proposed on this node not yet applied.
        self._pending: dict[Index, _Proposal] = {}
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._wake = wake

    def __bool__(self) -> bool:
        """Whether any proposal is pending."""
        return bool(self._pending)

    def __len__(self) -> int:
        """How many proposals are pending: clients waiting for a write's outcome."""
        return len(self._pending)

    # ------------------------------------------------------------------ proposing

    def submit(self, raw: RawNode, command: bytes) -> tuple[Index, Term]:
        """Hand ``command`` to the core; the (index, term) it was given.

        Raises:
            ServerError: ``command`` is empty (reserved for the leader's no-op).
            NoLeader: this node is not the leader, or the core dropped the proposal.
        """
        if not command:
            raise ServerError("empty commands are reserved for no-ops")
        try:
            index = raw.propose(command)
        except NotLeader as exc:
            raise NoLeader("not the leader", leader=exc.leader) from exc
        except ProposalDropped as exc:
            self._metrics.failed("dropped")
            raise NoLeader(f"proposal dropped: {exc}", leader=raw.leader) from exc
        return index, raw.term

    async def wait(self, index: Index, term: Term, timeout: float | None) -> object:
        """Wait for the proposal at (``index``, ``term``) to apply; its result.

        Raises:
            ProposalLost: a new leader overwrote the entry; it was not applied.
            OutcomeUnknown: no answer within ``timeout`` (default: ``timeout_s``).
        """
        fut, timer = self._register(index, term, timeout)
        try:
            return await fut
        finally:
            timer.cancel()

    def future(self, index: Index, term: Term, timeout: float | None) -> asyncio.Future[object]:
        """:meth:`wait` without a coroutine: the future of the result."""
        fut, timer = self._register(index, term, timeout)
        fut.add_done_callback(lambda _: timer.cancel())
        return fut

    def _register(
        self, index: Index, term: Term, timeout: float | None
    ) -> tuple[asyncio.Future[object], asyncio.TimerHandle]:
        self._metrics.proposals.inc()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        self._pending[index] = _Proposal(term, fut)
        self._wake()
        # A plain timer rather than wait_for(shield(...)): no extra task or
        # future per request. A proposal that times out stays registered, and
        # its entry is still applied (once) if it commits.
        timer = loop.call_later(
            timeout if timeout is not None else self._timeout_s, self._timed_out, fut
        )
        return fut, timer

    def _timed_out(self, fut: asyncio.Future[object]) -> None:
        if not fut.done():
            self._metrics.failed("timeout")
            fut.set_exception(OutcomeUnknown("timed out waiting for the write to commit"))

    # ------------------------------------------------------------------ resolving

    def applied(self, entry: Entry, result: object) -> bool:
        """``entry`` was applied with ``result``: answer its proposal, if this node
        made one; whether a proposal was answered.

        A ``result`` that is a :class:`ServerError` (a configuration change
        refused when applied) fails the proposal with it.
        """
        p = self._pending.pop(entry.index, None)
        if p is None or p.future.done():
            return False
        if p.term != entry.term:
            self._metrics.failed("lost")
            p.future.set_exception(
                ProposalLost("the proposal was overwritten by a new leader; retry")
            )
        elif isinstance(result, ServerError):
            p.future.set_exception(result)
        else:
            p.future.set_result(result)
        return True

    def lost_up_to(self, applied: Index) -> None:
        """Fail the proposals at or below ``applied`` that no applied entry matched."""
        for idx in [i for i in self._pending if i <= applied]:
            p = self._pending.pop(idx)
            if not p.future.done():
                p.future.set_exception(ProposalLost("the proposal was not applied; retry"))

    def fail_all(self, unknown: OutcomeUnknown) -> None:
        """The node stops: every pending proposal may still commit elsewhere."""
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(unknown)
        self._pending.clear()
