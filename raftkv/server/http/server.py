"""One node's API server: the port, both front ends, the etcd gRPC API; :func:`serve`.

Rule: the port is served by :class:`~raftkv.server.http.connections.FastHttpServer`:
every connection is accepted, capped (``--max-connections``) and held to the
HTTP deadlines there (its Rule 2). With the fast path on (the default unless
``RAFTKV_NO_FAST_HTTP=1``) it answers the hot KV routes itself
(:mod:`.fast`) and hands every other connection to the aiohttp application
(:mod:`.aio`); without it, it hands every connection to aiohttp as soon as
it is made. Both front ends serve from one :class:`~.handlers.Handlers`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from raftkv.etcd.grpcserver import EtcdGrpcServer
from raftkv.etcd.service import EtcdService
from raftkv.server.config import ServerConfig
from raftkv.server.fdlimit import apply_fd_budget
from raftkv.server.http.aio import CONNECTION, build_app
from raftkv.server.http.connections import MAX_CONNECTIONS, FastHttpServer
from raftkv.server.http.fast import FastFrontEnd
from raftkv.server.http.handlers import Handlers
from raftkv.server.node import RaftNode
from raftkv.server.security import api_ssl_contexts

__all__ = ["ApiServer", "run_event_loop", "serve"]

logger = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiServer:
    """Runs both front ends of ``node``'s API on ``config.api_addr`` (port 0
    picks a free port); the module's rule."""

    def __init__(
        self, node: RaftNode, config: ServerConfig, *, fast_path: bool | None = None
    ) -> None:
        self.node = node
        self.config = config
        self._runner: web.AppRunner | None = None
        self.fast: FastHttpServer | None = None
        self.fast_path = (
            not os.environ.get("RAFTKV_NO_FAST_HTTP") if fast_path is None else fast_path
        )
        self.port = config.api_addr[1]
        self.grpc: EtcdGrpcServer | None = None
        self.handlers = Handlers(node, config)

    @property
    def grpc_port(self) -> int | None:
        """The etcd gRPC API's port (``None``: not served)."""
        return self.grpc.port if self.grpc is not None else None

    async def start(self) -> None:
        config = self.config
        handlers = self.handlers
        app, etcd = build_app(handlers)
        # Outermost: it sees every request aiohttp serves, refused ones too.
        app.middlewares.insert(0, self._track_request)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            # The connection's own deadlines (HandedOff) close it first; this
            # is a backstop that must not be the shorter one.
            keepalive_timeout=config.http_idle_timeout_s + config.http_head_timeout_s,
            # A graceful stop waits this long for requests in progress (each is
            # bounded by the request timeout, a forwarded one by that plus one).
            shutdown_timeout=config.request_timeout_s + 2.0,
        )
        await self._runner.setup()
        host, port = config.api_addr
        server_ssl, _ = api_ssl_contexts(config)
        aiohttp_protocol = self._runner.server
        assert aiohttp_protocol is not None  # made by setup()
        self.fast = FastHttpServer(
            FastFrontEnd(handlers).serve,
            aiohttp_protocol,
            max_body=config.max_body_bytes,
            max_connections=config.max_connections or MAX_CONNECTIONS,
            fast_routes=self.fast_path,
            head_timeout=config.http_head_timeout_s,
            body_timeout=config.http_body_timeout_s,
            keepalive_timeout=config.http_idle_timeout_s,
            write_timeout=config.http_write_timeout_s,
        )
        self.node.metrics.watch_http(self.fast.stats, self._open_connections)
        self.port = await self.fast.start(host, port, ssl=server_ssl)
        if config.grpc_addr is not None:
            await self._start_grpc(etcd)
        logger.info(
            "http api listening",
            extra={
                "fields": {
                    "addr": f"{host}:{self.port}",
                    "max_connections": self.fast.max_connections,
                }
            },
        )

    async def _start_grpc(self, etcd: EtcdService) -> None:
        config = self.config
        assert config.grpc_addr is not None
        self.grpc = EtcdGrpcServer(etcd, config)
        try:
            await self.grpc.start()
        except BaseException:
            await self.stop(abort=True)
            raise
        etcd.grpc_addr = (config.grpc_addr[0], self.grpc.port)

    def _open_connections(self) -> int:
        return self.fast.open_connections if self.fast is not None else 0

    @web.middleware
    async def _track_request(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Tell the connection aiohttp serves when a request runs (its deadlines)."""
        conn = self.fast.handed_off_connection(request.protocol) if self.fast else None
        if conn is None:
            return await handler(request)
        conn.request_started(request.content)
        request[CONNECTION] = conn
        try:
            return await handler(request)
        finally:
            conn.request_finished()

    async def stop(self, *, abort: bool = False) -> None:
        """Stop listening and close every connection; ``abort``: without waiting
        for requests in progress (a failed node)."""
        fast, self.fast = self.fast, None
        grpc_server, self.grpc = self.grpc, None
        if grpc_server is not None:
            await grpc_server.stop(grace=None if abort else self.config.request_timeout_s)
        if fast is not None:
            fast.close(abort=abort)
        if self._runner is not None:
            await self._runner.cleanup()  # closes the connections handed to aiohttp
            self._runner = None
        if fast is not None:
            await fast.wait_closed()


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on uvloop when it is installed (``pip install
    raftkv[fast]``), else on asyncio's own loop; ``RAFTKV_NO_UVLOOP=1`` forces the latter.

    uvloop's loop and transports are C: on a node that is CPU-bound in the
    event loop (many small HTTP requests and peer frames), they took about 15%
    off the CPU time per write in bench/kv_bench.py (docs/benchmarks.md).
    Behaviour is the same either way.
    """
    if not os.environ.get("RAFTKV_NO_UVLOOP"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


async def serve(config: ServerConfig, stop: asyncio.Event | None = None) -> None:
    """Run one node and its API until ``stop`` is set (SIGTERM/SIGINT in ``raftkv serve``).

    Raises:
        NodeFailed: the node failed (crash-stop, :attr:`RaftNode.failed`): the
            API is closed at once, the node stopped without a handover, and the
            failure re-raised, so that the process can exit and be restarted.
    """
    config = apply_fd_budget(config)
    node = RaftNode(config)
    api = ApiServer(node, config)  # before the node starts: it serves forwarded writes
    await node.start()
    try:
        await api.start()
    except OSError:
        await node.stop(transfer=False)
        raise
    if stop is None:
        stop = asyncio.Event()
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((stopped, node.failed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        failure = node.failure
        if failure is None:
            logger.info("shutting down")
            await node.stop()
            await api.stop()
        else:
            await api.stop(abort=True)  # first: nothing answers from a failed node
            await node.stop(transfer=False)
    if failure is not None:
        raise failure
