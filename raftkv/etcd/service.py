"""The etcd v3 API's handlers on one node, for the gRPC server and the JSON gateway.

Rule 1: one handler per etcd method, taking and returning etcd's protobuf
messages and raising :class:`~raftkv.etcd.errors.EtcdError`; the transports
(:mod:`raftkv.etcd.grpcserver`, :mod:`raftkv.etcd.gateway`) only decode,
authenticate and encode.

Rule 2: reads and writes take the node's own paths, as ``/v1`` does. A
``Range`` is linearizable (ReadIndex, on followers too) unless ``serializable``,
then served from local state. A write is an
:class:`~raftkv.replica.kv.EtcdTxn` (``Put``, ``DeleteRange``, ``Txn``) or a
:class:`~raftkv.replica.kv.Compact`, proposed on the leader after the space
quota's check; a follower forwards it as the ``/v1`` API does (over the peer
link, or over HTTP with the client's token), through the ``forward`` callable
the API gives it. The leader answers a forwarded ``EtcdTxn`` with
:func:`forwarded_answer`, which :func:`_forwarded_result` reads back.

Rule 3: identity. A member's id is :func:`~raftkv.etcd.convert.name_id` of its
node id, the cluster's :func:`cluster_id` of its founding members; every answer's header carries
them, the store revision and this node's Raft term.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from raftkv.core.types import NodeId
from raftkv.etcd import convert, errors
from raftkv.etcd.errors import EtcdError
from raftkv.etcd.pb import rpc_pb2
from raftkv.etcd.watch import WatchSession
from raftkv.limits import NODE_ID_RULE, is_node_id
from raftkv.replica.kv import (
    ERR_COMPACTED,
    ERR_FUTURE_REVISION,
    ERR_LEASE_EXISTS,
    ERR_LEASE_NOT_FOUND,
    ERR_NOSPACE,
    ERR_NOT_FOUND,
    Alarm,
    Command,
    Compact,
    EtcdAnswer,
    EtcdTxn,
    KVResult,
    KVStateMachine,
    LeaseGrant,
    LeaseGranted,
    LeaseRevoke,
    LeaseRevoked,
    encode_command,
)
from raftkv.replica.leases import MAX_LEASE_ID, MAX_LEASE_TTL_S
from raftkv.replica.membership import Member
from raftkv.replica.mvcc import MVCCError, TxnOp
from raftkv.server.config import ServerConfig
from raftkv.server.errors import (
    BadRequest,
    LearnerNotReady,
    MemberNotFound,
    MemberRemoved,
    NodeFailed,
    NodeStopped,
    NoLeader,
    NoSpace,
    OutcomeUnknown,
    ProposalLost,
    RaftAddressTaken,
    ReadTimeout,
    ServerError,
)
from raftkv.server.node import RaftNode
from raftkv.server.node.leases import REQUEST_KEEPALIVE, REQUEST_TTL, LeaseRequest

__all__ = [
    "CLUSTER_NAME",
    "SERVER_VERSION",
    "ForwardWrite",
    "LeaseCall",
    "AdminCall",
    "EtcdService",
    "forwarded_answer",
]

logger = logging.getLogger(__name__)

CLUSTER_NAME: Final = "raftkv"
"""The name the cluster id is derived from when the founding members are not
known (a data dir from before log-based bootstrap)."""
SERVER_VERSION: Final = "3.5.0"
"""The etcd version raftkv answers as (``Status``, ``GET /version``): the API it
speaks is etcd 3.5's, and clients gate features on this number."""

ForwardWrite = Callable[[Command, str | None], Awaitable[tuple[int, bytes]]]
"""Have the leader serve a validated write, with the client's ``Authorization``
(for the leader's token check): its (HTTP status, body)."""

AdminCall = Callable[[str, bytes, str | None], Awaitable[tuple[int, bytes]]]
"""On a follower: send a membership request (a gateway path such as
``/v3/cluster/member/add``, its JSON body, the client's ``Authorization``) to
the leader's HTTP API: its (HTTP status, body)."""

LeaseCall = Callable[[LeaseRequest, str | None], Awaitable[tuple[int, bytes]]]
"""Serve a keep-alive or time-to-live as ``/v1``'s lease routes do (on the
leader after a ReadIndex round, or forwarded to it): its (HTTP status, ``/v1``
JSON body)."""

M = TypeVar("M", bound=Message)

_FORWARDED_OK: Final = 200
_FORWARDED_REFUSED: Final = 409


def _now_ms() -> int:
    return int(time.time() * 1000)


def forwarded_answer(answer: object) -> tuple[int, bytes]:
    """On the leader: the (status, body) a follower gets for its forwarded
    ``EtcdTxn``: 200 and the ``TxnResponse`` (no header), or 409 and
    ``{"error": ERR_*, "compact_revision": N}``."""
    if not isinstance(answer, EtcdAnswer):
        return 500, b'{"error": "not an etcd answer"}'
    if answer.result is not None:
        return _FORWARDED_OK, convert.txn_response(answer.result).SerializeToString()
    body = {"error": answer.error, "compact_revision": answer.compact_revision}
    return _FORWARDED_REFUSED, json.dumps(body).encode()


def _answer_error(error: str | None) -> EtcdError:
    """The etcd error of an :class:`EtcdAnswer`'s (or a forwarded answer's) ``error``."""
    if error == ERR_NOSPACE:
        return errors.NO_SPACE
    if error == ERR_COMPACTED:
        return errors.COMPACTED
    if error == ERR_FUTURE_REVISION:
        return errors.FUTURE_REVISION
    if error == ERR_NOT_FOUND:
        return errors.KEY_NOT_FOUND
    if error == ERR_LEASE_NOT_FOUND:
        return errors.LEASE_NOT_FOUND
    if error == ERR_LEASE_EXISTS:
        return errors.LEASE_EXISTS
    return errors.invalid_argument(str(error))


def _server_error(exc: ServerError) -> EtcdError:
    """The etcd error of a runtime error (nothing happened, or the outcome is unknown)."""
    if isinstance(exc, NoSpace):
        return errors.NO_SPACE
    if isinstance(exc, NoLeader | ProposalLost):
        return errors.NO_LEADER
    if isinstance(exc, OutcomeUnknown | ReadTimeout):
        return errors.TIMEOUT
    if isinstance(exc, NodeStopped | NodeFailed):
        return errors.STOPPED
    return EtcdError(errors.Code.UNAVAILABLE, f"etcdserver: {exc.message}")


def _forwarded_error(status: int, body: bytes) -> EtcdError:
    """The etcd error of a leader's refusal of a forwarded write (``/v1``'s statuses)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = {}
    message = parsed.get("error") if isinstance(parsed, dict) else None
    if status == _FORWARDED_REFUSED:
        return _answer_error(message)
    if status == 404 and message == ERR_LEASE_NOT_FOUND:
        return errors.LEASE_NOT_FOUND
    if status == 410:
        return errors.COMPACTED
    if status == 507:
        return errors.NO_SPACE
    if status == 503:
        return errors.NO_LEADER
    if status == 504:
        return errors.TIMEOUT
    if status == 401:
        return errors.INVALID_AUTH_TOKEN
    if status == 403:
        return errors.PERMISSION_DENIED
    if status == 400 and message == ERR_FUTURE_REVISION:
        return errors.FUTURE_REVISION
    if status in (400, 413):
        return errors.invalid_argument(str(message))
    return EtcdError(errors.Code.UNKNOWN, f"etcdserver: leader answered {status}: {message}")


class EtcdService:
    """The etcd API's handlers on ``node`` (the module rules).

    Args:
        node: the node served.
        config: its configuration (timeouts, limits, TLS, advertised addresses).
        forward: how a follower hands a write to the leader (``/v1``'s forwarding).
        lease_call: how keep-alives and time-to-lives are served (``/v1``'s path).
        admin_call: how a follower hands a membership change to the leader
            (its JSON gateway); without it a follower answers "no leader".
    """

    def __init__(
        self,
        node: RaftNode,
        config: ServerConfig,
        forward: ForwardWrite,
        lease_call: LeaseCall,
        admin_call: AdminCall | None = None,
    ) -> None:
        self.node = node
        self._admin_call = admin_call
        self.config = config
        self._forward = forward
        self._lease_call = lease_call
        self.member_id = convert.name_id(node.node_id)
        # Where this node's gRPC API listens (its port once bound), for MemberList.
        self.grpc_addr = config.grpc_addr

    # ------------------------------------------------------------------ helpers

    def _kv(self) -> KVStateMachine:
        sm = self.node.state_machine
        if not isinstance(sm, KVStateMachine):
            raise errors.unimplemented("the KV service on a node without the KV store")
        return sm

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        """This node's header; ``revision`` defaults to the store's current one."""
        if revision is None:
            revision = self._kv().revision
        return convert.header(self.cluster_id, self.member_id, revision, self.node.term)

    @property
    def cluster_id(self) -> int:
        """:func:`cluster_id` of the founding members."""
        return cluster_id(self.node.founders)

    def _check_size(self, txn: TxnOp) -> None:
        """etcd's request size limit, on our key and value limits."""
        config = self.config
        for op in (*txn.success, *txn.failure):
            key = getattr(op, "key", b"")
            if len(key) > config.max_key_bytes:
                raise errors.REQUEST_TOO_LARGE
            if len(getattr(op, "value", b"")) > config.max_value_bytes:
                raise errors.REQUEST_TOO_LARGE
            if isinstance(op, TxnOp):
                self._check_size(op)

    async def _propose(self, command: Command, authorization: str | None) -> object:
        """The result of ``command`` applied on the leader (Rule 2): the state
        machine's answer, or (forwarded) an ``EtcdTxn``'s ``TxnResponse`` or
        another command's ``/v1`` JSON answer as a dict."""
        node = self.node
        try:
            if node.is_leader:
                node.admit_write(command)
                return await node.propose(
                    encode_command(command), timeout=self.config.request_timeout_s
                )
            if node.leader is None:
                raise errors.NO_LEADER
            status, body = await self._forward(command, authorization)
        except ServerError as exc:
            raise _server_error(exc) from None
        if status != _FORWARDED_OK:
            raise _forwarded_error(status, body)
        if isinstance(command, EtcdTxn):
            return rpc_pb2.TxnResponse.FromString(body)
        try:
            parsed: object = json.loads(body)
        except ValueError:
            parsed = None
        return parsed if isinstance(parsed, dict) else {}

    async def _write(self, txn: TxnOp, authorization: str | None) -> rpc_pb2.TxnResponse:
        """An ``EtcdTxn`` proposed (or forwarded) and answered, header and all."""
        self._check_size(txn)
        command = EtcdTxn(
            compares=txn.compares, success=txn.success, failure=txn.failure, time_ms=_now_ms()
        )
        result = await self._propose(command, authorization)
        if isinstance(result, EtcdAnswer):
            if result.result is None:
                raise _answer_error(result.error)
            response = convert.txn_response(result.result)
        elif isinstance(result, rpc_pb2.TxnResponse):
            response = result
        else:
            raise EtcdError(errors.Code.INTERNAL, "etcdserver: unexpected answer to a write")
        response.header.CopyFrom(self.header(response.header.revision))
        return response

    # ------------------------------------------------------------------ KV

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        op = convert.range_op(req)
        sm = self._kv()
        try:
            if req.serializable:
                self.node.metrics.read("stale")
            else:
                await self.node.read_barrier(timeout=self.config.request_timeout_s)
        except ServerError as exc:
            raise _server_error(exc) from None
        try:
            result = sm.etcd_range(op)
        except MVCCError as exc:
            raise convert.mvcc_error(exc) from None
        return convert.range_response(result, self.header(result.revision))

    async def put(
        self, req: rpc_pb2.PutRequest, authorization: str | None = None
    ) -> rpc_pb2.PutResponse:
        txn = convert.txn_op(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=req)]))
        response = await self._write(txn, authorization)
        put = response.responses[0].response_put
        put.header.CopyFrom(response.header)
        return put

    async def delete_range(
        self, req: rpc_pb2.DeleteRangeRequest, authorization: str | None = None
    ) -> rpc_pb2.DeleteRangeResponse:
        txn = convert.txn_op(
            rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_delete_range=req)])
        )
        response = await self._write(txn, authorization)
        deleted = response.responses[0].response_delete_range
        deleted.header.CopyFrom(response.header)
        return deleted

    async def txn(
        self, req: rpc_pb2.TxnRequest, authorization: str | None = None
    ) -> rpc_pb2.TxnResponse:
        return await self._write(convert.txn_op(req), authorization)

    async def compact(
        self, req: rpc_pb2.CompactionRequest, authorization: str | None = None
    ) -> rpc_pb2.CompactionResponse:
        sm = self._kv()
        if req.revision <= sm.compact_revision:
            raise errors.COMPACTED
        if req.revision > sm.revision:
            raise errors.FUTURE_REVISION
        command = Compact(revision=req.revision, time_ms=_now_ms())
        result = await self._propose(command, authorization)
        if isinstance(result, KVResult) and not result.ok:
            raise _answer_error(result.error)
        return rpc_pb2.CompactionResponse(header=self.header())

    # ------------------------------------------------------------------ Maintenance

    def _alarms(self) -> list[rpc_pb2.AlarmMember]:
        if not self._kv().alarm:
            return []
        # The alarm is the cluster's (one replicated flag); etcd lists it per
        # member that raised it. raftkv names the leader, which raised it.
        leader = self.node.leader
        member = convert.name_id(leader) if leader is not None else self.member_id
        return [rpc_pb2.AlarmMember(memberID=member, alarm=rpc_pb2.NOSPACE)]

    async def status(self, req: rpc_pb2.StatusRequest) -> rpc_pb2.StatusResponse:
        try:
            status = self.node.status()
        except ServerError as exc:
            raise _server_error(exc) from None
        sm = self._kv()
        alarms = [f"memberID:{a.memberID} alarm:NOSPACE " for a in self._alarms()]
        return rpc_pb2.StatusResponse(
            header=self.header(),
            version=SERVER_VERSION,
            dbSize=sm.size_bytes,
            dbSizeInUse=sm.size_bytes,
            leader=convert.name_id(status.leader) if status.leader is not None else 0,
            raftIndex=status.commit_index,
            raftTerm=status.term,
            raftAppliedIndex=status.applied_index,
            errors=alarms,
            isLearner=self.node.node_id in status.learners,
        )

    async def alarm(
        self, req: rpc_pb2.AlarmRequest, authorization: str | None = None
    ) -> rpc_pb2.AlarmResponse:
        if req.action == rpc_pb2.AlarmRequest.GET:
            return rpc_pb2.AlarmResponse(header=self.header(), alarms=self._alarms())
        if req.action == rpc_pb2.AlarmRequest.ACTIVATE:
            raise errors.invalid_argument(
                "raftkv raises the NOSPACE alarm itself, when the store passes --quota-bytes"
            )
        if req.alarm in (rpc_pb2.NONE, rpc_pb2.NOSPACE) and self._kv().alarm:
            # The quota raises it again at once if the store is still over it.
            alarms = self._alarms()
            await self._propose(Alarm(active=False, time_ms=_now_ms()), authorization)
            return rpc_pb2.AlarmResponse(header=self.header(), alarms=alarms)
        return rpc_pb2.AlarmResponse(header=self.header())

    # ------------------------------------------------------------------ Watch

    def watch(
        self, requests: AsyncIterator[rpc_pb2.WatchRequest], *, require_leader: bool
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """A ``Watch`` stream's responses (:mod:`raftkv.etcd.watch`)."""
        return WatchSession(self, require_leader=require_leader).run(requests)

    # ------------------------------------------------------------------ Lease

    async def lease_grant(
        self, req: rpc_pb2.LeaseGrantRequest, authorization: str | None = None
    ) -> rpc_pb2.LeaseGrantResponse:
        """A lease through the log, as ``POST /v1/leases``: ``ID`` 0 lets this
        node pick one at random; the TTL is raised to the node's minimum."""
        self._kv()
        if req.TTL > MAX_LEASE_TTL_S:
            raise errors.LEASE_TTL_TOO_LARGE
        if req.ID < 0:
            raise errors.invalid_argument(f"lease ids are 1 to {MAX_LEASE_ID}")
        ttl = self.node.leases.grant_ttl(max(req.TTL, 1))
        lease_id = req.ID or _new_lease_id()
        command = LeaseGrant(id=lease_id, ttl_s=ttl, time_ms=_now_ms())
        result = await self._propose(command, authorization)
        if isinstance(result, KVResult) and not result.ok:
            raise _answer_error(result.error)
        if isinstance(result, LeaseGranted):
            lease_id, ttl = result.id, result.ttl_s
        elif isinstance(result, dict):
            lease_id, ttl = int(result.get("id", lease_id)), int(result.get("ttl", ttl))
        return rpc_pb2.LeaseGrantResponse(header=self.header(), ID=lease_id, TTL=ttl)

    async def lease_revoke(
        self, req: rpc_pb2.LeaseRevokeRequest, authorization: str | None = None
    ) -> rpc_pb2.LeaseRevokeResponse:
        """End a lease and delete its keys (one revision), as ``DELETE /v1/leases/ID``."""
        self._kv()
        if not 1 <= req.ID <= MAX_LEASE_ID:
            raise errors.LEASE_NOT_FOUND
        result = await self._propose(LeaseRevoke(id=req.ID, time_ms=_now_ms()), authorization)
        if isinstance(result, KVResult) and not result.ok:
            raise _answer_error(result.error)
        revision = None
        if isinstance(result, LeaseRevoked):
            revision = result.revision
        elif isinstance(result, dict) and isinstance(result.get("revision"), int):
            revision = result["revision"]
        return rpc_pb2.LeaseRevokeResponse(header=self.header(revision))

    async def _lease_request(
        self, request: LeaseRequest, authorization: str | None
    ) -> dict[str, Any] | None:
        """``/v1``'s answer to a keep-alive or time-to-live; None: no such lease."""
        self._kv()
        if not 1 <= request.lease_id <= MAX_LEASE_ID:
            return None
        try:
            status, body = await self._lease_call(request, authorization)
        except ServerError as exc:
            raise _server_error(exc) from None
        if status != _FORWARDED_OK:
            error = _forwarded_error(status, body)
            if error == errors.LEASE_NOT_FOUND:
                return None
            raise error
        parsed = json.loads(body)
        assert isinstance(parsed, dict)
        return parsed

    async def lease_keepalive(
        self,
        requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
        authorization: str | None = None,
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        """One answer per keep-alive, in order, each once the leader confirmed
        it still leads; ``TTL`` 0 for a lease that is gone (etcd's)."""
        async for req in requests:
            request = LeaseRequest(kind=REQUEST_KEEPALIVE, lease_id=req.ID)
            answer = await self._lease_request(request, authorization)
            ttl = int(answer["ttl"]) if answer is not None else 0
            yield rpc_pb2.LeaseKeepAliveResponse(header=self.header(), ID=req.ID, TTL=ttl)

    async def lease_time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest, authorization: str | None = None
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """The leader's view of a lease; ``TTL`` -1 for one that is gone (etcd's)."""
        request = LeaseRequest(kind=REQUEST_TTL, lease_id=req.ID, keys=req.keys)
        answer = await self._lease_request(request, authorization)
        if answer is None:
            return rpc_pb2.LeaseTimeToLiveResponse(header=self.header(), ID=req.ID, TTL=-1)
        return rpc_pb2.LeaseTimeToLiveResponse(
            header=self.header(),
            ID=req.ID,
            TTL=int(answer["ttl"]),
            grantedTTL=int(answer["granted_ttl"]),
            keys=[k.encode("utf-8", "surrogateescape") for k in answer.get("keys", ())],
        )

    async def lease_leases(
        self, req: rpc_pb2.LeaseLeasesRequest, authorization: str | None = None
    ) -> rpc_pb2.LeaseLeasesResponse:
        """Every lease, after a ReadIndex (as ``GET /v1/leases``)."""
        self._kv()
        try:
            await self.node.read_barrier(timeout=self.config.request_timeout_s)
        except ServerError as exc:
            raise _server_error(exc) from None
        leases = [rpc_pb2.LeaseStatus(ID=lease.id) for lease in self.node.leases.leases()]
        return rpc_pb2.LeaseLeasesResponse(header=self.header(), leases=leases)

    # ------------------------------------------------------------------ Cluster

    async def member_list(self, req: rpc_pb2.MemberListRequest) -> rpc_pb2.MemberListResponse:
        try:
            if req.linearizable:
                await self.node.read_barrier(timeout=self.config.request_timeout_s)
            status = self.node.status()
        except ServerError as exc:
            raise _server_error(exc) from None
        scheme = "https" if self.config.tls else "http"
        members = []
        for node_id, member in sorted(self.node.members.items()):
            client_urls = [member.api_url(scheme=scheme)]
            if node_id == self.node.node_id and self.grpc_addr is not None:
                client_urls.insert(0, _url(scheme, self.grpc_addr))
            members.append(
                rpc_pb2.Member(
                    ID=convert.name_id(node_id),
                    name=node_id,
                    peerURLs=[_url(scheme, member.raft)],
                    clientURLs=client_urls,
                    isLearner=NodeId(node_id) in status.learners,
                )
            )
        return rpc_pb2.MemberListResponse(header=self.header(), members=members)

    def _member_pbs(self) -> list[rpc_pb2.Member]:
        """The members this node knows, as ``MemberList`` lists them."""
        scheme = "https" if self.config.tls else "http"
        learners = self.node.status().learners
        return [
            _member_pb(node_id, member, scheme, NodeId(node_id) in learners)
            for node_id, member in sorted(self.node.members.items())
        ]

    def _member_named(self, member_id: int) -> NodeId:
        """The node id whose etcd member id is ``member_id`` (``member not found``)."""
        for node_id in self.node.members:
            if convert.name_id(node_id) == member_id:
                return NodeId(node_id)
        raise errors.MEMBER_NOT_FOUND

    async def _on_leader(self, call: Callable[[], Awaitable[object]]) -> None:
        """Run a membership change on this node, the leader (etcd's errors)."""
        try:
            await call()
        except LearnerNotReady:
            raise errors.LEARNER_NOT_READY from None
        except (MemberRemoved, MemberNotFound):
            raise errors.MEMBER_NOT_FOUND from None
        except RaftAddressTaken:
            raise errors.PEER_URL_EXIST from None
        except BadRequest as exc:
            raise errors.invalid_argument(exc.message) from None
        except ServerError as exc:
            raise _server_error(exc) from None

    async def _by_leader(self, path: str, req: Message, answer: M, authorization: str | None) -> M:
        """On a follower: have the leader serve a membership request (its
        gateway's ``path``, where its membership is the one that counts);
        ``answer`` filled from the leader's, with this node's header."""
        if self._admin_call is None or self.node.leader is None:
            raise errors.NO_LEADER
        body = json_format.MessageToJson(req, preserving_proto_field_name=True).encode()
        try:
            status, raw = await self._admin_call("/v3" + path, body, authorization)
        except ServerError as exc:
            raise _server_error(exc) from None
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = None
        if status != 200:
            if isinstance(parsed, dict) and isinstance(parsed.get("code"), int):
                try:
                    code = errors.Code(parsed["code"])
                except ValueError:
                    code = errors.Code.UNKNOWN
                raise EtcdError(code, str(parsed.get("message", "")))
            raise _forwarded_error(status, raw)
        json_format.ParseDict(parsed, answer, ignore_unknown_fields=True)
        answer.header.CopyFrom(self.header())  # type: ignore[attr-defined]
        return answer

    async def member_add(
        self, req: rpc_pb2.MemberAddRequest, authorization: str | None
    ) -> rpc_pb2.MemberAddResponse:
        """``MemberAdd``: the new member's id and addresses from its peer URLs
        (:func:`parse_peer_urls`), added as ``POST /v1/members`` adds."""
        node_id, member = parse_peer_urls(list(req.peerURLs))
        if not self.node.is_leader:
            answer = rpc_pb2.MemberAddResponse()
            return await self._by_leader("/cluster/member/add", req, answer, authorization)
        members = self.node.members
        if node_id in members:
            raise errors.MEMBER_EXIST
        if node_id in self.node.removed:
            raise errors.invalid_argument(MemberRemoved(node_id).message)
        await self._on_leader(lambda: self.node.add_member(node_id, member, learner=req.isLearner))
        scheme = "https" if self.config.tls else "http"
        return rpc_pb2.MemberAddResponse(
            header=self.header(),
            member=_member_pb(node_id, member, scheme, req.isLearner),
            members=self._member_pbs(),
        )

    async def member_remove(
        self, req: rpc_pb2.MemberRemoveRequest, authorization: str | None
    ) -> rpc_pb2.MemberRemoveResponse:
        """``MemberRemove``, refused (``unhealthy cluster``) when the voters left
        would not have a quorum of recently active ones, as etcd's strict check."""
        if not self.node.is_leader:
            answer = rpc_pb2.MemberRemoveResponse()
            return await self._by_leader("/cluster/member/remove", req, answer, authorization)
        node_id = self._member_named(req.ID)
        if not self.node.removal_keeps_quorum(node_id):
            raise errors.UNHEALTHY
        await self._on_leader(lambda: self.node.remove_member(node_id))
        return rpc_pb2.MemberRemoveResponse(header=self.header(), members=self._member_pbs())

    async def member_promote(
        self, req: rpc_pb2.MemberPromoteRequest, authorization: str | None
    ) -> rpc_pb2.MemberPromoteResponse:
        """``MemberPromote``: a learner becomes a voter once it holds 90 % of the
        leader's log (``... in sync with leader`` until then)."""
        if not self.node.is_leader:
            answer = rpc_pb2.MemberPromoteResponse()
            return await self._by_leader("/cluster/member/promote", req, answer, authorization)
        node_id = self._member_named(req.ID)
        if node_id not in self.node.status().learners:
            raise errors.MEMBER_NOT_LEARNER
        await self._on_leader(lambda: self.node.promote_member(node_id))
        return rpc_pb2.MemberPromoteResponse(header=self.header(), members=self._member_pbs())

    async def member_update(
        self, req: rpc_pb2.MemberUpdateRequest, authorization: str | None
    ) -> rpc_pb2.MemberUpdateResponse:
        """``MemberUpdate``: new addresses for a member (:func:`parse_update_urls`),
        as ``PUT /v1/members/{id}``."""
        if not self.node.is_leader:
            answer = rpc_pb2.MemberUpdateResponse()
            return await self._by_leader("/cluster/member/update", req, answer, authorization)
        node_id = self._member_named(req.ID)
        member = parse_update_urls(list(req.peerURLs), node_id, self.node.members[node_id])
        await self._on_leader(lambda: self.node.update_member(node_id, member))
        return rpc_pb2.MemberUpdateResponse(header=self.header(), members=self._member_pbs())


@functools.lru_cache(maxsize=4)
def cluster_id(founders: tuple[NodeId, ...] | None) -> int:
    """The cluster id: :func:`~raftkv.etcd.convert.name_id` of the founding
    members' ids, sorted and joined by commas (as etcd hashes its initial
    members' ids); of :data:`CLUSTER_NAME` where the founders are not known."""
    if founders is None:
        return convert.name_id(CLUSTER_NAME)
    return convert.name_id(",".join(sorted(founders)))


def parse_peer_urls(urls: list[str]) -> tuple[NodeId, Member]:
    """A new member's node id and addresses from ``MemberAdd``'s peer URLs.

    raftkv's convention: the first URL is the Raft address with the node id as
    its user (``http://n4@127.0.0.1:7004``), the second the HTTP API's
    (``http://127.0.0.1:8004``).

    Raises:
        EtcdError: ``given member URLs are invalid`` (a URL etcd would refuse),
            or INVALID_ARGUMENT naming the convention.
    """
    parsed = _parse_urls(urls)
    if len(parsed) != 2 or not parsed[0][0].username:
        raise errors.invalid_argument(
            "raftkv takes two peer URLs: the Raft address with the new member's id as "
            "its user, then the HTTP API's address "
            "(e.g. http://n4@127.0.0.1:7004,http://127.0.0.1:8004)"
        )
    name = parsed[0][0].username or ""
    if not is_node_id(name):
        raise errors.invalid_argument(f"bad member id {name[:80]!r}: must be {NODE_ID_RULE}")
    return NodeId(name), Member(parsed[0][1], parsed[1][1])


def parse_update_urls(urls: list[str], node_id: NodeId, current: Member) -> Member:
    """A member's new addresses from ``MemberUpdate``'s peer URLs: the Raft
    address, then optionally the HTTP API's (kept as it is when left out); the
    Raft URL may name the member as its user, as ``MemberAdd``'s does.

    Raises:
        EtcdError: ``given member URLs are invalid``, or INVALID_ARGUMENT
            naming the convention.
    """
    parsed = _parse_urls(urls)
    if len(parsed) not in (1, 2):
        raise errors.invalid_argument(
            "raftkv takes one or two peer URLs: the Raft address, then optionally the HTTP "
            "API's address (e.g. http://127.0.0.1:7014,http://127.0.0.1:8014)"
        )
    user = parsed[0][0].username
    if user is not None and user != node_id:
        raise errors.invalid_argument(f"the Raft URL names {user[:80]!r}, not {node_id}")
    return Member(parsed[0][1], parsed[1][1] if len(parsed) == 2 else current.api)


def _parse_urls(urls: list[str]) -> list[tuple[urllib.parse.SplitResult, tuple[str, int]]]:
    """Each URL and its ``(host, port)``; ``given member URLs are invalid``
    (etcd's error) for one that is not ``http(s)://host:port``."""
    parsed = []
    for text in urls:
        try:
            u = urllib.parse.urlsplit(text.strip())
            port = u.port
        except ValueError:
            raise errors.MEMBER_BAD_URLS from None
        if u.scheme not in ("http", "https") or not u.hostname or port is None or u.path:
            raise errors.MEMBER_BAD_URLS
        parsed.append((u, (u.hostname, port)))
    return parsed


def _member_pb(node_id: str, member: Member, scheme: str, learner: bool) -> rpc_pb2.Member:
    return rpc_pb2.Member(
        ID=convert.name_id(node_id),
        name=node_id,
        peerURLs=[_url(scheme, member.raft)],
        clientURLs=[member.api_url(scheme=scheme)],
        isLearner=learner,
    )


def _new_lease_id() -> int:
    """A random lease id, 1..2**63-1 (a grant that names none)."""
    return int.from_bytes(os.urandom(8), "big") & MAX_LEASE_ID or 1


def _url(scheme: str, addr: tuple[str, int]) -> str:
    host, port = addr
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
