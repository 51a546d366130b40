"""The replica layer: everything a replica decides from committed entries.

Rule: no I/O, no clock, no randomness. The server's node runtime and the
simulator's cluster drive this same code (DESIGN.md: "anything the simulator
proves is proved about the code that serves real traffic").

- :mod:`~raftkv.replica.replica`: :class:`Replica`, applying entries and
  configuration changes, snapshot images;
- :mod:`~raftkv.replica.membership`: the address book and the removed ids;
- :mod:`~raftkv.replica.kv`: the key/value state machine (its commands in
  :mod:`~raftkv.replica.commands`, client sessions in
  :mod:`~raftkv.replica.sessions`);
- :mod:`~raftkv.replica.mvcc`: the MVCC key space under it (etcd v3's
  revisions, ranges, transactions and compaction) and
  :mod:`~raftkv.replica.keyindex` the sorted key index under that;
- :mod:`~raftkv.replica.leases`: the replicated lease table, and
  :mod:`~raftkv.replica.lessor` the leader's lease clock that proposes expiries;
- :mod:`~raftkv.replica.watch`: watches over the applied history;
- :mod:`~raftkv.replica.statemachine`: the interface an application implements.
"""

from __future__ import annotations

from raftkv.replica.membership import (
    InvalidMember,
    Member,
    MembershipBook,
    Refusal,
    RefusalKind,
)
from raftkv.replica.replica import (
    ConfApplied,
    ConfApplier,
    InvalidSnapshotImage,
    Replica,
    ReplicaError,
)
from raftkv.replica.statemachine import SnapshotsLater, StateMachine

__all__ = [
    "ConfApplied",
    "ConfApplier",
    "InvalidMember",
    "InvalidSnapshotImage",
    "Member",
    "MembershipBook",
    "Refusal",
    "RefusalKind",
    "Replica",
    "ReplicaError",
    "SnapshotsLater",
    "StateMachine",
]
