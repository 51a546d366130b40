"""The node runtime: :class:`RaftNode`, an asyncio driver around one :class:`~raftkv.core.RawNode`.

Rule 1: the core is a field pumped by the runtime (STYLE.md, encode/httpcore).
Every call into the core -- ``tick``, ``step``, ``propose``, ``read_index``,
``ready``, ``advance`` -- happens synchronously on the event loop's thread.
The WAL sync runs on that thread too, unless the disk is slow: then in a thread
of its own, so the loop keeps stepping messages and taking requests meanwhile
(the core allows step/tick/propose between ``ready()`` and ``advance()``).
Besides that sync, only the snapshot thread touches storage
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

Rule 3: crash-stop. When the drive loop fails (a WAL or snapshot write,
applying an entry), or the ticker, or stepping a peer message (a broken
invariant in the core), the node serves nothing more and fails what was
pending; it cannot recover in place: the process should exit and restart from
the data dir (:attr:`RaftNode.failed`).

:class:`RaftNode` owns the lifecycle, the loops and the Ready handling, and
is the node's public face; every other job is a part it composes (the package
docstring lists them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from raftkv.core.config import Config
from raftkv.core.errors import RaftError
from raftkv.core.rawnode import RawNode
from raftkv.core.ready import Ready
from raftkv.core.types import (
    ConfChange,
    ConfState,
    Entry,
    Index,
    NodeId,
    Role,
    Term,
)
from raftkv.replica.commands import Command
from raftkv.replica.membership import Member, Refusal
from raftkv.replica.replica import ConfApplied, Replica
from raftkv.replica.statemachine import StateMachine
from raftkv.server.config import ServerConfig
from raftkv.server.errors import NodeFailed, NodeStopped, NoLeader, OutcomeUnknown, ServerError
from raftkv.server.identity import claim_data_dir
from raftkv.server.metrics import NodeMetrics
from raftkv.server.node.admin import Admin, refusal_error
from raftkv.server.node.datadir import MembersFile, is_empty, open_storage
from raftkv.server.node.forwarding import ForwardHandler, Forwarding
from raftkv.server.node.leases import Leases, LeaseView
from raftkv.server.node.proposals import OnDone, Proposals
from raftkv.server.node.quota import SpaceQuota
from raftkv.server.node.reads import Reads
from raftkv.server.node.snapshots import Snapshots
from raftkv.server.node.status import NodeStatus
from raftkv.server.node.syncer import SyncThread
from raftkv.server.node.watches import REASON_FAILED, Watches, WatchStream
from raftkv.server.security import peer_ssl_contexts
from raftkv.storage.disk_storage import DiskStorage
from raftkv.storage.wal import WAL, sync_duplicate
from raftkv.transport.base import InMemoryHub, Transport
from raftkv.transport.forward import ForwardRequest, ForwardResponse, PeerMessage
from raftkv.transport.tcp import TcpTransport

__all__ = ["RaftNode", "default_state_machine"]

logger = logging.getLogger(__name__)


INLINE_SYNC_MAX_SECONDS = 0.002
"""A node whose recent WAL syncs took less than this on average syncs on the
event loop's thread, one Ready at a time; with a slower disk, in the WAL
thread, while the loop handles the next Readys (see ``_handle_ready``)."""


def _timed_sync(wal: WAL) -> float:
    """``wal.sync()`` on the loop's thread; the seconds the sync alone took."""
    start = time.perf_counter()
    wal.sync()
    return time.perf_counter() - start


def _timed_thread_sync(fd: int) -> float:
    """In the WAL thread: sync the descriptor :meth:`WAL.begin_sync` duplicated
    (and close it); the seconds that took."""
    start = time.perf_counter()
    sync_duplicate(fd)
    return time.perf_counter() - start


def default_state_machine() -> StateMachine:
    """The KV state machine of :mod:`raftkv.replica.kv`."""
    from raftkv.replica.kv import KVStateMachine

    sm: StateMachine = KVStateMachine()
    return sm


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
        # A slow disk's WAL syncs run here, off the event loop (its own thread:
        # nothing else queued in the loop's default executor can delay a sync),
        # while the loop handles the next Readys (asynchronous storage writes).
        self._wal_thread = SyncThread(f"raftkv-wal-{config.node_id}")
        # Readys accepted but not yet persisted, oldest first, each with the
        # WAL write count a sync must cover before it persists (0: none of its
        # own). Invariant: a sync runs (_syncing) while one needs a sync.
        self._unpersisted: deque[tuple[Ready, int]] = deque()
        self._syncing = False
        self._drained: asyncio.Future[None] | None = None  # set when a sync ends
        self._sync_seconds = 0.0  # a moving average of this node's WAL sync times
        self._durable_index = 0  # the last entry index the WAL holds durably
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False  # the loops stop: stop() was called, or the node failed
        self._started = False
        self._closed = False  # stop() ran (or runs)
        self._accepting = False
        self._driver_done: asyncio.Future[None] | None = None
        # Crash-stop: set once, when the drive loop (and with it the WAL or the
        # snapshot store) or the ticker fails; the node then serves nothing more.
        self._failure: NodeFailed | None = None
        self._failed: asyncio.Future[NodeFailed] | None = None
        self._leader: NodeId | None = None
        self._role: Role = Role.FOLLOWER
        # Commit index seen when the current leader became known (readiness).
        self._ready_mark: Index | None = None

        # The parts, one job each.
        wake = self._wake.set
        self._members_file = MembersFile(self._data_dir, self._replica.book, fsync=config.fsync)
        self._snapshots = Snapshots(
            config.node_id,
            self._replica,
            self.metrics,
            every=config.snapshot_entries,
            fail=self._fail,
            wake=wake,
        )
        self._proposals = Proposals(self.metrics, timeout_s=config.request_timeout_s, wake=wake)
        self._reads = Reads(
            config.node_id,
            self._rng,
            self.metrics,
            timeout_s=config.request_timeout_s,
            retry_after_s=config.election_timeout_ms / 1000,
            applied_index=lambda: self._replica.applied_index,
            wake=wake,
        )
        self._forwarding = Forwarding(
            config.node_id,
            self.metrics,
            timeout_s=config.request_timeout_s,
            term=lambda: self.term,
            send=self._send_while_running,
        )
        self._admin = Admin(
            config.node_id,
            self._replica,
            self._proposals,
            core=self._check_accepting,
            wake=wake,
            election_timeout_s=config.election_timeout_ms / 1000,
            poll_s=config.heartbeat_interval_ms / 4000,
        )
        # Watchers of the store's changes, and the leader's lease clock.
        self._watches = Watches(
            self._replica.state_machine,
            election_timeout_s=config.election_timeout_ms / 1000,
            progress_interval_s=config.watch_progress_interval_s,
            buffer_bytes=config.watch_buffer_bytes,
            max_watchers=config.max_watchers,
            fail=self._fail,
        )
        self._leases = Leases(
            self._replica.state_machine,
            election_timeout_ms=config.election_timeout_ms,
            propose=self._propose_unwatched,
        )
        self.metrics.watch_watches_and_leases(
            watchers=lambda: len(self._watches), leases=lambda: self._leases.count
        )
        # The KV store's space quota (None for another state machine).
        self._quota = SpaceQuota.of(
            self._replica.state_machine,
            config.quota_bytes,
            self.metrics,
            retention=config.auto_compaction_retention,
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
        self._durable_index = self._storage.last_index()  # what is on disk at start is durable
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
        self._watches.stop()
        if (
            transfer
            and self._failure is None
            and self._raw is not None
            and self._raw.role is Role.LEADER
        ):
            await self._admin.hand_over(self._raw)
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
        if self._failure is not None and self._wal_thread.running:
            # A failed node's sync that still runs may never return (a dead
            # disk): do not wait for it, and leave the files to the process exit.
            self._wal_thread.close(wait=False)
            logger.warning("node stopped with a WAL sync still running; files left open")
            return
        # A sync still running in the WAL thread (its Ready was cancelled) must
        # finish before the files close under it.
        self._wal_thread.close(wait=True)
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
        (:func:`raftkv.server.http.server.serve` re-raises the failure).
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
        self._watches.stop(REASON_FAILED)
        self._fail_all(NodeStopped("node failed"))
        if not self.failed.done():
            self.failed.set_result(failure)

    def _fail_all(self, exc: ServerError) -> None:
        """Fail everything pending with ``exc``; a write's outcome is unknown instead."""
        # A pending proposal may still commit: its outcome is unknown (504), not 503.
        unknown = OutcomeUnknown(f"{exc.message}; the write may or may not be applied")
        self._proposals.fail_all(unknown)
        self._reads.fail_all(exc)
        self._forwarding.fail_all(unknown)

    # ------------------------------------------------------------------ inputs

    def _on_messages(self, msgs: list[PeerMessage]) -> None:
        raw = self._raw
        if raw is None or self._stopping:
            return
        self.metrics.received(msgs)
        for msg in msgs:
            if isinstance(msg, ForwardRequest):
                self._forwarding.serve(msg)
                continue
            if isinstance(msg, ForwardResponse):
                self._forwarding.answered(msg)
                continue
            try:
                raw.step(msg)
            except RaftError as exc:
                logger.debug("dropped %s: %s", type(msg).__name__, exc)
            except Exception as exc:
                # A broken invariant in the core: crash-stop, as in the drive
                # loop (the transport would only close the peer link).
                self._fail(f"stepping {type(msg).__name__}", exc)
                return
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
            now = loop.time()
            self._proposals.expire(now)
            self._forwarding.expire(now)
            self._reads.tick(self._raw)
            self._leases.tick(self._raw)
            self._watches.tick(now, self._raw.leader is not None)
            if self._quota is not None and self._accepting:
                self._quota.tick(self._raw, self._replica.applied_index)
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
                rd = raw.ready()
                if rd.snapshot is not None:
                    await self._install(raw, rd)
                else:
                    await self._handle_ready(raw, rd)
        except Exception as exc:
            # Storage errors land here (WAL writes and syncs, snapshots), and
            # so do broken invariants: crash-stop, never serve frozen state.
            self._fail("drive loop", exc)
        finally:
            if not self._driver_done.done():
                self._driver_done.set_result(None)

    async def _handle_ready(self, raw: RawNode, rd: Ready) -> None:
        """Steps 1, 2 (the writes) and 4 of ``rd``, then accept it; its sync runs
        in the WAL thread while the loop goes on (``ready.py``)."""
        storage = self._storage
        assert storage is not None
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        # New entries go to the followers first, so that they write them while
        # this node does (dissertation §10.2.1). A Ready without new entries
        # carries only commit notices, heartbeats and the like, which no
        # client waits on: its committed entries' clients are answered first.
        replicate_first = bool(rd.entries)
        if replicate_first:
            self._send(rd.messages)
        if rd.entries or rd.hard_state is not None:
            storage.save(rd.entries, rd.hard_state, sync=False)
            if rd.entries:
                self.metrics.ready_entries.observe(len(rd.entries))
        # Committed entries are durable on a quorum already (the core counts
        # this node's own copy only once it is synced, and a follower's only
        # once the follower synced it), so they are applied -- and their
        # clients answered -- while this node's own writes are being synced,
        # as etcd does: a client never waits for a sync its write does not need.
        answered = False
        if rd.committed_entries:
            answered = self._apply(rd.committed_entries)
        answered = self._reads.answered(raw, rd.read_states) or answered
        answered = self._reads.wake_appliers() or answered
        if not replicate_first:
            # The answers to writes forwarded here were made as they applied:
            # they lead the commit notices, in one frame per follower, before
            # anything else (a lone client's put waits on nothing else).
            forwarded = self._forwarding.take_outbox()
            if forwarded:
                self._send([*forwarded, *rd.messages])
            if answered:
                await asyncio.sleep(0)  # one loop turn: the HTTP answers are written now
            if not forwarded:
                self._send(rd.messages)
        raw.accept(rd)
        if not (rd.must_sync and self.config.fsync):
            # Nothing of its own to sync: persisted now, or after the Readys before it.
            self._unpersisted.append((rd, 0))
            self._persist_upto(raw, 0)
        elif self._sync_seconds > INLINE_SYNC_MAX_SECONDS:
            # A slow disk: the sync runs in the WAL thread, and the loop goes on
            # with the next Readys meanwhile -- sending new entries, applying
            # what commits, answering clients (asynchronous storage writes).
            self._unpersisted.append((rd, storage.wal.writes))
            if not self._syncing:
                self._start_sync()
        else:
            # A fast disk: the loop syncs itself, one Ready at a time. A hand-off
            # to a thread costs a thread wake-up, which on a busy machine
            # preempts the loop, and then the GIL twice: the woken thread waits
            # for it before its fdatasync starts and again after (measured:
            # more CPU per write at every load, no more writes per second, even
            # with the loop handling the next Readys meanwhile; docs/benchmarks.md).
            if answered and replicate_first:
                await asyncio.sleep(0)  # answer the applied entries' clients first
            self._observe_sync(_timed_sync(storage.wal))
            # That sync covered every write, also those of the Readys still
            # waiting for the WAL thread's (the disk just got faster).
            self._unpersisted.append((rd, 0))
            self._persist_upto(raw, storage.wal.writes)

    async def _install(self, raw: RawNode, rd: Ready) -> None:
        """A Ready with a snapshot from the leader, whole: once the Readys before
        it persisted, install the snapshot, write and sync, apply, advance."""
        while self._unpersisted and not self._stopping:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        if self._stopping:
            return
        storage = self._storage
        assert storage is not None and rd.snapshot is not None
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        self._send(rd.messages)
        if not rd.snapshot.is_empty():
            self._snapshots.install(storage, rd.snapshot)
            self._members_changed()
            self.metrics.snapshots_installed.inc()
            logger.info(
                "installed snapshot", extra={"fields": {"index": rd.snapshot.metadata.index}}
            )
        storage.save(rd.entries, rd.hard_state, sync=self.config.fsync)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        self._reads.answered(raw, rd.read_states)
        self._reads.wake_appliers()
        self._send(rd.messages_after_persist)
        raw.advance(rd)
        self._durable_index = max(storage.last_index(), rd.snapshot.metadata.index)
        self._maybe_snapshot()

    def _start_sync(self) -> None:
        """Hand a sync of every WAL write so far to the WAL thread."""
        assert self._storage is not None
        wal = self._storage.wal
        started = wal.begin_sync()
        if started is None:  # everything is durable already
            self._sync_done(wal.writes, None)
            return
        fd, covered = started
        self._syncing = True
        self._wal_thread.run(functools.partial(_timed_thread_sync, fd)).add_done_callback(
            functools.partial(self._sync_done, covered)
        )

    def _sync_done(self, covered: int, fut: asyncio.Future[float] | None) -> None:
        """The WAL's first ``covered`` writes are durable: persist the Readys they
        hold, in order, and start the next sync if a Ready still needs one."""
        self._syncing = False
        raw = self._raw
        storage = self._storage
        try:
            if self._stopping or raw is None or storage is None:
                return
            if fut is not None:
                if fut.cancelled():
                    return
                error = fut.exception()
                if error is not None and not isinstance(error, OSError):
                    raise error
                storage.wal.end_sync(covered, error)
                self._observe_sync(fut.result())
            self._persist_upto(raw, covered)
            if self._unpersisted:
                self._start_sync()  # writes made while this sync ran
        except Exception as exc:
            self._fail("WAL sync", exc)
        finally:
            drained = self._drained
            if drained is not None and not drained.done() and not self._syncing:
                drained.set_result(None)  # _install looks again
        self._wake.set()

    def _observe_sync(self, took: float) -> None:
        self.metrics.fsync_seconds.observe(took)
        self._sync_seconds += (took - self._sync_seconds) / 8

    def _persist_upto(self, raw: RawNode, covered: int) -> None:
        """Step 3 and the end of step 5 for the waiting Readys, in order, whose
        writes are among the WAL's first ``covered`` (0: those with no writes of
        their own to wait for); their acknowledgements leave together (one frame
        per peer, not one per Ready)."""
        q = self._unpersisted
        msgs: list[PeerMessage] = []
        while q and q[0][1] <= covered:
            rd, _ = q.popleft()
            msgs.extend(rd.messages_after_persist)
            raw.persisted(rd)
            if rd.entries:
                self._durable_index = rd.entries[-1].index
        self._send(msgs)
        self._maybe_snapshot()

    def _maybe_snapshot(self) -> None:
        """Take a snapshot if one is due and the applied state is in the durable
        log: a snapshot may not get ahead of the WAL (a restart would find the
        log ending before the snapshot)."""
        if self._replica.applied_index <= self._durable_index:
            assert self._storage is not None
            self._snapshots.maybe_take(self._storage)

    def _send(self, msgs: Sequence[PeerMessage]) -> None:
        if not msgs or self._transport is None:
            return
        self.metrics.sent(msgs)
        try:
            self._transport.send(msgs)
        except Exception as exc:  # a closed transport during shutdown
            logger.debug("send failed: %s", exc)

    def _send_while_running(self, msgs: Sequence[PeerMessage]) -> None:
        """:meth:`_send`, unless the node stops (then ``msgs`` are dropped)."""
        if self._transport is not None and not self._stopping:
            self._send(msgs)

    def _on_soft_state(self, leader: NodeId | None, role: Role) -> None:
        if role is Role.CANDIDATE and self._role is not Role.CANDIDATE:
            self.metrics.elections.inc()
        if leader != self._leader:
            assert self._raw is not None
            self._forwarding.leader_changed(leader)
            if leader is not None:
                self._reads.retry(self._raw)  # ask the new leader
            self.metrics.leader_changes.inc()
            logger.info(
                "leader changed",
                extra={"fields": {"leader": leader, "role": role.value, "term": self.term}},
            )
            self._ready_mark = self._raw.commit_index if leader is not None else None
        self._leader = leader
        self._role = role
        self._leases.role_changed(role)
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

        term = 0
        for e in entries:
            if e.index <= replica.applied_index:
                continue  # already in the restored snapshot
            term = e.term
            # An exception here is a state machine bug: it stops the node
            # (statemachine.py), rather than letting replicas diverge.
            result = replica.apply(e, apply_conf)
            self._watches.applied()
            if isinstance(result, ConfApplied | Refusal):
                result = self._conf_change_applied(e, result)
            answered = self._proposals.applied(e, result) or answered
        self._watches.flush()
        if term:
            self._leases.applied(raw, term)
        # Proposals at or below the applied index that never matched are lost.
        self._proposals.lost_up_to(replica.applied_index)
        if self._quota is not None and self._accepting:
            self._quota.applied(raw, replica.applied_index)
        return answered

    def _conf_change_applied(self, e: Entry, result: ConfApplied | Refusal) -> object:
        """After the replica applied (or refused) a configuration change: the
        address book to disk, the transport's peers; the proposer's answer."""
        if isinstance(result, Refusal):
            logger.error("conf change at index %d not applied: %s", e.index, result.message)
            return refusal_error(result)
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

    # ------------------------------------------------------------------ views

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
    def founders(self) -> tuple[NodeId, ...] | None:
        """The members log entry 1 founded the cluster with (None: not known)."""
        return self._replica.book.founders

    @property
    def removed(self) -> dict[NodeId, Index]:
        """Ids removed from the cluster, with the index that removed them (read-only use)."""
        return self._replica.book.removed

    def leader_member(self) -> Member | None:
        leader = self.leader
        return self.members.get(leader) if leader is not None else None

    def status(self) -> NodeStatus:
        raw = self._raw
        if raw is None:
            raise NodeStopped("node not started")
        return NodeStatus.of(
            self.node_id,
            raw,
            applied_index=self._replica.applied_index,
            members=self.members,
            store=self._quota.status_fields() if self._quota is not None else None,
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

    # ------------------------------------------------------------------ requests

    def _check_accepting(self) -> RawNode:
        if not self._accepting or self._raw is None:
            raise NodeStopped("node is not serving")
        return self._raw

    def admit_write(self, command: Command) -> None:
        """Check, on the leader before proposing ``command``, that the space
        quota lets it in (:mod:`~raftkv.server.node.quota`); a no-op for a
        state machine without a quota.

        Raises:
            NoSpace: the NOSPACE alarm is raised and ``command`` may add data.
        """
        if self._quota is not None:
            self._quota.admit(command)

    async def propose(self, command: bytes, *, timeout: float | None = None) -> object:
        """Replicate ``command`` and return the state machine's result for it.

        Raises:
            NoLeader: this node is not the leader (``.leader`` names the one it knows).
            ProposalLost: a new leader overwrote the entry; it was not applied.
            OutcomeUnknown: no answer within ``timeout``.
        """
        index, term = self._proposals.submit(self._check_accepting(), command)
        return await self._proposals.wait(index, term, timeout)

    def _propose_unwatched(self, command: bytes) -> None:
        """Propose ``command`` on the leader; nobody waits for its result (the
        lessor's revokes and checkpoints: a lost one is proposed again later)."""
        self._proposals.submit(self._check_accepting(), command)
        self._wake.set()

    def propose_nowait(
        self,
        command: bytes,
        *,
        timeout: float | None = None,
        on_done: OnDone | None = None,
    ) -> asyncio.Future[object]:
        """:meth:`propose` without a coroutine: the future of the state machine's
        result (or of the errors :meth:`propose` raises once proposed), passed
        to ``on_done`` as soon as it is resolved (see :meth:`Proposals.future`).

        Raises:
            NoLeader: as :meth:`propose` (before anything is proposed).
        """
        index, term = self._proposals.submit(self._check_accepting(), command)
        return self._proposals.future(index, term, timeout, on_done)

    async def read_barrier(self, *, timeout: float | None = None) -> Index:
        """Wait until a linearizable read may be served locally; return the read index.

        Uses ReadIndex (dissertation §6.4), on followers too.

        Raises:
            NoLeader: no leader known.
            ReadTimeout: the read index was not confirmed in time.
        """
        return await self._reads.barrier(self._check_accepting(), timeout=timeout)

    async def wait_applied(self, index: Index, *, timeout: float) -> None:
        """Wait until the state machine applied ``index``."""
        await self._reads.wait_applied(index, timeout=timeout)

    # ------------------------------------------------------------------ watches and leases

    def open_watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: frozenset[str] = frozenset(),
        progress_notify: bool = False,
        require_leader: bool = True,
        ready: asyncio.Event | None = None,
    ) -> WatchStream:
        """A watcher of ``[key, range_end)`` on this node (a follower too: it sees
        applied, committed events), from ``start_revision`` (0: the next one).
        Close the returned stream when done (:mod:`~raftkv.server.node.watches`).

        Raises:
            NoLeader: ``require_leader`` and no leader is known.
            NodeStopped: the node is not serving.
            BadRequest: the state machine has no watches.
        """
        self._check_accepting()
        if require_leader and self.leader is None:
            raise NoLeader("no leader: a watch that requires one cannot start")
        return self._watches.open(
            key,
            range_end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            progress_notify=progress_notify,
            require_leader=require_leader,
            ready=ready,
        )

    @property
    def watchers(self) -> int:
        """Open watchers on this node."""
        return len(self._watches)

    @property
    def leases(self) -> Leases:
        """The lease clock and requests (:mod:`~raftkv.server.node.leases`)."""
        return self._leases

    async def lease_keepalive(self, lease_id: int) -> int | None:
        """On the leader: renew ``lease_id`` once a ReadIndex round confirmed
        leadership; its TTL in seconds, or None if there is no such lease.

        Raises:
            NoLeader: not the leader (or leadership changed meanwhile).
            ReadTimeout: leadership was not confirmed in time.
        """
        raw = self._check_accepting()
        term = raw.term
        checkpoint = self._leases.keepalive_checkpoint(lease_id)
        if checkpoint is None:
            await self._confirm_leadership()
        else:
            # Committing the reset of its replicated remaining time confirms
            # leadership too (raftkv.replica.lessor, rule 3).
            await self.propose(checkpoint)
            if raw.role is not Role.LEADER or raw.term != term:
                raise NoLeader("leadership changed", leader=raw.leader)
        return self._leases.keepalive(lease_id)

    async def lease_time_to_live(self, lease_id: int, *, keys: bool) -> LeaseView | None:
        """On the leader, once leadership is confirmed: ``lease_id``'s remaining
        TTL (and keys), or None if there is no such lease.

        Raises:
            NoLeader: not the leader (or leadership changed meanwhile).
        """
        await self._confirm_leadership()
        return self._leases.time_to_live(lease_id, keys=keys)

    async def _confirm_leadership(self) -> None:
        raw = self._check_accepting()
        if raw.role is not Role.LEADER:
            raise NoLeader("not the leader", leader=raw.leader)
        term = raw.term
        await self.read_barrier()
        if raw.role is not Role.LEADER or raw.term != term:
            raise NoLeader("leadership changed", leader=raw.leader)

    # ------------------------------------------------------------------ forwarding

    @property
    def forward_handler(self) -> ForwardHandler | None:
        """Serves a write forwarded to this node (the leader): called with the
        payload and a reply function, which it calls once with (HTTP status,
        body), now or later. Set by the API before the node starts (the API alone
        decides statuses and bodies); without it forwarded writes are dropped."""
        return self._forwarding.handler

    @forward_handler.setter
    def forward_handler(self, handler: ForwardHandler | None) -> None:
        self._forwarding.handler = handler

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
        return await self._forwarding.forward(self._check_accepting(), payload, timeout=timeout)

    # ------------------------------------------------------------------ membership

    async def add_member(self, node_id: NodeId, member: Member, *, learner: bool) -> object:
        """Propose adding ``node_id`` (its addresses travel in the change's context).

        Raises:
            MemberRemoved: ``node_id`` was a member once and was removed.
            BadRequest: ``node_id`` is not a valid id (:mod:`raftkv.limits`), or
                the cluster has :data:`~raftkv.limits.MAX_MEMBERS` members.
        """
        return await self._admin.add_member(node_id, member, learner=learner)

    async def promote_member(self, node_id: NodeId) -> object:
        """Propose making the learner ``node_id`` a voter, once it has caught up.

        Raises:
            MemberRemoved: ``node_id`` was removed from the cluster.
            BadRequest: ``node_id`` is not a learner.
            LearnerNotReady: its log is too far behind the leader's (retry later).
        """
        return await self._admin.promote_member(node_id)

    async def remove_member(self, node_id: NodeId) -> object:
        return await self._admin.remove_member(node_id)

    async def update_member(self, node_id: NodeId, member: Member) -> object:
        """Propose new addresses for the member ``node_id``.

        Raises:
            NoLeader: this node is not the leader.
            MemberRemoved: ``node_id`` was removed from the cluster.
            MemberNotFound: ``node_id`` is not a member.
            RaftAddressTaken: another member has that Raft address.
        """
        return await self._admin.update_member(node_id, member)

    def removal_keeps_quorum(self, node_id: NodeId) -> bool:
        """Whether removing ``node_id`` leaves a quorum of recently active voters
        (on the leader; True on a follower)."""
        return self._admin.removal_keeps_quorum(node_id)

    async def transfer_leadership(
        self, to: NodeId, *, timeout: float | None = None
    ) -> NodeId | None:
        """Ask the leader (this node) to hand over to ``to``; wait for a new leader."""
        return await self._admin.transfer_leadership(to, timeout=timeout)
