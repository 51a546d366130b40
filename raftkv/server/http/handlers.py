"""The ``/v1`` routes: one method per route, a request in, an answer out.

Rule 1: a handler reads a :class:`~raftkv.server.http.request.Request` and
returns an :data:`~raftkv.server.fasthttp.Answer` (status, JSON body,
headers), or raises; :func:`~raftkv.server.http.answers.answer_for` answers
what it raises. It knows neither front end: both call the same method for
the same route (:mod:`raftkv.server.http.routes`). The KV routes' query
strings, bodies and answers are :mod:`raftkv.server.kvjson`'s.

Rule 2: validation (JSON, keys, body shape, size) happens on the node that
received the request, before any forwarding (:mod:`.forwarding`); a command
that arrives over HTTP (``POST /v1/forward``, which anyone with a write
token can send) has its limits checked again on the leader.

Rule 3: the hot routes (``PUT``/``GET``/``DELETE /v1/kv/{key}``, ``POST
/v1/kv``) take the fast path's request as it was parsed (no wrapper), and
the fast front end awaits the route's handler directly (no layer between);
headers are read only where a value is needed (``bench/http_path.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from importlib import resources
from typing import Any, Final

import aiohttp

from raftkv.core.types import NodeId
from raftkv.replica.kv import (
    ABSENT,
    Cas,
    Command,
    Compact,
    Delete,
    DeleteRange,
    KeyRange,
    KVStateMachine,
    LeaseGrant,
    LeaseRevoke,
    MultiPut,
    Put,
    Session,
    Txn,
    decode_command,
    encode_command,
)
from raftkv.replica.membership import InvalidMember, Member
from raftkv.replica.mvcc import RevisionError
from raftkv.server.config import ServerConfig
from raftkv.server.errors import BadRequest, NoLeader, ServerError, TooLarge
from raftkv.server.fasthttp import Answer
from raftkv.server.http.answers import answer
from raftkv.server.http.forwarding import FORWARD_ROUTE, Forwarder, now_ms
from raftkv.server.http.guard import STATUS_ROUTE, Guard
from raftkv.server.http.request import (
    FORWARDED_HEADER,
    Request,
    member_id,
    owner,
    parse_json,
    session,
)
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
    range_query,
    read_answer,
    revision_error_answer,
    revision_param,
    txn_parts,
    write_answer,
)
from raftkv.server.node import RaftNode
from raftkv.server.node.leases import REQUEST_KEEPALIVE, REQUEST_TTL, LeaseRequest

__all__ = ["Handlers", "dashboard"]

# How long /v1/health/ready waits for the ReadIndex round and the catch-up
# (probes time out after 1 s by default in Kubernetes).
_READY_TIMEOUT_S: Final = 0.8
_CLUSTER_STATUS_TIMEOUT_S: Final = 0.5


@functools.cache
def dashboard() -> str:
    """The dashboard page, read from the package on its first request (not at
    import: the fast path and the benchmarks never serve it).

    The page is static: it holds no data and fetches ``/v1/cluster``."""
    return (resources.files("raftkv.viz") / "dashboard.html").read_text(encoding="utf-8")


def _new_lease_id(session: Session | None) -> int:
    """A lease id for a grant that names none: from its session (a retry gets
    the same one), else random; 1..2**63-1."""
    if session is None:
        seed = os.urandom(8)
    else:
        seed = f"{session.client_id}/{session.seq}/{session.owner or ''}".encode()
    digest = hashlib.blake2b(seed, digest_size=8, person=b"raftkv-lease").digest()
    return int.from_bytes(digest, "big") & (2**63 - 1) or 1


def _forwarded(request: Request) -> bool:
    """Whether a member forwarded ``request`` (it is not forwarded again)."""
    return bool(request.headers.get(FORWARDED_HEADER))


class Handlers:
    """The route handlers of one node's API, with its guard and forwarder.

    Making one attaches its forwarder to ``node`` (the node's
    :attr:`~RaftNode.forward_handler`): make it before the node starts.
    """

    def __init__(self, node: RaftNode, config: ServerConfig) -> None:
        self.node = node
        self.config = config
        self.guard = Guard(node.metrics, config)
        self.forwarder = Forwarder(node, config)
        node.forward_handler = self.forwarder.serve_peer

    # -- writes ---------------------------------------------------------------

    async def _write(self, request: Request, build: Callable[[int], Command]) -> Answer:
        """Validate on this node, then propose on the leader (forwarding if needed).

        The leader refuses a write the space quota does not let in before
        proposing it (:meth:`RaftNode.admit_write`, 507).
        """
        command = build(now_ms())  # validates now, even if forwarded
        node = self.node
        if not node.is_leader:
            return await self._forward_write(request, node.leader, command)
        node.admit_write(command)
        try:
            result = await node.propose(encode_command(command))
        except NoLeader as exc:
            if exc.leader is not None and exc.leader != node.node_id:
                return await self._forward_write(request, NodeId(exc.leader), command)
            raise
        return write_answer(result, command, node.node_id)

    async def _forward_write(
        self, request: Request, leader: NodeId | None, command: Command
    ) -> Answer:
        return await self.forwarder.write(
            leader,
            command,
            authorization=request.headers.get("authorization"),
            forwarded=_forwarded(request),
        )

    def _session(self, request: Request) -> Session | None:
        return session(request, self.config.client_tokens)

    # -- KV routes --------------------------------------------------------------

    async def put(self, request: Request) -> Answer:
        """``PUT /v1/kv/{key}[?lease=ID]``: the body is the JSON value."""
        config = self.config
        key = check_key_limit(request.key, config.max_key_bytes)
        lease = 0
        for name, text in request.params():
            if name != "lease" or lease:
                raise BadRequest(
                    f"unknown or repeated parameter {name[:40]!r}; this route takes lease"
                )
            lease = lease_param(text)
        body = request.body
        value = parse_json(body)
        sess = self._session(request)
        if len(body) > config.max_value_bytes:
            raise TooLarge(f"value is {len(body)} bytes; the limit is {config.max_value_bytes}")
        return await self._write(
            request, lambda t: Put(key=key, value=value, time_ms=t, session=sess, lease=lease)
        )

    async def delete(self, request: Request) -> Answer:
        """``DELETE /v1/kv/{key}``."""
        key = check_key_limit(request.key, self.config.max_key_bytes)
        sess = self._session(request)
        return await self._write(request, lambda t: Delete(key=key, time_ms=t, session=sess))

    async def get(self, request: Request) -> Answer:
        """``GET /v1/kv/{key}``: the key now, or as of ``revision`` (> 0)."""
        key = check_key_limit(request.key, self.config.max_key_bytes)
        consistency = request.param("consistency")
        if consistency is None:
            consistency = "linearizable"
        text = request.param("revision")
        revision = revision_param(text) if text else 0
        if consistency not in CONSISTENCY_LEVELS:
            raise BadRequest("consistency must be linearizable or stale")
        sm = self.kv()
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

    async def cas(self, request: Request) -> Answer:
        """``POST /v1/kv/{key}/cas`` ``{"expect": value or null, "value": value}``."""
        config = self.config
        key = check_key_limit(request.key, config.max_key_bytes)
        body = request.body
        obj = parse_json(body)
        if not isinstance(obj, dict) or "value" not in obj or "expect" not in obj:
            raise BadRequest('cas body must be {"expect": value or null, "value": value}')
        expect = ABSENT if obj["expect"] is None else obj["expect"]
        sess = self._session(request)
        for part in ("expect", "value"):
            check_value_size(obj[part], len(body), config.max_value_bytes, part)
        return await self._write(
            request,
            lambda t: Cas(key=key, expect=expect, value=obj["value"], time_ms=t, session=sess),
        )

    async def multi_put(self, request: Request) -> Answer:
        """``POST /v1/kv``: a JSON object of key/value pairs, in one entry."""
        config = self.config
        body = request.body
        obj = parse_json(body)
        if not isinstance(obj, dict):
            raise BadRequest("body must be a JSON object of key/value pairs")
        if not obj:
            raise BadRequest("body must hold at least one pair")
        if len(obj) > config.max_multi_put_pairs:
            raise TooLarge(
                f"{len(obj)} pairs; the limit is {config.max_multi_put_pairs} per multi-put"
            )
        sess = self._session(request)
        limit = config.max_key_bytes
        for k, v in obj.items():
            if len(k.encode("utf-8", "surrogatepass")) > limit:
                raise BadRequest(f"bad key: longer than {limit} bytes of UTF-8")
            check_value_size(v, len(body), config.max_value_bytes, f"value of {k[:64]!r}")
        return await self._write(request, lambda t: MultiPut(pairs=obj, time_ms=t, session=sess))

    def kv(self) -> KVStateMachine:
        """The node's KV state machine (400 on a node that runs another)."""
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

    async def range(self, request: Request) -> Answer:
        """``GET /v1/kv?prefix=P`` or ``?key=K[&range_end=E]``: a range read."""
        query = range_query(request.params(), max_key_bytes=self.config.max_key_bytes)
        sm = self.kv()
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
            return revision_error_answer(exc, sm.revision)
        return listing_answer(listing)

    async def delete_range(self, request: Request) -> Answer:
        """``DELETE /v1/kv?prefix=P`` or ``?key=K[&range_end=E]``, ``&prev_kv=true``."""
        key_range, prev_kv = delete_range_query(
            request.params(), max_key_bytes=self.config.max_key_bytes
        )
        sess = self._session(request)
        return await self._write(
            request,
            lambda t: DeleteRange(range=key_range, prev_kv=prev_kv, time_ms=t, session=sess),
        )

    async def txn(self, request: Request) -> Answer:
        """``POST /v1/txn``: compares, then the success or the failure branch."""
        config = self.config
        body = request.body
        parts = txn_parts(
            parse_json(body),
            raw_size=len(body),
            max_key_bytes=config.max_key_bytes,
            max_value_bytes=config.max_value_bytes,
        )
        sess = self._session(request)
        return await self._write(
            request,
            lambda t: Txn(
                compares=parts.compares,
                success=parts.success,
                failure=parts.failure,
                time_ms=t,
                session=sess,
            ),
        )

    async def compact(self, request: Request) -> Answer:
        """``POST /v1/compact`` ``{"revision": R}``: drop the history below ``R``."""
        revision = compact_revision(parse_json(request.body))
        sess = self._session(request)
        return await self._write(
            request, lambda t: Compact(revision=revision, time_ms=t, session=sess)
        )

    async def forwarded(self, request: Request) -> Answer:
        """``POST /v1/forward``: a write a follower forwarded over HTTP, as the
        encoded command. The guard checked the client's token; the limits are
        checked again here (Rule 2): anyone with a write token can send a
        command to this route, not only members."""
        if request.headers.get(FORWARDED_HEADER) is None:
            raise BadRequest(f"{FORWARD_ROUTE} takes only writes forwarded by members")
        command = decode_command(request.body)
        config = self.config
        check_command_limits(
            command,
            max_key_bytes=config.max_key_bytes,
            max_value_bytes=config.max_value_bytes,
            max_multi_put_pairs=config.max_multi_put_pairs,
        )
        if command.session is not None:
            # The owner is the token this node checked, whatever the command says.
            token_owner = owner(request.headers.get("authorization"), config.client_tokens)
            command = dataclasses.replace(
                command, session=dataclasses.replace(command.session, owner=token_owner)
            )
        answered: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

        def reply(status: int, body: bytes) -> None:
            if not answered.done():
                answered.set_result((status, body))

        self.forwarder.propose(command, reply)
        status, body = await answered
        return status, body, None

    # -- leases -----------------------------------------------------------------

    async def lease_grant(self, request: Request) -> Answer:
        """``POST /v1/leases`` ``{"ttl": s[, "id": n]}``: a lease (TTL raised to the minimum).

        Without an id the node picks one before proposing -- derived from the
        request's ``Idempotency-Key`` when it has one, so that a retry names
        the same lease (and its answer, replayed, the same id) -- else at random.
        """
        ttl, lease_id = lease_grant_fields(parse_json(request.body))
        ttl = self.node.leases.grant_ttl(ttl)
        sess = self._session(request)
        if not lease_id:
            lease_id = _new_lease_id(sess)
        return await self._write(
            request, lambda t: LeaseGrant(id=lease_id, ttl_s=ttl, time_ms=t, session=sess)
        )

    async def lease_revoke(self, request: Request) -> Answer:
        """``DELETE /v1/leases/{id}``: end the lease, delete its keys (one revision)."""
        lease_id = lease_param(request.path_param("lease_id"), "the lease id")
        sess = self._session(request)
        return await self._write(
            request, lambda t: LeaseRevoke(id=lease_id, time_ms=t, session=sess)
        )

    async def lease_keepalive(self, request: Request) -> Answer:
        """``POST /v1/leases/{id}/keepalive``: renew; the leader answers once it
        confirmed its leadership (followers forward)."""
        lease_id = lease_param(request.path_param("lease_id"), "the lease id")
        return await self._lease(request, LeaseRequest(kind=REQUEST_KEEPALIVE, lease_id=lease_id))

    async def lease_ttl(self, request: Request) -> Answer:
        """``GET /v1/leases/{id}[?keys=true]``: remaining and granted TTL (and keys)."""
        lease_id = lease_param(request.path_param("lease_id"), "the lease id")
        keys = False
        for name, text in request.params():
            if name != "keys" or text not in ("true", "false"):
                raise BadRequest("this route takes keys=true|false")
            keys = text == "true"
        lease_request = LeaseRequest(kind=REQUEST_TTL, lease_id=lease_id, keys=keys)
        return await self._lease(request, lease_request)

    async def _lease(self, request: Request, lease_request: LeaseRequest) -> Answer:
        self.kv()
        return await self.forwarder.lease(
            lease_request,
            authorization=request.headers.get("authorization"),
            forwarded=_forwarded(request),
        )

    async def lease_list(self, request: Request) -> Answer:
        """``GET /v1/leases``: every lease (linearizable: after a ReadIndex)."""
        if any(True for _ in request.params()):
            raise BadRequest("this route takes no parameters")
        sm = self.kv()
        await self.node.read_barrier()
        leases = [{"id": le.id, "granted_ttl": le.ttl_s} for le in self.node.leases.leases()]
        return answer(200, {"leases": leases, "revision": sm.revision})

    # -- status and health --------------------------------------------------------

    async def status(self, request: Request) -> Answer:
        """``GET /v1/status``: this node's view, and the requests it served."""
        body = self.node.status().to_json()
        body["requests_served"] = self.guard.served
        return answer(200, body)

    async def cluster(self, request: Request) -> Answer:
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
        http = self.forwarder.http

        async def ask(node_id: NodeId) -> dict[str, Any]:
            member = node.members.get(node_id)
            entry: dict[str, Any] = {"id": node_id, "api": None, "status": None}
            if member is not None:
                entry["api"] = member.to_json()["api_addr"]
            if node_id == node.node_id:
                entry["status"] = own.to_json()
                entry["status"]["requests_served"] = self.guard.served
                return entry
            if member is None or http is None:
                entry["error"] = "no address known"
                return entry
            try:
                async with http.get(
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
        return answer(200, {"node_id": node.node_id, "members": list(members)})

    async def live(self, request: Request) -> Answer:
        """``GET /v1/health/live``: the drive loop runs."""
        if self.node.is_live():
            return answer(200, {"status": "live"})
        return answer(503, {"error": "not live"})

    async def ready(self, request: Request) -> Answer:
        """``GET /v1/health/ready``: a leader is known *and* this node caught up with it.

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
            return answer(503, {"error": error, "leader": node.leader})
        try:
            index = await node.read_barrier(timeout=_READY_TIMEOUT_S)
        except ServerError as exc:
            return answer(503, {"error": f"not ready: {exc.message}", "leader": node.leader})
        body = {"status": "ready", "leader": node.leader, "index": index}
        return answer(200, {**body, "applied": node.applied_index})

    # -- membership -----------------------------------------------------------------

    async def _to_leader(self, request: Request, method: str, path: str, body: bytes) -> Answer:
        return await self.forwarder.over_http(
            self.node.leader,
            method,
            path,
            body,
            authorization=request.headers.get("authorization"),
            forwarded=_forwarded(request),
        )

    async def members(self, request: Request) -> Answer:
        """``GET /v1/members``: voters, learners, the leader, and removed ids."""
        st = self.node.status()
        return answer(
            200,
            {
                "members": st.members,
                "voters": list(st.voters),
                "learners": list(st.learners),
                "leader": st.leader,
                "removed": sorted(self.node.removed),
            },
        )

    async def add_member(self, request: Request) -> Answer:
        """``POST /v1/members`` ``{"id", "raft_addr", "api_addr", "learner"}``."""
        obj = parse_json(request.body)
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not obj["id"]:
            raise BadRequest('body must be {"id", "raft_addr", "api_addr", "learner": bool}')
        node_id = member_id(obj["id"])
        try:
            member = Member.from_json(obj)
        except InvalidMember as exc:
            raise BadRequest(str(exc)) from None
        learner = obj.get("learner", False)
        if not isinstance(learner, bool):
            raise BadRequest("learner must be true or false")
        node = self.node
        if not node.is_leader:
            body = json.dumps({"id": node_id, **member.to_json(), "learner": learner}).encode()
            return await self._to_leader(request, "POST", "/v1/members", body)
        result = await node.add_member(node_id, member, learner=learner)
        return answer(200, {"ok": True, "result": result})

    async def promote_member(self, request: Request) -> Answer:
        """``POST /v1/members/{id}/promote``: a caught-up learner becomes a voter."""
        node_id = member_id(request.path_param("node_id"))
        node = self.node
        if not node.is_leader:
            return await self._to_leader(request, "POST", f"/v1/members/{node_id}/promote", b"")
        result = await node.promote_member(node_id)
        return answer(200, {"ok": True, "result": result})

    async def update_member(self, request: Request) -> Answer:
        """``PUT /v1/members/{id}``: new addresses for a member (etcd's ``MemberUpdate``)."""
        node_id = member_id(request.path_param("node_id"))
        obj = parse_json(request.body)
        if not isinstance(obj, dict):
            raise BadRequest('body must be {"raft_addr", "api_addr"}')
        try:
            member = Member.from_json(obj)
        except InvalidMember as exc:
            raise BadRequest(str(exc)) from None
        node = self.node
        if not node.is_leader:
            body = json.dumps(member.to_json()).encode()
            return await self._to_leader(request, "PUT", f"/v1/members/{node_id}", body)
        result = await node.update_member(node_id, member)
        return answer(200, {"ok": True, "result": result})

    async def remove_member(self, request: Request) -> Answer:
        """``DELETE /v1/members/{id}``."""
        node_id = member_id(request.path_param("node_id"))
        node = self.node
        if not node.is_leader:
            return await self._to_leader(request, "DELETE", f"/v1/members/{node_id}", b"")
        result = await node.remove_member(node_id)
        return answer(200, {"ok": True, "result": result})

    async def transfer(self, request: Request) -> Answer:
        """``POST /v1/leader/transfer`` ``{"to": id}``: hand leadership to a member."""
        obj = parse_json(request.body)
        if not isinstance(obj, dict) or not isinstance(obj.get("to"), str):
            raise BadRequest('body must be {"to": node id}')
        to = member_id(obj["to"])
        node = self.node
        if to not in node.members:
            raise BadRequest(f"unknown member {to!r}")
        if not node.is_leader:
            body = json.dumps({"to": to}).encode()
            return await self._to_leader(request, "POST", "/v1/leader/transfer", body)
        leader = await node.transfer_leadership(to)
        return answer(200, {"ok": True, "leader": leader})
