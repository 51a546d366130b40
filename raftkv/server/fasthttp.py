"""An HTTP/1.1 fast path for the hot KV routes, in front of aiohttp.

Rule 1: the fast path serves only requests it understands completely -- ``PUT``,
``GET`` and ``DELETE /v1/kv/KEY``, the multi-put ``POST /v1/kv``, and ``GET`` of
``/v1/status`` and ``/v1/health/{live,ready}`` (a client that sends one of
those on a connection would otherwise move it to aiohttp for good) in the
plainest HTTP/1.1: a key of ``[A-Za-z0-9._~-]``
(no percent-encoding, no dot segment), no query but ``consistency=``, headers
of printable ASCII with a ``Host`` and without duplicates of the ones it reads, a
``Content-Length`` body within ``max_body_bytes``, no ``Transfer-Encoding``,
``Expect`` or ``Upgrade``, and a head within :data:`MAX_HEAD_BYTES` and
:data:`MAX_HEADERS`. Anything
else -- another route, malformed or merely unusual input -- hands the whole
connection, with every byte not yet consumed, to aiohttp's protocol, which
then serves it exactly as if the fast path did not exist (its 4xx answers, its
limits, its keep-alive). So the fast path never needs to reject input itself.

Rule 2: one request at a time per connection, in order: a pipelined request
waits in the buffer until the previous answer is written, so answers keep the
order of requests; reading pauses while more than a few bodies are buffered,
and the next request waits while the transport's write buffer is full.

Rule 3: the parser (:func:`parse_request`) is sans-I/O: bytes in, a
:class:`FastRequest`, :data:`NEED_DATA` or :data:`HANDOFF` out. The server's
request logic (guard, errors, metrics) is the ``handler`` given to
:class:`FastHttpServer` (``raftkv.server.api``), so the checks are the same
whichever path a request takes.

Why: aiohttp's generic machinery (request objects, router, middleware chain,
response objects) was the largest item of a node's CPU per request
(docs/benchmarks.md); the hot routes need none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from typing import Final, cast

__all__ = [
    "FastRequest",
    "FastHttpServer",
    "HANDOFF",
    "KV_ROUTE",
    "MULTI_PUT_ROUTE",
    "PLAIN_GETS",
    "MAX_HEAD_BYTES",
    "MAX_HEADERS",
    "NEED_DATA",
    "encode_response",
    "parse_request",
]

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES: Final = 8190
"""A request head (request line and headers) longer than this goes to aiohttp
(whose limit on a line or a header field is this size: every one is within it)."""
MAX_HEADERS: Final = 128
"""More header lines than this go to aiohttp (its limit: it answers 400)."""
KEEPALIVE_TIMEOUT_S: Final = 75.0
"""An idle keep-alive connection is closed after this long (aiohttp's default)."""


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")
""":func:`parse_request`: the buffer does not hold a whole request yet."""
HANDOFF: Final = _Sentinel("HANDOFF")
""":func:`parse_request`: not a request the fast path serves; aiohttp must."""


@dataclass(slots=True, kw_only=True)
class FastRequest:
    """One parsed request of a hot route (not frozen: one is made per request,
    and a frozen dataclass pays an ``object.__setattr__`` per field).

    Attributes:
        method: ``GET``, ``PUT``, ``DELETE`` or ``POST`` (the multi-put).
        route: the route, as aiohttp names it (and the metrics label it):
            :data:`KV_ROUTE`, :data:`MULTI_PUT_ROUTE` or one of :data:`PLAIN_GETS`.
        key: the key, as it appeared in the path (it needs no decoding);
            ``""`` for the other routes.
        consistency: the ``consistency`` query parameter, or None.
        headers: every header, by lower-case name (the ones read are unique).
        body: the body (``b""`` for a GET or DELETE).
        keep_alive: False if the client sent ``Connection: close``.
    """

    method: str
    route: str
    key: str
    consistency: str | None
    headers: Mapping[str, str]
    body: bytes
    keep_alive: bool

    @property
    def path_qs(self) -> str:
        """The request target (path and query), as sent."""
        if self.route != KV_ROUTE:
            return self.route
        query = f"?consistency={self.consistency}" if self.consistency is not None else ""
        return f"/v1/kv/{self.key}{query}"


KV_ROUTE: Final = "/v1/kv/{key}"
MULTI_PUT_ROUTE: Final = "/v1/kv"
PLAIN_GETS: Final = ("/v1/status", "/v1/health/live", "/v1/health/ready")
"""GET routes without parameters the fast path serves too, so that a client (or
a load balancer) that mixes them into a connection keeps it on the fast path."""

_REQUEST_LINE = re.compile(
    rb"(?:(GET|PUT|DELETE) /v1/kv/([A-Za-z0-9._~-]+)(?:\?consistency=(stale|linearizable))?"
    rb"|(POST) /v1/kv|GET (/v1/status|/v1/health/live|/v1/health/ready)) HTTP/1\.1"
)
# Header lines, each with its CRLF: a token, a colon, printable ASCII (or tabs).
# No obs-fold (a line starting with a space is not a token) and no stray CR/LF.
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*")
# Headers the fast path leaves to aiohttp whatever their value.
_HANDOFF_HEADERS = frozenset({"transfer-encoding", "expect", "upgrade"})
# Headers read by the fast path or the API: a duplicate is ambiguous, so aiohttp decides.
_UNIQUE_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "authorization",
        "idempotency-key",
        "x-raftkv-forwarded",
    }
)


def parse_request(buf: bytes | bytearray, max_body: int) -> tuple[FastRequest, int] | _Sentinel:
    """Parse the request at the start of ``buf``.

    Args:
        buf: bytes received and not yet consumed.
        max_body: the largest body the fast path accepts (larger: :data:`HANDOFF`).

    Returns:
        ``(request, consumed)``: a whole request and how many bytes of ``buf``
        it took; :data:`NEED_DATA` if ``buf`` holds only part of one (which may
        still turn out to be for aiohttp); :data:`HANDOFF` if it is not a request
        the fast path serves (module docstring, Rule 1).
    """
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    if end < 0:
        return NEED_DATA if len(buf) < MAX_HEAD_BYTES else HANDOFF
    if buf.count(b"\r\n", 0, end) > MAX_HEADERS:
        return HANDOFF
    line_end = buf.find(b"\r\n", 0, end + 2)
    m = _REQUEST_LINE.fullmatch(buf, 0, line_end)
    if m is None:
        return HANDOFF
    if m[4] is not None:
        method, route, key = "POST", MULTI_PUT_ROUTE, ""  # the multi-put: no key in the path
    elif m[5] is not None:
        method, route, key = "GET", m[5].decode(), ""
    else:
        method, route = m[1].decode(), KV_ROUTE
        key = m[2].decode()
        if key in (".", ".."):
            return HANDOFF  # a dot segment: aiohttp normalises the path
    consistency = m[3].decode() if m[3] is not None else None
    if consistency is not None and method != "GET":
        return HANDOFF
    if _HEADER_LINES.fullmatch(buf, line_end + 2, end + 2) is None:
        return HANDOFF  # obs-fold, control characters, non-ASCII, no colon...
    headers: dict[str, str] = {}
    if end > line_end:
        for line in buf[line_end + 2 : end].decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            name = name.lower()
            if name in _HANDOFF_HEADERS or (name in headers and name in _UNIQUE_HEADERS):
                return HANDOFF
            headers[name] = value.strip(" \t")
    if "host" not in headers:
        return HANDOFF  # HTTP/1.1 requires it: aiohttp answers 400
    keep_alive = True
    connection = headers.get("connection")
    if connection is not None:
        connection = connection.lower()
        if connection == "close":
            keep_alive = False
        elif connection != "keep-alive":
            return HANDOFF
    bodyless = method in ("GET", "DELETE")
    length_text = headers.get("content-length")
    if length_text is None:
        if not bodyless:
            return HANDOFF  # no body: aiohttp answers it
        length = 0
    elif not length_text.isdigit() or len(length_text) > 12:
        return HANDOFF
    else:
        length = int(length_text)
    if length > max_body or (bodyless and length):
        return HANDOFF
    start = end + 4
    if len(buf) < start + length:
        return NEED_DATA
    request = FastRequest(
        method=method,
        route=route,
        key=key,
        consistency=consistency,
        headers=headers,
        body=bytes(buf[start : start + length]),
        keep_alive=keep_alive,
    )
    return request, start + length


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


def _server_header() -> str:
    try:
        from aiohttp.http import SERVER_SOFTWARE
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        return "raftkv"
    return SERVER_SOFTWARE


_SERVER = _server_header()


class _DateCache:
    """The ``Date`` header's value, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
        return self._value


_DATE = _DateCache()


def encode_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None, *, close: bool = False
) -> bytes:
    """A whole HTTP/1.1 response with a JSON ``body``."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) if headers else ""
    if close:
        extra += "Connection: close\r\n"
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Date: {_DATE.get()}\r\n"
        f"Server: {_SERVER}\r\n"
        f"{extra}\r\n"
    )
    return head.encode("latin-1") + body


Answer = tuple[int, bytes, Mapping[str, str] | None]
"""(status, JSON body, extra headers) of one request."""
FastHandler = Callable[[FastRequest, str], Awaitable[Answer]]
"""Serves one request (``remote`` is the client's address); never raises."""
ProtocolFactory = Callable[[], asyncio.Protocol]


class _Connection(asyncio.Protocol):
    """One client connection, until it is handed to aiohttp or closed."""

    def __init__(self, server: FastHttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        # One task per connection serves its requests in turn; it is made when
        # the first bytes arrive and waits on _waiter for more (a future per
        # wait is cheaper than a task per request).
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._reading_paused = False
        self._writable: asyncio.Future[None] | None = None  # set while writing is paused
        self.remote = "?"
        self.idle_since: float | None = None  # None while a request is being served

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.remote = str(peer[0])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.idle_since = self._server.now()
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is not None:
            self._wake()
        elif self._task is None:
            self._task = self._server.loop.create_task(self._run())
        if not self._reading_paused and len(self._buf) > self._server.buffer_limit:
            assert self._transport is not None
            self._transport.pause_reading()
            self._reading_paused = True
            self._server.reads_paused += 1

    def eof_received(self) -> bool:
        self._eof = True
        if self._task is None:
            self._finish_eof()
        else:
            self._wake()
        return True  # stay open (half-closed) until the buffered requests are answered

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._wake()
        writable = self._writable
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self._server.loop.create_future()
            self._server.writes_paused += 1

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # -- serving

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self) -> None:
        transport = self._transport
        assert transport is not None
        server = self._server
        self.idle_since = None
        try:
            while not transport.is_closing():
                parsed = parse_request(self._buf, server.max_body)
                if parsed is NEED_DATA:
                    if self._eof:
                        self._finish_eof()  # a partial request goes to aiohttp, as at HANDOFF
                        return
                    self.idle_since = server.now()
                    self._waiter = server.loop.create_future()
                    await self._waiter
                    self.idle_since = None
                    continue
                if parsed is HANDOFF:
                    self._handoff()
                    return
                assert isinstance(parsed, tuple)
                request, consumed = parsed
                del self._buf[:consumed]
                if self._reading_paused and len(self._buf) <= server.buffer_limit:
                    transport.resume_reading()
                    self._reading_paused = False
                status, body, headers = await server.handler(request, self.remote)
                if transport.is_closing():
                    return
                transport.write(
                    encode_response(status, body, headers, close=not request.keep_alive)
                )
                if not request.keep_alive:
                    transport.close()
                    return
                if self._writable is not None:
                    await self._writable
        except Exception:
            logger.exception("fast HTTP path failed; closing the connection")
            transport.abort()
        finally:
            self._task = None
            self._waiter = None

    def _finish_eof(self) -> None:
        """The client sent EOF and every whole request was answered."""
        if self._transport is None:
            return
        if self._buf:
            self._handoff()
        else:
            self._transport.close()

    def _handoff(self) -> None:
        """Give the connection, and the unconsumed bytes, to aiohttp's protocol."""
        transport = self._transport
        assert transport is not None
        self._transport = None
        self._server.connections.discard(self)
        self._server.handed_off += 1
        if self._reading_paused:
            transport.resume_reading()
        protocol = self._server.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        if data:
            protocol.data_received(data)
        if self._eof:
            transport.close()  # what the transport does when aiohttp gets EOF

    def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
        if self._transport is not None:
            self._transport.close()


class FastHttpServer:
    """Listens on one address; serves the hot routes, hands the rest to ``fallback``.

    Args:
        handler: serves a :class:`FastRequest` (the guard, the route, the errors).
        fallback: makes aiohttp's protocol for a connection handed over
            (``web.AppRunner.server``).
        max_body: the largest body served here (``max_body_bytes``).
    """

    def __init__(
        self,
        handler: FastHandler,
        fallback: ProtocolFactory,
        *,
        max_body: int,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT_S,
    ) -> None:
        self.handler = handler
        self.fallback = fallback
        self.max_body = max_body
        self.buffer_limit = 2 * max_body + MAX_HEAD_BYTES
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[_Connection] = set()
        # Connections given to aiohttp, and back-pressure events (tests, debugging).
        self.handed_off = 0
        self.reads_paused = 0
        self.writes_paused = 0
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self.loop.time()

    async def start(self, host: str, port: int, *, ssl: SSLContext | None = None) -> int:
        """Listen on ``host:port`` (with TLS if ``ssl``); the port (port 0 picks one)."""
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, ssl=ssl
        )
        self._schedule_sweep()
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    def _schedule_sweep(self) -> None:
        self._sweeper = self.loop.call_later(max(1.0, self.keepalive_timeout / 4), self._sweep_idle)

    def _sweep_idle(self) -> None:
        """Close keep-alive connections idle for longer than ``keepalive_timeout``."""
        limit = self.now() - self.keepalive_timeout
        for conn in [c for c in self.connections if c.idle_since is not None]:
            if conn.idle_since is not None and conn.idle_since < limit:
                conn.close()
        self._schedule_sweep()

    def close(self) -> None:
        """Stop listening and close the fast path's connections (not those handed off)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        self.connections.clear()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) until the listener and its connections are closed;
        call it after aiohttp closed the connections handed to it."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout)
