"""Both front ends answer alike: the same request gets the same status, body and
headers from aiohttp (raftkv.server.http.aio) and from the fast path
(raftkv.server.http.fast), successes and errors alike.

The node is a fake leader (no Raft, no disk); aiohttp is served on loopback,
the fast path's front end is called with the request its parser made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from raftkv.core.types import NodeId
from raftkv.replica.kv import ERR_NOT_FOUND, KVResult, KVStateMachine, Put, encode_command
from raftkv.server.config import ServerConfig
from raftkv.server.errors import NodeFailed, NoLeader, NoSpace, OutcomeUnknown, ProposalLost
from raftkv.server.fasthttp import FastRequest, parse_request
from raftkv.server.http.aio import build_app
from raftkv.server.http.fast import FastFrontEnd
from raftkv.server.http.handlers import Handlers
from raftkv.server.metrics import NodeMetrics
from raftkv.server.security import parse_tokens

RW = "rw-token-0123456789abcdef"
RO = "ro-token-0123456789abcdef"


class FakeNode:
    """A leader whose proposals end as ``outcome`` says, at once."""

    def __init__(self) -> None:
        self.node_id = NodeId("n1")
        self.leader: NodeId | None = self.node_id
        self.is_leader = True
        self.failure: BaseException | None = None
        self.metrics = NodeMetrics("n1")
        self.state_machine = KVStateMachine()
        self.state_machine.apply(1, encode_command(Put(key="k", value=[1, "x"], time_ms=1)))
        self.applied_index = 1
        self.members: dict[NodeId, object] = {}
        self.forward_handler: object = None
        self.outcome: object = KVResult(ok=True, index=2, revision=2)
        self.refusal: Exception | None = None

    def admit_write(self, command: object) -> None:
        if self.refusal is not None:
            raise self.refusal

    async def propose(self, data: bytes) -> object:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    async def read_barrier(self, timeout: float | None = None) -> int:
        return 1

    def can_forward(self, leader: object) -> bool:
        return False


@dataclass
class Case:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    setup: Callable[[FakeNode], None] = lambda node: None
    tokens: bool = False

    def raw(self) -> bytes:
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: h\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        if self.method in ("PUT", "POST"):
            head += f"Content-Length: {len(self.body)}\r\n"
        return head.encode() + b"\r\n" + self.body


def _set(name: str, value: object) -> Callable[[FakeNode], None]:
    return lambda node: setattr(node, name, value)


PUT = Case("PUT", "/v1/kv/a", b'{"v": 1}')
CASES = {
    "put": PUT,
    "put-with-session": replace(PUT, headers={"Idempotency-Key": "c1/1"}),
    "get": Case("GET", "/v1/kv/k"),
    "get-stale": Case("GET", "/v1/kv/k?consistency=stale"),
    "get-absent": Case("GET", "/v1/kv/nope"),
    "delete": Case("DELETE", "/v1/kv/k"),
    "delete-absent": replace(
        Case("DELETE", "/v1/kv/k"),
        setup=_set("outcome", KVResult(ok=False, index=2, revision=1, error=ERR_NOT_FOUND)),
    ),
    "multi-put": Case("POST", "/v1/kv", b'{"a": 1, "b": [2]}'),
    "multi-put-too-many": Case("POST", "/v1/kv", b'{"a": 1, "b": 2, "c": 3}'),
    "bad-json": replace(PUT, body=b"{nope"),
    "bad-session": replace(PUT, headers={"Idempotency-Key": "no-sequence"}),
    "no-leader": replace(PUT, setup=_set("outcome", NoLeader("no leader"))),
    "proposal-lost": replace(PUT, setup=_set("outcome", ProposalLost("lost", leader="n1"))),
    "outcome-unknown": replace(PUT, setup=_set("outcome", OutcomeUnknown("timed out"))),
    "nospace": replace(PUT, setup=_set("refusal", NoSpace("quota"))),
    "bug": replace(PUT, setup=_set("outcome", RuntimeError("a bug"))),
    "failed-node": replace(PUT, setup=_set("failure", NodeFailed("disk"))),
    "no-token": replace(PUT, tokens=True),
    "bad-token": replace(PUT, tokens=True, headers={"Authorization": "Bearer wrong"}),
    "read-only-token": replace(PUT, tokens=True, headers={"Authorization": f"Bearer {RO}"}),
    "token": replace(PUT, tokens=True, headers={"Authorization": f"Bearer {RW}"}),
    "probe-without-token": replace(Case("GET", "/v1/health/ready"), tokens=True),
}


def _config(tokens: bool) -> ServerConfig:
    return ServerConfig(
        node_id=NodeId("n1"),
        data_dir="/nonexistent",
        raft_addr=("127.0.0.1", 1),
        api_addr=("127.0.0.1", 2),
        max_multi_put_pairs=2,
        client_tokens=parse_tokens(f"rw {RW}\nro {RO}\n") if tokens else None,
    )


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def _handlers(case: Case) -> Handlers:
    node = FakeNode()
    node.is_ready = lambda: True  # type: ignore[attr-defined]
    case.setup(node)
    return Handlers(node, _config(case.tokens))  # type: ignore[arg-type]


async def _via_fast(case: Case) -> tuple[int, bytes, dict[str, str]]:
    parsed = parse_request(case.raw(), 1 << 20)
    assert isinstance(parsed, tuple), parsed
    request: FastRequest = parsed[0]
    status, body, headers = await FastFrontEnd(_handlers(case)).serve(request, "127.0.0.1")
    return status, body, dict(headers or {})


async def _via_aiohttp(case: Case, names: set[str]) -> tuple[int, bytes, dict[str, str]]:
    app, _ = build_app(_handlers(case))
    async with TestClient(TestServer(app)) as client:
        resp = await client.request(
            case.method, case.path, data=case.body or None, headers=case.headers
        )
        body = await resp.read()
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        return resp.status, body, {k: v for k, v in resp.headers.items() if k in names}


@pytest.mark.parametrize("name", sorted(CASES))
def test_both_front_ends_answer_alike(name: str) -> None:
    case = CASES[name]

    async def main() -> None:
        fast = await _via_fast(case)
        aio = await _via_aiohttp(case, set(fast[2]))
        assert aio == fast

    run(main())


def test_the_cases_cover_successes_and_errors() -> None:
    async def main() -> None:
        statuses = {name: (await _via_fast(case))[0] for name, case in CASES.items()}
        assert statuses == {
            "put": 200,
            "put-with-session": 200,
            "get": 200,
            "get-stale": 200,
            "get-absent": 404,
            "delete": 200,
            "delete-absent": 404,
            "multi-put": 200,
            "multi-put-too-many": 413,
            "bad-json": 400,
            "bad-session": 400,
            "no-leader": 503,
            "proposal-lost": 503,
            "outcome-unknown": 504,
            "nospace": 507,
            "bug": 500,
            "failed-node": 503,
            "no-token": 401,
            "bad-token": 401,
            "read-only-token": 403,
            "token": 200,
            "probe-without-token": 200,
        }

    run(main())
