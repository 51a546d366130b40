"""The founding members a replica records (the etcd API's cluster id comes from them)."""

from __future__ import annotations

import msgpack

from raftkv.core.types import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    NodeId,
)
from raftkv.replica.kv import KVStateMachine
from raftkv.replica.replica import Replica

N1, N2, N3, N4 = (NodeId(n) for n in ("n1", "n2", "n3", "n4"))


def _adds(*ids: NodeId, kind: ConfChangeType = ConfChangeType.ADD_VOTER) -> bytes:
    return ConfChange(changes=tuple(ConfChangeSingle(kind, n) for n in ids)).encode()


def _conf(voters: tuple[NodeId, ...], learners: tuple[NodeId, ...] = ()) -> ConfState:
    return ConfState(voters=voters, learners=learners)


def test_the_founding_entry_records_the_founders_and_a_snapshot_carries_them() -> None:
    replica = Replica(KVStateMachine())
    founding = Entry(term=1, index=1, data=_adds(N3, N1, N2), type=EntryType.CONF_CHANGE)
    replica.apply(founding, lambda cc: _conf((N1, N2, N3)))
    assert replica.book.founders == (N1, N2, N3)
    # A later change adds a member; the founders stay.
    later = Entry(
        term=2, index=5, data=_adds(N4, kind=ConfChangeType.ADD_LEARNER), type=EntryType.CONF_CHANGE
    )
    replica.apply(later, lambda cc: _conf((N1, N2, N3), (N4,)))
    assert replica.book.founders == (N1, N2, N3)
    # A joiner restored from a snapshot (entry 1 long compacted) knows them too.
    joiner = Replica(KVStateMachine())
    joiner.restore(replica.snapshot(), 5, _conf((N1, N2, N3), (N4,)))
    assert joiner.book.founders == (N1, N2, N3)


def test_a_snapshot_without_founders_leaves_them_unknown() -> None:
    replica = Replica(KVStateMachine())
    image = msgpack.unpackb(replica.snapshot(), raw=False)
    assert "founders" not in image  # nothing founded yet: nothing written
    joiner = Replica(KVStateMachine())
    joiner.restore(replica.snapshot(), 3, _conf((N1,)))
    assert joiner.book.founders is None
