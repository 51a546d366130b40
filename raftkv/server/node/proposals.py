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
import logging
from collections.abc import Callable

from raftkv.core.errors import NotLeader, ProposalDropped
from raftkv.core.rawnode import RawNode
from raftkv.core.types import Entry, Index, Term
from raftkv.server.errors import NoLeader, OutcomeUnknown, ProposalLost, ServerError
from raftkv.server.metrics import NodeMetrics

__all__ = ["OnDone", "Proposals"]

logger = logging.getLogger(__name__)


OnDone = Callable[[asyncio.Future[object]], None]
"""Called with a proposal's future the moment it is resolved (not a loop turn later)."""


class _Proposal:
    __slots__ = ("term", "future", "on_done", "deadline")

    def __init__(
        self, term: Term, future: asyncio.Future[object], on_done: OnDone | None, deadline: float
    ) -> None:
        self.term = term
        self.future = future
        self.on_done = on_done
        self.deadline = deadline  # on the loop's clock

    def resolve(self, result: object = None, exc: BaseException | None = None) -> None:
        if exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)
        if self.on_done is not None:
            try:
                self.on_done(self.future)
            except Exception:  # an answer that cannot be built must not stop the apply loop
                logger.exception("answering a proposal failed")


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
        return await self._register(index, term, timeout, None)

    def future(
        self, index: Index, term: Term, timeout: float | None, on_done: OnDone | None = None
    ) -> asyncio.Future[object]:
        """:meth:`wait` without a coroutine: the future of the result. ``on_done``
        is called with it as it is resolved, within the same loop turn (a done
        callback would run a turn later): the leader's answers to forwarded
        writes then leave with the commit notices of the Ready that applied them."""
        return self._register(index, term, timeout, on_done)

    def _register(
        self, index: Index, term: Term, timeout: float | None, on_done: OnDone | None
    ) -> asyncio.Future[object]:
        self._metrics.proposals.inc()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        # A deadline that expire() checks every tick, rather than a timer (or
        # wait_for) per request: no timer handle made and cancelled per write.
        # A proposal that times out stays registered, and its entry is still
        # applied (once) if it commits.
        deadline = loop.time() + (timeout if timeout is not None else self._timeout_s)
        self._pending[index] = _Proposal(term, fut, on_done, deadline)
        self._wake()
        return fut

    def expire(self, now: float) -> None:
        """Fail the proposals whose deadline is at or before ``now`` (the loop's
        clock) with OutcomeUnknown. The node calls it every tick, so a time-out
        fires within a heartbeat interval after its deadline."""
        for proposal in self._pending.values():
            if proposal.deadline <= now and not proposal.future.done():
                self._metrics.failed("timeout")
                proposal.resolve(exc=OutcomeUnknown("timed out waiting for the write to commit"))

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
            p.resolve(exc=ProposalLost("the proposal was overwritten by a new leader; retry"))
        elif isinstance(result, ServerError):
            p.resolve(exc=result)
        else:
            p.resolve(result)
        return True

    def lost_up_to(self, applied: Index) -> None:
        """Fail the proposals at or below ``applied`` that no applied entry matched."""
        for idx in [i for i in self._pending if i <= applied]:
            p = self._pending.pop(idx)
            if not p.future.done():
                p.resolve(exc=ProposalLost("the proposal was not applied; retry"))

    def fail_all(self, unknown: OutcomeUnknown) -> None:
        """The node stops: every pending proposal may still commit elsewhere."""
        for p in self._pending.values():
            if not p.future.done():
                p.resolve(exc=unknown)
        self._pending.clear()
