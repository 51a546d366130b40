"""The one rule for which messages wait for the sync (raft.needs_persist):
every promise about our term, vote or log waits; nothing else does."""

from __future__ import annotations

import pytest

from raftkv.core import ConfState
from raftkv.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndex,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from raftkv.core.raft import needs_persist
from tests.core.harness import nid

A, B = nid("a"), nid("b")

WAITS: list[Message] = [
    RequestVote(term=2, sender=A, to=B, last_log_index=1, last_log_term=1),
    RequestVoteResponse(term=2, sender=B, to=A, granted=True),
    RequestVoteResponse(term=2, sender=B, to=A, granted=False, pre_vote=True),
    AppendEntriesResponse(term=2, sender=B, to=A, index=5),
    AppendEntriesResponse(term=2, sender=B, to=A, index=0, reject=True),
    HeartbeatResponse(term=2, sender=B, to=A),
    InstallSnapshotResponse(term=2, sender=B, to=A, snapshot_index=9, offset=0, done=True),
]
GOES_AT_ONCE: list[Message] = [
    RequestVote(term=3, sender=A, to=B, last_log_index=1, last_log_term=1, pre_vote=True),
    AppendEntries(term=2, sender=A, to=B, prev_log_index=0, prev_log_term=0, entries=(), commit=0),
    Heartbeat(term=2, sender=A, to=B, commit=0),
    InstallSnapshot(
        term=2, sender=A, to=B, snapshot_index=9, snapshot_term=2, conf_state=ConfState(),
        offset=0, data=b"x", done=False, checksum=0,
    ),
    InstallSnapshotResponse(term=2, sender=B, to=A, snapshot_index=9, offset=1024),
    ReadIndex(term=2, sender=B, to=A, context=b"c"),
    ReadIndexResponse(term=2, sender=A, to=B, index=3, context=b"c"),
    TimeoutNow(term=2, sender=A, to=B),
]  # fmt: skip


@pytest.mark.parametrize("msg", WAITS, ids=lambda m: type(m).__name__)
def test_promises_wait_for_the_sync(msg: Message) -> None:
    assert needs_persist(msg)


@pytest.mark.parametrize("msg", GOES_AT_ONCE, ids=lambda m: type(m).__name__)
def test_everything_else_goes_at_once(msg: Message) -> None:
    assert not needs_persist(msg)
