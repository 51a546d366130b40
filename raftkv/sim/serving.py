"""What a simulated node answers its clients: proposals, ReadIndex reads, and
(with watches or leases) watch streams and lease keep-alives.

Rule: these are the client-facing halves of :class:`~raftkv.sim.cluster.Cluster`,
as base classes it inherits from; they read and write the node's state
(:class:`~raftkv.sim.node.SimNode`) and reply over the network, and leave the
Ready loop to the cluster.
"""

from __future__ import annotations

import contextlib
from collections import Counter

from raftkv.core import (
    NotLeader,
    ProposalDropped,
    RawNode,
    Role,
)
from raftkv.replica.kv import (
    ERR_COMPACTED,
    ERR_FUTURE_REVISION,
    Answer,
    Command,
    Get,
    KVResult,
    KVStateMachine,
    LeaseCheckpoint,
    LeaseRevoke,
    LeaseRevoked,
    Listing,
    Range,
    Session,
    decode_command,
    encode_command,
)
from raftkv.replica.mvcc import CompactedError, FutureRevisionError
from raftkv.replica.watch import Watcher, WatchHub
from raftkv.sim.clock import Clock
from raftkv.sim.leases import KeepAliveRequest, LeaseLog, LessorForward
from raftkv.sim.network import Network
from raftkv.sim.node import SimNode
from raftkv.sim.watches import RevisionLog, WatchClose, WatchOpen, WatchPush
from raftkv.sim.workload import ClientReply, ClientRequest, Outcome, session_id

_KEEPALIVE_PUSH_US = 500_000
"""A node sends an empty push on a watch stream that was silent this long (as a
TCP keep-alive would): a watcher that hears nothing for longer gives up."""
_PROGRESS_EVERY_TICKS = 5
_WATCH_STEP_BUDGET = 8
"""Revisions of history a node's watchers catch up per tick: few, so catching
up takes a while and overlaps progress notifications and new revisions."""


class _ClientNumbers(dict[str, int | None]):
    """Session client id (``c<n>``, :func:`~raftkv.sim.workload.session_id`) ->
    the simulated client's number, or None for another id; computed once each."""

    def __missing__(self, sid: str) -> int | None:
        number = int(sid[1:]) if sid[:1] == "c" and sid[1:].isdigit() else None
        if number is not None and session_id(number) != sid:
            number = None  # c01 is not client 1's id
        self[sid] = number
        return number


def _client_outcome(command: Command, result: Answer) -> Outcome:
    """What the simulated client of a single-key ``command`` is told:
    ``(output, found)`` (multi-key commands: the whole answer, in the reply's
    ``result``)."""
    op = command.op
    if op == "put":
        return None, True
    if op == "get":
        assert isinstance(result, KVResult)
        return (result.value, True) if result.ok else (None, False)
    if op in ("cas", "delete"):
        return result.ok, True  # cas: it took effect; delete: the key existed
    return None, True


class ClientServing:
    """Proposals and ReadIndex reads from the simulated clients."""

    # Set by Cluster.__init__.
    clock: Clock
    network: Network
    stats: Counter[str]
    _decode_cache: dict[bytes, Command]

    def _on_client_request(self, node: SimNode, raw: RawNode, src: str, req: ClientRequest) -> None:
        if req.read:
            context = f"{req.client_id}/{req.request_id}".encode()
            try:
                raw.read_index(context)
            except ProposalDropped:
                self._refuse(node, src, req, raw.leader)
                return
            node.reads[context] = (src, req.client_id, self._decode(req.data))
            self.stats["read_index"] += 1
            return
        try:
            raw.propose(req.data)
        except NotLeader as exc:
            self._refuse(node, src, req, exc.leader)
            return
        except ProposalDropped:
            self._refuse(node, src, req, raw.leader)
            return
        node.pending[(req.client_id, req.request_id)] = src
        self.stats["proposals"] += 1

    def _refuse(
        self,
        node: SimNode,
        src: str,
        req: ClientRequest | KeepAliveRequest,
        leader: str | None,
    ) -> None:
        """Tell ``req``'s client this node cannot serve it, and who leads if it knows."""
        self._reply(
            node,
            src,
            ClientReply(
                client_id=req.client_id, request_id=req.request_id, ok=False, leader=leader
            ),
        )

    def _decode(self, data: bytes) -> Command:
        cmd = self._decode_cache.get(data)
        if cmd is None:
            cmd = self._decode_cache[data] = decode_command(data)
        return cmd

    def _serve_reads(self, node: SimNode) -> None:
        """Answer the released reads whose read index the state machine has applied."""
        applied = node.replica.applied_index
        waiting: list[tuple[int, bytes]] = []
        for index, context in node.ready_reads:
            if index > applied:
                waiting.append((index, context))
                continue
            asked = node.reads.pop(context, None)
            if asked is None:
                ka = node.ka_reads.pop(context, None) if node.ka_reads else None
                if ka is not None:
                    # Leadership confirmed: the keep-alive stands.
                    self._reply(
                        node,
                        ka[0],
                        ClientReply(client_id=ka[1], request_id=ka[2], ok=True, output=ka[3]),
                    )
                continue
            dst, client_id, cmd = asked
            self._answer_read(node, dst, client_id, cmd)
        node.ready_reads = waiting

    def _answer_read(self, node: SimNode, dst: str, client_id: int, cmd: Command) -> None:
        """Answer a get or a range from ``node``'s applied state."""
        sm = node.replica.state_machine
        assert isinstance(sm, KVStateMachine) and cmd.session is not None
        result: KVResult | Listing
        if isinstance(cmd, Get):
            result = sm.read(cmd.key)
            output, found = result.value, result.found
        else:
            assert isinstance(cmd, Range)
            output, found = None, True
            try:
                result = sm.range(
                    cmd.range,
                    revision=cmd.revision,
                    limit=cmd.limit,
                    keys_only=cmd.keys_only,
                    count_only=cmd.count_only,
                    sort_order=cmd.sort_order,
                    sort_target=cmd.sort_target,
                )
            except CompactedError:
                result = KVResult(
                    ok=False,
                    index=sm.applied_index,
                    revision=sm.revision,
                    error=ERR_COMPACTED,
                    compact_revision=sm.compact_revision,
                )
            except FutureRevisionError:
                result = KVResult(
                    ok=False,
                    index=sm.applied_index,
                    revision=sm.revision,
                    error=ERR_FUTURE_REVISION,
                )
        self.stats["reads_served"] += 1
        self._reply(
            node,
            dst,
            ClientReply(
                client_id=client_id,
                request_id=cmd.session.seq,
                ok=True,
                output=output,
                found=found,
                result=result,
            ),
        )

    def _reply(self, node: SimNode, dst: str, reply: ClientReply) -> None:
        self.network.send(node.node_id, dst, reply, "ClientReply", duplicate=False)


class WatchLeaseServing(ClientServing):
    """Watch streams, keep-alives and the lessor on each node (with
    ``params.watches`` / ``params.leases``)."""

    # Set by Cluster.__init__.
    revision_log: RevisionLog
    lease_log: LeaseLog
    _election_us: int

    def _applied_extras(
        self,
        node: SimNode,
        sm: object,
        hub: WatchHub | None,
        before: int,
        data: bytes,
        result: object,
    ) -> None:
        """After one entry: record a new revision, tell the hub, note revokes."""
        assert isinstance(sm, KVStateMachine)
        if sm.revision != before:
            got = sm.last_events()
            if got is not None and got[0] == sm.revision:
                self.revision_log.record(got[0], got[1], self._decode_cache.get(data))
        if hub is not None:
            hub.applied()
        if type(result) is LeaseRevoked and data:
            cmd = self._decode_cache.get(data)
            if isinstance(cmd, LeaseRevoke):
                self.lease_log.revoked(cmd.id, result.revision, result.deleted)

    def _after_apply_extras(self, node: SimNode) -> None:
        """After a Ready's entries: promote a new leader once it applied its
        term's first entry; push what the watchers have."""
        lessor = node.lessor
        if (
            lessor is not None
            and node.lead_from is not None
            and node.promoted_at is None
            and node.role is Role.LEADER
            and node.replica.applied_index >= node.lead_from
        ):
            now = self.clock.now
            lessor.promote(now // 1000, self._election_us // 1000)
            node.promoted_at = now
            self.stats["lessor_promotions"] += 1
        if node.streams:
            self._flush_streams(node)

    def _tick_extras(self, node: SimNode, raw: RawNode) -> None:
        now = self.clock.now
        node.ticks += 1
        lessor = node.lessor
        if lessor is not None:
            for cmd in lessor.tick(now // 1000, time_ms=now // 1000):
                if isinstance(cmd, LeaseRevoke):
                    self.lease_log.expiry(
                        cmd.id, now, node.node_id, node.role is Role.LEADER, node.promoted_at
                    )
                    self.stats["lease_expiries"] += 1
                elif isinstance(cmd, LeaseCheckpoint):
                    self.stats["lease_checkpoints"] += 1
                self._propose_lessor(node, raw, encode_command(cmd))
        hub = node.hub
        if hub is not None:
            if raw.leader is None and node.role is not Role.LEADER:
                if node.leaderless_since is None:
                    node.leaderless_since = now
                elif now - node.leaderless_since >= self._election_us and hub.leader_lost():
                    self.stats["watch_leader_lost"] += 1
            else:
                node.leaderless_since = None
            if node.ticks % _PROGRESS_EVERY_TICKS == 0:
                hub.progress()  # before catching up: watchers opened since are behind
            hub.step(_WATCH_STEP_BUDGET)
            if node.streams:
                self._flush_streams(node, keepalive=True)

    def _propose_lessor(self, node: SimNode, raw: RawNode, data: bytes) -> None:
        """Propose a lessor's command; a node that does not lead forwards it to
        the leader it knows (as it would any proposal)."""
        try:
            raw.propose(data)
        except NotLeader as exc:
            if exc.leader is not None:
                self.network.send(
                    node.node_id, exc.leader, LessorForward(data=data), "LessorForward"
                )
        except ProposalDropped:
            pass

    def _on_lessor_forward(self, node: SimNode, raw: RawNode, src: str, msg: LessorForward) -> None:
        with contextlib.suppress(NotLeader, ProposalDropped):
            raw.propose(msg.data)

    def _on_keepalive(self, node: SimNode, raw: RawNode, src: str, req: KeepAliveRequest) -> None:
        lessor = node.lessor
        if lessor is None or node.role is not Role.LEADER or not lessor.is_leader:
            self._refuse(node, src, req, raw.leader)
            return
        now_ms = self.clock.now // 1000
        ttl = lessor.keepalive(req.lease_id, now_ms)
        if ttl is None:
            self._reply(
                node,
                src,
                ClientReply(
                    client_id=req.client_id, request_id=req.request_id, ok=False, found=False
                ),
            )
            return
        reset = lessor.keepalive_checkpoint(req.lease_id, now_ms)
        if reset is not None:
            # Confirmed by committing the reset of its replicated remaining time.
            cmd = LeaseCheckpoint(
                checkpoints=reset.checkpoints,
                time_ms=now_ms,
                session=Session(client_id=session_id(req.client_id), seq=req.request_id),
            )
            try:
                raw.propose(encode_command(cmd))
            except (NotLeader, ProposalDropped):
                return
            node.pending[(req.client_id, req.request_id)] = src
            self.stats["keepalive_checkpoints"] += 1
            return
        context = f"ka/{req.client_id}/{req.request_id}".encode()
        try:
            raw.read_index(context)
        except ProposalDropped:
            return
        node.ka_reads[context] = (src, req.client_id, req.request_id, ttl)
        self.stats["keepalive_reads"] += 1

    def _on_watch_open(self, node: SimNode, raw: RawNode, src: str, req: WatchOpen) -> None:
        hub = node.hub
        assert hub is not None
        watcher = hub.create(
            req.key,
            req.range_end,
            start_revision=req.start_revision,
            prev_kv=req.prev_kv,
            require_leader=req.require_leader,
        )
        opened = req.start_revision or hub.revision + 1
        node.streams[(src, req.stream)] = [watcher, 0, self.clock.now]
        self._push(node, src, req.stream, node.streams[(src, req.stream)], opened)

    def _on_watch_close(self, node: SimNode, raw: RawNode, src: str, req: WatchClose) -> None:
        entry = node.streams.pop((src, req.stream), None)
        if entry is not None and node.hub is not None:
            watcher = entry[0]
            assert isinstance(watcher, Watcher)
            node.hub.close(watcher.id)

    def _flush_streams(self, node: SimNode, *, keepalive: bool = False) -> None:
        now = self.clock.now
        for (client, stream), entry in list(node.streams.items()):
            watcher = entry[0]
            assert isinstance(watcher, Watcher)
            if watcher.pending or (
                keepalive and now - entry[2] >= _KEEPALIVE_PUSH_US  # type: ignore[operator]
            ):
                self._push(node, client, stream, entry)

    def _push(
        self, node: SimNode, client: str, stream: int, entry: list[object], opened: int = 0
    ) -> None:
        watcher = entry[0]
        assert isinstance(watcher, Watcher)
        responses = tuple(watcher.take())
        seq = entry[1]
        assert isinstance(seq, int)
        entry[1] = seq + 1
        entry[2] = self.clock.now
        self.network.send(
            node.node_id,
            client,
            WatchPush(stream=stream, seq=seq, responses=responses, opened=opened),
            "WatchPush",
            duplicate=False,
        )
        if watcher.canceled:
            node.streams.pop((client, stream), None)
