"""The leader's side of a forwarded write (raftkv.server.node.forwarding.Forwarding.serve).

The node relays the API's answer and decides no status itself: with no API
attached, or an API handler that raises, it sends no answer (the sender's
forward then fails as an unknown outcome), and logs why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from raftkv.core.types import NodeId, Term
from raftkv.server.metrics import NodeMetrics
from raftkv.server.node.forwarding import Forwarding, ForwardReply
from raftkv.transport.forward import ForwardRequest, ForwardResponse, PeerMessage

REQUEST = ForwardRequest(
    term=Term(3), sender=NodeId("n2"), to=NodeId("n1"), request_id=7, payload=b"cmd"
)


def _serve(handler: object) -> list[PeerMessage]:
    sent: list[PeerMessage] = []

    def send(msgs: Sequence[PeerMessage]) -> None:
        sent.extend(msgs)

    async def main() -> None:
        forwarding = Forwarding(
            NodeId("n1"), NodeMetrics("n1"), timeout_s=1.0, term=lambda: Term(3), send=send
        )
        forwarding.handler = handler  # type: ignore[assignment]
        forwarding.serve(REQUEST)
        await asyncio.sleep(0)  # the outbox is flushed at the next loop turn

    asyncio.run(main())
    return sent


def test_the_apis_answer_is_relayed() -> None:
    def handler(payload: bytes, reply: ForwardReply) -> None:
        assert payload == b"cmd"
        reply(409, b'{"error": "conflict"}')

    [answer] = _serve(handler)
    assert isinstance(answer, ForwardResponse)
    assert (answer.to, answer.request_id, answer.status, answer.body) == (
        "n2",
        7,
        409,
        b'{"error": "conflict"}',
    )


def test_without_an_api_nothing_is_answered(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="raftkv.server.node.forwarding"):
        assert _serve(None) == []
    assert "this node has no API" in caplog.text


def test_a_handler_that_raises_gets_no_invented_answer(caplog: pytest.LogCaptureFixture) -> None:
    def handler(payload: bytes, reply: ForwardReply) -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="raftkv.server.node.forwarding"):
        assert _serve(handler) == []
    assert "serving a forwarded write failed" in caplog.text
