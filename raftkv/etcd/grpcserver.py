"""The etcd v3 gRPC API of one node: grpcio's asyncio server in the node's event loop.

Rule 1: this module only decodes, authenticates and encodes; every method's
answer is :class:`~raftkv.etcd.service.EtcdService`'s. Methods raftkv does not
serve answer UNIMPLEMENTED with a message naming them (streams included), so a
client learns at once what is missing instead of waiting.

Rule 2: the same security as the HTTP API (docs/security.md). With TLS the port
serves TLS with the node's certificate, requiring a client certificate with
``--tls-api-client-auth``. With ``--client-token-file`` every call needs a token,
as etcd's ``token`` metadata (what etcd clients send after ``Authenticate``;
``Auth.Authenticate`` with any user name and a token as the password answers
that token, so ``etcdctl --user NAME:TOKEN`` works) or as ``authorization:
Bearer TOKEN``; none or an unknown one is UNAUTHENTICATED, a read-only token
on a write PERMISSION_DENIED.

Rule 3: the same limits: a message above ``--max-body-bytes`` is refused by
gRPC itself (RESOURCE_EXHAUSTED), calls beyond ``--max-concurrent-requests``
answer "etcdserver: too many requests".
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import grpc
from google.protobuf.message import Message

from raftkv.etcd import errors
from raftkv.etcd.errors import EtcdError
from raftkv.etcd.pb import rpc_pb2
from raftkv.etcd.service import EtcdService
from raftkv.server.config import ServerConfig
from raftkv.server.security import bearer_token

__all__ = ["EtcdGrpcServer"]

logger = logging.getLogger(__name__)


_WRITES: Final = frozenset(
    {
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/DeleteRange",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.KV/Compact",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Lease/LeaseGrant",
        "/etcdserverpb.Lease/LeaseRevoke",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Cluster/MemberAdd",
        "/etcdserverpb.Cluster/MemberRemove",
        "/etcdserverpb.Cluster/MemberPromote",
        "/etcdserverpb.Cluster/MemberUpdate",
    }
)
# Every method of etcd's services that raftkv does not serve yet, with why.
_UNSERVED: Final = {
    "Maintenance": dict.fromkeys(
        ("Defragment", "Hash", "HashKV", "Snapshot", "MoveLeader", "Downgrade"), ""
    ),
    "Auth": dict.fromkeys(
        (
            "AuthEnable",
            "AuthDisable",
            "AuthStatus",
            "UserAdd",
            "UserGet",
            "UserList",
            "UserDelete",
            "UserChangePassword",
            "UserGrantRole",
            "UserRevokeRole",
            "RoleAdd",
            "RoleGet",
            "RoleList",
            "RoleDelete",
            "RoleGrantPermission",
            "RoleRevokePermission",
        ),
        "raftkv authenticates with client tokens (docs/security.md)",
    ),
}
_AUTHENTICATE: Final = "/etcdserverpb.Auth/Authenticate"
REQUIRE_LEADER_KEY: Final = "hasleader"
HAS_LEADER: Final = "true"
"""The metadata etcd's ``clientv3.WithRequireLeader`` sends: the stream ends
with "etcdserver: no leader" when the node has had no leader for an election
timeout (and cannot start without one)."""

Handler = Callable[[Any, str | None], Awaitable[Message]]
StreamHandler = Callable[[AsyncIterator[Any], str | None, dict[str, str]], AsyncIterator[Message]]
"""A bidirectional stream's handler: the requests, the ``Authorization`` and
the call's metadata; its responses."""


def _metadata(context: Any) -> dict[str, str]:
    return {key: value for key, value in context.invocation_metadata() or ()}


class EtcdGrpcServer:
    """Serves :class:`EtcdService` on ``config.grpc_addr`` (port 0 picks a free port).

    Args:
        service: the handlers.
        config: the node's configuration (address, TLS, tokens, limits).
    """

    def __init__(self, service: EtcdService, config: ServerConfig) -> None:
        assert config.grpc_addr is not None
        self.service = service
        self.config = config
        self.port = config.grpc_addr[1]
        self._server: Any = None
        self._inflight = 0

    # ------------------------------------------------------------------ guard

    def _token(self, metadata: dict[str, str]) -> str | None:
        token = metadata.get("token")
        return token if token is not None else bearer_token(metadata.get("authorization"))

    def _authorize(self, method: str, metadata: dict[str, str]) -> str | None:
        """Rule 2: the ``Authorization`` to forward writes with (None without tokens)."""
        tokens = self.config.client_tokens
        if tokens is None or method == _AUTHENTICATE:
            return None  # Authenticate is how a client gets its token
        token = self._token(metadata)
        entry = tokens.lookup(token) if token is not None else None
        if entry is None:
            raise errors.INVALID_AUTH_TOKEN
        if method in _WRITES and not entry.can_write:
            raise errors.PERMISSION_DENIED
        return f"Bearer {token}"

    def _unary(self, method: str, request_type: type[Message], handler: Handler) -> Any:
        async def serve(request: Message, context: Any) -> Message:
            try:
                if self._inflight >= self.config.max_concurrent_requests:
                    raise errors.TOO_MANY_REQUESTS
                authorization = self._authorize(method, _metadata(context))
                self._inflight += 1
                try:
                    return await handler(request, authorization)
                finally:
                    self._inflight -= 1
            except EtcdError as exc:
                await context.abort(grpc.StatusCode[exc.code.name], exc.message)
                raise AssertionError("unreachable") from None  # abort raises

        return grpc.unary_unary_rpc_method_handler(
            serve,
            request_deserializer=request_type.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    def _stream(self, method: str, request_type: type[Message], handler: StreamHandler) -> Any:
        """A bidirectional stream (Watch, LeaseKeepAlive): authorized once, when it
        opens; it does not count against ``--max-concurrent-requests`` (a watch
        lives for hours); an error ends it with etcd's code and message."""

        async def serve(requests: AsyncIterator[Message], context: Any) -> AsyncIterator[Message]:
            try:
                metadata = _metadata(context)
                authorization = self._authorize(method, metadata)
                async for response in handler(requests, authorization, metadata):
                    yield response
            except EtcdError as exc:
                await context.abort(grpc.StatusCode[exc.code.name], exc.message)

        return grpc.stream_stream_rpc_method_handler(
            serve,
            request_deserializer=request_type.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )

    def _unserved(self, service: str, method: str, why: str) -> Any:
        error = errors.unimplemented(f"{service}.{method}", why)

        async def refuse(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, error.message)

        async def refuse_stream(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, error.message)
            yield  # an async generator: grpc serves it as a stream

        identity = bytes  # the request is never decoded
        if method == "Snapshot":
            return grpc.unary_stream_rpc_method_handler(
                refuse_stream, request_deserializer=identity, response_serializer=identity
            )
        return grpc.unary_unary_rpc_method_handler(
            refuse, request_deserializer=identity, response_serializer=identity
        )

    async def _authenticate(
        self, request: rpc_pb2.AuthenticateRequest, authorization: str | None
    ) -> rpc_pb2.AuthenticateResponse:
        tokens = self.config.client_tokens
        if tokens is None:
            raise errors.EtcdError(
                errors.Code.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"
            )
        if tokens.lookup(request.password) is None:
            raise errors.EtcdError(
                errors.Code.INVALID_ARGUMENT,
                "etcdserver: authentication failed, invalid user ID or password",
            )
        return rpc_pb2.AuthenticateResponse(header=self.service.header(), token=request.password)

    def _handlers(self) -> list[Any]:
        s = self.service

        async def range_(req: Any, auth: str | None) -> Message:
            return await s.range(req)

        async def status(req: Any, auth: str | None) -> Message:
            return await s.status(req)

        async def member_list(req: Any, auth: str | None) -> Message:
            return await s.member_list(req)

        def keepalive(
            requests: AsyncIterator[Any], auth: str | None, metadata: dict[str, str]
        ) -> AsyncIterator[Message]:
            return s.lease_keepalive(requests, auth)

        def watch(
            requests: AsyncIterator[Any], auth: str | None, metadata: dict[str, str]
        ) -> AsyncIterator[Message]:
            # etcd's clients send it with WithRequireLeader (etcdctl watch, lock, elect).
            require_leader = metadata.get(REQUIRE_LEADER_KEY) == HAS_LEADER
            return s.watch(requests, require_leader=require_leader)

        streams: dict[str, dict[str, tuple[type[Message], StreamHandler]]] = {
            "Watch": {"Watch": (rpc_pb2.WatchRequest, watch)},
            "Lease": {"LeaseKeepAlive": (rpc_pb2.LeaseKeepAliveRequest, keepalive)},
        }
        served: dict[str, dict[str, tuple[type[Message], Handler]]] = {
            "KV": {
                "Range": (rpc_pb2.RangeRequest, range_),
                "Put": (rpc_pb2.PutRequest, s.put),
                "DeleteRange": (rpc_pb2.DeleteRangeRequest, s.delete_range),
                "Txn": (rpc_pb2.TxnRequest, s.txn),
                "Compact": (rpc_pb2.CompactionRequest, s.compact),
            },
            "Maintenance": {
                "Status": (rpc_pb2.StatusRequest, status),
                "Alarm": (rpc_pb2.AlarmRequest, s.alarm),
            },
            "Lease": {
                "LeaseGrant": (rpc_pb2.LeaseGrantRequest, s.lease_grant),
                "LeaseRevoke": (rpc_pb2.LeaseRevokeRequest, s.lease_revoke),
                "LeaseTimeToLive": (rpc_pb2.LeaseTimeToLiveRequest, s.lease_time_to_live),
                "LeaseLeases": (rpc_pb2.LeaseLeasesRequest, s.lease_leases),
            },
            "Cluster": {
                "MemberList": (rpc_pb2.MemberListRequest, member_list),
                "MemberAdd": (rpc_pb2.MemberAddRequest, s.member_add),
                "MemberRemove": (rpc_pb2.MemberRemoveRequest, s.member_remove),
                "MemberPromote": (rpc_pb2.MemberPromoteRequest, s.member_promote),
                "MemberUpdate": (rpc_pb2.MemberUpdateRequest, s.member_update),
            },
            "Auth": {"Authenticate": (rpc_pb2.AuthenticateRequest, self._authenticate)},
        }
        handlers = []
        for service in ("KV", "Watch", "Lease", "Cluster", "Maintenance", "Auth"):
            methods: dict[str, Any] = {}
            for method, (request_type, handler) in served.get(service, {}).items():
                path = f"/etcdserverpb.{service}/{method}"
                methods[method] = self._unary(path, request_type, handler)
            for method, (request_type, stream) in streams.get(service, {}).items():
                path = f"/etcdserverpb.{service}/{method}"
                methods[method] = self._stream(path, request_type, stream)
            for method, why in _UNSERVED.get(service, {}).items():
                methods[method] = self._unserved(service, method, why)
            handlers.append(
                grpc.method_handlers_generic_handler(f"etcdserverpb.{service}", methods)
            )
        return handlers

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config = self.config
        assert config.grpc_addr is not None
        options = [
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.max_concurrent_streams", 1000),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers(tuple(self._handlers()))
        host, port = config.grpc_addr
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if config.tls:
            assert config.tls_cert_file and config.tls_key_file and config.tls_ca_file
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key_file).read_bytes(), Path(config.tls_cert_file).read_bytes())],
                root_certificates=Path(config.tls_ca_file).read_bytes(),
                require_client_auth=config.tls_api_client_auth,
            )
            add = functools.partial(server.add_secure_port, addr, credentials)
        else:
            add = functools.partial(server.add_insecure_port, addr)
        try:
            self.port = add()
        except RuntimeError as exc:  # grpcio's "Failed to bind"
            raise OSError(f"cannot listen on --grpc-addr {host}:{port}: {exc}") from None
        if not self.port:
            raise OSError(f"cannot listen on --grpc-addr {host}:{port}")
        await server.start()
        self._server = server
        logger.info("etcd grpc api listening", extra={"fields": {"addr": f"{host}:{self.port}"}})

    async def stop(self, *, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
