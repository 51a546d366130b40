"""Every connection to a node's API port: accepted, capped, timed, served, or handed off.

Rule 1: one request at a time per connection, in order: a pipelined request
waits in the buffer until the previous answer is written, so answers keep the
order of requests; reading pauses while more than a few bodies are buffered,
and the next request waits while the transport's write buffer is full. A
request :func:`~raftkv.server.fasthttp.parse_request` parses goes to the
``handler`` (:mod:`raftkv.server.http.fast`); at the first it hands off, the
connection goes to aiohttp's protocol with every byte not yet consumed.

Rule 2: every connection to the port is accepted here and stays accounted for
until it closes, also after it was handed to aiohttp (:class:`HandedOff`
wraps aiohttp's protocol): at most ``max_connections`` are open at once (one
more is answered 503 and closed), and each is held to fixed deadlines that
bytes never move -- a request's head must arrive within ``head_timeout`` of
its first byte (of the accept, for a connection's first request), its body
within ``body_timeout`` of the end of the head, the next request's first
byte within ``keepalive_timeout`` of an answer, and a paused write must
resume within ``write_timeout``. A connection past its deadline is closed
(with a 408 when a request was arriving). Deadlines are checked by one sweep
(at most a second apart, a quarter of the shortest timeout when shorter), not
a timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from ssl import SSLContext
from typing import Final, Protocol, cast

from raftkv.server.fasthttp import (
    HANDOFF,
    MAX_HEAD_BYTES,
    NEED_DATA,
    Answer,
    FastRequest,
    encode_response,
    parse_request,
)

__all__ = [
    "BodyReader",
    "CONNECTION_EVENTS",
    "FastHttpServer",
    "HandedOff",
    "MAX_CONNECTIONS",
    "MAX_REFUSING",
]

logger = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT_S: Final = 75.0
"""An idle keep-alive connection is closed this long after its last answer."""
HEAD_TIMEOUT_S: Final = 10.0
"""A request's head must arrive within this long of its first byte (of the
accept, for a connection's first request; a TLS handshake included)."""
BODY_TIMEOUT_S: Final = 30.0
"""A request's body must arrive within this long of the end of its head."""
WRITE_TIMEOUT_S: Final = 30.0
"""Writing to a client may stay paused (its buffers full) this long."""
MAX_CONNECTIONS: Final = 4096
"""Open connections at once, by default (``--max-connections``)."""
_TLS_BACKLOG: Final = 100  # asyncio's create_server default
MAX_REFUSING: Final = 64
"""Connections beyond the cap being answered 503 at once; while this many
are, the next ones are closed without an answer."""
REFUSAL_LINGER_S: Final = 1.0
"""A refused connection is closed once its request arrives, or after this long."""
CONNECTION_EVENTS: Final = (
    "accepted",
    "handed_off",
    "refused",
    "refused_unanswered",
    "tls_failed",
    "timeout_head",
    "timeout_body",
    "timeout_idle",
    "timeout_write",
)
"""The counters of :attr:`FastHttpServer.stats`."""


FastHandler = Callable[[FastRequest, str], Awaitable[Answer]]
"""Serves one request (``remote`` is the client's address); never raises."""
ProtocolFactory = Callable[[], asyncio.Protocol]


class BodyReader(Protocol):
    """What :meth:`HandedOff.request_started` needs of a request's body stream
    (aiohttp's ``request.content``)."""

    def is_eof(self) -> bool: ...


_HEAD: Final = "head"
_BODY: Final = "body"
_IDLE: Final = "idle"
_TIMEOUT_ANSWER: Final = b'{"error": "request not received in time"}'
_REFUSAL: Final = encode_response(503, b'{"error": "too many connections"}', close=True)


class _Connection(asyncio.Protocol):
    """One client connection, until it is handed to aiohttp or closed."""

    def __init__(self, server: FastHttpServer, accepted_at: float | None = None) -> None:
        self._server = server
        # Set when the connection was counted at its accept, before a TLS
        # handshake (FastHttpServer._accept_tls): no cap check when it is made.
        self._accepted_at = accepted_at
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
        # Rule 2. deadline: when the current wait ends the connection (None
        # while a request is being served); reason: what it waits for -- the
        # head (from the request's first byte, or from the accept), the body
        # (from the end of the head) or the next request (idle, from the last
        # answer). Bytes never move a deadline; only a whole request clears it.
        self.deadline: float | None = None
        self.reason: str = _HEAD
        self.write_deadline: float | None = None  # set while writing is paused

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        accepted_at = self._accepted_at
        if accepted_at is None:
            if server.open_connections >= server.max_connections:
                server.refuse(cast(asyncio.Transport, transport))
                return
            server.stats["accepted"] += 1
            accepted_at = server.now()
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.remote = str(peer[0])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.connections.add(self)
        self.deadline = accepted_at + server.head_timeout
        if not server.fast_routes:
            self._handoff()

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
        # Stay open (half-closed) until the buffered requests are answered;
        # TLS cannot half-close (asyncio warns if asked to).
        return self._server.ssl is None

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
            self.write_deadline = self._server.now() + self._server.write_timeout

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        self.write_deadline = None
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
        try:
            while not transport.is_closing():
                parsed = parse_request(self._buf, server.max_body)
                if parsed is NEED_DATA:
                    if self._eof:
                        self._finish_eof()  # a partial request goes to aiohttp, as at HANDOFF
                        return
                    self._arm_read_deadline()
                    self._waiter = server.loop.create_future()
                    await self._waiter
                    continue
                if parsed is HANDOFF:
                    self._handoff()
                    return
                assert isinstance(parsed, tuple)
                request, consumed = parsed
                self.deadline = None  # a whole request: served without a read deadline
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
                # Idle from the answer on, until the next request's first byte.
                self.reason = _IDLE
                self.deadline = server.now() + server.keepalive_timeout
        except Exception:
            logger.exception("fast HTTP path failed; closing the connection")
            transport.abort()
        finally:
            self._task = None
            self._waiter = None

    def _arm_read_deadline(self) -> None:
        """Waiting for more bytes of a request: the head deadline runs from its
        first byte, the body deadline from the end of its head; neither moves."""
        if not self._buf:
            if self.deadline is None:  # nothing buffered after a request (not expected)
                self.reason = _IDLE
                self.deadline = self._server.now() + self._server.keepalive_timeout
            return
        server = self._server
        if self.reason == _IDLE or self.deadline is None:
            self.reason = _HEAD
            self.deadline = server.now() + server.head_timeout
        if self.reason == _HEAD and self._buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES) >= 0:
            self.reason = _BODY
            self.deadline = server.now() + server.body_timeout

    def expire(self, now: float) -> None:
        """A deadline passed (the server's sweep): close, with a 408 if a
        request was arriving and the connection can still be written to."""
        transport = self._transport
        if transport is None:
            return
        server = self._server
        if self.write_deadline is not None and self.write_deadline <= now:
            server.stats["timeout_write"] += 1
            self.close(abort=True)
            return
        server.stats[f"timeout_{self.reason}"] += 1
        if self.reason != _IDLE and self._buf:
            transport.write(encode_response(408, _TIMEOUT_ANSWER, close=True))
        self.close()

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
        server = self._server
        self._transport = None
        server.connections.discard(self)
        server.stats["handed_off"] += 1
        if self._reading_paused:
            transport.resume_reading()
        protocol = server.fallback()
        handed = HandedOff(server, protocol, transport)
        if self.reason != _IDLE and self.deadline is not None:
            handed.deadline = self.deadline  # the request's head deadline carries over
        if self._writable is not None:
            handed.write_deadline = self.write_deadline
        transport.set_protocol(handed)
        protocol.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        if data:
            handed.data_received(data)
        if self._eof:
            transport.close()  # what the transport does when aiohttp gets EOF

    def close(self, *, abort: bool = False) -> None:
        task = self._task
        if task is not None:
            task.cancel()
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()


class HandedOff(asyncio.Protocol):
    """A connection handed to aiohttp's protocol, which it wraps (Rule 2).

    It stays counted against the connection cap, and keeps the deadlines of
    the fast path: aiohttp has no head deadline, and its keep-alive timer
    does not run while a request's head is arriving. aiohttp's application
    reports each request through :meth:`request_started` and
    :meth:`request_finished` (a middleware, :mod:`raftkv.server.http.aio`); between
    them the connection is busy -- no deadline, but the body's while its
    ``content`` is not at EOF.
    """

    def __init__(
        self, server: FastHttpServer, protocol: asyncio.Protocol, transport: asyncio.Transport
    ) -> None:
        self._server = server
        self.protocol = protocol
        self._transport = transport
        self._busy = False
        # Bytes of the next request arrived since the connection last waited for one.
        self._next_bytes = False
        self._content: BodyReader | None = None
        self.reason: str = _HEAD
        self.deadline: float | None = server.now() + server.head_timeout
        self.write_deadline: float | None = None
        # Resolved when the connection closes (made on demand: a streaming
        # answer ends its stream when its reader goes away).
        self._lost: asyncio.Future[None] | None = None
        self._closed = False
        server.handed[protocol] = self

    # -- asyncio.Protocol, forwarded to aiohttp's

    def data_received(self, data: bytes) -> None:
        if not self._next_bytes:
            if not self._busy:
                self._next_bytes = True
                if self.reason == _IDLE:
                    self.reason = _HEAD
                    self.deadline = self._server.now() + self._server.head_timeout
            elif self._content is None or self._content.is_eof():
                self._next_bytes = True  # pipelined: its deadline starts when it is waited for
        self.protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return self.protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.handed.pop(self.protocol, None)
        self._closed = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        self.protocol.connection_lost(exc)

    def when_lost(self) -> asyncio.Future[None]:
        """A future resolved when the connection closes (at once if it has)."""
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
            if self._closed:
                self._lost.set_result(None)
        return self._lost

    def pause_writing(self) -> None:
        self.write_deadline = self._server.now() + self._server.write_timeout
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.write_deadline = None
        self.protocol.resume_writing()

    # -- requests, as aiohttp's application reports them

    def request_started(self, content: BodyReader) -> None:
        """aiohttp parsed a request's head and runs its handler."""
        self._busy = True
        self._next_bytes = False
        if content.is_eof():
            self.deadline = None
        else:
            self._content = content
            self.reason = _BODY
            self.deadline = self._server.now() + self._server.body_timeout

    def request_finished(self) -> None:
        """The handler answered; the connection waits for the next request."""
        self._busy = False
        self._content = None
        server = self._server
        if self._next_bytes:
            self.reason = _HEAD
            self.deadline = server.now() + server.head_timeout
        else:
            self.reason = _IDLE
            self.deadline = server.now() + server.keepalive_timeout

    def expire(self, now: float) -> None:
        """A deadline passed (the server's sweep): close the connection."""
        server = self._server
        transport = self._transport
        if self.write_deadline is not None and self.write_deadline <= now:
            server.stats["timeout_write"] += 1
            transport.abort()
            return
        if self.reason == _BODY and self._content is not None and self._content.is_eof():
            self.deadline = None  # the body arrived; the handler still runs
            self._content = None
            return
        server.stats[f"timeout_{self.reason}"] += 1
        if self.reason == _HEAD and not self._busy and self._next_bytes:
            transport.write(encode_response(408, _TIMEOUT_ANSWER, close=True))
        transport.close()

    def close(self, *, abort: bool = False) -> None:
        if abort:
            self._transport.abort()
        else:
            self._transport.close()


class _Refusal(asyncio.Protocol):
    """A connection beyond the cap: answered 503 at once, closed once the
    request arrives (so that the answer is not lost to a reset), or after
    :data:`REFUSAL_LINGER_S`."""

    def __init__(self, server: FastHttpServer, transport: asyncio.Transport) -> None:
        self._server = server
        self._transport = transport
        self.deadline = server.now() + REFUSAL_LINGER_S
        server.refusing.add(self)
        transport.set_protocol(self)
        transport.write(_REFUSAL)

    def data_received(self, data: bytes) -> None:
        self._transport.close()

    def eof_received(self) -> bool:
        return False  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.refusing.discard(self)

    def close(self, *, abort: bool = False) -> None:
        self._transport.abort()


class FastHttpServer:
    """Listens on one address; serves the hot routes, hands the rest to ``fallback``.

    Every connection is accepted here, counted against ``max_connections`` and
    held to the deadlines of Rule 2 until it closes, whichever protocol serves
    it. With ``fast_routes`` off every connection goes to ``fallback`` as soon
    as it is made (and its TLS handshake done): aiohttp alone serves requests,
    under the same cap and deadlines.

    Args:
        handler: serves a :class:`FastRequest` (the guard, the route, the errors).
        fallback: makes aiohttp's protocol for a connection handed over
            (``web.AppRunner.server``).
        max_body: the largest body served here (``max_body_bytes``).
        max_connections: connections open at once; beyond, each new one is
            answered 503 and closed (Rule 2).
        fast_routes: serve the hot routes here (else every connection goes to ``fallback``).
        head_timeout: from a request's first byte (a new connection's accept,
            for its first request) to the end of its head.
        body_timeout: from the end of a request's head to the end of its body.
        keepalive_timeout: from an answer to the next request's first byte.
        write_timeout: how long writing to a client may stay paused (a client
            that does not read its answers).
    """

    def __init__(
        self,
        handler: FastHandler,
        fallback: ProtocolFactory,
        *,
        max_body: int,
        max_connections: int = MAX_CONNECTIONS,
        fast_routes: bool = True,
        head_timeout: float = HEAD_TIMEOUT_S,
        body_timeout: float = BODY_TIMEOUT_S,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT_S,
        write_timeout: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.handler = handler
        self.fallback = fallback
        self.max_body = max_body
        self.buffer_limit = 2 * max_body + MAX_HEAD_BYTES
        self.max_connections = max_connections
        self.fast_routes = fast_routes
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.write_timeout = write_timeout
        self.ssl: SSLContext | None = None
        # Invariant: every open connection is in one of these three, or in
        # its TLS handshake (counted in handshakes; briefly in both as it ends).
        self.connections: set[_Connection] = set()
        self.handed: dict[object, HandedOff] = {}  # by aiohttp's protocol
        self.refusing: set[_Refusal] = set()
        self.handshakes = 0
        # Monotonic counters (metrics: raftkv_http_connection_events_total).
        self.stats: dict[str, int] = dict.fromkeys(CONNECTION_EVENTS, 0)
        # Back-pressure events (tests, debugging).
        self.reads_paused = 0
        self.writes_paused = 0
        self.loop = asyncio.get_running_loop()
        self._server: asyncio.Server | None = None
        self._listener: socket.socket | None = None  # with TLS: accepted by _accept_tls
        self._accepting: set[asyncio.Task[None]] = set()  # the accept loop, the handshakes
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def open_connections(self) -> int:
        """Connections counted against ``max_connections`` (not those being refused)."""
        return len(self.connections) + len(self.handed) + self.handshakes

    @property
    def handed_off(self) -> int:
        """Connections given to aiohttp so far."""
        return self.stats["handed_off"]

    def now(self) -> float:
        return self.loop.time()

    async def start(self, host: str, port: int, *, ssl: SSLContext | None = None) -> int:
        """Listen on ``host:port`` (with TLS if ``ssl``); the port (port 0 picks one)."""
        self.ssl = ssl
        if ssl is None:
            self._server = await self.loop.create_server(
                lambda: _Connection(self), host, port, reuse_address=True
            )
            sock = self._server.sockets[0]
        else:
            family, _, _, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.create_server(address[:2], family=family, backlog=_TLS_BACKLOG)
            sock.setblocking(False)
            self._listener = sock
            self._spawn(self._accept_tls(sock, ssl))
        self._schedule_sweep()
        return int(sock.getsockname()[1])

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = self.loop.create_task(coro)
        self._accepting.add(task)
        task.add_done_callback(self._accepting.discard)

    async def _accept_tls(self, listener: socket.socket, ssl: SSLContext) -> None:
        """Accept TLS connections, counting each before its handshake (Rule 2):
        a handshake in progress holds a slot and must end within
        ``head_timeout``; one beyond the cap is closed before any handshake."""
        loop = self.loop
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors, or a connection reset early
                logger.warning("accepting an API connection failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if self.open_connections >= self.max_connections:
                self.stats["refused_unanswered"] += 1
                sock.close()
                continue
            self.stats["accepted"] += 1
            self.handshakes += 1
            self._spawn(self._handshake(sock, ssl, self.now()))

    async def _handshake(self, sock: socket.socket, ssl: SSLContext, accepted_at: float) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: _Connection(self, accepted_at),
                sock,
                ssl=ssl,
                ssl_handshake_timeout=self.head_timeout,
            )
        except Exception as exc:  # ssl.SSLError, a reset, the handshake timeout...
            logger.debug("TLS handshake failed: %s", exc)
            self.stats["tls_failed"] += 1
            sock.close()
        finally:
            self.handshakes -= 1

    def handed_off_connection(self, protocol: object) -> HandedOff | None:
        """The connection that aiohttp's ``protocol`` serves (None: not one of ours)."""
        return self.handed.get(protocol)

    def refuse(self, transport: asyncio.Transport) -> None:
        """A connection beyond ``max_connections``: answer 503 and close it --
        at once, without an answer, under TLS (no handshake is spent on it) or
        when :data:`MAX_REFUSING` refusals are still lingering."""
        if len(self.refusing) >= MAX_REFUSING:
            self.stats["refused_unanswered"] += 1
            transport.abort()
            return
        self.stats["refused"] += 1
        _Refusal(self, transport)

    def _schedule_sweep(self) -> None:
        shortest = min(
            self.head_timeout, self.body_timeout, self.keepalive_timeout, self.write_timeout
        )
        interval = min(1.0, max(0.01, shortest / 4), REFUSAL_LINGER_S)
        self._sweeper = self.loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close the connections whose deadline passed (Rule 2)."""
        now = self.now()
        conns: list[_Connection | HandedOff] = [*self.connections, *self.handed.values()]
        for conn in conns:
            if (conn.deadline is not None and conn.deadline <= now) or (
                conn.write_deadline is not None and conn.write_deadline <= now
            ):
                conn.expire(now)
        for refusal in [r for r in self.refusing if r.deadline <= now]:
            refusal.close()
        self._schedule_sweep()

    def close(self, *, abort: bool = False) -> None:
        """Stop listening and close the fast path's connections; ``abort``: reset
        every connection, those handed to aiohttp too."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
        for task in list(self._accepting):
            task.cancel()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self.connections):
            conn.close(abort=abort)
        self.connections.clear()
        for refusal in list(self.refusing):
            refusal.close()
        if abort:
            for handed in list(self.handed.values()):
                handed.close(abort=True)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) until the listener and its connections are closed;
        call it after aiohttp closed the connections handed to it."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), timeout)
