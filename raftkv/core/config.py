"""Static configuration of one Raft node."""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.core.types import Index, NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """How one node behaves. Times are in ticks; the driver decides how long a tick is.

    Attributes:
        node_id: this node's id.
        peers: the voters (including this node) used when storage holds no
            membership yet (a brand-new cluster).
        election_tick: the base election timeout; each timeout is drawn uniformly
            from ``[election_tick, 2 * election_tick)`` using the injected RNG
            (paper §5.2). Must be greater than ``heartbeat_tick``.
        heartbeat_tick: a leader sends heartbeats every this many ticks.
        pre_vote: run a PreVote round before a real election (dissertation §9.6).
        check_quorum: a leader that has not heard from a quorum within an election
            timeout steps down, and a node that heard from a leader within the
            minimum election timeout ignores vote requests (dissertation §9.6).
        max_inflight: append messages in flight to one follower before the leader
            waits for acknowledgements (the pipelining window).
        max_entries_per_msg: most entries in one AppendEntries.
        max_size_per_msg: most bytes of entries in one AppendEntries (at least one
            entry is always sent).
        max_committed_size_per_ready: most bytes of committed entries handed out
            in one Ready (at least one entry).
        applied: the last index the state machine had applied when this node was
            (re)started; committed entries after it are handed out again.
        read_only: how ReadIndex confirms leadership: ``"safe"`` (a heartbeat
            round acknowledged by a quorum, dissertation §6.4) or ``"lease"``
            (trust the CheckQuorum lease; needs ``check_quorum`` and bounded
            clock drift between nodes -- see docs/design.md for the risk).
        lease_drift_ticks: with lease reads, how many ticks shorter than an
            election timeout the lease is, to absorb clock-rate differences.
        snapshot_chunk_size: bytes of snapshot data per InstallSnapshot message.
        max_snapshot_chunks_inflight: unacknowledged snapshot chunks per follower.
    """

    node_id: NodeId
    peers: tuple[NodeId, ...] = ()
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 256
    max_entries_per_msg: int = 256
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = 16 << 20
    applied: Index = 0
    read_only: str = "safe"
    lease_drift_ticks: int = 1
    snapshot_chunk_size: int = 1 << 20
    max_snapshot_chunks_inflight: int = 4

    def validate(self) -> None:
        """Raise ``ValueError`` if the configuration cannot work."""
        if not self.node_id:
            raise ValueError("node_id must be non-empty")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight <= 0:
            raise ValueError("max_inflight must be positive")
        if self.max_entries_per_msg <= 0:
            raise ValueError("max_entries_per_msg must be positive")
        if self.max_size_per_msg <= 0:
            raise ValueError("max_size_per_msg must be positive")
        if self.read_only not in ("safe", "lease"):
            raise ValueError("read_only must be 'safe' or 'lease'")
        if self.read_only == "lease" and not self.check_quorum:
            raise ValueError("lease-based reads need check_quorum")
        if not 0 <= self.lease_drift_ticks < self.election_tick:
            raise ValueError("lease_drift_ticks must be in [0, election_tick)")
        if self.snapshot_chunk_size <= 0 or self.max_snapshot_chunks_inflight <= 0:
            raise ValueError("snapshot chunk size and window must be positive")
