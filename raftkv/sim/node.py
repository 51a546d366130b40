"""A simulated node's state (:class:`SimNode`) and the cluster's options (:class:`ClusterParams`).

Rule: a :class:`SimNode` is plain data -- the disk that survives a crash and the
volatile state that does not; :class:`~raftkv.sim.cluster.Cluster` alone changes it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from raftkv.core import (
    NodeId,
    RawNode,
    Ready,
    Role,
)
from raftkv.replica import Replica
from raftkv.replica.kv import (
    Command,
    KVStateMachine,
)
from raftkv.replica.lessor import Lessor
from raftkv.replica.watch import WatchHub
from raftkv.sim.clock import Micros
from raftkv.sim.disk import SimDisk


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterParams:
    """Timing and protocol options of a simulated cluster.

    Attributes:
        tick_us: virtual time between two ticks of a node (each node gets a
            random phase offset).
        election_tick: ``Config.election_tick``.
        heartbeat_tick: ``Config.heartbeat_tick``.
        pre_vote: ``Config.pre_vote``.
        check_quorum: ``Config.check_quorum``.
        fsync_min_us: shortest fsync.
        fsync_max_us: longest fsync (uniform in between).
        max_entries_per_msg: ``Config.max_entries_per_msg``.
        max_inflight: ``Config.max_inflight``.
        snapshot_every: a node snapshots its state machine and compacts its log
            once it has applied this many entries past its last snapshot (0:
            never, and a leader never needs InstallSnapshot).
        snapshot_chunk_size: ``Config.snapshot_chunk_size``.
        watches: every node runs a watch hub and serves watch streams.
        leases: every node runs a lessor on the virtual clock and answers
            keep-alives.
        lease_checkpoint_ms: the lessors' checkpoint interval.
        serial_storage: a node handles one Ready at a time, the next only once
            the last one's fsync completed (as a server on a fast disk does);
            otherwise it goes on while fsyncs run (asynchronous storage writes,
            as a server on a slow disk does).
        bootstrap_in_log: founding members start with empty disks and write the
            founding membership as log entry 1 (as real nodes do), so nodes
            that join later learn it by replaying the log. Otherwise each
            founding disk starts out holding the membership.
    """

    tick_us: Micros = 100_000
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    fsync_min_us: Micros = 200
    fsync_max_us: Micros = 2_000
    max_entries_per_msg: int = 256
    max_inflight: int = 256
    snapshot_every: int = 0
    snapshot_chunk_size: int = 1 << 20
    bootstrap_in_log: bool = False
    watches: bool = False
    leases: bool = False
    lease_checkpoint_ms: int = 2_000
    serial_storage: bool = False


class SimNode:
    """One node's volatile state plus its disk. ``raw is None`` while crashed."""

    __slots__ = (
        "node_id",
        "disk",
        "rng",
        "raw",
        "replica",
        "held",
        "blocked",
        "unpersisted",
        "syncing",
        "pending",
        "generation",
        "role",
        "term",
        "reads",
        "ready_reads",
        "retired",
        "tick_args",
        "hub",
        "streams",
        "lessor",
        "lead_from",
        "promoted_at",
        "leaderless_since",
        "ka_reads",
        "ticks",
    )

    def __init__(self, node_id: NodeId, disk: SimDisk, rng: random.Random) -> None:
        self.node_id = node_id
        self.disk = disk
        self.rng = rng
        self.raw: RawNode | None = None
        self.replica = Replica(KVStateMachine())
        # A Ready holding a snapshot, made while earlier Readys were not yet
        # persisted: handled once they are (no Ready is made meanwhile).
        self.held: Ready | None = None
        # No Ready may be made now: one is held, or (serial storage) the last
        # one waits for its fsync.
        self.blocked = False
        # Accepted Readys not yet persisted, oldest first, each with the disk
        # write an fsync must cover before it persists (0: none of its own).
        self.unpersisted: deque[tuple[Ready, int]] = deque()
        self.syncing = False  # an fsync is running
        # (client_id, request_id) -> client endpoint, for requests this node proposed.
        self.pending: dict[tuple[int, int], str] = {}
        # Incremented at every crash; callbacks from an older incarnation are ignored.
        self.generation = 0
        self.role: Role | None = None
        self.term = 0
        # ReadIndex context -> (client endpoint, client id, the get), for reads
        # asked of this node.
        self.reads: dict[bytes, tuple[str, int, Command]] = {}
        # (read index, context) of reads the core released, waiting for the apply.
        self.ready_reads: list[tuple[int, bytes]] = []
        # Removed from the cluster and shut down for good (never restarted).
        self.retired = False
        # The arguments of this node's tick event, built once.
        self.tick_args = (self,)
        # With watches: the hub, and (client, stream) -> [watcher, next seq,
        # time of the last push].
        self.hub: WatchHub | None = None
        self.streams: dict[tuple[str, int], list[object]] = {}
        # With leases: the lessor; the index of this leader's first entry of its
        # term (promote once applied); when it was promoted.
        self.lessor: Lessor | None = None
        self.lead_from: int | None = None
        self.promoted_at: Micros | None = None
        self.leaderless_since: Micros | None = None
        # Keep-alives waiting for their ReadIndex: context -> (endpoint, client,
        # request id, ttl).
        self.ka_reads: dict[bytes, tuple[str, int, int, int]] = {}
        self.ticks = 0

    @property
    def up(self) -> bool:
        return self.raw is not None
