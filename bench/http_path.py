"""Microbenchmark: one request through the HTTP fast path, without sockets.

What it times: ``parse_request`` of the request bytes, the fast path's handler
(guard, route handler, error mapping, metrics) against a fake leader whose
proposals and reads complete at once, and ``encode_response`` of the answer --
everything a node's CPU does per hot request besides the event loop, the
socket and Raft. The coroutine is driven by hand (``send(None)``), so no event
loop is involved either.

Run: ``python bench/http_path.py [--number N] [--repeat R]``; it prints the
best time per request (microseconds) of each request kind.
"""

from __future__ import annotations

import argparse
import asyncio
import timeit
from collections.abc import Awaitable, Callable
from typing import Any

from raftkv.core.types import NodeId
from raftkv.replica.kv import KVResult, KVStateMachine, Put, encode_command
from raftkv.server.config import ServerConfig
from raftkv.server.fasthttp import Answer, FastRequest, encode_response, parse_request
from raftkv.server.metrics import NodeMetrics

_OK = KVResult(ok=True, index=7, revision=7)


class FakeNode:
    """What the handlers read of a leader, answering at once."""

    def __init__(self) -> None:
        self.node_id = NodeId("n1")
        self.leader = self.node_id
        self.is_leader = True
        self.failure = None
        self.metrics = NodeMetrics("n1")
        self.state_machine = KVStateMachine()
        self.applied_index = 7
        put = Put(key="k", value={"v": 1}, time_ms=1)
        self.state_machine.apply(1, encode_command(put))

    def admit_write(self, command: object) -> None:
        pass

    async def propose(self, data: bytes) -> object:
        return _OK

    async def read_barrier(self, timeout: float | None = None) -> int:
        return 7


def _fast_handler(
    node: Any, config: ServerConfig
) -> Callable[[FastRequest, str], Awaitable[Answer]]:
    try:
        from raftkv.server.http.fast import FastFrontEnd
        from raftkv.server.http.handlers import Handlers
    except ImportError:  # before raftkv.server.http
        from raftkv.server import api

        old = api._Api(node, config)
        old.guard = api._Guard(node, config)
        return old.serve_fast
    return FastFrontEnd(Handlers(node, config)).serve


_REQUESTS = {
    "put": b'PUT /v1/kv/some-key HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{"v": 12}',
    "get": b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\n\r\n",
    "put-400": b"PUT /v1/kv/some-key HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n{x}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    config = ServerConfig(
        node_id=NodeId("n1"), data_dir="/nonexistent", raft_addr=("h", 1), api_addr=("h", 2)
    )
    handle = _fast_handler(FakeNode(), config)
    loop = asyncio.new_event_loop()  # the handlers may ask for the running loop
    asyncio.set_event_loop(loop)

    def one(raw: bytes) -> bytes:
        parsed = parse_request(raw, 1 << 20)
        assert isinstance(parsed, tuple)
        request = parsed[0]
        coro = handle(request, "127.0.0.1")
        try:
            coro.send(None)
        except StopIteration as stop:
            status, body, headers = stop.value
        else:
            raise AssertionError("the handler suspended")
        return encode_response(status, body, headers, close=not request.keep_alive)

    for name, raw in _REQUESTS.items():
        status_line = one(raw).split(b"\r\n", 1)[0].decode()
        print(f"{name}: {status_line}")
        times = timeit.repeat(lambda raw=raw: one(raw), number=args.number, repeat=args.repeat)
        print(f"  best {min(times) / args.number * 1e6:.2f} us/request")


if __name__ == "__main__":
    main()
