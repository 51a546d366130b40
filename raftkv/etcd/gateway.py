"""The etcd v3 API's JSON gateway on the HTTP API's port (etcd's grpc-gateway).

Rule 1: etcd's paths and encoding. ``POST /v3/<service>/<method>`` (and the same
under ``/v3beta/``) takes the request message as JSON and answers the response
message as JSON the way grpc-gateway does: proto field names as spelled
(``create_revision``, ``dbSize``), 64-bit integers as strings, bytes base64,
fields at their zero value omitted, enums by name; input fields may be spelled
either way (``range_end`` or ``rangeEnd``). Errors answer
``{"error", "code", "message"}`` with the gRPC code's HTTP status.

Rule 2: the HTTP API's guard runs first (tokens, the concurrency limit;
``api.py``); the gateway passes the client's ``Authorization`` on with a
write, for the leader to check again when it is forwarded. ``GET /version``
and ``GET /health`` are etcd's probes, unauthenticated as etcd's are.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from raftkv.etcd import errors
from raftkv.etcd.errors import EtcdError
from raftkv.etcd.pb import rpc_pb2
from raftkv.etcd.service import SERVER_VERSION, EtcdService

__all__ = ["PREFIXES", "READ_ROUTES", "add_routes", "encode"]

PREFIXES: Final = ("/v3", "/v3beta")
_READS: Final = ("/kv/range", "/maintenance/status", "/cluster/member/list")
READ_ROUTES: Final = frozenset(prefix + path for prefix in PREFIXES for path in _READS)
"""Gateway routes that only read: a read-only token may POST to them."""
_UNSERVED: Final = {
    "/watch": "Watch.Watch",
    "/lease/grant": "Lease.LeaseGrant",
    "/lease/revoke": "Lease.LeaseRevoke",
    "/kv/lease/revoke": "Lease.LeaseRevoke",
    "/lease/keepalive": "Lease.LeaseKeepAlive",
    "/lease/timetolive": "Lease.LeaseTimeToLive",
    "/kv/lease/timetolive": "Lease.LeaseTimeToLive",
    "/lease/leases": "Lease.LeaseLeases",
    "/kv/lease/leases": "Lease.LeaseLeases",
}

Call = Callable[[Any, str | None], Awaitable[Message]]


def encode(message: Message) -> bytes:
    """grpc-gateway's JSON of ``message`` (Rule 1)."""
    body = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(body, separators=(",", ":")).encode()


def _error(exc: EtcdError) -> web.Response:
    body = {"error": exc.message, "code": exc.code.value, "message": exc.message}
    return web.Response(
        status=exc.code.http_status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def _route(request_type: type[Message], call: Call) -> Callable[[web.Request], Awaitable[Any]]:
    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        message = request_type()
        try:
            if raw.strip():
                json_format.Parse(raw, message)
            response = await call(message, request.headers.get("Authorization"))
        except json_format.ParseError as exc:
            return _error(errors.invalid_argument(f"bad JSON request: {exc}"))
        except EtcdError as exc:
            return _error(exc)
        return web.Response(body=encode(response), content_type="application/json")

    return handle


def add_routes(router: web.UrlDispatcher, service: EtcdService) -> None:
    """Add the gateway's routes (Rule 1) to the HTTP API's router."""
    s = service

    async def range_(req: Any, auth: str | None) -> Message:
        return await s.range(req)

    async def status(req: Any, auth: str | None) -> Message:
        return await s.status(req)

    async def member_list(req: Any, auth: str | None) -> Message:
        return await s.member_list(req)

    routes: dict[str, tuple[type[Message], Call]] = {
        "/kv/range": (rpc_pb2.RangeRequest, range_),
        "/kv/put": (rpc_pb2.PutRequest, s.put),
        "/kv/deleterange": (rpc_pb2.DeleteRangeRequest, s.delete_range),
        "/kv/txn": (rpc_pb2.TxnRequest, s.txn),
        "/kv/compaction": (rpc_pb2.CompactionRequest, s.compact),
        "/maintenance/status": (rpc_pb2.StatusRequest, status),
        "/maintenance/alarm": (rpc_pb2.AlarmRequest, s.alarm),
        "/cluster/member/list": (rpc_pb2.MemberListRequest, member_list),
    }
    for prefix in PREFIXES:
        for path, (request_type, call) in routes.items():
            router.add_post(prefix + path, _route(request_type, call))
        for path, method in _UNSERVED.items():
            router.add_post(prefix + path, _unserved(method))

    async def version(request: web.Request) -> web.Response:
        body = {"etcdserver": SERVER_VERSION, "etcdcluster": SERVER_VERSION}
        return web.json_response(body, dumps=lambda o: json.dumps(o, separators=(",", ":")))

    async def health(request: web.Request) -> web.Response:
        node = s.node
        healthy = node.is_live() and node.leader is not None
        body = {
            "health": "true" if healthy else "false",
            "reason": "" if healthy else "RAFT NO LEADER",
        }
        return web.json_response(
            body,
            status=200 if healthy else 503,
            dumps=lambda o: json.dumps(o, separators=(",", ":")),
        )

    router.add_get("/version", version, allow_head=False)
    router.add_get("/health", health, allow_head=False)


def _unserved(method: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    error = errors.unimplemented(method, errors.UNTIL_WATCH_LEASE)

    async def handle(request: web.Request) -> web.Response:
        return _error(error)

    return handle
