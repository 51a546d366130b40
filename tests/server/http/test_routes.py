"""The one route table (raftkv.server.http.routes) and what each front end makes of it."""

from __future__ import annotations

import itertools

from raftkv.server.fasthttp import KV_ROUTE, MULTI_PUT_ROUTE, PLAIN_GETS, parse_request
from raftkv.server.http.aio import _Streams
from raftkv.server.http.handlers import Handlers
from raftkv.server.http.routes import ROUTES


def _fast_parsed() -> set[tuple[str, str]]:
    """Every (method, route) the fast path's parser hands to its front end."""
    found = set()
    paths = ["/v1/kv/k", "/v1/kv", *PLAIN_GETS, "/v1/kv/k/cas", "/v1/txn", "/v1/watch"]
    for method, path in itertools.product(["GET", "PUT", "DELETE", "POST", "HEAD"], paths):
        raw = f"{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{{}}".encode()
        if method in ("GET", "DELETE", "HEAD"):
            raw = f"{method} {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        result = parse_request(raw, 1 << 20)
        if isinstance(result, tuple):
            found.add((result[0].method, result[0].route))
    return found


def test_the_fast_rows_are_what_the_fast_parser_serves() -> None:
    fast = {(r.method, r.path) for r in ROUTES if r.fast}
    assert fast == _fast_parsed()
    assert fast == {
        ("PUT", KV_ROUTE),
        ("GET", KV_ROUTE),
        ("DELETE", KV_ROUTE),
        ("POST", MULTI_PUT_ROUTE),
        *(("GET", path) for path in PLAIN_GETS),
    }


def test_every_row_names_a_handler_once() -> None:
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)
    for route in ROUTES:
        owner = _Streams if route.stream else Handlers
        assert callable(getattr(owner, route.handler, None)), route
        assert not (route.stream and route.fast), route
        assert not (route.stream and route.body), route
