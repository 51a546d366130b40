"""Requests a follower hands to the leader, and the leader's side of them.

Rule 1: a node that is not the leader hands writes to the leader it knows as
the command it validated -- never as a URL rebuilt from the request, whose
decoded path could name another key. Over the peer link when it is up
(:meth:`RaftNode.forward`), else over HTTP as ``POST /v1/forward`` with the
encoded command as the body, preserving the client's ``Authorization``. HTTP
stays in use when clients authenticate with tokens (the leader checks the
client's token again), for a request that was already forwarded once, and
when the link to the leader is down (so the client gets a quick 503, not a
504). Lease keep-alives and time-to-lives travel the same ways; membership
changes and leadership transfers over HTTP to fixed paths built from
validated ids. The leader's status and body are relayed unchanged, with an
``X-Raftkv-Leader`` header.

Rule 2: a forwarded request is never forwarded again
(:data:`~raftkv.server.http.request.FORWARDED_HEADER`; over the peer link,
the leader does not forward at all), so leadership churn cannot make
requests loop: a node that is not the leader any more answers 503 ``not the
leader``. Linearizable reads are served by the node that received them
(ReadIndex); they are never forwarded.

Rule 3: the leader stamps the log time (``time_ms``) the state machine uses
for session expiry as it proposes a forwarded command, and answers it from a
callback on the proposal (no task per forwarded write).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine
from typing import Any, Final

import aiohttp

from raftkv.core.types import NodeId
from raftkv.etcd.service import forwarded_answer
from raftkv.replica.kv import (
    ERR_LEASE_NOT_FOUND,
    Alarm,
    Command,
    EtcdTxn,
    Get,
    InvalidCommand,
    LeaseCheckpoint,
    LeaseRevoke,
    Range,
    decode_command,
    encode_command,
)
from raftkv.server.config import ServerConfig
from raftkv.server.errors import BadRequest, NoLeader, OutcomeUnknown, ServerError
from raftkv.server.fasthttp import Answer
from raftkv.server.http.answers import answer, answer_for
from raftkv.server.http.request import FORWARDED_HEADER
from raftkv.server.kvjson import write_answer
from raftkv.server.node import ForwardReply, RaftNode
from raftkv.server.node.leases import REQUEST_KEEPALIVE, LeaseRequest

__all__ = ["COMMAND_CONTENT_TYPE", "FORWARD_ROUTE", "Forwarder", "now_ms"]

logger = logging.getLogger(__name__)

FORWARD_ROUTE: Final = "/v1/forward"
"""Writes a follower forwards over HTTP: the encoded command (Rule 1)."""
COMMAND_CONTENT_TYPE: Final = "application/vnd.raftkv.command+msgpack"


def now_ms() -> int:
    """The log time a leader stamps on a command (Rule 3)."""
    return int(time.time() * 1000)


def _lease_not_found(lease_id: int) -> Answer:
    return answer(404, {"error": ERR_LEASE_NOT_FOUND, "id": lease_id})


class Forwarder:
    """Hands requests to the leader, and serves those handed to this node.

    ``http`` is the client session for forwards over HTTP, set while the API
    runs (:mod:`raftkv.server.http.aio` makes and closes it).
    """

    def __init__(self, node: RaftNode, config: ServerConfig) -> None:
        self.node = node
        self.config = config
        self.http: aiohttp.ClientSession | None = None
        # Forwarded lease requests being served (a reference keeps each task alive).
        self._tasks: set[asyncio.Future[None]] = set()

    # -- this node forwards ----------------------------------------------------

    async def over_http(
        self,
        leader: NodeId | None,
        method: str,
        path: str,
        body: bytes,
        *,
        authorization: str | None,
        forwarded: bool,
        content_type: str = "application/json",
    ) -> Answer:
        """Send a request to the leader's API over HTTP and relay its answer.

        ``path`` is built by the caller from validated values (a fixed route,
        a checked member id), never taken from the client's request.

        Raises:
            OutcomeUnknown: the connection broke or timed out once the request
                was sent (every forwarded request changes something).
        """
        node = self.node
        member = node.members.get(leader) if leader is not None else None
        if leader is None or member is None or leader == node.node_id:
            return answer_for(NoLeader("no leader"))
        if forwarded:
            # Already forwarded once: the sender's view was stale; let the client retry.
            return answer_for(NoLeader("not the leader", leader=leader))
        assert self.http is not None
        headers = {FORWARDED_HEADER: node.node_id, "Content-Type": content_type}
        if authorization is not None:
            headers["Authorization"] = authorization
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
            return answer_for(NoLeader("leader unreachable", leader=leader))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise OutcomeUnknown(f"lost contact with the leader: {exc}") from None

    def _over_http(self, leader: NodeId | None, forwarded: bool) -> bool:
        """Whether a request goes to ``leader`` over HTTP, not the peer link (Rule 1)."""
        return (
            self.config.client_tokens is not None or forwarded or not self.node.can_forward(leader)
        )

    async def write(
        self,
        leader: NodeId | None,
        command: Command,
        *,
        authorization: str | None,
        forwarded: bool,
    ) -> Answer:
        """Hand a validated write to the leader, as the encoded command (Rule 1)."""
        payload = encode_command(command)
        if self._over_http(leader, forwarded):
            return await self.over_http(
                leader,
                "POST",
                FORWARD_ROUTE,
                payload,
                authorization=authorization,
                forwarded=forwarded,
                content_type=COMMAND_CONTENT_TYPE,
            )
        assert leader is not None
        status, body = await self.node.forward(payload)
        return status, body, {"X-Raftkv-Leader": leader}

    async def lease(
        self, request: LeaseRequest, *, authorization: str | None, forwarded: bool
    ) -> Answer:
        """Serve a keep-alive or time-to-live on the leader, or have the leader serve it."""
        node = self.node
        if node.is_leader:
            try:
                return await self.serve_lease(request)
            except NoLeader as exc:
                if exc.leader is None or exc.leader == node.node_id:
                    raise
                leader: NodeId | None = NodeId(exc.leader)
        else:
            leader = node.leader
        if self._over_http(leader, forwarded):
            lease_id = request.lease_id
            if request.kind == REQUEST_KEEPALIVE:
                method, path = "POST", f"/v1/leases/{lease_id}/keepalive"
            else:
                method = "GET"
                path = f"/v1/leases/{lease_id}" + ("?keys=true" if request.keys else "")
            return await self.over_http(
                leader, method, path, b"", authorization=authorization, forwarded=forwarded
            )
        assert leader is not None
        status, body = await node.forward(request.encode())
        return status, body, {"X-Raftkv-Leader": leader}

    async def serve_lease(self, request: LeaseRequest) -> Answer:
        """On the leader: a keep-alive or a time-to-live (after a ReadIndex round)."""
        node = self.node
        lease_id = request.lease_id
        if request.kind == REQUEST_KEEPALIVE:
            ttl = await node.lease_keepalive(lease_id)
            if ttl is None:
                return _lease_not_found(lease_id)
            return answer(200, {"id": lease_id, "ttl": ttl})
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
        return answer(200, body)

    # -- another API's calls (the etcd API's) ------------------------------------

    async def forward_command(
        self, command: Command, authorization: str | None
    ) -> tuple[int, bytes]:
        """Hand a validated write of another API to the leader; its (status, body)."""
        status, body, _ = await self.write(
            self.node.leader, command, authorization=authorization, forwarded=False
        )
        return status, body

    async def lease_call(
        self, request: LeaseRequest, authorization: str | None
    ) -> tuple[int, bytes]:
        """Serve a keep-alive or time-to-live of another API as ``/v1``'s lease
        routes do; its (status, body) in ``/v1``'s JSON."""
        status, body, _ = await self.lease(request, authorization=authorization, forwarded=False)
        return status, body

    async def admin_call(
        self, path: str, body: bytes, authorization: str | None
    ) -> tuple[int, bytes]:
        """Send another API's membership request to the leader's JSON gateway
        (``path``, a fixed route); its (status, body). The leader does not
        forward it again (Rule 2)."""
        status, answer_body, _ = await self.over_http(
            self.node.leader, "POST", path, body, authorization=authorization, forwarded=False
        )
        return status, answer_body

    # -- the leader serves --------------------------------------------------------

    def serve_peer(self, payload: bytes, reply: ForwardReply) -> None:
        """On the leader: serve a request a follower forwarded over the peer link
        (the node's :attr:`~RaftNode.forward_handler`).

        The command was validated on the follower (a member, authenticated by
        the peer link); it is decoded again here. ``reply`` gets the (status,
        body) once the entry is applied (or the proposal fails).
        """
        try:
            lease_request = LeaseRequest.decode(payload)
            if lease_request is not None:
                self._spawn(self._answer_peer_lease(lease_request, reply))
                return
            command = decode_command(payload)
        except (InvalidCommand, BadRequest) as exc:
            reply(*answer_for(exc)[:2])
            return
        self.propose(command, reply)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_peer_lease(self, request: LeaseRequest, reply: ForwardReply) -> None:
        node = self.node
        if not node.is_leader:  # Rule 2
            reply(*answer_for(NoLeader("not the leader", leader=node.leader))[:2])
            return
        try:
            status, body, _ = await self.serve_lease(request)
        except Exception as exc:
            status, body, _ = answer_for(exc, "forwarded", "lease request")
        node.metrics.http("forwarded-lease", status)
        reply(status, body)

    def propose(self, command: Command, reply: ForwardReply) -> None:
        """On the leader: propose a forwarded write; ``reply`` gets its answer (Rule 3)."""
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
                raise NoLeader("not the leader", leader=node.leader)  # Rule 2
            node.admit_write(command)
            node.propose_nowait(
                encode_command(command, time_ms=now_ms()),
                on_done=functools.partial(self._applied, command, reply),
            )
        except (ServerError, InvalidCommand) as exc:
            reply(*answer_for(exc)[:2])

    def _applied(
        self, command: Command, reply: ForwardReply, proposed: asyncio.Future[object]
    ) -> None:
        if proposed.cancelled():
            return  # nothing cancels it; the follower's forward would time out (504)
        exc = proposed.exception()
        if exc is not None:
            reply(*answer_for(exc, "forwarded", "write")[:2])
            return
        if isinstance(command, EtcdTxn):
            status, body = forwarded_answer(proposed.result())
        else:
            status, body, _ = write_answer(proposed.result(), command, self.node.node_id)
        self.node.metrics.http("forwarded-write", status)
        reply(status, body)
