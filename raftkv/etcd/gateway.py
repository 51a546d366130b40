"""The etcd v3 API's JSON gateway on the HTTP API's port (etcd's grpc-gateway).

Rule 1: etcd's paths and encoding. ``POST /v3/<service>/<method>`` (and the same
under ``/v3beta/``) takes the request message as JSON and answers the response
message as JSON the way grpc-gateway does: proto field names as spelled
(``create_revision``, ``dbSize``), 64-bit integers as strings, bytes base64,
fields at their zero value omitted, enums by name; input fields may be spelled
either way (``range_end`` or ``rangeEnd``). Errors answer
``{"error", "message", "code"}`` with the gRPC code's HTTP status.

Rule 2: the HTTP API's guard runs first (tokens, the concurrency limit;
:mod:`raftkv.server.http.guard`); the gateway passes the client's ``Authorization`` on with a
write, for the leader to check again when it is forwarded. ``GET /version``
and ``GET /health`` are etcd's probes, unauthenticated as etcd's are.

Rule 3: streams (``/v3/watch``, ``/v3/lease/keepalive``) as grpc-gateway serves
them: the request body holds one or more request messages (JSON objects, one
after another), the answer is newline-separated ``{"result": MESSAGE}``
objects, and an error once streaming ends it with ``{"error": {...}}``. The
body's end is the client's half-close: a keep-alive stream ends there, a
watch goes on until the client disconnects (as etcd's). A streaming request
gives up its place in the concurrency limit (the ``streaming`` hook).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
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
_READS: Final = (
    "/kv/range",
    "/maintenance/status",
    "/cluster/member/list",
    "/watch",
    "/lease/timetolive",
    "/kv/lease/timetolive",
    "/lease/leases",
    "/kv/lease/leases",
)
READ_ROUTES: Final = frozenset(prefix + path for prefix in PREFIXES for path in _READS)
"""Gateway routes that only read: a read-only token may POST to them."""

Call = Callable[[Any, str | None], Awaitable[Message]]
StreamCall = Callable[[AsyncIterator[Any], str | None], AsyncIterator[Message]]
Streaming = Callable[[web.Request], "asyncio.Future[None] | None"]
"""Called when a stream starts: gives up the request's place in the concurrency
limit; the future resolves when the client's connection closes (None: unknown)."""


def encode(message: Message) -> bytes:
    """grpc-gateway's JSON of ``message`` (Rule 1)."""
    body = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(body, separators=(",", ":")).encode()


def _error(exc: EtcdError) -> web.Response:
    # etcd 3.4's grpc-gateway (v1.9) writes its errorBody in this order.
    body = {"error": exc.message, "message": exc.message, "code": exc.code.value}
    return web.Response(
        status=exc.code.http_status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def _route(
    request_type: type[Message],
    call: Call,
    leader_only: Callable[[web.Request], bool] | None = None,
) -> Callable[[web.Request], Awaitable[Any]]:
    async def handle(request: web.Request) -> web.Response:
        if leader_only is not None and leader_only(request):
            return _error(errors.NO_LEADER)
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


def _messages(raw: bytes, request_type: type[Message]) -> list[Message]:
    """The request messages in a stream's body: JSON objects one after another."""
    text = raw.decode("utf-8")
    decoder = json.JSONDecoder()
    out: list[Message] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        value, i = decoder.raw_decode(text, i)
        message = request_type()
        json_format.ParseDict(value, message)
        out.append(message)


def _stream_error(exc: EtcdError) -> bytes:
    """grpc-gateway's error object in a stream."""
    status = exc.code.http_status
    body = {
        "error": {
            "grpc_code": exc.code.value,
            "http_code": status,
            "message": exc.message,
            "http_status": _REASONS.get(status, ""),
        }
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _stream_route(
    request_type: type[Message], call: StreamCall, streaming: Streaming
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            messages = _messages(raw, request_type)
        except (ValueError, json_format.ParseError) as exc:
            return _error(errors.invalid_argument(f"bad JSON request: {exc}"))

        async def requests() -> AsyncIterator[Message]:
            for message in messages:
                yield message

        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        lost = streaming(request)
        responses = call(requests(), request.headers.get("Authorization"))
        try:
            while True:
                following = asyncio.ensure_future(anext(responses))
                waiting: set[asyncio.Future[Any]] = {following}
                if lost is not None:
                    waiting.add(lost)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    # The client went away: stop the stream's generator where
                    # it waits (its cleanup closes the watchers) before closing it.
                    following.cancel()
                    await asyncio.wait({following})
                    if not following.cancelled():
                        following.exception()  # retrieved: it ended as it was cancelled
                    break
                try:
                    message = following.result()
                except StopAsyncIteration:
                    break
                except EtcdError as exc:
                    await response.write(_stream_error(exc))
                    break
                result = json_format.MessageToDict(message, preserving_proto_field_name=True)
                line = json.dumps({"result": result}, separators=(",", ":")).encode()
                await response.write(line + b"\n")
        except ConnectionResetError:
            pass  # the client went away
        finally:
            await responses.aclose()  # type: ignore[attr-defined]
        return response

    return handle


def add_routes(
    router: web.UrlDispatcher,
    service: EtcdService,
    streaming: Streaming | None = None,
    *,
    forwarded_header: str | None = None,
) -> None:
    """Add the gateway's routes (Rule 1) to the HTTP API's router.

    ``forwarded_header``: the header a member sets on a request it forwards to
    the leader; a membership change carrying it is refused (``no leader``) by a
    node that is not the leader any more, rather than forwarded a second time.
    """
    s = service

    def stale_forward(request: web.Request) -> bool:
        forwarded = forwarded_header is not None and forwarded_header in request.headers
        return forwarded and not s.node.is_leader

    if streaming is None:
        streaming = _no_hook

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
        "/lease/grant": (rpc_pb2.LeaseGrantRequest, s.lease_grant),
        "/lease/revoke": (rpc_pb2.LeaseRevokeRequest, s.lease_revoke),
        "/kv/lease/revoke": (rpc_pb2.LeaseRevokeRequest, s.lease_revoke),
        "/lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, s.lease_time_to_live),
        "/kv/lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, s.lease_time_to_live),
        "/lease/leases": (rpc_pb2.LeaseLeasesRequest, s.lease_leases),
        "/kv/lease/leases": (rpc_pb2.LeaseLeasesRequest, s.lease_leases),
    }

    def watch(requests: AsyncIterator[Any], auth: str | None) -> AsyncIterator[Message]:
        return s.watch(requests, require_leader=False)

    streams: dict[str, tuple[type[Message], StreamCall]] = {
        "/watch": (rpc_pb2.WatchRequest, watch),
        "/lease/keepalive": (rpc_pb2.LeaseKeepAliveRequest, s.lease_keepalive),
    }
    # Membership changes: on the leader (a follower forwards them here).
    changes: dict[str, tuple[type[Message], Call]] = {
        "/cluster/member/add": (rpc_pb2.MemberAddRequest, s.member_add),
        "/cluster/member/remove": (rpc_pb2.MemberRemoveRequest, s.member_remove),
        "/cluster/member/promote": (rpc_pb2.MemberPromoteRequest, s.member_promote),
        "/cluster/member/update": (rpc_pb2.MemberUpdateRequest, s.member_update),
    }
    for prefix in PREFIXES:
        for path, (request_type, call) in routes.items():
            router.add_post(prefix + path, _route(request_type, call))
        for path, (request_type, call) in changes.items():
            router.add_post(prefix + path, _route(request_type, call, stale_forward))
        for path, (request_type, stream) in streams.items():
            router.add_post(prefix + path, _stream_route(request_type, stream, streaming))

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


def _no_hook(request: web.Request) -> None:
    return None


_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
