"""The HTTP API of one node (aiohttp): KV routes, status, health, members, metrics.

Rule 1: every answer is JSON, errors included (``{"error": ..., "leader": ...}``);
a middleware turns aiohttp's own HTML errors (404, 405, 413) and runtime errors
into JSON with the status codes of DESIGN.md's "Black-box contract": 503 means
nothing happened (safe to retry), 504 means the outcome is unknown. The KV
routes' query strings and bodies, their answers, and the status of every
command error are :mod:`raftkv.server.kvjson`'s.

Rule 2: a node that is not the leader hands writes to the leader it knows as
the command it validated -- never as a URL rebuilt from the request, whose
decoded path could name another key. Over the peer link when it is up (the
transport's ``ForwardRequest``), else over HTTP as ``POST /v1/forward`` with
the encoded command as the body, preserving the client's ``Authorization``.
Membership changes and leadership transfers travel over HTTP to fixed paths
built from validated ids. A forwarded request is never forwarded again
(``X-Raftkv-Forwarded``), so leadership churn cannot make requests loop. The
leader stamps the log time (``time_ms``) the state machine uses for session
expiry. Linearizable reads are served by the node that received them
(ReadIndex); they are never forwarded.

Rule 3: request validation (JSON, keys, body shape, size) happens on the node
that received the request, before any forwarding; a command that arrives over
HTTP (``POST /v1/forward``, which anyone with a write token can send) has its
limits checked again on the leader.

Rule 4: a guard in front of every route (but the health probes) refuses, before
any work: requests beyond ``--max-concurrent-requests`` (503), and -- with
``--client-token-file`` -- requests without a known bearer token (401) or with a
read-only token on a write (403). A request forwarded over HTTP carries the
client's ``Authorization`` header, so the leader checks it again (docs/security.md).

Rule 5: the hot KV routes (``PUT``/``GET /v1/kv/{key}`` and the multi-put
``POST /v1/kv``, in plain HTTP/1.1) skip aiohttp: :mod:`raftkv.server.fasthttp`
parses them and :meth:`_Api.serve_fast` runs the same guard, handlers, error
mapping and metrics as the middlewares do; every other request goes to aiohttp
on the same port. Handlers of both paths share the code below
:class:`_Origin`, which answers ``(status, body, headers)``
(:data:`~raftkv.server.fasthttp.Answer`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web

from raftkv.core.types import NodeId
from raftkv.etcd.gateway import READ_ROUTES
from raftkv.etcd.gateway import add_routes as add_gateway_routes
from raftkv.etcd.grpcserver import EtcdGrpcServer
from raftkv.etcd.service import EtcdService, forwarded_answer
from raftkv.limits import NODE_ID_RULE, is_node_id
from raftkv.replica.kv import (
    ABSENT,
    ERR_LEASE_NOT_FOUND,
    Alarm,
    Cas,
    Command,
    Compact,
    Delete,
    DeleteRange,
    EtcdTxn,
    Get,
    InvalidCommand,
    KeyRange,
    KVStateMachine,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    MultiPut,
    Put,
    Range,
    Session,
    Txn,
    decode_command,
    encode_command,
    parse_idempotency_key,
)
from raftkv.replica.membership import InvalidMember, Member
from raftkv.replica.mvcc import RevisionError
from raftkv.server.config import ServerConfig
from raftkv.server.errors import (
    BadRequest,
    NoLeader,
    NoSpace,
    OutcomeUnknown,
    ServerError,
    TooLarge,
)
from raftkv.server.fasthttp import (
    KV_ROUTE,
    MAX_CONNECTIONS,
    MULTI_PUT_ROUTE,
    Answer,
    FastHttpServer,
    FastRequest,
    HandedOff,
)
from raftkv.server.fdlimit import FORWARD_CONNECTIONS, apply_fd_budget
from raftkv.server.kvjson import (
    CONSISTENCY_LEVELS,
    check_command_limits,
    check_key_limit,
    check_value_size,
    compact_revision,
    delete_range_query,
    lease_grant_fields,
    lease_param,
    listing_answer,
    nospace_answer,
    range_query,
    read_answer,
    revision_error_answer,
    revision_param,
    txn_parts,
    write_answer,
)
from raftkv.server.metrics import CONTENT_TYPE
from raftkv.server.node import ForwardReply, RaftNode
from raftkv.server.node.leases import REQUEST_KEEPALIVE, REQUEST_TTL, LeaseRequest
from raftkv.server.security import TokenTable, api_ssl_contexts, bearer_token
from raftkv.server.watchjson import created_line, response_line, watch_query

__all__ = ["ApiServer", "build_app", "FORWARDED_HEADER"]

logger = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Raftkv-Forwarded"
STATUS_ROUTE = "/v1/status"
# Writes a follower forwards over HTTP: the encoded command (Rule 2).
FORWARD_ROUTE = "/v1/forward"
COMMAND_CONTENT_TYPE = "application/vnd.raftkv.command+msgpack"
# How long /v1/health/ready waits for the ReadIndex round and the catch-up
# (probes time out after 1 s by default in Kubernetes).
_READY_TIMEOUT_S = 0.8
_NODE_KEY: web.AppKey[RaftNode] = web.AppKey("node", RaftNode)
_CONFIG_KEY: web.AppKey[ServerConfig] = web.AppKey("config", ServerConfig)
# Routes served without a token and outside the concurrency limit (probes).
_UNGUARDED = frozenset({"/v1/health/live", "/v1/health/ready", "/", "/health", "/version"})
_CLUSTER_STATUS_TIMEOUT_S = 0.5
# The dashboard page (static; it holds no data and fetches /v1/cluster).
_DASHBOARD = (resources.files("raftkv.viz") / "dashboard.html").read_text(encoding="utf-8")
_MAX_LOGGED_REFUSALS = 256
_HTTP_KEY: web.AppKey[aiohttp.ClientSession] = web.AppKey("http", aiohttp.ClientSession)
WATCH_ROUTE = "/v1/watch"
WATCH_KEEPALIVE_S = 10.0
"""A watch stream with nothing to say writes an empty line this often (clients
and proxies see a live stream; a reader that went away is noticed)."""


# The connection a request came on (ApiServer), as a request item.
class _Slot:
    """A request's place in the concurrency limit (Rule 4), held while it is
    served; a watch gives it up once it streams (its bound is then the
    connection limit, ``--max-connections``)."""

    __slots__ = ("_guard", "_held")

    def __init__(self, guard: _Guard) -> None:
        self._guard = guard
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._guard.inflight -= 1


_SLOT: web.RequestKey[_Slot] = web.RequestKey("slot", _Slot)
_CONNECTION: web.RequestKey[HandedOff] = web.RequestKey("connection", HandedOff)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _streaming(request: web.Request) -> asyncio.Future[None] | None:
    """A request starts streaming (a watch): it gives up its place in the
    concurrency limit; the future of its connection's end (None: unknown)."""
    slot = request.get(_SLOT)
    if slot is not None:
        slot.release()
    conn = request.get(_CONNECTION)
    return conn.when_lost() if conn is not None else None


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json(status, {"error": message, **extra})


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return status, _dumps(body), headers


def _web(answer: Answer) -> web.Response:
    """An :data:`Answer` as aiohttp's response (the same as ``_json`` would make)."""
    status, body, headers = answer
    return web.Response(
        status=status,
        body=body,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


_FAILED_ANSWER: Answer = (503, b'{"error": "node failed", "leader": null}', None)
"""Every route's answer from a node that failed (crash-stop, RaftNode.failed): the
cause is in the node's log, not in answers to clients."""


def _server_error_answer(exc: ServerError) -> Answer:
    if isinstance(exc, NoSpace):
        return nospace_answer()  # the same answer as the replica's refusal
    body: dict[str, Any] = {"error": exc.message}
    if exc.status == 503 or exc.leader is not None:
        body["leader"] = exc.leader
    return _answer(exc.status, body)


# ----------------------------------------------------------------------------- middleware


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    node = request.app[_NODE_KEY]
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
    )
    if node.failure is not None:
        node.metrics.http(route, 503)
        return _web(_FAILED_ANSWER)
    try:
        response = await handler(request)
    except ServerError as exc:
        response = _web(_server_error_answer(exc))
    except InvalidCommand as exc:
        response = _error(400, str(exc))
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
        response = _json(exc.status, {"error": message}, headers)
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client left, or its connection was closed at a deadline while
        # its body was read (fasthttp Rule 4): nobody reads this answer.
        logger.debug("connection lost serving %s %s", request.method, request.path)
        response = _error(400, "connection lost while reading the request")
    except Exception:
        logger.exception("unhandled error serving %s %s", request.method, request.path)
        response = _error(500, "internal error")
    node.metrics.http(route, response.status)
    return response


class _Guard:
    """The concurrency limit and bearer-token check of Rule 4 (one per app)."""

    def __init__(self, node: RaftNode, config: ServerConfig) -> None:
        self.node = node
        self.config = config
        self.inflight = 0
        # Requests let through (every route but the probes): the dashboard's rate.
        self.served = 0
        self._logged: set[tuple[str, str]] = set()

    def _refuse(
        self, method: str, path: str, remote: str, status: int, reason: str, message: str
    ) -> Answer:
        self.node.metrics.refused(reason)
        key = (reason, remote)
        if key not in self._logged and len(self._logged) < _MAX_LOGGED_REFUSALS:
            self._logged.add(key)
            logger.warning("refused %s %s from %s: %s", method, path, remote, message)
        headers = {"WWW-Authenticate": 'Bearer realm="raftkv"'} if status == 401 else None
        return _answer(status, {"error": message}, headers)

    def check(
        self, method: str, path: str, authorization: str | None, remote: str
    ) -> Answer | None:
        """The refusal of a guarded request, or None to let it through (then the
        caller counts it in ``inflight`` and ``served`` while it is served)."""
        tokens = self.config.client_tokens
        if tokens is not None:
            token = bearer_token(authorization)
            if token is None:
                return self._refuse(
                    method, path, remote, 401, "unauthenticated", "missing bearer token"
                )
            entry = tokens.lookup(token)
            if entry is None:
                if method == "GET" and path == STATUS_ROUTE and tokens.is_status_token(token):
                    return self._admit(method, path, remote)
                return self._refuse(method, path, remote, 401, "unauthenticated", "invalid token")
            if method not in ("GET", "HEAD") and path not in READ_ROUTES and not entry.can_write:
                return self._refuse(
                    method, path, remote, 403, "forbidden", "this token is read-only"
                )
        return self._admit(method, path, remote)

    def _admit(self, method: str, path: str, remote: str) -> Answer | None:
        """The concurrency limit, for a request whose credentials passed."""
        if self.inflight >= self.config.max_concurrent_requests:
            return self._refuse(
                method, path, remote, 503, "overloaded", "too many requests in flight"
            )
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _UNGUARDED:
            return await handler(request)
        refusal = self.check(
            request.method,
            request.path,
            request.headers.get("Authorization"),
            request.remote or "?",
        )
        if refusal is not None:
            return _web(refusal)
        self.inflight += 1
        self.served += 1
        slot = _Slot(self)
        request[_SLOT] = slot
        try:
            return await handler(request)
        finally:
            slot.release()


# ----------------------------------------------------------------------------- helpers


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _read_body(request: web.Request, max_bytes: int) -> bytes:
    """The body; 413 (aiohttp's) above ``max_bytes``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=request.content_length)
    return await request.read()  # raises HTTPRequestEntityTooLarge beyond client_max_size


# One decoder for every body: json.loads(raw, parse_constant=...) builds a new
# decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


async def _read_json(request: web.Request, max_bytes: int) -> Any:
    return _parse_json(await _read_body(request, max_bytes))


_NOT_PLAIN_UTF8_FIRST = frozenset((0x00, 0xEF, 0xFE, 0xFF))
"""First bytes after which :func:`json.detect_encoding` may answer other than UTF-8."""


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise BadRequest("request body must be JSON")
    try:
        # What json.loads does with bytes: detect UTF-8/16/32, then decode. A
        # body whose first two bytes are neither zero nor the start of a byte
        # order mark is UTF-8 by json.detect_encoding's rules; most are.
        first = raw[0]
        if first not in _NOT_PLAIN_UTF8_FIRST and raw[1:2] not in (b"\0", b""):
            return _DECODER.decode(raw.decode("utf-8", "surrogatepass"))
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"bad JSON: {exc}") from None
    except RecursionError:  # json's C decoder on a deeply nested body (fuzz finding)
        raise BadRequest("bad JSON: nested too deeply") from None


def _key(request: web.Request) -> str:
    return check_key_limit(request.match_info["key"], request.app[_CONFIG_KEY].max_key_bytes)


def _member_id(text: str) -> NodeId:
    """A member id from a request; 400 unless it follows :data:`~raftkv.limits.NODE_ID_RULE`."""
    if not is_node_id(text):
        raise BadRequest(f"bad member id {text[:80]!r}: must be {NODE_ID_RULE}")
    return NodeId(text)


@dataclass(slots=True)
class _Origin:
    """What the handlers need of a request besides its route and body: the
    headers they read. (Not frozen: one is made per request; nothing changes it.)"""

    idempotency_key: str | None
    authorization: str | None
    forwarded: str | None  # FORWARDED_HEADER

    @classmethod
    def of(cls, request: web.Request) -> _Origin:
        headers = request.headers
        return cls(
            headers.get("Idempotency-Key"),
            headers.get("Authorization"),
            headers.get(FORWARDED_HEADER),
        )

    @classmethod
    def of_fast(cls, request: FastRequest) -> _Origin:
        headers = request.headers
        return cls(
            headers.get("idempotency-key"),
            headers.get("authorization"),
            headers.get("x-raftkv-forwarded"),
        )


def _session(request: web.Request | _Origin, tokens: TokenTable | None) -> Session | None:
    """The request's session (``Idempotency-Key``), owned by its client token.

    With ``tokens`` (``--client-token-file``) the session's owner is the token's
    :attr:`~raftkv.server.security.ClientToken.owner` (the guard has checked the
    token already); without, sessions have no owner.
    """
    if isinstance(request, _Origin):
        header, authorization = request.idempotency_key, request.authorization
    else:
        header, authorization = (
            request.headers.get("Idempotency-Key"),
            request.headers.get("Authorization"),
        )
    if header is None:
        return None
    try:
        client_id, seq = parse_idempotency_key(header)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    owner = _owner(authorization, tokens)
    return Session(client_id=client_id, seq=seq, owner=owner)


def _owner(authorization: str | None, tokens: TokenTable | None) -> str | None:
    """The session owner of a request's token (None without tokens)."""
    if tokens is None:
        return None
    token = bearer_token(authorization)
    entry = tokens.lookup(token) if token is not None else None
    if entry is None:  # the guard refuses these first
        raise ServerError("a request without a known token reached a write handler")
    return entry.owner


def _now_ms() -> int:
    return int(time.time() * 1000)


def _new_lease_id(session: Session | None) -> int:
    """A lease id for a grant that names none: from its session (a retry gets
    the same one), else random; 1..2**63-1."""
    if session is None:
        seed = os.urandom(8)
    else:
        seed = f"{session.client_id}/{session.seq}/{session.owner or ''}".encode()
    digest = hashlib.blake2b(seed, digest_size=8, person=b"raftkv-lease").digest()
    return int.from_bytes(digest, "big") & (2**63 - 1) or 1


def _lease_not_found(lease_id: int) -> Answer:
    return _answer(404, {"error": ERR_LEASE_NOT_FOUND, "id": lease_id})


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# ----------------------------------------------------------------------------- the API


class _Api:
    """Route handlers; one instance per node."""

    def __init__(self, node: RaftNode, config: ServerConfig) -> None:
        self.node = node
        self.config = config
        self.http: aiohttp.ClientSession | None = None
        self.guard: _Guard | None = None
        # Forwarded lease requests being served (a reference keeps each task alive).
        self._tasks: set[asyncio.Future[None]] = set()
        self.etcd: EtcdService | None = None

    # -- forwarding (Rule 2) --------------------------------------------------

    async def _forward(
        self,
        origin: _Origin,
        leader: NodeId | None,
        method: str,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/json",
    ) -> Answer:
        """Send a request to the leader's API over HTTP and relay its answer.

        ``path`` is built by the caller from validated values (a fixed route,
        a checked member id), never taken from the client's request.
        """
        member = self.node.members.get(leader) if leader is not None else None
        if leader is None or member is None or leader == self.node.node_id:
            return _answer(503, {"error": "no leader", "leader": None})
        if origin.forwarded:
            # Already forwarded once: the sender's view was stale; let the client retry.
            return _answer(503, {"error": "not the leader", "leader": leader})
        assert self.http is not None
        headers = {FORWARDED_HEADER: self.node.node_id, "Content-Type": content_type}
        if origin.authorization is not None:
            headers["Authorization"] = origin.authorization
        scheme = "https" if self.config.tls else "http"
        url = member.api_url(scheme=scheme) + path
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s + 1.0)
        try:
            async with self.http.request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as resp:
                payload = await resp.read()
                return resp.status, payload, {"X-Raftkv-Leader": leader}
        except aiohttp.ClientConnectorError:
            return _answer(503, {"error": "leader unreachable", "leader": leader})
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Every forwarded request changes something: the outcome is unknown.
            raise OutcomeUnknown(f"lost contact with the leader: {exc}") from None

    async def _write(self, origin: _Origin, build: Callable[[int], Command]) -> Answer:
        """Validate on this node, then propose on the leader (forwarding if needed).

        The leader refuses a write the space quota does not let in before
        proposing it (:meth:`RaftNode.admit_write`, 507).
        """
        command = build(_now_ms())  # validates now, even if forwarded
        node = self.node
        if not node.is_leader:
            return await self._forward_write(origin, node.leader, command)
        node.admit_write(command)
        try:
            result = await node.propose(encode_command(command))
        except NoLeader as exc:
            if exc.leader is not None and exc.leader != node.node_id:
                return await self._forward_write(origin, NodeId(exc.leader), command)
            raise
        return write_answer(result, command, node.node_id)

    async def _forward_write(
        self, origin: _Origin, leader: NodeId | None, command: Command
    ) -> Answer:
        """Hand a validated write to the leader: over the peer link when it is up,
        else over HTTP (``POST /v1/forward``); either way as the encoded command.

        The peer link (RaftNode.forward) brings back the leader's status and
        JSON body, which are relayed unchanged, as an HTTP forward's are. HTTP
        stays in use when clients authenticate with tokens (the leader
        re-checks the client's token, Rule 4), for a request that was already
        forwarded once, and when the link to the leader is down (so the client
        gets a quick 503, not a 504).
        """
        node = self.node
        payload = encode_command(command)
        if (
            self.config.client_tokens is not None
            or origin.forwarded
            or not node.can_forward(leader)
        ):
            return await self._forward(
                origin, leader, "POST", FORWARD_ROUTE, payload, content_type=COMMAND_CONTENT_TYPE
            )
        assert leader is not None
        status, body = await node.forward(payload)
        return status, body, {"X-Raftkv-Leader": leader}

    async def forward_command(
        self, command: Command, authorization: str | None
    ) -> tuple[int, bytes]:
        """Hand a validated write of another API (the etcd API's) to the leader
        as :meth:`_write` does; the leader's (status, body)."""
        origin = _Origin(None, authorization, None)
        status, body, _ = await self._forward_write(origin, self.node.leader, command)
        return status, body

    async def lease_call(
        self, request: LeaseRequest, authorization: str | None
    ) -> tuple[int, bytes]:
        """Serve a keep-alive or time-to-live of another API (the etcd API's) as
        ``/v1``'s lease routes do: on the leader, or forwarded to it; its
        (status, body) in ``/v1``'s JSON."""
        origin = _Origin(None, authorization, None)
        status, body, _ = await self._lease_request(origin, request)
        return status, body

    async def admin_call(
        self, path: str, body: bytes, authorization: str | None
    ) -> tuple[int, bytes]:
        """Send an etcd API membership request to the leader's JSON gateway
        (``path``, a fixed route); its (status, body). The leader does not
        forward it again (:data:`FORWARDED_HEADER`)."""
        origin = _Origin(None, authorization, None)
        status, answer, _ = await self._forward(origin, self.node.leader, "POST", path, body)
        return status, answer

    def serve_forwarded(self, payload: bytes, reply: ForwardReply) -> None:
        """On the leader: serve a write a follower forwarded over the peer link.

        The command was validated on the follower (a member, authenticated by
        the peer link); it is decoded again here, and the leader stamps the log
        time (Rule 2) as it encodes it for the log. ``reply`` gets the (status,
        body) once the entry is applied (or the proposal fails): a callback on
        the proposal's future, no task.
        """
        try:
            lease_request = LeaseRequest.decode(payload)
            if lease_request is not None:
                self._spawn(self._answer_forwarded_lease(lease_request, reply))
                return
            command = decode_command(payload)
        except (InvalidCommand, BadRequest) as exc:
            reply(400, _dumps({"error": str(exc)}))
            return
        self._propose_forwarded(command, reply)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_forwarded_lease(self, request: LeaseRequest, reply: ForwardReply) -> None:
        node = self.node
        try:
            if not node.is_leader:
                # The follower's view was stale; as for an HTTP forward, no second hop.
                reply(503, _dumps({"error": "not the leader", "leader": node.leader}))
                return
            status, body, _ = await self._serve_lease(request)
        except ServerError as exc:
            status, body, _ = _server_error_answer(exc)
        except Exception:
            logger.exception("serving a forwarded lease request failed")
            status, body = 500, b'{"error": "internal error"}'
        node.metrics.http("forwarded-lease", status)
        reply(status, body)

    def _propose_forwarded(self, command: Command, reply: ForwardReply) -> None:
        node = self.node
        try:
            if (
                isinstance(command, Get | Range | LeaseCheckpoint)
                or (isinstance(command, Alarm) and command.active)
                or (isinstance(command, LeaseRevoke) and command.expired)
            ):
                # Reads are served by the node that received them (ReadIndex);
                # only the leader's quota check raises the alarm (a client may
                # clear it, as etcd's may: the quota raises it again if need
                # be), and only its lessor checkpoints leases and revokes
                # expired ones.
                raise InvalidCommand(f"{command.op} is not a write a client may send")
            if not node.is_leader:
                # The follower's view was stale; as for an HTTP forward, no second hop.
                reply(503, _dumps({"error": "not the leader", "leader": node.leader}))
                return
            node.admit_write(command)
            node.propose_nowait(
                encode_command(command, time_ms=_now_ms()),
                on_done=functools.partial(self._forwarded_applied, command, reply),
            )
        except ServerError as exc:
            reply(*_server_error_answer(exc)[:2])
            return
        except InvalidCommand as exc:
            reply(400, _dumps({"error": str(exc)}))
            return

    def _forwarded_applied(
        self, command: Command, reply: ForwardReply, proposed: asyncio.Future[object]
    ) -> None:
        if proposed.cancelled():
            return  # nothing cancels it; the follower's forward would time out (504)
        exc = proposed.exception()
        if isinstance(exc, ServerError):
            reply(*_server_error_answer(exc)[:2])
            return
        if exc is not None:
            logger.error("serving a forwarded write failed", exc_info=exc)
            reply(500, b'{"error": "internal error"}')
            return
        if isinstance(command, EtcdTxn):
            status, body = forwarded_answer(proposed.result())
        else:
            status, body, _ = write_answer(proposed.result(), command, self.node.node_id)
        self.node.metrics.http("forwarded-write", status)
        reply(status, body)

    async def forwarded(self, request: web.Request) -> web.Response:
        """``POST /v1/forward``: a write a follower forwarded over HTTP, as the
        encoded command (Rule 2). The guard checked the client's token; the
        limits are checked again here (Rule 3): anyone with a write token can
        send a command to this route, not only members."""
        if FORWARDED_HEADER not in request.headers:
            raise BadRequest(f"{FORWARD_ROUTE} takes only writes forwarded by members")
        # msgpack can be larger than the JSON it came from (a float: 9 bytes).
        payload = await _read_body(request, 3 * self.config.max_body_bytes)
        command = decode_command(payload)
        self._check_limits(command)
        if command.session is not None:
            # The owner is the token this node checked, whatever the command says.
            owner = _owner(request.headers.get("Authorization"), self.config.client_tokens)
            session = dataclasses.replace(command.session, owner=owner)
            command = dataclasses.replace(command, session=session)
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[tuple[int, bytes]] = loop.create_future()

        def reply(status: int, body: bytes) -> None:
            if not answered.done():
                answered.set_result((status, body))

        self._propose_forwarded(command, reply)
        status, body = await answered
        return _web((status, body, None))

    def _check_limits(self, command: Command) -> None:
        """The size limits of the KV routes, for a command built elsewhere."""
        config = self.config
        check_command_limits(
            command,
            max_key_bytes=config.max_key_bytes,
            max_value_bytes=config.max_value_bytes,
            max_multi_put_pairs=config.max_multi_put_pairs,
        )

    # -- the fast path (Rule 5) ------------------------------------------------

    async def serve_fast(self, request: FastRequest, remote: str) -> Answer:
        """Serve a hot-route request parsed by the fast path, as the middlewares
        would: the guard (Rule 4), the handler, the error mapping, the metrics."""
        if self.node.failure is not None:
            self.node.metrics.http(request.route, 503)
            return _FAILED_ANSWER
        guard = self.guard
        assert guard is not None
        # The probes skip the guard, as in the middleware.
        guarded = request.route not in _UNGUARDED
        answer = (
            guard.check(
                request.method, request.path_qs, request.headers.get("authorization"), remote
            )
            if guarded
            else None
        )
        if answer is None:
            guard.inflight += guarded
            guard.served += guarded
            try:
                answer = await self._serve_fast(request)
            except ServerError as exc:
                answer = _server_error_answer(exc)
            except InvalidCommand as exc:
                answer = _answer(400, {"error": str(exc)})
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("unhandled error serving %s %s", request.method, request.path_qs)
                answer = _answer(500, {"error": "internal error"})
            finally:
                guard.inflight -= guarded
        self.node.metrics.http(request.route, answer[0])
        return answer

    async def _serve_fast(self, request: FastRequest) -> Answer:
        route = request.route
        if route != KV_ROUTE:
            if route == MULTI_PUT_ROUTE:
                return await self._multi_put(_Origin.of_fast(request), request.body)
            if route == STATUS_ROUTE:
                return self._status()
            if route == "/v1/health/live":
                return self._live()
            return await self._ready()
        origin = _Origin.of_fast(request)
        key = check_key_limit(request.key, self.config.max_key_bytes)
        if request.method == "PUT":
            return await self._put(origin, key, request.body)
        if request.method == "DELETE":
            return await self._delete(origin, key)
        return await self._get(key, request.consistency or "linearizable", 0)

    # -- KV routes -----------------------------------------------------------

    async def put(self, request: web.Request) -> web.Response:
        key = _key(request)
        lease = 0
        for name, text in request.query.items():
            if name != "lease" or lease:
                raise BadRequest(
                    f"unknown or repeated parameter {name[:40]!r}; this route takes lease"
                )
            lease = lease_param(text)
        body = await _read_body(request, self.config.max_body_bytes)
        return _web(await self._put(_Origin.of(request), key, body, lease))

    async def _put(self, origin: _Origin, key: str, body: bytes, lease: int = 0) -> Answer:
        value = _parse_json(body)
        session = _session(origin, self.config.client_tokens)
        if len(body) > self.config.max_value_bytes:
            raise TooLarge(
                f"value is {len(body)} bytes; the limit is {self.config.max_value_bytes}"
            )
        return await self._write(
            origin, lambda t: Put(key=key, value=value, time_ms=t, session=session, lease=lease)
        )

    async def delete(self, request: web.Request) -> web.Response:
        return _web(await self._delete(_Origin.of(request), _key(request)))

    async def _delete(self, origin: _Origin, key: str) -> Answer:
        session = _session(origin, self.config.client_tokens)
        return await self._write(origin, lambda t: Delete(key=key, time_ms=t, session=session))

    async def cas(self, request: web.Request) -> web.Response:
        key = _key(request)
        body = await _read_body(request, self.config.max_body_bytes)
        obj = _parse_json(body)
        if not isinstance(obj, dict) or "value" not in obj or "expect" not in obj:
            raise BadRequest('cas body must be {"expect": value or null, "value": value}')
        expect = ABSENT if obj["expect"] is None else obj["expect"]
        session = _session(request, self.config.client_tokens)
        for part in ("expect", "value"):
            check_value_size(obj[part], len(body), self.config.max_value_bytes, part)
        return _web(
            await self._write(
                _Origin.of(request),
                lambda t: Cas(
                    key=key, expect=expect, value=obj["value"], time_ms=t, session=session
                ),
            )
        )

    async def multi_put(self, request: web.Request) -> web.Response:
        body = await _read_body(request, self.config.max_body_bytes)
        return _web(await self._multi_put(_Origin.of(request), body))

    async def _multi_put(self, origin: _Origin, body: bytes) -> Answer:
        obj = _parse_json(body)
        if not isinstance(obj, dict):
            raise BadRequest("body must be a JSON object of key/value pairs")
        if not obj:
            raise BadRequest("body must hold at least one pair")
        if len(obj) > self.config.max_multi_put_pairs:
            raise TooLarge(
                f"{len(obj)} pairs; the limit is {self.config.max_multi_put_pairs} per multi-put"
            )
        session = _session(origin, self.config.client_tokens)
        limit = self.config.max_key_bytes
        for k, v in obj.items():
            if len(k.encode("utf-8", "surrogatepass")) > limit:
                raise BadRequest(f"bad key: longer than {limit} bytes of UTF-8")
            check_value_size(v, len(body), self.config.max_value_bytes, f"value of {k[:64]!r}")
        return await self._write(origin, lambda t: MultiPut(pairs=obj, time_ms=t, session=session))

    def _kv(self) -> KVStateMachine:
        sm = self.node.state_machine
        if not isinstance(sm, KVStateMachine):
            raise BadRequest("this node does not run the KV state machine")
        return sm

    async def _read_barrier(self, consistency: str) -> None:
        """Linearizable (ReadIndex, on followers too) unless ``stale``."""
        if consistency == "linearizable":
            await self.node.read_barrier()
        else:
            self.node.metrics.read("stale")

    async def get(self, request: web.Request) -> web.Response:
        key = _key(request)
        consistency = request.query.get("consistency", "linearizable")
        revision = request.query.get("revision")
        return _web(await self._get(key, consistency, revision_param(revision) if revision else 0))

    async def _get(self, key: str, consistency: str, revision: int) -> Answer:
        """``GET /v1/kv/{key}``: the key now, or as of ``revision`` (> 0)."""
        if consistency not in CONSISTENCY_LEVELS:
            raise BadRequest("consistency must be linearizable or stale")
        sm = self._kv()
        await self._read_barrier(consistency)
        if not revision:
            result = sm.read(key)
            return read_answer(key, result.item, index=result.index, revision=result.revision)
        try:
            listing = sm.range(KeyRange(key=key), revision=revision)
        except RevisionError as exc:
            return revision_error_answer(exc, sm.revision)
        item = listing.items[0] if listing.items else None
        return read_answer(key, item, index=listing.index, revision=listing.revision)

    async def range(self, request: web.Request) -> web.Response:
        """``GET /v1/kv?prefix=P`` or ``?key=K[&range_end=E]``: a range read."""
        query = range_query(request.query.items(), max_key_bytes=self.config.max_key_bytes)
        sm = self._kv()
        await self._read_barrier(query.consistency)
        try:
            listing = sm.range(
                query.range,
                revision=query.revision,
                limit=query.limit,
                keys_only=query.keys_only,
                count_only=query.count_only,
                sort_order=query.sort_order,
                sort_target=query.sort_target,
            )
        except RevisionError as exc:
            return _web(revision_error_answer(exc, sm.revision))
        return _web(listing_answer(listing))

    async def delete_range(self, request: web.Request) -> web.Response:
        """``DELETE /v1/kv?prefix=P`` or ``?key=K[&range_end=E]``, ``&prev_kv=true``."""
        key_range, prev_kv = delete_range_query(
            request.query.items(), max_key_bytes=self.config.max_key_bytes
        )
        origin = _Origin.of(request)
        session = _session(origin, self.config.client_tokens)
        return _web(
            await self._write(
                origin,
                lambda t: DeleteRange(range=key_range, prev_kv=prev_kv, time_ms=t, session=session),
            )
        )

    async def txn(self, request: web.Request) -> web.Response:
        """``POST /v1/txn``: compares, then the success or the failure branch."""
        config = self.config
        body = await _read_body(request, config.max_body_bytes)
        parts = txn_parts(
            _parse_json(body),
            raw_size=len(body),
            max_key_bytes=config.max_key_bytes,
            max_value_bytes=config.max_value_bytes,
        )
        origin = _Origin.of(request)
        session = _session(origin, config.client_tokens)
        return _web(
            await self._write(
                origin,
                lambda t: Txn(
                    compares=parts.compares,
                    success=parts.success,
                    failure=parts.failure,
                    time_ms=t,
                    session=session,
                ),
            )
        )

    async def compact(self, request: web.Request) -> web.Response:
        """``POST /v1/compact`` ``{"revision": R}``: drop the history below ``R``."""
        body = await _read_body(request, self.config.max_body_bytes)
        revision = compact_revision(_parse_json(body))
        origin = _Origin.of(request)
        session = _session(origin, self.config.client_tokens)
        return _web(
            await self._write(
                origin, lambda t: Compact(revision=revision, time_ms=t, session=session)
            )
        )

    # -- watch ---------------------------------------------------------------

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/watch``: a stream of JSON lines (:mod:`raftkv.server.watchjson`).

        The watcher lives as long as the stream: it is closed when the client
        goes away, and the stream ends (with a ``canceled`` line saying why)
        when the hub cancels it -- no leader for an election timeout (unless
        ``require_leader=false``), a slow reader, a compacted start revision,
        the node stopping.
        """
        query = watch_query(request.query.items(), max_key_bytes=self.config.max_key_bytes)
        sm = self._kv()
        key, range_end = query.range.to_bytes()
        stream = self.node.open_watch(
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
            slot = request.get(_SLOT)
            if slot is not None:
                slot.release()
            conn = request.get(_CONNECTION)
            if conn is not None:
                conn.when_lost().add_done_callback(lambda _: stream.end())
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

    # -- leases --------------------------------------------------------------

    async def lease_grant(self, request: web.Request) -> web.Response:
        """``POST /v1/leases`` ``{"ttl": s[, "id": n]}``: a lease (TTL raised to the minimum).

        Without an id the node picks one before proposing -- derived from the
        request's ``Idempotency-Key`` when it has one, so that a retry names
        the same lease (and its answer, replayed, the same id) -- else at random.
        """
        body = await _read_body(request, self.config.max_body_bytes)
        ttl, lease_id = lease_grant_fields(_parse_json(body))
        ttl = self.node.leases.grant_ttl(ttl)
        origin = _Origin.of(request)
        session = _session(origin, self.config.client_tokens)
        if not lease_id:
            lease_id = _new_lease_id(session)
        return _web(
            await self._write(
                origin, lambda t: LeaseGrant(id=lease_id, ttl_s=ttl, time_ms=t, session=session)
            )
        )

    async def lease_revoke(self, request: web.Request) -> web.Response:
        """``DELETE /v1/leases/{id}``: end the lease, delete its keys (one revision)."""
        lease_id = lease_param(request.match_info["lease_id"], "the lease id")
        origin = _Origin.of(request)
        session = _session(origin, self.config.client_tokens)
        return _web(
            await self._write(
                origin, lambda t: LeaseRevoke(id=lease_id, time_ms=t, session=session)
            )
        )

    async def lease_keepalive(self, request: web.Request) -> web.Response:
        """``POST /v1/leases/{id}/keepalive``: renew; the leader answers once it
        confirmed its leadership (followers forward)."""
        lease_id = lease_param(request.match_info["lease_id"], "the lease id")
        lease_request = LeaseRequest(kind=REQUEST_KEEPALIVE, lease_id=lease_id)
        return _web(await self._lease_request(_Origin.of(request), lease_request))

    async def lease_ttl(self, request: web.Request) -> web.Response:
        """``GET /v1/leases/{id}[?keys=true]``: remaining and granted TTL (and keys)."""
        lease_id = lease_param(request.match_info["lease_id"], "the lease id")
        keys = False
        for name, text in request.query.items():
            if name != "keys" or text not in ("true", "false"):
                raise BadRequest("this route takes keys=true|false")
            keys = text == "true"
        lease_request = LeaseRequest(kind=REQUEST_TTL, lease_id=lease_id, keys=keys)
        return _web(await self._lease_request(_Origin.of(request), lease_request))

    async def lease_list(self, request: web.Request) -> web.Response:
        """``GET /v1/leases``: every lease (linearizable: after a ReadIndex)."""
        if request.query:
            raise BadRequest("this route takes no parameters")
        sm = self._kv()
        await self.node.read_barrier()
        leases = [{"id": le.id, "granted_ttl": le.ttl_s} for le in self.node.leases.leases()]
        return _json(200, {"leases": leases, "revision": sm.revision})

    async def _lease_request(self, origin: _Origin, request: LeaseRequest) -> Answer:
        """Serve ``request`` on the leader, or have the leader serve it (Rule 2)."""
        node = self.node
        self._kv()
        if node.is_leader:
            try:
                return await self._serve_lease(request)
            except NoLeader as exc:
                if exc.leader is None or exc.leader == node.node_id:
                    raise
                leader: NodeId | None = NodeId(exc.leader)
        else:
            leader = node.leader
        if (
            self.config.client_tokens is not None
            or origin.forwarded
            or not node.can_forward(leader)
        ):
            lease_id = request.lease_id
            if request.kind == REQUEST_KEEPALIVE:
                method, path = "POST", f"/v1/leases/{lease_id}/keepalive"
            else:
                method = "GET"
                path = f"/v1/leases/{lease_id}" + ("?keys=true" if request.keys else "")
            return await self._forward(origin, leader, method, path, b"")
        assert leader is not None
        status, body = await node.forward(request.encode())
        return status, body, {"X-Raftkv-Leader": leader}

    async def _serve_lease(self, request: LeaseRequest) -> Answer:
        """On the leader: a keep-alive or a time-to-live (after a ReadIndex round)."""
        node = self.node
        lease_id = request.lease_id
        if request.kind == REQUEST_KEEPALIVE:
            ttl = await node.lease_keepalive(lease_id)
            if ttl is None:
                return _lease_not_found(lease_id)
            return _answer(200, {"id": lease_id, "ttl": ttl})
        view = await node.lease_time_to_live(lease_id, keys=request.keys)
        if view is None:
            return _lease_not_found(lease_id)
        body: dict[str, Any] = {
            "id": lease_id,
            "ttl": view.ttl_s,
            "granted_ttl": view.granted_ttl_s,
        }
        if request.keys:
            body["keys"] = [k.decode("utf-8", "surrogateescape") for k in view.keys]
        return _answer(200, body)

    # -- cluster routes ------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return _web(self._status())

    def _status(self) -> Answer:
        body = self.node.status().to_json()
        if self.guard is not None:
            body["requests_served"] = self.guard.served
        return _answer(200, body)

    async def cluster(self, request: web.Request) -> web.Response:
        """Every member's ``/v1/status`` as this node can reach it (for the dashboard).

        Members are asked concurrently, with a short timeout; one that does not
        answer is listed with ``"status": null`` and the error. With client
        tokens, members are asked with the token table's status token
        (:attr:`~raftkv.server.security.TokenTable.status_token`), never with
        the caller's.
        """
        node = self.node
        own = node.status()
        scheme = "https" if self.config.tls else "http"
        headers = {}
        tokens = self.config.client_tokens
        if tokens is not None:
            # Never the caller's token: a member's address is whatever was
            # given when it was added. The status token opens /v1/status only.
            headers["Authorization"] = f"Bearer {tokens.status_token}"

        async def ask(node_id: NodeId) -> dict[str, Any]:
            member = node.members.get(node_id)
            entry: dict[str, Any] = {"id": node_id, "api": None, "status": None}
            if member is not None:
                entry["api"] = member.to_json()["api_addr"]
            if node_id == node.node_id:
                entry["status"] = own.to_json()
                if self.guard is not None:
                    entry["status"]["requests_served"] = self.guard.served
                return entry
            if member is None or self.http is None:
                entry["error"] = "no address known"
                return entry
            try:
                async with self.http.get(
                    member.api_url(scheme=scheme) + STATUS_ROUTE,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=_CLUSTER_STATUS_TIMEOUT_S),
                ) as resp:
                    if resp.status != 200:
                        entry["error"] = f"HTTP {resp.status}"
                    else:
                        entry["status"] = await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                entry["error"] = str(exc) or type(exc).__name__
            return entry

        ids = sorted({*map(NodeId, own.members), *own.voters, *own.learners, node.node_id})
        members = await asyncio.gather(*(ask(n) for n in ids))
        return _json(200, {"node_id": node.node_id, "members": list(members)})

    async def dashboard(self, request: web.Request) -> web.Response:
        """The live dashboard: a static page that polls ``/v1/cluster``."""
        return web.Response(text=_DASHBOARD, content_type="text/html")

    async def metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self.node.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    async def live(self, request: web.Request) -> web.Response:
        return _web(self._live())

    def _live(self) -> Answer:
        if self.node.is_live():
            return _answer(200, {"status": "live"})
        return _answer(503, {"error": "not live"})

    async def ready(self, request: web.Request) -> web.Response:
        return _web(await self._ready())

    async def _ready(self) -> Answer:
        """Ready = a leader is known *and* this node has caught up with it.

        "Caught up" is checked the way a linearizable read is served: a ReadIndex
        round (on a follower, the leader confirms its commit index with a quorum
        heartbeat) and then waiting -- briefly -- until this node applied that
        index. A node that restarted behind the leader, a leader cut off from
        its quorum, and a node no leader talks to are all not ready (503).
        Kubernetes uses this to gate the client Service and rolling updates.
        """
        node = self.node
        if not node.is_ready():
            error = "not ready: starting, stopping, or no leader known"
            return _answer(503, {"error": error, "leader": node.leader})
        try:
            index = await node.read_barrier(timeout=_READY_TIMEOUT_S)
        except ServerError as exc:
            return _answer(503, {"error": f"not ready: {exc.message}", "leader": node.leader})
        body = {"status": "ready", "leader": node.leader, "index": index}
        return _answer(200, {**body, "applied": node.applied_index})

    async def members(self, request: web.Request) -> web.Response:
        st = self.node.status()
        return _json(
            200,
            {
                "members": st.members,
                "voters": list(st.voters),
                "learners": list(st.learners),
                "leader": st.leader,
                "removed": sorted(self.node.removed),
            },
        )

    async def add_member(self, request: web.Request) -> web.Response:
        obj = await _read_json(request, self.config.max_body_bytes)
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
            raise BadRequest('body must be {"id", "raft_addr", "api_addr", "learner": bool}')
        node_id = _member_id(obj["id"])
        try:
            member = Member.from_json(obj)
        except InvalidMember as exc:
            raise BadRequest(str(exc)) from None
        learner = obj.get("learner", False)
        if not isinstance(learner, bool):
            raise BadRequest("learner must be true or false")
        node = self.node
        if not node.is_leader:
            body = _dumps({"id": node_id, **member.to_json(), "learner": learner})
            return _web(
                await self._forward(_Origin.of(request), node.leader, "POST", "/v1/members", body)
            )
        result = await node.add_member(node_id, member, learner=learner)
        return _json(200, {"ok": True, "result": result})

    async def promote_member(self, request: web.Request) -> web.Response:
        node_id = _member_id(request.match_info["node_id"])
        node = self.node
        if not node.is_leader:
            path = f"/v1/members/{node_id}/promote"
            return _web(await self._forward(_Origin.of(request), node.leader, "POST", path, b""))
        result = await node.promote_member(NodeId(node_id))
        return _json(200, {"ok": True, "result": result})

    async def update_member(self, request: web.Request) -> web.Response:
        """``PUT /v1/members/{id}``: new addresses for a member (etcd's ``MemberUpdate``)."""
        node_id = _member_id(request.match_info["node_id"])
        obj = await _read_json(request, self.config.max_body_bytes)
        if not isinstance(obj, dict):
            raise BadRequest('body must be {"raft_addr", "api_addr"}')
        try:
            member = Member.from_json(obj)
        except InvalidMember as exc:
            raise BadRequest(str(exc)) from None
        node = self.node
        if not node.is_leader:
            body = _dumps(member.to_json())
            path = f"/v1/members/{node_id}"
            return _web(await self._forward(_Origin.of(request), node.leader, "PUT", path, body))
        result = await node.update_member(NodeId(node_id), member)
        return _json(200, {"ok": True, "result": result})

    async def remove_member(self, request: web.Request) -> web.Response:
        node_id = _member_id(request.match_info["node_id"])
        node = self.node
        if not node.is_leader:
            path = f"/v1/members/{node_id}"
            return _web(await self._forward(_Origin.of(request), node.leader, "DELETE", path, b""))
        result = await node.remove_member(NodeId(node_id))
        return _json(200, {"ok": True, "result": result})

    async def transfer(self, request: web.Request) -> web.Response:
        obj = await _read_json(request, self.config.max_body_bytes)
        if not isinstance(obj, dict) or not isinstance(obj.get("to"), str):
            raise BadRequest('body must be {"to": node id}')
        to = _member_id(obj["to"])
        node = self.node
        if to not in node.members:
            raise BadRequest(f"unknown member {to!r}")
        if not node.is_leader:
            body = _dumps({"to": to})
            path = "/v1/leader/transfer"
            return _web(await self._forward(_Origin.of(request), node.leader, "POST", path, body))
        leader = await node.transfer_leadership(to)
        return _json(200, {"ok": True, "leader": leader})


def build_app(node: RaftNode, config: ServerConfig) -> web.Application:
    """The aiohttp application serving ``node``."""
    return _build(node, config)[0]


def _build(node: RaftNode, config: ServerConfig) -> tuple[web.Application, _Api]:
    api = _Api(node, config)
    guard = _Guard(node, config)
    api.guard = guard
    app = web.Application(
        middlewares=[_errors_middleware, guard.middleware], client_max_size=config.max_body_bytes
    )
    app[_NODE_KEY] = node
    app[_CONFIG_KEY] = config
    node.forward_handler = api.serve_forwarded
    _, forward_ssl = api_ssl_contexts(config)

    async def _session_ctx(app: web.Application) -> Any:
        api.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=FORWARD_CONNECTIONS,
                keepalive_timeout=30,
                ssl=forward_ssl if forward_ssl else True,
            )
        )
        app[_HTTP_KEY] = api.http
        yield
        await api.http.close()

    app.cleanup_ctx.append(_session_ctx)
    r = app.router
    r.add_put("/v1/kv/{key}", api.put)
    r.add_get("/v1/kv/{key}", api.get, allow_head=False)
    r.add_delete("/v1/kv/{key}", api.delete)
    r.add_post("/v1/kv/{key}/cas", api.cas)
    r.add_post("/v1/kv", api.multi_put)
    r.add_get("/v1/kv", api.range, allow_head=False)
    r.add_delete("/v1/kv", api.delete_range)
    r.add_post("/v1/txn", api.txn)
    r.add_post("/v1/compact", api.compact)
    r.add_get(STATUS_ROUTE, api.status, allow_head=False)
    r.add_get("/v1/cluster", api.cluster, allow_head=False)
    r.add_get("/", api.dashboard, allow_head=False)
    r.add_get("/metrics", api.metrics, allow_head=False)
    r.add_get("/v1/health/live", api.live, allow_head=False)
    r.add_get("/v1/health/ready", api.ready, allow_head=False)
    r.add_get("/v1/members", api.members, allow_head=False)
    r.add_post("/v1/members", api.add_member)
    r.add_delete("/v1/members/{node_id}", api.remove_member)
    r.add_put("/v1/members/{node_id}", api.update_member)
    r.add_post("/v1/members/{node_id}/promote", api.promote_member)
    r.add_post("/v1/leader/transfer", api.transfer)
    r.add_post(FORWARD_ROUTE, api.forwarded)
    r.add_get(WATCH_ROUTE, api.watch, allow_head=False)
    r.add_post("/v1/leases", api.lease_grant)
    r.add_get("/v1/leases", api.lease_list, allow_head=False)
    r.add_get("/v1/leases/{lease_id}", api.lease_ttl, allow_head=False)
    r.add_delete("/v1/leases/{lease_id}", api.lease_revoke)
    r.add_post("/v1/leases/{lease_id}/keepalive", api.lease_keepalive)
    api.etcd = EtcdService(node, config, api.forward_command, api.lease_call, api.admin_call)
    add_gateway_routes(r, api.etcd, _streaming, forwarded_header=FORWARDED_HEADER)
    return app, api


class ApiServer:
    """Runs :func:`build_app` on ``config.api_addr`` (port 0 picks a free port).

    The port is served by :class:`~raftkv.server.fasthttp.FastHttpServer`:
    every connection is accepted, capped (``max_connections``) and held to the
    HTTP deadlines there (its Rule 4). With ``fast_path`` (the default unless
    ``RAFTKV_NO_FAST_HTTP=1``) it answers the hot KV routes itself and hands
    every other connection to the aiohttp application (Rule 5); without it, it
    hands every connection to aiohttp as soon as it is made.
    """

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

    @property
    def grpc_port(self) -> int | None:
        """The etcd gRPC API's port (``None``: not served)."""
        return self.grpc.port if self.grpc is not None else None

    async def start(self) -> None:
        config = self.config
        app, api = _build(self.node, config)
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
            api.serve_fast,
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
            assert api.etcd is not None
            self.grpc = EtcdGrpcServer(api.etcd, config)
            try:
                await self.grpc.start()
            except BaseException:
                await self.stop(abort=True)
                raise
            api.etcd.grpc_addr = (config.grpc_addr[0], self.grpc.port)
        logger.info(
            "http api listening",
            extra={
                "fields": {
                    "addr": f"{host}:{self.port}",
                    "max_connections": self.fast.max_connections,
                }
            },
        )

    def _open_connections(self) -> int:
        return self.fast.open_connections if self.fast is not None else 0

    @web.middleware
    async def _track_request(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tell the connection aiohttp serves when a request runs (its deadlines)."""
        conn = self.fast.handed_off_connection(request.protocol) if self.fast else None
        if conn is None:
            return await handler(request)
        conn.request_started(request.content)
        request[_CONNECTION] = conn
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
    await node.start()
    api = ApiServer(node, config)
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
