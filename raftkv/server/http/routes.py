"""The one route table of the ``/v1`` API, for both front ends.

Rule: every route is one row: its method and path (aiohttp's pattern, also
the metrics label), the :class:`~raftkv.server.http.handlers.Handlers` method
that serves it, how large a body it reads, and whether the fast path serves
it too (:mod:`raftkv.server.fasthttp` parses exactly the ``fast`` rows;
``tests/server/http`` checks both agree). ``stream`` rows write their own
response (a watch stream, the metrics text, the dashboard page): aiohttp
serves them alone. The etcd JSON gateway adds its ``/v3`` routes to aiohttp
beside these (:func:`raftkv.etcd.gateway.add_routes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from raftkv.server.fasthttp import KV_ROUTE, MULTI_PUT_ROUTE
from raftkv.server.http.forwarding import FORWARD_ROUTE
from raftkv.server.http.guard import STATUS_ROUTE

__all__ = ["ROUTES", "Route", "WATCH_ROUTE"]

WATCH_ROUTE: Final = "/v1/watch"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One route (the module's rule).

    Attributes:
        method: the HTTP method (a ``GET`` route does not answer ``HEAD``).
        path: aiohttp's pattern (``/v1/kv/{key}``).
        handler: the name of the method that serves it: a ``Handlers`` method
            (request -> answer), or with ``stream`` an aiohttp front end's.
        body: read a body of up to this many times ``--max-body-bytes``
            (0: the route reads none).
        fast: the fast path serves it too.
        stream: aiohttp only; the handler makes its own response.
    """

    method: str
    path: str
    handler: str
    body: int = 0
    fast: bool = False
    stream: bool = False


ROUTES: Final = (
    Route(method="PUT", path=KV_ROUTE, handler="put", body=1, fast=True),
    Route(method="GET", path=KV_ROUTE, handler="get", fast=True),
    Route(method="DELETE", path=KV_ROUTE, handler="delete", fast=True),
    Route(method="POST", path="/v1/kv/{key}/cas", handler="cas", body=1),
    Route(method="POST", path=MULTI_PUT_ROUTE, handler="multi_put", body=1, fast=True),
    Route(method="GET", path="/v1/kv", handler="range"),
    Route(method="DELETE", path="/v1/kv", handler="delete_range"),
    Route(method="POST", path="/v1/txn", handler="txn", body=1),
    Route(method="POST", path="/v1/compact", handler="compact", body=1),
    Route(method="GET", path=STATUS_ROUTE, handler="status", fast=True),
    Route(method="GET", path="/v1/cluster", handler="cluster"),
    Route(method="GET", path="/", handler="dashboard", stream=True),
    Route(method="GET", path="/metrics", handler="metrics", stream=True),
    Route(method="GET", path="/v1/health/live", handler="live", fast=True),
    Route(method="GET", path="/v1/health/ready", handler="ready", fast=True),
    Route(method="GET", path="/v1/members", handler="members"),
    Route(method="POST", path="/v1/members", handler="add_member", body=1),
    Route(method="DELETE", path="/v1/members/{node_id}", handler="remove_member"),
    Route(method="PUT", path="/v1/members/{node_id}", handler="update_member", body=1),
    Route(method="POST", path="/v1/members/{node_id}/promote", handler="promote_member"),
    Route(method="POST", path="/v1/leader/transfer", handler="transfer", body=1),
    # msgpack can be larger than the JSON it came from (a float: 9 bytes).
    Route(method="POST", path=FORWARD_ROUTE, handler="forwarded", body=3),
    Route(method="GET", path=WATCH_ROUTE, handler="watch", stream=True),
    Route(method="POST", path="/v1/leases", handler="lease_grant", body=1),
    Route(method="GET", path="/v1/leases", handler="lease_list"),
    Route(method="GET", path="/v1/leases/{lease_id}", handler="lease_ttl"),
    Route(method="DELETE", path="/v1/leases/{lease_id}", handler="lease_revoke"),
    Route(method="POST", path="/v1/leases/{lease_id}/keepalive", handler="lease_keepalive"),
)
"""Every ``/v1`` route, in aiohttp's registration order."""
