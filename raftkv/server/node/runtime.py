"""The node runtime: an asyncio driver around one :class:`~raftkv.core.RawNode`.

Rule 1: the core is a field pumped by the runtime (STYLE.md, encode/httpcore).
Every call into the core -- ``tick``, ``step``, ``propose``, ``read_index``,
``ready``, ``advance`` -- happens synchronously on the event loop's thread. On
the leader the WAL sync runs in a thread of its own, so the loop keeps stepping
acknowledgements and taking requests meanwhile (the core allows
step/tick/propose between ``ready()`` and ``advance()``); a follower syncs on
the loop's thread. Besides that sync, only the snapshot thread touches storage
off the loop: it writes a snapshot file, which the loop then adopts
(:mod:`~raftkv.server.node.snapshots`).

Rule 2: one Ready at a time: send ``messages`` (first when the Ready carries
new entries, so followers write them while we do); install ``snapshot``; write
entries and hard state; apply committed entries, resolve the futures of the
proposals and reads they answer, and let those answers go out; sync (when
``must_sync``); send ``messages_after_persist``; ``advance``. Committed entries
are durable on a quorum already, so applying them before this node's own sync
is safe (etcd does the same) and keeps a client from waiting for a sync its
write does not need. Everything proposed while a sync runs lands in the next
Ready, which is group commit: one sync for all of them.

Rule 3: a proposal is identified by the (term, index) the core gave it. If the
entry applied at that index has another term, the proposal was overwritten by
a new leader and is failed with :class:`~raftkv.server.errors.ProposalLost`
(retryable); a proposal that does not apply in time fails with
:class:`~raftkv.server.errors.OutcomeUnknown`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raftkv.core.config import Config
from raftkv.core.errors import NotLeader, ProposalDropped, RaftError
from raftkv.core.rawnode import RawNode
from raftkv.core.ready import Ready
from raftkv.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    Index,
    NodeId,
    Role,
    Term,
)
from raftkv.replica.membership import Member, Refusal, RefusalKind, refuse_members
from raftkv.replica.replica import ConfApplied, Replica
from raftkv.replica.statemachine import StateMachine
from raftkv.server.config import ServerConfig
from raftkv.server.errors import (
    BadRequest,
    LearnerNotReady,
    MemberRemoved,
    NodeFailed,
    NodeStopped,
    NoLeader,
    OutcomeUnknown,
    ProposalLost,
    ReadTimeout,
    ServerError,
)
from raftkv.server.identity import claim_data_dir
from raftkv.server.metrics import NodeMetrics
from raftkv.server.node.datadir import MembersFile, is_empty, open_storage
from raftkv.server.node.snapshots import Snapshots
from raftkv.server.node.status import NodeStatus
from raftkv.server.security import peer_ssl_contexts
from raftkv.storage.disk_storage import DiskStorage
from raftkv.transport.base import InMemoryHub, Transport
from raftkv.transport.forward import ForwardRequest, ForwardResponse, PeerMessage
from raftkv.transport.tcp import TcpTransport

__all__ = ["RaftNode", "StateMachine", "NodeStatus", "ForwardHandler", "ForwardReply"]

ForwardReply = Callable[[int, bytes], None]
"""Answers a forwarded write: (HTTP status, JSON body)."""
ForwardHandler = Callable[[bytes, ForwardReply], None]
"""Serves a forwarded write's payload; calls the reply exactly once, now or later
(a callback rather than a coroutine: no task per forwarded write)."""

logger = logging.getLogger(__name__)


def default_state_machine() -> StateMachine:
    """The KV state machine of :mod:`raftkv.replica.kv`."""
    from raftkv.replica.kv import KVStateMachine

    sm: StateMachine = KVStateMachine()
    return sm


class _Proposal:
    __slots__ = ("term", "future", "started")

    def __init__(self, term: Term, future: asyncio.Future[object]) -> None:
        self.term = term
        self.future = future
        self.started = time.perf_counter()


def _time_out(fut: asyncio.Future[Any], what: str) -> None:
    """Fail ``fut`` with :class:`ReadTimeout` unless it is already resolved."""
    if not fut.done():
        fut.set_exception(ReadTimeout(f"timed out {what}"))


def _refusal_error(refusal: Refusal) -> ServerError:
    """The API's error for a configuration change the replica refused."""
    if refusal.kind is RefusalKind.REMOVED_ID and refusal.node_id is not None:
        return MemberRemoved(refusal.node_id)
    if refusal.kind is RefusalKind.CORE:
        return BadRequest(f"membership change refused when applied: {refusal.message}")
    return BadRequest(refusal.message)


class RaftNode:
    """One replica: core + storage + transport + state machine, on asyncio.

    Args:
        config: the node's configuration.
        state_machine: what committed commands are applied to; default: the KV store.
        hub: run over this in-memory hub instead of TCP (in-process tests).
        rng: randomness for election timeouts (default: seeded from the OS).
    """

    def __init__(
        self,
        config: ServerConfig,
        state_machine: StateMachine | None = None,
        *,
        hub: InMemoryHub | None = None,
        rng: random.Random | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.node_id = config.node_id
        # Everything decided by committed entries: the state machine, the
        # address book and removed ids, the applied index (raftkv.replica).
        self._replica = Replica(
            state_machine if state_machine is not None else default_state_machine(),
            members=config.initial_cluster,
        )
        self.metrics = NodeMetrics(config.node_id)
        self._hub = hub
        self._rng = rng if rng is not None else random.Random()
        self._data_dir = Path(config.data_dir)
        self._storage: DiskStorage | None = None
        self._raw: RawNode | None = None
        self._transport: Transport | None = None

        self._wake = asyncio.Event()
        # WAL syncs run here, off the event loop, one at a time (its own thread:
        # nothing else queued in the loop's default executor can delay a sync).
        self._wal_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"raftkv-wal-{config.node_id}"
        )
        self._tasks: list[asyncio.Task[None]] = []
        # The WAL sync running in _wal_thread, if any (a failed node's stop()
        # must not wait for a sync that hangs).
        self._syncing: concurrent.futures.Future[None] | None = None
        self._stopping = False  # the loops stop: stop() was called, or the node failed
        self._started = False
        self._closed = False  # stop() ran (or runs)
        self._accepting = False
        self._driver_done: asyncio.Future[None] | None = None
        # Crash-stop: set once, when the drive loop (and with it the WAL or the
        # snapshot store) or the ticker fails; the node then serves nothing more.
        self._failure: NodeFailed | None = None
        self._failed: asyncio.Future[NodeFailed] | None = None

        # Invariant: every key is an index proposed on this node not yet applied.
        self._proposals: dict[Index, _Proposal] = {}
        # Linearizable reads share ReadIndex requests, as etcd's do: every read
        # that arrives while no request is in flight joins the next one, and
        # one ReadState answers them all. A read that arrives while a request
        # is in flight waits for the next: the index must be fixed after it began.
        # Invariant: _read_in_flight is None or a key of _reads.
        self._reads: dict[bytes, list[asyncio.Future[Index]]] = {}
        self._read_queue: list[asyncio.Future[Index]] = []
        self._read_in_flight: bytes | None = None
        self._read_sent_at = 0.0
        self._read_seq = itertools.count(1)
        # (index, future) waiting for applied >= index.
        self._apply_waiters: list[tuple[Index, asyncio.Future[None]]] = []
        # Writes this node forwarded to the leader over the peer link, by
        # request id: (the leader it went to, future of (HTTP status, body)).
        self._forwards: dict[int, tuple[NodeId, asyncio.Future[tuple[int, bytes]]]] = {}
        self._forward_seq = itertools.count(1)
        # Forward requests and answers made in one loop turn, sent together at
        # the start of the next (one frame and one write per peer, not one each).
        # Invariant: non-empty only while a flush is scheduled.
        self._outbox: list[PeerMessage] = []
        # Serves a write forwarded to this node (the leader): called with the
        # payload and a reply function, which it calls once with (HTTP status,
        # body), now or later. Set by the API; without it forwarded writes get 503.
        self.forward_handler: ForwardHandler | None = None
        self._leader: NodeId | None = None
        self._role: Role = Role.FOLLOWER
        # Commit index seen when the current leader became known (readiness).
        self._ready_mark: Index | None = None
        self._members_file = MembersFile(self._data_dir, self._replica.book, fsync=config.fsync)
        self._snapshots = Snapshots(
            config.node_id,
            self._replica,
            self.metrics,
            every=config.snapshot_entries,
            fail=self._fail,
            wake=self._wake.set,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover from the data dir, start the transport, the ticker and the drive loop.

        A data dir with state (a WAL or a snapshot) restarts from it: the
        membership comes from the snapshot and the log, the addresses from
        ``members.json``, and the ``initial_cluster*`` settings are ignored. An
        empty data dir either founds a cluster (``new``: the founding
        membership becomes log entry 1, written identically by every founding
        member) or joins one (``existing``: ``initial_cluster`` is only an
        address book; no membership, and no campaigning, until the leader's
        log or snapshot includes this node).

        Raises:
            ConfigError: the data dir belongs to another member id (its
                ``node_id`` file, written on the first start).
        """
        if self._started:
            raise ServerError("node already started")
        self._started = True
        # The data dir records whose it is; never start on another member's (identity.py).
        claim_data_dir(self._data_dir, self.node_id, fsync=self.config.fsync)
        self._storage = open_storage(
            self._data_dir,
            fsync=self.config.fsync,
            members=self.members or self.config.initial_cluster,
        )
        fresh = is_empty(self._storage)
        peers: tuple[NodeId, ...] = ()
        if fresh and self.config.initial_cluster_state == "new":
            peers = tuple(sorted(self.config.initial_cluster))
        applied = self._snapshots.restore(self._storage)
        self._members_file.load(restored=applied > 0)
        core_config = Config(
            node_id=self.node_id,
            peers=peers,
            election_tick=self.config.election_tick,
            heartbeat_tick=1,
            pre_vote=True,
            check_quorum=True,
            applied=applied,
        )
        self._raw = RawNode(core_config, self._storage, self._rng)
        self._track_gauges(self._raw)
        self._replica.conf_state = self._raw.status().conf_state
        self._transport = self._make_transport()
        await self._transport.start()
        loop = asyncio.get_running_loop()
        self._driver_done = loop.create_future()
        self._tasks = [
            asyncio.create_task(self._drive(), name=f"raftkv-drive-{self.node_id}"),
            asyncio.create_task(self._ticker(), name=f"raftkv-tick-{self.node_id}"),
        ]
        self._accepting = True
        if fresh:
            how = "founding a new cluster" if peers else "joining an existing cluster"
        else:
            how = "restarting from the data dir"
        logger.info(
            "node started: %s",
            how,
            extra={
                "fields": {
                    "term": self._raw.term,
                    "applied": applied,
                    "last_index": self._raw.last_index,
                    "members": ",".join(sorted(self.members)),
                }
            },
        )

    def _make_transport(self) -> Transport:
        if self._hub is not None:
            t: Transport = self._hub.transport(self.node_id, self._on_messages, peers=None)
            return t
        ssl_server, ssl_client = peer_ssl_contexts(self.config)
        tcp = TcpTransport(
            self.node_id,
            self.config.raft_addr,
            self._peer_addrs(),
            self._on_messages,
            cluster_secret=self.config.cluster_secret,
            max_frame_size=self.config.max_peer_frame_bytes,
            ssl_server=ssl_server,
            ssl_client=ssl_client,
            on_unreachable=self._on_unreachable if self.config.leader_hints else None,
        )
        self.metrics.watch_transport(tcp.stats.as_dict)
        return tcp

    def _peer_addrs(self) -> dict[NodeId, tuple[str, int]]:
        """Where the transport reaches each other member: the address book's peer addresses."""
        return {n: m.raft for n, m in self.members.items() if n != self.node_id}

    async def stop(self, *, transfer: bool = True) -> None:
        """Stop gracefully: refuse new requests, hand over leadership, flush, close.

        Also after a failure (:attr:`failed`): then nothing is handed over, and
        the files stay open if a WAL sync is still stuck in its thread (they
        close when the process exits).
        """
        if not self._started or self._closed:
            return
        self._closed = True
        self._snapshots.close()
        self._accepting = False
        if (
            transfer
            and self._failure is None
            and self._raw is not None
            and self._raw.role is Role.LEADER
        ):
            await self._handover()
        self._stopping = True
        self._wake.set()
        if self._driver_done is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._driver_done), 5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            await self._transport.stop()
        self._fail_all(NodeStopped("node is shutting down"))
        syncing = self._syncing
        if self._failure is not None and syncing is not None and not syncing.done():
            # A failed node's sync that still runs may never return (a dead
            # disk): do not wait for it, and leave the files to the process exit.
            self._wal_thread.shutdown(wait=False)
            logger.warning("node stopped with a WAL sync still running; files left open")
            return
        # A sync still running in the WAL thread (its Ready was cancelled) must
        # finish before the files close under it.
        self._wal_thread.shutdown(wait=True)
        self._snapshots.shutdown()  # a snapshot file being written
        if self._storage is not None:
            self._storage.close()
        logger.info("node stopped")

    # ------------------------------------------------------------------ crash-stop

    @property
    def failed(self) -> asyncio.Future[NodeFailed]:
        """Resolves, with the :class:`NodeFailed` as its result, when the node fails.

        A node fails when its drive loop raises -- a WAL write or sync (in the
        WAL thread too), a snapshot save or install, applying an entry -- or
        its ticker does. It then refuses every request (:attr:`failure`), stops
        stepping and ticking, and fails what was pending; it cannot recover in
        place: the process should exit and restart from the data dir
        (:func:`raftkv.server.api.serve` re-raises the failure).
        """
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    @property
    def failure(self) -> NodeFailed | None:
        """Why the node failed (``__cause__``: the original error), or None."""
        return self._failure

    def _fail(self, where: str, exc: BaseException) -> None:
        """Crash-stop: log why, stop serving, and resolve :attr:`failed`."""
        if self._failure is not None:
            return
        failure = NodeFailed(f"node failed: {where}: {exc}")
        failure.__cause__ = exc
        self._failure = failure
        logger.critical(
            "node failed (%s): %s; it serves nothing more",
            where,
            exc,
            exc_info=exc,
            extra={"fields": {"term": self.term, "applied": self._replica.applied_index}},
        )
        self._accepting = False
        self._stopping = True
        self._wake.set()
        self._fail_all(NodeStopped("node failed"))
        if not self.failed.done():
            self.failed.set_result(failure)

    async def _handover(self) -> None:
        """Hand leadership to the most caught-up follower before stopping (§3.10).

        Waits (at most one election timeout) until another node leads, so the
        cluster does not sit out an election timeout, then (at most one more)
        for this node's pending proposals to resolve under the new leader.
        """
        raw = self._raw
        assert raw is not None
        target = self._best_follower()
        if target is None:
            return
        logger.info("transferring leadership before stopping", extra={"fields": {"to": target}})
        try:
            raw.transfer_leadership(target)
        except RaftError as exc:
            logger.info("leadership transfer refused: %s", exc)
            return
        self._wake.set()
        poll = self.config.heartbeat_interval_ms / 4000
        timeout = self.config.election_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            raw.role is Role.LEADER or raw.leader in (None, self.node_id)
        ):
            await asyncio.sleep(poll)
        if raw.role is Role.LEADER:
            logger.warning("leadership transfer did not complete; stopping anyway")
            return
        logger.info("leadership handed over", extra={"fields": {"leader": raw.leader}})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proposals:
            await asyncio.sleep(poll)

    def _best_follower(self) -> NodeId | None:
        """The voter to hand over to: replicating and recently active, then highest match."""
        raw = self._raw
        if raw is None or raw.role is not Role.LEADER:
            return None
        status = raw.status()
        voters = set(status.conf_state.voters)
        candidates = [
            (p.state == "replicate", p.recent_active, p.match, n)
            for n, p in status.progress.items()
            if n != self.node_id and n in voters
        ]
        return NodeId(max(candidates)[3]) if candidates else None

    def _fail_all(self, exc: ServerError) -> None:
        # A pending proposal may still commit: its outcome is unknown (504), not 503.
        unknown = OutcomeUnknown(f"{exc.message}; the write may or may not be applied")
        for p in self._proposals.values():
            if not p.future.done():
                p.future.set_exception(unknown)
        self._proposals.clear()
        for f in [f for batch in self._reads.values() for f in batch] + self._read_queue:
            if not f.done():
                f.set_exception(exc)
        self._reads.clear()
        self._read_queue.clear()
        self._read_in_flight = None
        for _, w in self._apply_waiters:
            if not w.done():
                w.set_exception(exc)
        self._apply_waiters.clear()
        for _, forward in self._forwards.values():
            if not forward.done():
                forward.set_exception(unknown)
        self._forwards.clear()

    # ------------------------------------------------------------------ inputs

    def _on_messages(self, msgs: list[PeerMessage]) -> None:
        raw = self._raw
        if raw is None or self._stopping:
            return
        kinds: dict[str, int] = {}
        for msg in msgs:
            kind = type(msg).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
            if isinstance(msg, ForwardRequest):
                self._serve_forward(msg)
                continue
            if isinstance(msg, ForwardResponse):
                self._forward_answered(msg)
                continue
            try:
                raw.step(msg)
            except RaftError as exc:
                logger.debug("dropped %s: %s", kind, exc)
            except Exception as exc:
                # A broken invariant in the core: crash-stop, as in the drive
                # loop (the transport would only close the peer link).
                self._fail(f"stepping {kind}", exc)
                return
        for kind, n in kinds.items():
            self.metrics.received(kind, n)
        self._wake.set()

    def _on_unreachable(self, peer: NodeId) -> None:
        """The transport's hint: ``peer`` refuses connections (its process is gone)."""
        raw = self._raw
        if raw is None or self._stopping:
            return
        if raw.report_unreachable(peer):
            logger.info(
                "leader unreachable: campaigning early",
                extra={"fields": {"leader": peer, "term": raw.term}},
            )
            self._wake.set()

    async def _ticker(self) -> None:
        try:
            await self._tick_forever()
        except Exception as exc:
            self._fail("ticker", exc)

    async def _tick_forever(self) -> None:
        interval = self.config.heartbeat_interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while not self._stopping:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            # After a long stall (GC, paused process) do not tick in a burst.
            if loop.time() - next_at > 5 * interval:
                next_at = loop.time() + interval
            if self._stopping:
                return
            assert self._raw is not None
            self._raw.tick()
            if (
                self._read_in_flight is not None
                and loop.time() - self._read_sent_at > self.config.election_timeout_ms / 1000
            ):
                self._retry_reads()
            self._wake.set()

    # ------------------------------------------------------------------ drive loop

    async def _drive(self) -> None:
        raw = self._raw
        assert raw is not None and self._driver_done is not None
        try:
            while not self._stopping:
                self._wake.clear()
                if not raw.has_ready():
                    await self._wake.wait()
                    continue
                await self._handle_ready(raw.ready())
        except Exception as exc:
            # Storage errors land here (WAL writes and syncs, snapshots), and
            # so do broken invariants: crash-stop, never serve frozen state.
            self._fail("drive loop", exc)
        finally:
            if not self._driver_done.done():
                self._driver_done.set_result(None)

    async def _handle_ready(self, rd: Ready) -> None:
        raw = self._raw
        storage = self._storage
        assert raw is not None and storage is not None
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        # New entries go to the followers first, so that they write them while
        # this node does (dissertation §10.2.1). A Ready without new entries
        # carries only commit notices, heartbeats and the like, which no
        # client waits on: its committed entries' clients are answered first.
        replicate_first = bool(rd.entries) or rd.snapshot is not None
        if replicate_first:
            self._send(rd.messages)
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            self._snapshots.install(storage, rd.snapshot)
            self._members_changed()
            self.metrics.snapshots_installed.inc()
            logger.info(
                "installed snapshot", extra={"fields": {"index": rd.snapshot.metadata.index}}
            )
        sync = False
        if rd.entries or rd.hard_state is not None:
            storage.save(rd.entries, rd.hard_state, sync=False)
            if rd.entries:
                self.metrics.ready_entries.observe(len(rd.entries))
            sync = rd.must_sync and self.config.fsync
        # Committed entries are durable on a quorum already (the core counts
        # this node's own copy only once it is synced, and a follower's only
        # once the follower synced it), so they are applied -- and their
        # clients answered -- while this Ready's own write is being synced, as
        # etcd does: a client never waits for a sync its write does not need.
        answered = False
        if rd.committed_entries:
            answered = self._apply(rd.committed_entries)
        for rs in rd.read_states:
            for fut in self._reads.pop(rs.context, ()):
                if not fut.done():
                    fut.set_result(rs.index)
                    answered = True
            if rs.context == self._read_in_flight:
                self._read_in_flight = None
        if self._read_in_flight is None and self._read_queue:
            self._issue_reads(raw)
        answered = self._wake_appliers() or answered
        if not replicate_first:
            if answered:
                await asyncio.sleep(0)  # one loop turn: the answers are written now
            self._send(rd.messages)
        if sync:
            start = time.perf_counter()
            if raw.role is Role.LEADER:
                # The leader keeps stepping acknowledgements and taking
                # requests while its sync runs, so the next batch gathers
                # meanwhile. (What commits meanwhile is applied only in the
                # next Ready, after advance(): the core has one Ready at a time.)
                self._syncing = self._wal_thread.submit(storage.wal.sync)
                await asyncio.wrap_future(self._syncing)
            else:
                # A follower has nothing to commit before its own sync; syncing
                # on the loop's thread saves two thread hand-offs per Ready
                # (measured: less CPU per write, same or better latency).
                if answered and replicate_first:
                    await asyncio.sleep(0)  # answer the applied entries' clients first
                storage.wal.sync()
            self.metrics.fsync_seconds.observe(time.perf_counter() - start)
        self._send(rd.messages_after_persist)
        raw.advance(rd)
        # After the sync: a snapshot may not get ahead of the durable log.
        self._snapshots.maybe_take(storage)

    def _send(self, msgs: Sequence[PeerMessage]) -> None:
        if not msgs or self._transport is None:
            return
        kinds: dict[str, int] = {}
        for m in msgs:
            kind = type(m).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
        for kind, n in kinds.items():
            self.metrics.sent(kind, n)
        try:
            self._transport.send(msgs)
        except Exception as exc:  # a closed transport during shutdown
            logger.debug("send failed: %s", exc)

    def _on_soft_state(self, leader: NodeId | None, role: Role) -> None:
        if role is Role.CANDIDATE and self._role is not Role.CANDIDATE:
            self.metrics.elections.inc()
        if leader != self._leader:
            self._fail_forwards(leader)
            if leader is not None:
                self._retry_reads()  # ask the new leader
            self.metrics.leader_changes.inc()
            logger.info(
                "leader changed",
                extra={"fields": {"leader": leader, "role": role.value, "term": self.term}},
            )
            assert self._raw is not None
            self._ready_mark = self._raw.commit_index if leader is not None else None
        self._leader = leader
        self._role = role
        self.metrics.set_role(role.value)

    def _track_gauges(self, raw: RawNode) -> None:
        """Have the index and term gauges read ``raw`` when scraped, rather than be
        set after every Ready (four locked updates per Ready, on the hot path)."""
        m = self.metrics
        m.term.set_function(lambda: raw.term)
        m.commit_index.set_function(lambda: raw.commit_index)
        m.applied_index.set_function(lambda: self._replica.applied_index)
        m.last_index.set_function(lambda: raw.last_index)

    # ------------------------------------------------------------------ apply

    def _apply(self, entries: tuple[Entry, ...]) -> bool:
        """Apply ``entries``; whether any proposal of this node was answered."""
        answered = False
        replica = self._replica
        raw = self._raw
        assert raw is not None

        def apply_conf(cc: ConfChange) -> ConfState:
            return raw.apply_conf_change(cc, strict=True)

        for e in entries:
            if e.index <= replica.applied_index:
                continue  # already in the restored snapshot
            # An exception here is a state machine bug: it stops the node
            # (statemachine.py), rather than letting replicas diverge.
            result = replica.apply(e, apply_conf)
            if isinstance(result, ConfApplied | Refusal):
                result = self._conf_change_applied(e, result)
            p = self._proposals.pop(e.index, None)
            if p is None or p.future.done():
                continue
            answered = True
            if p.term != e.term:
                self.metrics.failed("lost")
                p.future.set_exception(
                    ProposalLost("the proposal was overwritten by a new leader; retry")
                )
            elif isinstance(result, ServerError):  # a conf change refused when applied
                p.future.set_exception(result)
            else:
                p.future.set_result(result)
        # Proposals at or below the applied index that never matched are lost.
        applied = replica.applied_index
        for idx in [i for i in self._proposals if i <= applied]:
            p = self._proposals.pop(idx)
            if not p.future.done():
                p.future.set_exception(ProposalLost("the proposal was not applied; retry"))
        return answered

    def _wake_appliers(self) -> bool:
        """Resolve the waiters for the applied index; whether there were any."""
        if not self._apply_waiters:
            return False
        keep = []
        woke = False
        applied = self._replica.applied_index
        for idx, fut in self._apply_waiters:
            if fut.done():
                continue
            if idx <= applied:
                fut.set_result(None)
                woke = True
            else:
                keep.append((idx, fut))
        self._apply_waiters = keep
        return woke

    def _conf_change_applied(self, e: Entry, result: ConfApplied | Refusal) -> object:
        """After the replica applied (or refused) a configuration change: the
        address book to disk, the transport's peers; the proposer's answer."""
        if isinstance(result, Refusal):
            logger.error("conf change at index %d not applied: %s", e.index, result.message)
            return _refusal_error(result)
        self._members_changed()
        conf = result.after
        logger.info(
            "membership changed",
            extra={
                "fields": {
                    "index": e.index,
                    "voters": ",".join(conf.voters),
                    "learners": ",".join(conf.learners),
                }
            },
        )
        return {"voters": list(conf.voters), "learners": list(conf.learners)}

    def _members_changed(self) -> None:
        """The address book changed (a change applied, a snapshot installed):
        save ``members.json``, and tell the transport where the peers are."""
        self._members_file.save()
        if self._transport is not None:
            self._transport.update_peers(self._peer_addrs())

    # ------------------------------------------------------------------ requests

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def term(self) -> Term:
        return self._raw.term if self._raw is not None else 0

    @property
    def leader(self) -> NodeId | None:
        return self._raw.leader if self._raw is not None else None

    @property
    def is_leader(self) -> bool:
        return self._raw is not None and self._raw.role is Role.LEADER

    @property
    def applied_index(self) -> Index:
        return self._replica.applied_index

    @property
    def state_machine(self) -> StateMachine:
        """The application's state machine (read-only use: reads, inspection)."""
        return self._replica.state_machine

    @property
    def members(self) -> dict[NodeId, Member]:
        """The address book: every member's peer and API addresses (read-only use)."""
        return self._replica.book.members

    @property
    def removed(self) -> dict[NodeId, Index]:
        """Ids removed from the cluster, with the index that removed them (read-only use)."""
        return self._replica.book.removed

    def leader_member(self) -> Member | None:
        leader = self.leader
        return self.members.get(leader) if leader is not None else None

    def _check_accepting(self) -> RawNode:
        if not self._accepting or self._raw is None:
            raise NodeStopped("node is not serving")
        return self._raw

    async def propose(self, command: bytes, *, timeout: float | None = None) -> object:
        """Replicate ``command`` and return the state machine's result for it.

        Raises:
            NoLeader: this node is not the leader (``.leader`` names the one it knows).
            ProposalLost: a new leader overwrote the entry; it was not applied.
            OutcomeUnknown: no answer within ``timeout``.
        """
        index, term = self._propose(command)
        return await self._await_proposal(index, term, timeout)

    def propose_nowait(
        self, command: bytes, *, timeout: float | None = None
    ) -> asyncio.Future[object]:
        """:meth:`propose` without a coroutine: the future of the state machine's
        result (or of the errors :meth:`propose` raises once proposed).

        Raises:
            NoLeader: as :meth:`propose` (before anything is proposed).
        """
        index, term = self._propose(command)
        fut, timer = self._register_proposal(index, term, timeout)
        fut.add_done_callback(lambda _: timer.cancel())
        return fut

    def _propose(self, command: bytes) -> tuple[Index, Term]:
        """Hand ``command`` to the core; the (index, term) it was given."""
        raw = self._check_accepting()
        if not command:
            raise ServerError("empty commands are reserved for no-ops")
        try:
            index = raw.propose(command)
        except NotLeader as exc:
            raise NoLeader("not the leader", leader=exc.leader) from exc
        except ProposalDropped as exc:
            self.metrics.failed("dropped")
            raise NoLeader(f"proposal dropped: {exc}", leader=raw.leader) from exc
        return index, raw.term

    async def _await_proposal(self, index: Index, term: Term, timeout: float | None) -> object:
        fut, timer = self._register_proposal(index, term, timeout)
        try:
            return await fut
        finally:
            timer.cancel()

    def _register_proposal(
        self, index: Index, term: Term, timeout: float | None
    ) -> tuple[asyncio.Future[object], asyncio.TimerHandle]:
        self.metrics.proposals.inc()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        self._proposals[index] = _Proposal(term, fut)
        self._wake.set()
        # A plain timer rather than wait_for(shield(...)): no extra task or
        # future per request. A proposal that times out stays registered, and
        # its entry is still applied (once) if it commits.
        timer = loop.call_later(
            timeout if timeout is not None else self.config.request_timeout_s,
            self._proposal_timed_out,
            fut,
        )
        return fut, timer

    def _proposal_timed_out(self, fut: asyncio.Future[object]) -> None:
        if not fut.done():
            self.metrics.failed("timeout")
            fut.set_exception(OutcomeUnknown("timed out waiting for the write to commit"))

    async def read_barrier(self, *, timeout: float | None = None) -> Index:
        """Wait until a linearizable read may be served locally; return the read index.

        Uses ReadIndex (dissertation §6.4), on followers too.

        Raises:
            NoLeader: no leader known.
            ReadTimeout: the read index was not confirmed in time.
        """
        raw = self._check_accepting()
        timeout = timeout if timeout is not None else self.config.request_timeout_s
        deadline = time.monotonic() + timeout
        if raw.leader is None:
            raise NoLeader("no leader")
        # ReadIndex on followers too: the core asks the leader (dissertation §6.4).
        path = "read_index_leader" if raw.role is Role.LEADER else "read_index_follower"
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Index] = loop.create_future()
        self._read_queue.append(fut)
        if self._read_in_flight is None:
            self._issue_reads(raw)
        timer = loop.call_later(timeout, _time_out, fut, "confirming leadership for a read")
        try:
            index = await fut
        finally:
            timer.cancel()
        self.metrics.read(path)
        await self.wait_applied(index, timeout=max(0.0, deadline - time.monotonic()))
        return index

    def _issue_reads(self, raw: RawNode) -> None:
        """Ask the core for one read index on behalf of every queued read."""
        batch = [f for f in self._read_queue if not f.done()]
        self._read_queue = []
        if not batch:
            return
        ctx = f"{self.node_id}:{next(self._read_seq)}:{self._rng.getrandbits(32)}".encode()
        try:
            raw.read_index(ctx)
        except ProposalDropped as exc:
            for f in batch:
                f.set_exception(NoLeader(f"read dropped: {exc}", leader=raw.leader))
            return
        self._reads[ctx] = batch
        self._read_in_flight = ctx
        self._read_sent_at = asyncio.get_running_loop().time()
        self._wake.set()

    def _retry_reads(self) -> None:
        """Give up on the read request in flight (its answer may never come: a
        lost message, a new leader); its reads join the next request, whose
        index is fixed later than theirs needs to be -- still linearizable."""
        ctx = self._read_in_flight
        if ctx is None or self._raw is None:
            return
        self._read_in_flight = None
        self._read_queue[:0] = self._reads.pop(ctx, [])
        self._issue_reads(self._raw)

    async def wait_applied(self, index: Index, *, timeout: float) -> None:
        """Wait until the state machine applied ``index``."""
        if self._replica.applied_index >= index:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._apply_waiters.append((index, fut))
        timer = loop.call_later(
            timeout, _time_out, fut, "waiting for the state machine to catch up"
        )
        try:
            await fut
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ forwarding

    def can_forward(self, leader: NodeId | None) -> bool:
        """Whether a write can go to ``leader`` over the peer link (it is connected)."""
        transport = self._transport
        return (
            leader is not None
            and leader != self.node_id
            and transport is not None
            and self._accepting
            and transport.is_connected(leader)
        )

    async def forward(self, payload: bytes, *, timeout: float | None = None) -> tuple[int, bytes]:
        """Have the leader serve ``payload`` (see :attr:`forward_handler`); its (status, body).

        Raises:
            NoLeader: no leader known, or this node is the leader.
            OutcomeUnknown: the leader changed, or did not answer in time; the
                write may or may not have been applied.
        """
        raw = self._check_accepting()
        leader = raw.leader
        if leader is None or leader == self.node_id:
            raise NoLeader("no leader to forward to", leader=leader)
        request_id = next(self._forward_seq)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._forwards[request_id] = (leader, fut)
        self._send_soon(
            ForwardRequest(
                term=raw.term,
                sender=self.node_id,
                to=leader,
                request_id=request_id,
                payload=payload,
            )
        )
        self.metrics.forwarded.inc()
        # The leader's own proposal times out after request_timeout_s; wait a little longer.
        limit = timeout if timeout is not None else self.config.request_timeout_s + 1.0
        timer = loop.call_later(limit, self._forward_timed_out, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            self._forwards.pop(request_id, None)

    def _forward_timed_out(self, fut: asyncio.Future[tuple[int, bytes]]) -> None:
        if not fut.done():
            self.metrics.failed("timeout")
            fut.set_exception(OutcomeUnknown("the leader did not answer a forwarded write in time"))

    def _forward_answered(self, msg: ForwardResponse) -> None:
        pending = self._forwards.get(msg.request_id)
        if pending is None or pending[0] != msg.sender or pending[1].done():
            return  # timed out, failed over, or not ours
        pending[1].set_result((msg.status, msg.body))

    def _fail_forwards(self, leader: NodeId | None) -> None:
        """The leader changed: writes forwarded to another node have an unknown outcome."""
        for to, fut in self._forwards.values():
            if to != leader and not fut.done():
                fut.set_exception(
                    OutcomeUnknown("the leader changed; the write may or may not be applied")
                )

    def _serve_forward(self, msg: ForwardRequest) -> None:
        handler = self.forward_handler
        if handler is None:
            self._answer_forward(
                msg, 503, b'{"error": "this node does not serve forwarded writes"}'
            )
            return

        def reply(status: int, body: bytes) -> None:
            self._answer_forward(msg, status, body)

        try:
            handler(msg.payload, reply)
        except Exception:
            logger.exception("serving a forwarded write failed")
            reply(500, b'{"error": "internal error"}')

    def _answer_forward(self, msg: ForwardRequest, status: int, body: bytes) -> None:
        if self._transport is None or self._stopping:
            return
        self._send_soon(
            ForwardResponse(
                term=self.term,
                sender=self.node_id,
                to=msg.sender,
                request_id=msg.request_id,
                status=status,
                body=body,
            )
        )

    def _send_soon(self, msg: PeerMessage) -> None:
        """Send ``msg`` at the start of the next loop turn, with every other message
        given to this method in this turn: the forwards of many client requests
        (and the leader's answers to them, which resolve together when a Ready
        applies their entries) then share one frame and one write per peer."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush_outbox)
        self._outbox.append(msg)

    def _flush_outbox(self) -> None:
        msgs, self._outbox = self._outbox, []
        if self._transport is not None and not self._stopping:
            self._send(msgs)

    # ------------------------------------------------------------------ membership

    async def add_member(self, node_id: NodeId, member: Member, *, learner: bool) -> object:
        """Propose adding ``node_id`` (its addresses travel in the change's context).

        Raises:
            MemberRemoved: ``node_id`` was a member once and was removed.
            BadRequest: ``node_id`` is not a valid id (:mod:`raftkv.limits`), or
                the cluster has :data:`~raftkv.limits.MAX_MEMBERS` members.
        """
        self._refuse_removed(node_id)
        kind = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        context = json.dumps({node_id: member.to_json()}, sort_keys=True).encode()
        cc = ConfChange(changes=(ConfChangeSingle(kind, node_id),), context=context)
        refusal = refuse_members(cc, self._replica.conf_state.members())
        if refusal is not None:
            raise _refusal_error(refusal)
        return await self._propose_conf_change(cc)

    async def promote_member(self, node_id: NodeId) -> object:
        """Propose making the learner ``node_id`` a voter, once it has caught up.

        Raises:
            MemberRemoved: ``node_id`` was removed from the cluster.
            BadRequest: ``node_id`` is not a learner.
            LearnerNotReady: its log is too far behind the leader's (retry later).
        """
        raw = self._check_accepting()
        if raw.role is not Role.LEADER:
            raise NoLeader("not the leader", leader=raw.leader)
        self._refuse_removed(node_id)
        status = raw.status()
        if node_id not in status.conf_state.learners:
            raise BadRequest(f"{node_id} is not a learner")
        match = status.progress[node_id].match if node_id in status.progress else 0
        # etcd's rule: a learner may vote once it holds 90% of the leader's log.
        if match < raw.last_index * 0.9:
            raise LearnerNotReady(
                f"learner {node_id} is not caught up yet (match {match} of {raw.last_index})"
            )
        member = self.members.get(node_id)
        context = (
            json.dumps({node_id: member.to_json()}, sort_keys=True).encode() if member else b""
        )
        return await self._propose_conf_change(
            ConfChange(
                changes=(ConfChangeSingle(ConfChangeType.ADD_VOTER, node_id),), context=context
            )
        )

    def _refuse_removed(self, node_id: NodeId) -> None:
        """Refuse an id that was removed once, before anything is proposed."""
        if node_id in self.removed:
            raise MemberRemoved(node_id)

    async def remove_member(self, node_id: NodeId) -> object:
        return await self._propose_conf_change(
            ConfChange(changes=(ConfChangeSingle(ConfChangeType.REMOVE_NODE, node_id),))
        )

    async def _propose_conf_change(self, cc: ConfChange) -> object:
        raw = self._check_accepting()
        try:
            index = raw.propose_conf_change(cc)
        except NotLeader as exc:
            raise NoLeader("not the leader", leader=exc.leader) from exc
        except ProposalDropped as exc:
            raise NoLeader(f"membership change refused: {exc}", leader=raw.leader) from exc
        except RaftError as exc:  # ConfChangeError: does not apply to the membership
            raise BadRequest(f"membership change refused: {exc}") from exc
        return await self._await_proposal(index, raw.term, None)

    async def transfer_leadership(
        self, to: NodeId, *, timeout: float | None = None
    ) -> NodeId | None:
        """Ask the leader (this node) to hand over to ``to``; wait for a new leader."""
        raw = self._check_accepting()
        if raw.role is not Role.LEADER:
            raise NoLeader("not the leader", leader=raw.leader)
        if to == self.node_id:
            return to
        try:
            raw.transfer_leadership(to)
        except NotLeader as exc:
            raise NoLeader("not the leader", leader=exc.leader) from exc
        except RaftError as exc:
            raise BadRequest(f"transfer refused: {exc}") from exc
        self._wake.set()
        limit = timeout if timeout is not None else 2 * self.config.election_timeout_ms / 1000
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if raw.leader == to:
                return to
            await asyncio.sleep(self.config.heartbeat_interval_ms / 4000)
        raise OutcomeUnknown(f"leadership did not move to {to} in time")

    # ------------------------------------------------------------------ views

    def status(self) -> NodeStatus:
        raw = self._raw
        if raw is None:
            raise NodeStopped("node not started")
        return NodeStatus.of(
            self.node_id, raw, applied_index=self._replica.applied_index, members=self.members
        )

    def is_live(self) -> bool:
        return (
            self._started
            and not self._stopping
            and self._driver_done is not None
            and not self._driver_done.done()
        )

    def is_ready(self) -> bool:
        """Knows a leader and has applied what was committed when it learned of it."""
        if not self.is_live() or not self._accepting or self.leader is None:
            return False
        return self._ready_mark is not None and self._replica.applied_index >= self._ready_mark
