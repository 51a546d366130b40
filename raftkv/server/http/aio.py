"""The aiohttp front end: every route of the table, the etcd JSON gateway, and aiohttp's own errors.

Rule 1: every answer is JSON, errors included (``{"error": ..., "leader":
...}``): a middleware answers what a handler raises with
:func:`~raftkv.server.http.answers.answer_for`, and turns aiohttp's own HTML
errors (404, 405 with an ``Allow`` header, 413) into JSON. A node that failed
answers every route 503 ``node failed``.

Rule 2: the guard (:mod:`.guard`) runs in a middleware in front of every
route but the probes; a watch gives up its place in the in-flight limit once
it streams.

Rule 3: a route's body is read before its handler runs, up to its limit
(:class:`~raftkv.server.http.routes.Route`); a body over it raises aiohttp's
413 when the handler first reads it, so the handler's own checks come first,
as they would if it read the body itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import aiohttp
from aiohttp import web

from raftkv.etcd.gateway import add_routes as add_gateway_routes
from raftkv.etcd.service import EtcdService
from raftkv.server.fasthttp import Answer
from raftkv.server.fdlimit import FORWARD_CONNECTIONS
from raftkv.server.http.answers import FAILED, answer, answer_for
from raftkv.server.http.connections import HandedOff
from raftkv.server.http.guard import UNGUARDED, Slot
from raftkv.server.http.handlers import Handlers, dashboard
from raftkv.server.http.request import FORWARDED_HEADER
from raftkv.server.http.routes import ROUTES, Route
from raftkv.server.metrics import CONTENT_TYPE
from raftkv.server.security import api_ssl_contexts
from raftkv.server.watchjson import created_line, response_line, watch_query

__all__ = ["CONNECTION", "WATCH_KEEPALIVE_S", "build_app"]

logger = logging.getLogger(__name__)

WATCH_KEEPALIVE_S: Final = 10.0
"""A watch stream with nothing to say writes an empty line this often (clients
and proxies see a live stream; a reader that went away is noticed)."""

_SLOT: Final = web.RequestKey("slot", Slot)
CONNECTION: Final = web.RequestKey("connection", HandedOff)
"""The fast path's record of the connection a request came on (set by the
server's outermost middleware)."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _web(answer: Answer) -> web.Response:
    """An answer as aiohttp's response."""
    status, body, headers = answer
    return web.Response(
        status=status,
        body=body,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


class _AioRequest:
    """aiohttp's request as a :class:`~raftkv.server.http.request.Request`."""

    __slots__ = ("_request", "_body", "_too_large")

    def __init__(
        self, request: web.Request, body: bytes, too_large: web.HTTPException | None
    ) -> None:
        self._request = request
        self._body = body
        self._too_large = too_large

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def key(self) -> str:
        return self._request.match_info.get("key", "")

    @property
    def headers(self) -> Mapping[str, str]:
        return self._request.headers

    @property
    def body(self) -> bytes:
        if self._too_large is not None:
            raise self._too_large
        return self._body

    def param(self, name: str) -> str | None:
        return self._request.query.get(name)

    def params(self) -> Iterable[tuple[str, str]]:
        return self._request.query.items()

    def path_param(self, name: str) -> str:
        return self._request.match_info[name]


async def _read_body(
    request: web.Request, max_bytes: int
) -> tuple[bytes, web.HTTPException | None]:
    """The body, or aiohttp's 413 above ``max_bytes`` (Rule 3)."""
    length = request.content_length
    if length is not None and length > max_bytes:
        return b"", web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=length)
    try:
        return await request.read(), None  # 413 beyond client_max_size
    except web.HTTPRequestEntityTooLarge as exc:
        return b"", exc


def _route_handler(handlers: Handlers, route: Route) -> _Handler:
    """aiohttp's handler of a table route."""
    serve = getattr(handlers, route.handler)
    limit = route.body * handlers.config.max_body_bytes

    if not limit:

        async def handle(request: web.Request) -> web.StreamResponse:
            return _web(await serve(_AioRequest(request, b"", None)))

        return handle

    async def handle_body(request: web.Request) -> web.StreamResponse:
        body, too_large = await _read_body(request, limit)
        return _web(await serve(_AioRequest(request, body, too_large)))

    return handle_body


def _errors_middleware(handlers: Handlers) -> Any:
    node = handlers.node

    @web.middleware
    async def errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource else "?"
        if node.failure is not None:
            node.metrics.http(route, 503)
            return _web(FAILED)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {}
            if isinstance(exc, web.HTTPMethodNotAllowed):
                headers["Allow"] = ",".join(sorted(exc.allowed_methods))
            message = {
                404: "no such route",
                405: f"method {request.method} not allowed",
                413: "request body too large",
            }.get(exc.status, exc.reason.lower())
            response = _web(answer(exc.status, {"error": message}, headers))
        except ConnectionResetError:
            # The client left, or its connection was closed at a deadline while
            # its body was read (connections.py Rule 2): nobody reads this answer.
            logger.debug("connection lost serving %s %s", request.method, request.path)
            response = _web(answer(400, {"error": "connection lost while reading the request"}))
        except Exception as exc:
            response = _web(answer_for(exc, request.method, request.path))
        node.metrics.http(route, response.status)
        return response

    return errors


def _guard_middleware(handlers: Handlers) -> Any:
    guard = handlers.guard

    @web.middleware
    async def guarded(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.path in UNGUARDED:
            return await handler(request)
        refusal = guard.check(
            request.method,
            request.path,
            request.headers.get("Authorization"),
            request.remote or "?",
        )
        if refusal is not None:
            return _web(refusal)
        guard.inflight += 1
        guard.served += 1
        slot = Slot(guard)
        request[_SLOT] = slot
        try:
            return await handler(request)
        finally:
            slot.release()

    return guarded


def _streaming(request: web.Request) -> asyncio.Future[None] | None:
    """A request starts streaming (a watch): it gives up its place in the
    concurrency limit; the future of its connection's end (None: unknown)."""
    slot = request.get(_SLOT)
    if slot is not None:
        slot.release()
    conn = request.get(CONNECTION)
    return conn.when_lost() if conn is not None else None


class _Streams:
    """The routes that make their own response (``stream`` rows)."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers

    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        """The live dashboard: a static page that polls ``/v1/cluster``."""
        return web.Response(text=dashboard(), content_type="text/html")

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=self.handlers.node.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/watch``: a stream of JSON lines (:mod:`raftkv.server.watchjson`).

        The watcher lives as long as the stream: it is closed when the client
        goes away, and the stream ends (with a ``canceled`` line saying why)
        when the hub cancels it -- no leader for an election timeout (unless
        ``require_leader=false``), a slow reader, a compacted start revision,
        the node stopping.
        """
        handlers = self.handlers
        query = watch_query(request.query.items(), max_key_bytes=handlers.config.max_key_bytes)
        sm = handlers.kv()
        key, range_end = query.range.to_bytes()
        stream = handlers.node.open_watch(
            key,
            range_end,
            start_revision=query.start_revision,
            prev_kv=query.prev_kv,
            filters=query.filters,
            progress_notify=query.progress_notify,
            require_leader=query.require_leader,
        )
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"},
        )
        try:
            created = created_line(stream.watch_id, sm.revision)
            await response.prepare(request)
            lost = _streaming(request)
            if lost is not None:
                lost.add_done_callback(lambda _: stream.end())
            await response.write(created)
            while True:
                responses = await stream.responses(WATCH_KEEPALIVE_S)
                if responses is None:
                    break
                if not responses:
                    await response.write(b"\n")
                    continue
                await response.write(b"".join(response_line(r) for r in responses))
                if responses[-1].canceled:
                    break
        except ConnectionResetError:
            pass  # the client went away
        finally:
            stream.close()
        return response


def build_app(handlers: Handlers) -> tuple[web.Application, EtcdService]:
    """The aiohttp application serving ``handlers``' node, and its etcd service.

    The application owns the forwarder's HTTP client session (made at start-up,
    closed at clean-up).
    """
    node, config, forwarder = handlers.node, handlers.config, handlers.forwarder
    app = web.Application(
        middlewares=[_errors_middleware(handlers), _guard_middleware(handlers)],
        client_max_size=config.max_body_bytes,
    )
    _, forward_ssl = api_ssl_contexts(config)

    async def client_session(app: web.Application) -> Any:
        forwarder.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=FORWARD_CONNECTIONS,
                keepalive_timeout=30,
                ssl=forward_ssl if forward_ssl else True,
            )
        )
        yield
        await forwarder.http.close()

    app.cleanup_ctx.append(client_session)
    streams = _Streams(handlers)
    for route in ROUTES:
        handler = (
            getattr(streams, route.handler) if route.stream else _route_handler(handlers, route)
        )
        app.router.add_route(route.method, route.path, handler)
    etcd = EtcdService(
        node, config, forwarder.forward_command, forwarder.lease_call, forwarder.admin_call
    )
    add_gateway_routes(app.router, etcd, _streaming, forwarded_header=FORWARDED_HEADER)
    return app, etcd
