"""N Raft nodes driven through their Ready loops over the simulated network and disks.

Rule: the cluster is the only driver of the cores and follows the Ready contract
(``raftkv.core.ready``) to the letter: send ``messages`` at once, write entries
and hard state to the disk, and only after the fsync completes send
``messages_after_persist``, apply ``committed_entries`` and ``advance()``. Every
input (tick, message, proposal) is followed by an observation for the checkers
and, if no Ready is in flight, by the next Ready. Everything happens on the
virtual clock; events at one instant run in scheduling order, and anything that
iterates over nodes does so in sorted id order.

A crash drops a node's volatile state -- its RawNode, replica, pending
client requests, the in-flight Ready and unsynced disk writes. A restart builds a
new RawNode from the durable disk with ``applied=0``, so committed entries are
re-delivered and the replica is rebuilt from its snapshot and the log.

Every node applies committed entries with :class:`~raftkv.replica.Replica` and
the server's KV state machine (:mod:`raftkv.replica.kv`): the code a real node
runs, configuration changes and snapshot images included.

The node's state and the options live in :mod:`raftkv.sim.node`; what a node
answers its clients (proposals, reads, watch streams, keep-alives) in
:mod:`raftkv.sim.serving`, whose classes :class:`Cluster` inherits; the trace
vocabulary in :mod:`raftkv.sim.describe`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from heapq import heappush as _heappush

from raftkv.core import (
    ConfChange,
    Config,
    ConfState,
    EntryType,
    NodeId,
    Raft,
    RawNode,
    Ready,
    Role,
    describe_message,
)
from raftkv.replica import ConfApplied, Refusal, Replica
from raftkv.replica.kv import (
    Answer,
    Command,
    Deleted,
    KVResult,
    KVStateMachine,
    LeaseGranted,
    LeaseRevoked,
    Listing,
    TxnAnswer,
)
from raftkv.replica.lessor import Lessor
from raftkv.replica.watch import WatchHub
from raftkv.sim.clock import Clock, Micros
from raftkv.sim.describe import _KINDS, message_kind
from raftkv.sim.disk import SimDisk
from raftkv.sim.invariants import Invariants, InvariantViolation, Violation
from raftkv.sim.leases import KeepAliveRequest, LeaseLog, LessorForward
from raftkv.sim.network import Handler, Network
from raftkv.sim.node import ClusterParams, SimNode
from raftkv.sim.serving import WatchLeaseServing, _client_outcome, _ClientNumbers
from raftkv.sim.trace import Tracer
from raftkv.sim.watches import RevisionLog, WatchClose, WatchOpen
from raftkv.sim.workload import ClientReply, ClientRequest, Outcome

_CONF_CHANGE = EntryType.CONF_CHANGE
_ANSWERS = (KVResult, Listing, Deleted, TxnAnswer, LeaseGranted, LeaseRevoked)


def _kv_state_machine(decode_cache: dict[bytes, Command]) -> KVStateMachine:
    return KVStateMachine(decode_cache=decode_cache)


def _members(conf: ConfState) -> set[NodeId]:
    return {*conf.voters, *conf.learners, *conf.voters_outgoing, *conf.learners_next}


class Cluster(WatchLeaseServing):
    """Drives N nodes; see the module docstring.

    Args:
        seed: the run's seed (node RNGs derive from it).
        node_ids: the voters.
        clock: the simulation clock.
        network: carries node and client messages.
        invariants: the checkers, told about every observation.
        params: timing and protocol options.
        raft_class: the Raft implementation to run on every node (tests pass
            mutants with a rule broken on purpose).
        tracer: an optional trace sink.
        state_machine: makes each node's KV state machine from the run's
            shared decode cache (tests pass one with a bug planted on purpose).
        watch_hub_class, lessor_class: the watch hub and lessor every node runs
            with ``params.watches`` / ``params.leases`` (mutation tests pass
            broken ones).
    """

    def __init__(
        self,
        *,
        seed: int,
        node_ids: tuple[NodeId, ...],
        clock: Clock,
        network: Network,
        invariants: Invariants,
        params: ClusterParams | None = None,
        raft_class: type[Raft] = Raft,
        tracer: Tracer | None = None,
        state_machine: Callable[[dict[bytes, Command]], KVStateMachine] | None = None,
        watch_hub_class: type[WatchHub] = WatchHub,
        lessor_class: type[Lessor] = Lessor,
    ) -> None:
        self.node_ids = tuple(sorted(node_ids))
        """The nodes in service: founding members and joiners, minus retired ones."""
        self.founders = self.node_ids
        self.clock = clock
        self.network = network
        self.invariants = invariants
        self.params = params if params is not None else ClusterParams()
        self._tick_us = self.params.tick_us
        self.raft_class = raft_class
        self.tracer = tracer
        self._make_state_machine = state_machine or _kv_state_machine
        self._hub_class = watch_hub_class
        self._lessor_class = lessor_class
        self._extras = self.params.watches or self.params.leases
        self._election_us = self.params.election_tick * self.params.tick_us
        self.revision_log = RevisionLog()
        """With watches or leases: every revision applied, with its events."""
        self.lease_log = LeaseLog()
        """With leases: what the lessors decided."""
        self._side: dict[type, Callable[[SimNode, RawNode, str, object], None]] = {}
        if self.params.watches:
            self._side[WatchOpen] = self._on_watch_open  # type: ignore[assignment]
            self._side[WatchClose] = self._on_watch_close  # type: ignore[assignment]
        if self.params.leases:
            self._side[KeepAliveRequest] = self._on_keepalive  # type: ignore[assignment]
            self._side[LessorForward] = self._on_lessor_forward  # type: ignore[assignment]
        self._fsync_rng = random.Random(f"{seed}/fsync")
        self._phase_rng = random.Random(f"{seed}/phase")
        self.nodes: dict[NodeId, SimNode] = {}
        voters = () if self.params.bootstrap_in_log else self.node_ids
        for nid in self.node_ids:
            self.nodes[nid] = SimNode(nid, SimDisk(voters), random.Random(f"{seed}/node/{nid}"))
            network.register(nid, self._make_handler(nid))
        self.stats: Counter[str] = Counter()
        self.max_commit = 0
        self._decode_cache: dict[bytes, Command] = {}
        self._client_numbers = _ClientNumbers()
        # (index, term) of every snapshot taken -> chain hashes of the prefix it covers.
        self._snapshot_hashes: dict[tuple[int, int], list[int]] = {}
        self.first_applied: dict[tuple[int, int], tuple[Micros, Outcome, Answer]] = {}
        """(client_id, request_id) -> first time any node applied it, and its result."""
        self.on_leader: Callable[[NodeId, int], None] | None = None
        """Called with (node, term) at the instant a node becomes leader, before
        it sends anything as leader (the churn nemesis uses it)."""
        self.on_nodes_changed: Callable[[tuple[NodeId, ...]], None] | None = None
        """Called with the new :attr:`node_ids` when a node joins or retires."""
        self._seed = seed
        self._leader_lost_at: Micros | None = None  # when the last leader crashed

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Boot every node and start its tick timer at a random phase."""
        for nid in self.node_ids:
            self._boot(self.nodes[nid])
        for nid in self.node_ids:
            self._start_ticking(self.nodes[nid])

    def add_node(self, nid: NodeId) -> None:
        """Start a new, empty node that knows no configuration (it joins by log replay)."""
        if nid in self.nodes:
            raise ValueError(f"node {nid} exists already")
        node = SimNode(nid, SimDisk(()), random.Random(f"{self._seed}/node/{nid}"))
        self.nodes[nid] = node
        self.network.register(nid, self._make_handler(nid))
        self.invariants.add_node(nid)
        self.node_ids = tuple(sorted((*self.node_ids, nid)))
        self.stats["nodes_added"] += 1
        if self.tracer is not None:
            self.tracer.emit(self.clock.now, "add-node", nid)
        self._boot(node)
        self._start_ticking(node)
        if self.on_nodes_changed is not None:
            self.on_nodes_changed(self.node_ids)

    def _start_ticking(self, node: SimNode) -> None:
        """Tick ``node`` every ``tick_us`` from now on, starting at a random phase."""
        self.clock.call_later(self._phase_rng.randrange(self.params.tick_us), self._tick, node)

    def retire(self, nid: NodeId) -> None:
        """Shut a removed node down for good, as an operator would after removing it."""
        node = self.nodes[nid]
        if node.retired:
            return
        self.crash(nid)
        node.retired = True
        self.node_ids = tuple(n for n in self.node_ids if n != nid)
        self.stats["nodes_retired"] += 1
        if self.tracer is not None:
            self.tracer.emit(self.clock.now, "retire", nid)
        if self.on_nodes_changed is not None:
            self.on_nodes_changed(self.node_ids)

    def _config(self, nid: NodeId) -> Config:
        p = self.params
        return Config(
            node_id=nid,
            peers=self.founders if nid in self.founders else (),
            election_tick=p.election_tick,
            heartbeat_tick=p.heartbeat_tick,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
            max_entries_per_msg=p.max_entries_per_msg,
            max_inflight=p.max_inflight,
            snapshot_chunk_size=p.snapshot_chunk_size,
            applied=0,
        )

    def _boot(self, node: SimNode) -> None:
        node.raw = RawNode(
            self._config(node.node_id), node.disk.storage, node.rng, raft_class=self.raft_class
        )
        node.replica = Replica(self._make_state_machine(self._decode_cache))
        snapshot = node.disk.durable_snapshot
        if not snapshot.is_empty():
            md = snapshot.metadata
            node.replica.restore(snapshot.data, md.index, md.conf_state)
            self.invariants.on_config_at(node.node_id, md.index, md.conf_state)
        else:
            node.replica.conf_state = node.raw.conf_state()
        node.held = None
        node.blocked = False
        node.unpersisted.clear()
        node.syncing = False
        node.pending = {}
        node.reads = {}
        node.ready_reads = []
        node.role = None
        node.term = 0
        sm = node.replica.state_machine
        if self.params.watches and isinstance(sm, KVStateMachine):
            node.hub = self._hub_class(sm)
            node.streams = {}
        if self.params.leases and isinstance(sm, KVStateMachine):
            node.lessor = self._lessor_class(
                lambda: sm.leases, checkpoint_interval_ms=self.params.lease_checkpoint_ms
            )
        node.lead_from = None
        node.promoted_at = None
        node.leaderless_since = None
        node.ka_reads = {}
        self.network.down.discard(node.node_id)
        self._after_input(node)

    def crash(self, nid: NodeId) -> bool:
        """Crash ``nid`` (no-op returning ``False`` if it is already down)."""
        node = self.nodes[nid]
        if node.raw is None:
            return False
        if node.role is Role.LEADER and self._leader_lost_at is None:
            self._leader_lost_at = self.clock.now
        node.generation += 1
        node.raw = None
        node.held = None
        node.blocked = False
        node.unpersisted.clear()
        node.syncing = False
        node.pending = {}
        node.reads = {}
        node.ready_reads = []
        node.role = None
        node.hub = None  # its watch streams die with it
        node.streams = {}
        node.lessor = None
        node.ka_reads = {}
        self.network.down.add(nid)
        node.disk.crash()
        self.stats["crashes"] += 1
        if self.tracer is not None:
            hs = node.disk.durable_hard_state
            self.tracer.emit(
                self.clock.now,
                "crash",
                nid,
                durable_last=node.disk.durable_last_index,
                term=hs.term,
                commit=hs.commit,
            )
        self.invariants.on_crash(nid, self._disks())
        return True

    def restart(self, nid: NodeId) -> bool:
        """Restart a crashed ``nid`` from its durable disk (``False`` if it is up)."""
        node = self.nodes[nid]
        if node.raw is not None or node.retired:
            return False
        self.stats["restarts"] += 1
        if self.tracer is not None:
            self.tracer.emit(self.clock.now, "restart", nid)
        self.invariants.on_restart(nid, node.disk)
        self._boot(node)
        return True

    def report_unreachable(self, nid: NodeId, peer: NodeId) -> bool:
        """Give ``nid`` the transport's hint that ``peer`` is gone; whether it acted."""
        node = self.nodes[nid]
        raw = node.raw
        if raw is None:
            return False
        acted = raw.report_unreachable(peer)
        self._after_input(node)
        return acted

    def up_nodes(self) -> list[NodeId]:
        return [n for n in self.node_ids if self.nodes[n].raw is not None]

    def leader(self) -> NodeId | None:
        """The up node that believes it leads the highest term, if any."""
        best: NodeId | None = None
        best_term = -1
        for nid in self.node_ids:
            raw = self.nodes[nid].raw
            if raw is not None and raw.role is Role.LEADER and raw.term > best_term:
                best, best_term = nid, raw.term
        return best

    # -- inputs --------------------------------------------------------------

    def _tick(self, node: SimNode) -> None:
        # Clock.schedule inlined: a third of all events are ticks.
        clock = self.clock
        clock._seq += 1
        _heappush(clock._heap, (clock._now + self._tick_us, clock._seq, self._tick, node.tick_args))
        raw = node.raw
        if raw is None or (not raw.tick() and not self._extras):
            # Down, or the tick only advanced the timers: every input is pumped
            # until no Ready is left (or one waits for its fsync), so there is
            # still nothing to do.
            return
        # _after_input inlined: a third of all events are ticks.
        role = raw.role
        if role is not node.role or raw.term != node.term:
            self._role_changed(node, raw, role)
        if self._extras:
            self._tick_extras(node, raw)
        if not node.blocked and raw.has_ready():
            self._pump(node, raw)

    def _make_handler(self, nid: NodeId) -> Handler:
        node = self.nodes[nid]
        role_changed = self._role_changed
        pump = self._pump
        side = self._side

        def handle(src: str, payload: object) -> None:
            # The hot path: _after_input inlined.
            raw = node.raw
            if raw is None:
                return
            kind = type(payload)
            if kind is ClientRequest:
                self._on_client_request(node, raw, src, payload)  # type: ignore[arg-type]
            elif side and kind in side:
                side[kind](node, raw, src, payload)
            else:
                raw.step(payload)  # type: ignore[arg-type]
            role = raw.role
            if role is not node.role or raw.term != node.term:
                role_changed(node, raw, role)
            if not node.blocked and raw.has_ready():
                pump(node, raw)

        return handle

    # -- the Ready loop ------------------------------------------------------

    def _after_input(self, node: SimNode) -> None:
        raw = node.raw
        assert raw is not None
        role = raw.role
        if role is not node.role or raw.term != node.term:
            self._role_changed(node, raw, role)
        if not node.blocked and raw.has_ready():
            self._pump(node, raw)

    def _role_changed(self, node: SimNode, raw: RawNode, role: Role) -> None:
        if role is not node.role:
            if role is Role.CANDIDATE:
                self.stats["elections_started"] += 1
            elif role is Role.PRE_CANDIDATE:
                self.stats["pre_campaigns"] += 1
            elif role is Role.LEADER:
                self.stats["elections_won"] += 1
                if self._leader_lost_at is not None:
                    # Leader crash -> next leader: stats only, not in the summary.
                    self.stats["failovers"] += 1
                    self.stats["failover_us"] += self.clock.now - self._leader_lost_at
                    self._leader_lost_at = None
        if node.lessor is not None:
            if role is Role.LEADER:
                if node.lead_from is None or node.role is not Role.LEADER:
                    node.lead_from = raw.last_index  # its no-op: promote once applied
            else:
                node.lead_from = None
                node.promoted_at = None
                node.lessor.demote()
        node.role = role
        node.term = raw.term
        if self.tracer is not None:
            self.tracer.emit(
                self.clock.now,
                "role",
                node.node_id,
                role=role.value,
                term=raw.term,
                leader=raw.leader,
            )
        self.invariants.on_role(node.node_id, raw.term, role)
        if role is Role.LEADER:
            self.invariants.on_leader_vote(node.node_id, raw.term, node.disk.durable_hard_state)
        if role is Role.LEADER and self.on_leader is not None:
            self.on_leader(node.node_id, raw.term)

    def _pump(self, node: SimNode, raw: RawNode) -> None:
        """Handle Readys until none is left, or the node must wait for an fsync
        (``node.blocked``): a Ready holding a snapshot waits for the Readys
        before it to persist (it is then ``node.held``), and with
        ``serial_storage`` every Ready waits for the one before it.

        Storage writes are asynchronous (``ready.py``): a Ready is accepted once
        written and applied, and the next one handled at once; fsyncs run in the
        background, one at a time, each covering every write before it, and
        the Readys they cover are persisted in order (:meth:`_persist_upto`).
        The caller has checked ``raw.has_ready()`` and that the node is not blocked.
        """
        while True:
            rd = raw.ready()
            if rd.snapshot is not None and node.unpersisted:
                node.held = rd
                node.blocked = True
                return
            self._handle(node, raw, rd)
            if self.params.serial_storage and node.unpersisted:
                node.blocked = True  # one Ready at a time: wait for its fsync
                return
            if not raw.has_ready():
                return

    def _handle(self, node: SimNode, raw: RawNode, rd: Ready) -> None:
        """Steps 1, 2 (write, no sync) and 4 of a Ready, then accept it."""
        nid = node.node_id
        send = self.network.send
        kinds = _KINDS
        invariants = self.invariants
        if rd.snapshot is not None:
            self._install_snapshot(node, rd)
        hs = rd.hard_state
        invariants.on_ready(nid, raw.term, raw.role, rd.entries, None if hs is None else hs.commit)
        if hs is not None and hs.commit > self.max_commit:
            self.max_commit = hs.commit
        if self.tracer is not None:
            self._trace_ready(nid, rd)
        for m in rd.messages:
            send(nid, m.to, m, kinds.get(type(m)) or message_kind(m))
        if rd.entries or hs is not None:
            node.disk.write(hs, rd.entries)
        self._apply_ready(node, raw, rd)
        raw.accept(rd)
        node.unpersisted.append((rd, node.disk.write_seq if rd.must_sync else 0))
        if rd.must_sync:
            if not node.syncing:
                self._start_fsync(node)
        elif len(node.unpersisted) == 1:
            self._persist_upto(node, raw, 0)  # nothing before it to wait for

    def _start_fsync(self, node: SimNode) -> None:
        node.syncing = True
        p = self.params
        delay = p.fsync_min_us + self._fsync_rng.randrange(p.fsync_max_us - p.fsync_min_us + 1)
        self.clock.call_later(
            delay, self._fsync_done, node, node.generation, node.disk.begin_fsync()
        )

    def _persist_upto(self, node: SimNode, raw: RawNode, durable_seq: int) -> None:
        """Persist, in order, the accepted Readys whose writes are durable (a
        Ready that needs no sync, once the Readys before it are)."""
        nid = node.node_id
        send = self.network.send
        kinds = _KINDS
        q = node.unpersisted
        while q and q[0][1] <= durable_seq:
            rd, _ = q.popleft()
            for m in rd.messages_after_persist:
                send(nid, m.to, m, kinds.get(type(m)) or message_kind(m))
            raw.persisted(rd)
        if self.params.snapshot_every:
            self._maybe_take_snapshot(node, raw)

    def _conf_change_applied(
        self, node: SimNode, index: int, result: ConfApplied | Refusal
    ) -> None:
        """After the replica applied (or refused) a configuration change."""
        if isinstance(result, Refusal):
            self.stats["conf_changes_refused"] += 1
            return
        before = _members(result.before)
        conf = result.after
        self.stats["conf_changes_applied"] += 1
        self.invariants.on_conf(node.node_id, index, conf)
        if self.tracer is not None:
            self.tracer.emit(
                self.clock.now,
                "conf",
                node.node_id,
                index=index,
                voters=list(conf.voters),
                learners=list(conf.learners),
                outgoing=list(conf.voters_outgoing),
            )
        # A committed removal: the operator shuts the removed nodes down (after
        # this Ready -- the applying node may be one of them and still owe
        # acknowledgements). Whoever applies it first triggers it.
        for removed in sorted(before - _members(conf)):
            target = self.nodes.get(removed)
            if target is not None and not target.retired:
                self.clock.call_later(0, self._retire_removed, target)

    def _retire_removed(self, node: SimNode) -> None:
        if not node.retired:
            self.retire(node.node_id)

    def _install_snapshot(self, node: SimNode, rd: Ready) -> None:
        """Write a snapshot received from the leader (durable with this Ready's fsync)."""
        snap = rd.snapshot
        assert snap is not None
        md = snap.metadata
        hashes = self._snapshot_hashes.get((md.index, md.term))
        if hashes is None:
            raise AssertionError(f"{node.node_id} received a snapshot nobody took: {md}")
        self.invariants.on_snapshot(node.node_id, md.index, md.term, hashes)
        self.invariants.on_config_at(node.node_id, md.index, md.conf_state)
        node.disk.write_snapshot(snap, hashes)
        self.stats["snapshots_installed"] += 1
        if self.tracer is not None:
            self.tracer.emit(self.clock.now, "install-snapshot", node.node_id, index=md.index)

    def _maybe_take_snapshot(self, node: SimNode, raw: RawNode) -> None:
        """Snapshot the state machine and compact the log, every ``snapshot_every`` entries."""
        replica = node.replica
        disk = node.disk
        index = replica.applied_index
        last = disk.storage.snapshot().metadata.index
        if (
            index - last < self.params.snapshot_every
            or index > disk.durable_last_index
            or last != disk.durable_snapshot.metadata.index
        ):
            # Not due; or the applied state is not durable in the log yet; or a
            # received snapshot is still being written.
            return
        data = replica.snapshot()
        snap = disk.take_snapshot(index, replica.conf_state, data)
        self._snapshot_hashes.setdefault(
            (index, snap.metadata.term), disk.durable_hashes()[: index + 1]
        )
        self.invariants.on_state(node.node_id, index, data)
        self.stats["snapshots_taken"] += 1
        if self.tracer is not None:
            self.tracer.emit(self.clock.now, "snapshot", node.node_id, index=index)

    def _fsync_done(self, node: SimNode, generation: int, token: tuple[int, int]) -> None:
        if node.generation != generation or node.raw is None:
            return
        node.disk.complete_fsync(token)
        node.syncing = False
        self.stats["fsyncs"] += 1
        if node.disk.overwrote_durable:
            node.disk.overwrote_durable = False
            self.invariants.on_durable_overwrite(node.node_id, self._disks())
        raw = node.raw
        self._persist_upto(node, raw, token[1])
        if node.unpersisted:
            self._start_fsync(node)  # writes made while this fsync ran
        elif node.held is not None:
            rd, node.held = node.held, None
            self._handle(node, raw, rd)
        node.blocked = node.held is not None or (
            self.params.serial_storage and bool(node.unpersisted)
        )
        # _after_input inlined.
        role = raw.role
        if role is not node.role or raw.term != node.term:
            self._role_changed(node, raw, role)
        if not node.blocked and raw.has_ready():
            self._pump(node, raw)

    def _disks(self) -> dict[NodeId, SimDisk]:
        return {n: self.nodes[n].disk for n in self.node_ids}

    def _apply_ready(self, node: SimNode, raw: RawNode, rd: Ready) -> None:
        """Step 4 of a Ready: restore a snapshot, apply the committed entries,
        answer clients, serve the reads that became safe."""
        nid = node.node_id
        if rd.read_states:
            node.ready_reads.extend((rs.index, rs.context) for rs in rd.read_states)
        if rd.snapshot is not None:
            md = rd.snapshot.metadata
            node.replica.restore(rd.snapshot.data, md.index, md.conf_state)
            self.invariants.on_restore(nid, md.index, rd.snapshot.data)
        if rd.committed_entries:
            inv = self.invariants
            replica = node.replica
            decoded = self._decode_cache
            pending = node.pending
            first_applied = self.first_applied
            now = self.clock.now
            clients = self._client_numbers
            self.stats["applied"] += len(rd.committed_entries)

            def apply_conf(cc: ConfChange) -> ConfState:
                return raw.apply_conf_change(cc, strict=True)

            extras = self._extras
            sm = replica.state_machine
            hub = node.hub
            for e in rd.committed_entries:
                inv.on_apply(nid, e)
                if extras:
                    before = sm.revision  # type: ignore[attr-defined]
                result = replica.apply(e, apply_conf)
                if extras:
                    self._applied_extras(node, sm, hub, before, e.data, result)
                if e.type is _CONF_CHANGE:
                    assert isinstance(result, ConfApplied | Refusal)
                    self._conf_change_applied(node, e.index, result)
                    continue
                if not isinstance(result, _ANSWERS) or not e.data:
                    continue
                cmd = decoded.get(e.data)
                if cmd is None or cmd.session is None:
                    continue
                client_id = clients[cmd.session.client_id]
                if client_id is None:
                    continue
                key = (client_id, cmd.session.seq)
                if result.executed:
                    self.stats["commands_executed"] += 1
                    inv.on_execute(nid, client_id, cmd.session.seq, e.index)
                elif result.replayed:
                    self.stats["commands_deduplicated"] += 1
                else:
                    continue  # refused by the session table: no effect, no answer
                outcome = _client_outcome(cmd, result)
                if key not in first_applied:
                    first_applied[key] = (now, outcome, result)
                if not pending:
                    continue
                dst = pending.pop(key, None)
                if dst is not None:
                    self._reply(
                        node,
                        dst,
                        ClientReply(
                            client_id=client_id,
                            request_id=cmd.session.seq,
                            ok=True,
                            output=outcome[0],
                            found=outcome[1],
                            result=result,
                        ),
                    )
        if self._extras:
            if rd.snapshot is not None and node.hub is not None:
                node.hub.applied()
            self._after_apply_extras(node)
        if node.ready_reads:
            self._serve_reads(node)

    def violation(self, checker: str, message: str) -> None:
        """Stop the run with a violation of ``checker``."""
        raise InvariantViolation(
            Violation(checker=checker, time=self.clock.now, message=message, seed=self._seed)
        )

    def _trace_ready(self, nid: NodeId, rd: Ready) -> None:
        assert self.tracer is not None
        now = self.clock.now
        details: dict[str, object] = {}
        if rd.soft_state is not None:
            details["role"] = rd.soft_state.role.value
            details["leader"] = rd.soft_state.leader
        if rd.hard_state is not None:
            hs = rd.hard_state
            details["hard_state"] = [hs.term, hs.vote, hs.commit]
        if rd.entries:
            details["entries"] = [f"{e.term}/{e.index}" for e in rd.entries]
        if rd.committed_entries:
            details["committed"] = [rd.committed_entries[0].index, rd.committed_entries[-1].index]
        details["send"] = [describe_message(m) for m in rd.messages]
        details["send_after_persist"] = [describe_message(m) for m in rd.messages_after_persist]
        self.tracer.emit(now, "ready", nid, **details)
