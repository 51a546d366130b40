"""InstallSnapshot: chunked, flow-controlled and resumable (paper §7, Figure 13).

A leader whose log no longer holds the entries a follower needs sends its
snapshot instead, in chunks of ``snapshot_chunk_size`` bytes with at most
``max_snapshot_chunks_inflight`` unacknowledged; the follower replaces its log
with the snapshot (paper §7: "the follower discards its entire log") unless its
log already covers it, and replication continues after the snapshot's index.
"""

from __future__ import annotations

import random

from raftkv.core import (
    Config,
    ConfState,
    Entry,
    HardState,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    MemoryStorage,
    ProgressState,
    Raft,
    snapshot_checksum,
)
from tests.core.harness import Harness, nid

N1, N2, N3 = (nid(i) for i in range(1, 4))
CHUNK = 5
WINDOW = 2
SNAP_INDEX = 8


def chunks_to(h: Harness, to, since: int = 0) -> list[InstallSnapshot]:
    return [m for m in h.delivered[since:] if isinstance(m, InstallSnapshot) and m.to == to]


def lagging_follower() -> Harness:
    """n3 misses entries 2..11; n1 snapshots at 8 and compacts its log there."""
    h = Harness(3, snapshot_chunk_size=CHUNK, max_snapshot_chunks_inflight=WINDOW)
    h.elect(1)
    h.isolate(3)
    for k in range(10):
        h.propose(1, b"v%02d" % k)
    h.stabilize()
    assert h.node(1).commit_index == 11
    h.compact(1, SNAP_INDEX)
    assert h.node(1).first_index == SNAP_INDEX + 1
    h.heal()
    return h


def leader_snapshot(h: Harness) -> bytes:
    data = h.storage[N1].snapshot().data
    assert len(data) == 28 and len(data) % CHUNK  # the last chunk is short
    return data


def assert_converged(h: Harness) -> None:
    l1, l3 = h.raft(1).log, h.raft(3).log
    assert l3.committed == l1.committed and l3.last_index() == l1.last_index()
    assert l3.slice(SNAP_INDEX + 1, l3.last_index() + 1) == l1.slice(
        SNAP_INDEX + 1, l1.last_index() + 1
    )


# --------------------------------------------------------------------------- sending


def test_follower_behind_first_index_gets_chunks_within_the_window():
    """§7: a follower behind the compacted log gets the snapshot, in chunks of
    snapshot_chunk_size, never more than max_snapshot_chunks_inflight ahead of
    what it acknowledged."""
    h = lagging_follower()
    data = leader_snapshot(h)
    h.tick(1)  # heartbeat: n3's reply reveals it is behind
    h.stabilize()

    chunks = chunks_to(h, N3)
    assert [c.offset for c in chunks] == list(range(0, len(data), CHUNK))
    assert [len(c.data) for c in chunks] == [CHUNK] * 5 + [len(data) % CHUNK]
    assert [c.done for c in chunks] == [False] * 5 + [True]
    assert all(c.snapshot_index == SNAP_INDEX and c.total == len(data) for c in chunks)
    assert b"".join(c.data for c in chunks) == data

    # Flow control, replayed in delivery order: sent-but-unacknowledged bytes.
    acked = outstanding = peak = 0
    for m in h.delivered:
        if isinstance(m, InstallSnapshotResponse) and m.sender == N3 and not m.done:
            acked = max(acked, m.offset)
        elif isinstance(m, InstallSnapshot) and m.to == N3:
            outstanding = m.offset + len(m.data) - acked
            peak = max(peak, outstanding)
            assert outstanding <= WINDOW * CHUNK, f"chunk at {m.offset} exceeds the window"
    assert peak == WINDOW * CHUNK  # the window is used, not just respected


def test_first_burst_is_exactly_the_window():
    """§7 with flow control: the leader stops after max_snapshot_chunks_inflight chunks."""
    h = lagging_follower()
    h.tick(1)
    # Run until the leader has decided to send the snapshot, without delivering it.
    for _ in range(10):
        h.process_ready(N1)
        if any(isinstance(m, InstallSnapshot) for m in h.queue):
            break
        h.deliver()
        h.process_ready(N3)
        h.deliver()
    burst = [m for m in h.queue if isinstance(m, InstallSnapshot)]
    assert [(m.offset, len(m.data)) for m in burst] == [(0, CHUNK), (CHUNK, CHUNK)]
    assert h.node(1).progress()[N3].state == "snapshot"


def test_lost_chunks_are_resent_from_the_acknowledged_offset_after_a_heartbeat():
    """§7 (resumable): when in-flight chunks are lost the leader resumes, on the
    follower's next heartbeat reply, from the last acknowledged offset -- not
    from the beginning."""
    h = lagging_follower()
    data = leader_snapshot(h)
    lost: set[int] = set()

    def drop(m) -> bool:
        in_flight = (2 * CHUNK, 3 * CHUNK)
        if isinstance(m, InstallSnapshot) and m.offset in in_flight and m.offset not in lost:
            lost.add(m.offset)
            return True
        return False

    h.drop_if = drop
    h.tick(1)
    h.stabilize()
    assert lost == {2 * CHUNK, 3 * CHUNK}
    assert h.snapshots_installed.get(N3) is None  # stuck: the window is full
    pr = h.raft(1).prs[N3]
    assert pr.state is ProgressState.SNAPSHOT and pr.snap_acked == 2 * CHUNK

    mark = len(h.delivered)
    h.tick(1)
    h.stabilize()
    hb_reply = next(
        i
        for i, m in enumerate(h.delivered[mark:])
        if isinstance(m, HeartbeatResponse) and m.sender == N3
    )
    resent = chunks_to(h, N3, mark + hb_reply)
    assert resent[0].offset == 2 * CHUNK
    assert all(c.offset >= 2 * CHUNK for c in resent)
    assert [s.data for s in h.snapshots_installed[N3]] == [data]
    assert_converged(h)


def test_follower_restarting_mid_transfer_gets_the_transfer_restarted():
    """§7: chunks live in the follower's memory; after a restart it rejects a
    chunk it cannot continue, and the leader starts again from offset 0."""
    h = lagging_follower()
    data = leader_snapshot(h)
    h.drop_if = lambda m: isinstance(m, InstallSnapshot) and m.offset >= 3 * CHUNK
    h.tick(1)
    h.stabilize()
    assert h.raft(3).snapshot_in.transfer is not None
    assert len(h.raft(3).snapshot_in.transfer.data) == 3 * CHUNK

    h.restart(N3)
    h.drop_if = None
    mark = len(h.delivered)
    h.tick(1)
    h.stabilize()
    after = h.delivered[mark:]
    rejects = [
        m for m in after if isinstance(m, InstallSnapshotResponse) and m.reject and m.sender == N3
    ]
    assert rejects and all(m.offset == 0 for m in rejects)
    offsets = [c.offset for c in chunks_to(h, N3, mark)]
    assert offsets[0] == 3 * CHUNK  # the leader first tried to resume ...
    restarted = offsets[offsets.index(0) :]  # ... then started over
    assert sorted(set(restarted)) == list(range(0, len(data), CHUNK))
    assert [s.data for s in h.snapshots_installed[N3]] == [data]
    assert_converged(h)


# --------------------------------------------------------------------------- receiving


def follower(terms: list[int] = (), commit: int = 0) -> Raft:
    ids = (N1, N2, N3)
    st = MemoryStorage(voters=ids)
    st.append([Entry(term=t, index=k + 1, data=b"x") for k, t in enumerate(terms)])
    st.set_hard_state(HardState(term=max(terms, default=0), commit=commit))
    return Raft(Config(node_id=N2, peers=ids), st, random.Random(0))


WHOLE = b"abcdefghijkl"


def chunk(offset: int, data: bytes, *, done: bool = False, index: int = 10, whole: bytes = WHOLE):
    """A chunk of the snapshot ``whole`` (n1's, term 1) at ``offset``."""
    return InstallSnapshot(
        term=1,
        sender=N1,
        to=N2,
        snapshot_index=index,
        snapshot_term=1,
        conf_state=ConfState(voters=(N1, N2, N3)),
        offset=offset,
        data=data,
        done=done,
        total=len(whole),
        checksum=snapshot_checksum(whole),
    )


def replies(r: Raft) -> list[InstallSnapshotResponse]:
    out = [m for m in r.msgs + r.msgs_after_persist if isinstance(m, InstallSnapshotResponse)]
    r.msgs, r.msgs_after_persist = [], []
    return out


def test_out_of_order_chunk_is_rejected_with_the_held_offset():
    """§7 (Figure 13, offset): a chunk beyond what the follower holds is rejected
    with the offset it holds; a duplicate is acknowledged and not appended twice."""
    r = follower()
    r.step(chunk(0, b"abcd"))
    [ok] = replies(r)
    assert (ok.offset, ok.reject, ok.done) == (4, False, False)

    r.step(chunk(8, b"ijkl", done=True))
    [gap] = replies(r)
    assert (gap.offset, gap.reject, gap.done) == (4, True, False)

    r.step(chunk(0, b"abcd"))
    [dup] = replies(r)
    assert (dup.offset, dup.reject) == (4, False)

    r.step(chunk(4, b"efgh"))
    r.step(chunk(8, b"ijkl", done=True))
    *_, done = replies(r)
    assert done.done and done.snapshot_index == 10
    snap = r.log.unstable.snapshot
    assert snap is not None and snap.data == b"abcdefghijkl"
    assert r.log.committed == 10 and r.log.last_index() == 10


def test_chunk_of_an_unknown_snapshot_not_at_offset_zero_is_rejected():
    """§7 (Figure 13: "create new snapshot file if first chunk"): a transfer can
    only begin at offset 0."""
    r = follower()
    r.step(chunk(4, b"efgh"))
    [rej] = replies(r)
    assert (rej.offset, rej.reject) == (0, True)
    assert r.snapshot_in.transfer is None


def test_snapshot_older_than_the_commit_index_is_acknowledged_without_restoring():
    """§7: a snapshot describing a prefix the follower already committed changes
    nothing; the follower reports its commit index."""
    r = follower([1, 1, 1, 1, 1], commit=5)
    r.step(chunk(0, b"old", done=True, index=3, whole=b"old"))
    [ack] = replies(r)
    assert ack.done and not ack.reject and ack.snapshot_index == 5
    assert r.log.unstable.snapshot is None
    assert r.log.last_index() == 5 and r.log.committed == 5


def test_snapshot_matching_the_log_keeps_the_entries_after_it():
    """§7: "If existing log entry has same index and term as snapshot's last
    included entry, retain log entries following it"."""
    r = follower([1, 1, 1, 1, 1, 1], commit=2)
    r.step(chunk(0, b"s", done=True, index=4, whole=b"s"))
    [ack] = replies(r)
    assert ack.done
    assert r.log.unstable.snapshot is None
    assert r.log.last_index() == 6 and r.log.committed == 4


def test_installed_snapshot_appears_once_in_ready_and_later_entries_apply():
    """§7: the follower's state machine is reset from the snapshot exactly once
    (Ready.snapshot), then the entries after it are applied, and the logs converge."""
    h = lagging_follower()
    data = leader_snapshot(h)
    applied_before = [e.index for e in h.applied[N3]]
    h.tick(1)
    h.stabilize()
    [snap] = h.snapshots_installed[N3]
    assert snap.metadata.index == SNAP_INDEX and snap.metadata.term == 1 and snap.data == data
    assert snap.metadata.conf_state.voters == (N1, N2, N3)
    applied_after = [e.index for e in h.applied[N3]][len(applied_before) :]
    assert applied_after == list(range(SNAP_INDEX + 1, 12))
    assert h.storage[N3].snapshot() == snap
    assert h.node(3).status().first_index == SNAP_INDEX + 1
    assert_converged(h)

    # The follower keeps replicating from the log; the snapshot is not handed out again.
    for k in range(3):
        h.propose(1, b"after%d" % k)
    h.stabilize()
    h.tick_all(2)
    h.stabilize()
    assert len(h.snapshots_installed[N3]) == 1
    assert [e.index for e in h.applied[N3]][-3:] == [12, 13, 14]
    assert [e.data for e in h.applied[N3]][-3:] == [b"after0", b"after1", b"after2"]
    assert h.node(1).progress()[N3].state == "replicate"
    assert_converged(h)


def test_after_a_snapshot_of_the_whole_log_the_next_entry_goes_out_at_once():
    """§7: replication continues after the snapshot. When the snapshot covers the
    leader's whole log, the follower's answer to the empty probe that follows only
    confirms the match the leader already knew; that answer must still end the
    probe (etcd: ``pr.Match == m.Index && pr.State == StateProbe``), or the next
    entry waits for a heartbeat reply."""
    h = Harness(3)
    h.elect(1)
    h.isolate(3)
    for k in range(3):
        h.propose(1, b"v%d" % k)
    h.stabilize()
    last = h.node(1).last_index
    h.compact(1, last)
    h.heal()
    h.tick(1)  # a heartbeat: n3's reply starts the catch-up
    h.stabilize()
    assert [s.metadata.index for s in h.snapshots_installed[N3]] == [last]

    h.propose(1, b"next")  # no tick: nothing but the proposal moves
    h.stabilize()
    assert h.node(3).last_index == last + 1
    assert h.node(1).progress()[N3].state == "replicate"


# ------------------------------------------------- snapshot during an apply in flight


def test_snapshot_waits_for_committed_entries_the_driver_is_still_applying() -> None:
    """A snapshot's last chunk is not installed while a Ready's committed entries
    are being applied: restoring would switch the membership under them, and a
    configuration change among them would then apply to the snapshot's
    membership (found by the simulator, ``--membership --snapshots``, seed 720).
    The follower acknowledges all but the last chunk; the leader sends it again
    after a heartbeat, and by then the entries are applied.
    """
    from raftkv.core import (
        AppendEntries,
        ConfChange,
        ConfChangeSingle,
        ConfChangeType,
        EntryType,
        RawNode,
        Snapshot,
        SnapshotMetadata,
    )

    n4 = nid(4)
    raw = RawNode(
        Config(node_id=N2, peers=(N1, N2, N3)),
        MemoryStorage(voters=(N1, N2, N3)),
        random.Random(1),
    )
    add_n4 = ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, n4),))
    raw.step(
        AppendEntries(
            term=1,
            sender=N1,
            to=N2,
            prev_log_index=0,
            prev_log_term=0,
            entries=(
                Entry(term=1, index=1, data=b""),
                Entry(term=1, index=2, data=add_n4.encode(), type=EntryType.CONF_CHANGE),
            ),
            commit=2,
        )
    )
    rd = raw.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]
    # While the driver persists and applies that Ready, the whole snapshot
    # arrives: at index 10 the leader had removed n4 again.
    snap_conf = ConfState(voters=(N1, N2, N3))
    last_chunk = InstallSnapshot(
        term=1,
        sender=N1,
        to=N2,
        snapshot_index=10,
        snapshot_term=1,
        conf_state=snap_conf,
        offset=0,
        data=b"state@10",
        done=True,
        total=8,
        checksum=snapshot_checksum(b"state@10"),
    )
    raw.step(last_chunk)
    assert raw.conf_state().learners == ()  # still the membership before entry 2
    conf = raw.apply_conf_change(add_n4)  # the driver applies entry 2...
    assert conf.learners == (n4,)
    raw.advance(rd)  # ...and finishes the Ready
    rd = raw.ready()
    assert rd.snapshot is None
    (reply,) = [m for m in rd.messages if isinstance(m, InstallSnapshotResponse)]
    assert not reply.done and not reply.reject and reply.offset == 0
    raw.advance(rd)
    # The leader's heartbeat-driven resend of the last chunk is installed now.
    raw.step(last_chunk)
    rd = raw.ready()
    assert rd.snapshot == Snapshot(
        metadata=SnapshotMetadata(index=10, term=1, conf_state=snap_conf), data=b"state@10"
    )
    assert raw.conf_state() == snap_conf


# ------------------------------------------------- chunks from two leaders, checksums


def two_leader_chunks(size: int = 4) -> tuple[bytes, bytes, list, list]:
    """Chunks of two encodings of the snapshot at (10, 1): n1's (term 1) and n3's (term 2)."""
    a, b = b"A" * 3 * size, b"B" * 3 * size

    def stream(sender, term, data):
        return [
            InstallSnapshot(
                term=term,
                sender=sender,
                to=N2,
                snapshot_index=10,
                snapshot_term=1,
                conf_state=ConfState(voters=(N1, N2, N3)),
                offset=off,
                data=data[off : off + size],
                done=off + size >= len(data),
                total=len(data),
                checksum=snapshot_checksum(data),
            )
            for off in range(0, len(data), size)
        ]

    return a, b, stream(N1, 1, a), stream(N3, 2, b)


def interleavings(xs: list, ys: list):
    if not xs or not ys:
        yield xs + ys
        return
    for rest in interleavings(xs[1:], ys):
        yield [xs[0], *rest]
    for rest in interleavings(xs, ys[1:]):
        yield [ys[0], *rest]


def test_chunks_of_two_leaders_for_the_same_snapshot_are_never_mixed():
    """Two leaders' snapshots at the same (index, term) may differ byte for byte
    (an encoding is not canonical). A follower holding n1's first chunks must not
    take n3's as their continuation: the receiver is keyed by sender and term
    too, and a first chunk from another leader starts over. Every interleaving
    of the two streams installs one leader's data or nothing -- never a mix."""
    a, b, from_a, from_b = two_leader_chunks()
    installed = set()
    for order in interleavings(from_a, from_b):
        r = follower()
        for m in order:
            r.step(m)
        snap = r.log.unstable.snapshot
        if snap is not None:
            steps = [f"{m.sender}@{m.offset}" for m in order]
            assert snap.data in (a, b), f"mixed snapshot {snap.data!r} after {steps}"
            installed.add(snap.data)
    assert installed == {a, b}


def test_a_chunk_of_another_transfer_past_offset_zero_is_rejected_to_zero():
    """A follower holding n1's first chunk gets n3's (a newer leader) second
    chunk: it cannot continue with it, so n3 is told to start over at 0."""
    _, b, from_a, from_b = two_leader_chunks()
    r = follower()
    r.step(from_a[0])
    replies(r)
    r.step(from_b[1])
    [rej] = replies(r)
    assert (rej.to, rej.offset, rej.reject, rej.done) == (N3, 0, True, False)
    for m in from_b:
        r.step(m)
    snap = r.log.unstable.snapshot
    assert snap is not None and snap.data == b


def test_a_corrupted_chunk_is_caught_by_the_checksum_and_the_snapshot_resent():
    """The assembled data must match the checksum every chunk carries. A chunk
    corrupted in transit makes the whole snapshot fail it: nothing is handed to
    the driver (no Ready.snapshot, log and commit unchanged), the follower asks
    for the snapshot from offset 0, and a clean resend installs it."""
    r = follower()
    r.step(chunk(0, b"abcd"))
    r.step(chunk(4, b"eXgh"))  # one flipped byte
    r.step(chunk(8, b"ijkl", done=True))
    *_, last = replies(r)
    assert (last.offset, last.reject, last.done) == (0, True, False)
    assert r.log.unstable.snapshot is None and r.snapshot_in.transfer is None
    assert r.log.committed == 0 and r.log.last_index() == 0

    r.step(chunk(0, b"abcd"))
    r.step(chunk(4, b"efgh"))
    r.step(chunk(8, b"ijkl", done=True))
    *_, done = replies(r)
    assert done.done and done.snapshot_index == 10
    snap = r.log.unstable.snapshot
    assert snap is not None and snap.data == WHOLE


def test_the_leader_computes_the_checksum_once_per_snapshot(monkeypatch):
    """The checksum covers the whole snapshot; the leader computes it once, not
    per chunk or per follower, and every chunk carries it."""
    import raftkv.core.snapshot_transfer as transfer_module

    calls = []
    real = transfer_module.snapshot_checksum

    def counting(data: bytes) -> int:
        calls.append(len(data))
        return real(data)

    # Both sides': the leader's when sending, the follower's on assembly.
    monkeypatch.setattr(transfer_module, "snapshot_checksum", counting)
    h = lagging_follower()
    data = leader_snapshot(h)
    since = len(h.delivered)
    h.tick(1)
    h.stabilize()
    sent = chunks_to(h, N3, since)
    assert len(sent) == 6  # 28 bytes in chunks of 5
    assert {m.checksum for m in sent} == {real(data)}
    # The follower checks the assembled data once; the leader computed it once.
    assert calls == [len(data), len(data)]
