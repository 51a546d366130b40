"""The HTTP/1.1 fast path's parser and encoder for the hot KV routes: no I/O.

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

Rule 2: the parser (:func:`parse_request`) is sans-I/O: bytes in, a
:class:`FastRequest`, :data:`NEED_DATA` or :data:`HANDOFF` out. The
connections that feed it are :mod:`raftkv.server.http.connections`'; the
request logic (guard, errors, metrics) is :mod:`raftkv.server.http.fast`'s,
the same as aiohttp's, so the checks are the same whichever path a request
takes.

Why: aiohttp's generic machinery (request objects, router, middleware chain,
response objects) was the largest item of a node's CPU per request
(docs/benchmarks.md); the hot routes need none of it.
"""

from __future__ import annotations

import http
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Answer",
    "FastRequest",
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

MAX_HEAD_BYTES: Final = 8190
"""A request head (request line and headers) longer than this goes to aiohttp
(whose limit on a line or a header field is this size: every one is within it)."""
MAX_HEADERS: Final = 128
"""More header lines than this go to aiohttp (its limit: it answers 400)."""


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

    def param(self, name: str) -> str | None:
        """A query parameter (only ``consistency`` is ever given)."""
        return self.consistency if name == "consistency" else None

    def params(self) -> tuple[tuple[str, str], ...]:
        """Every query parameter, in order."""
        return () if self.consistency is None else (("consistency", self.consistency),)

    def path_param(self, name: str) -> str:
        """A parameter of the path (only ``key``, on :data:`KV_ROUTE`)."""
        if name != "key" or self.route != KV_ROUTE:
            raise KeyError(name)
        return self.key

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
