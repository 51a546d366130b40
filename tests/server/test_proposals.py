"""Proposal time-outs: deadlines swept every tick, not a timer per write."""

from __future__ import annotations

import asyncio

from raftkv.core.types import Entry, Index, Term
from raftkv.server.errors import OutcomeUnknown
from raftkv.server.metrics import NodeMetrics
from raftkv.server.node.proposals import Proposals


def test_a_proposal_past_its_deadline_fails_at_the_next_sweep_and_stays_registered() -> None:
    async def main() -> None:
        answered: list[object] = []
        proposals = Proposals(NodeMetrics("n1"), timeout_s=5.0, wake=lambda: None)
        loop = asyncio.get_running_loop()
        late = proposals.future(Index(3), Term(1), 0.05, on_done=answered.append)
        default = proposals.future(Index(4), Term(1), None)
        proposals.expire(loop.time())
        assert not late.done() and not default.done()
        proposals.expire(loop.time() + 0.06)
        assert isinstance(late.exception(), OutcomeUnknown)
        assert answered == [late]  # on_done is told at once
        assert not default.done()  # its deadline is timeout_s away
        # The timed-out proposal's entry may still commit: applying it is no error.
        assert proposals.applied(Entry(term=Term(1), index=Index(3), data=b"x"), "r") is False
        assert proposals.applied(Entry(term=Term(1), index=Index(4), data=b"y"), "ok") is True
        assert default.result() == "ok"
        proposals.expire(loop.time() + 10)  # an answered proposal's deadline passes quietly
        assert default.result() == "ok"

    asyncio.run(main())
