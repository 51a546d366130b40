"""A chunked InstallSnapshot transfer, both sides (§7, Figure 13).

Rule: the leader's sending -- when a follower needs the snapshot, which chunks
go out within the window, resending after a loss, the follower's answers --
and the follower's receiving -- acknowledging chunks, restoring the assembled
snapshot -- are functions here over one node's
:class:`~raftkv.core.raft.Raft` state. :class:`SnapshotAssembler` is the
follower's pure part: it joins the chunks of one transfer and checks the whole
against its checksum; it decides what to acknowledge, never sends and never
installs. Which chunk to send next is :class:`~raftkv.core.progress.Progress`'s
(``next_snapshot_chunk``).

A transfer is identified by everything that names it -- the sender and its
term, the snapshot's (index, term) and checksum: two leaders' snapshots at the
same index may differ byte for byte, so chunks of different transfers are never
joined. Flow control is by byte offset: the follower acknowledges what it holds,
a duplicate (behind it) is acknowledged again, a gap (ahead of it) or a chunk of
another transfer asks the leader to go on from what it holds (``reject``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftkv.core.confchange import Membership
from raftkv.core.membership import switch_membership
from raftkv.core.messages import InstallSnapshot, InstallSnapshotResponse
from raftkv.core.progress import Progress, ProgressState
from raftkv.core.transfer import maybe_send_timeout_now
from raftkv.core.types import (
    ConfState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMetadata,
    Term,
    snapshot_checksum,
)

if TYPE_CHECKING:
    from raftkv.core.raft import Raft

__all__ = [
    "Ack",
    "Corrupt",
    "SnapshotAssembler",
    "handle_install_snapshot",
    "handle_snapshot_response",
    "restore",
    "resend_snapshot",
    "start_snapshot",
]

logger = logging.getLogger(__name__)

_SNAPSHOT = ProgressState.SNAPSHOT


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer the chunk with ``offset`` (bytes held); ``reject``: go on from there."""

    offset: int
    reject: bool = False


@dataclass(frozen=True, slots=True)
class Corrupt:
    """The assembled snapshot fails its checksum: discarded, to be sent again."""

    index: Index
    term: Term


@dataclass(slots=True)
class _Transfer:
    sender: NodeId
    leader_term: Term
    index: Index
    term: Term
    checksum: int
    conf_state: ConfState
    data: bytearray

    def continues(self, msg: InstallSnapshot) -> bool:
        """Whether ``msg`` is a chunk of this transfer."""
        return (
            msg.sender == self.sender
            and msg.term == self.leader_term
            and msg.snapshot_index == self.index
            and msg.snapshot_term == self.term
            and msg.checksum == self.checksum
        )


class SnapshotAssembler:
    """The transfer under way on a follower, if any (see the module rules)."""

    __slots__ = ("transfer",)

    def __init__(self) -> None:
        self.transfer: _Transfer | None = None

    def drop(self) -> None:
        """Forget the transfer under way (the snapshot is no longer needed)."""
        self.transfer = None

    def add(self, msg: InstallSnapshot, *, may_finish: bool) -> Ack | Corrupt | Snapshot:
        """Take one chunk: what to answer, or the whole snapshot once assembled.

        ``may_finish`` False holds back the last chunk (answered as not yet
        taken, so the leader sends it again): the driver is still applying
        entries handed out before, and installing now would switch the state
        and membership under them.
        """
        transfer = self.transfer
        if transfer is None or not transfer.continues(msg):
            if msg.offset != 0:
                # Not the transfer we hold: the sender starts over from 0.
                return Ack(0, reject=True)
            transfer = _Transfer(
                sender=msg.sender,
                leader_term=msg.term,
                index=msg.snapshot_index,
                term=msg.snapshot_term,
                checksum=msg.checksum,
                conf_state=msg.conf_state,
                data=bytearray(),
            )
            self.transfer = transfer
        have = len(transfer.data)
        if msg.offset != have:
            return Ack(have, reject=msg.offset > have)
        if msg.done and not may_finish:
            return Ack(have)
        transfer.data += msg.data
        if not msg.done:
            return Ack(len(transfer.data))
        self.transfer = None
        data = bytes(transfer.data)
        if snapshot_checksum(data) != transfer.checksum:
            return Corrupt(index=transfer.index, term=transfer.term)
        return Snapshot(
            metadata=SnapshotMetadata(
                index=transfer.index, term=transfer.term, conf_state=transfer.conf_state
            ),
            data=data,
        )


# -- the leader's side ------------------------------------------------------


def start_snapshot(r: Raft, to: NodeId, pr: Progress) -> bool:
    """Switch ``to`` to snapshot replication; False if no snapshot is available."""
    snapshot = r.log.snapshot()
    if snapshot.is_empty():
        logger.debug("%s: no snapshot available for %s yet", r.node_id, to)
        return False
    pr.become_snapshot(snapshot)
    _send_chunks(r, to, pr)
    return True


def _send_chunks(r: Raft, to: NodeId, pr: Progress) -> None:
    """Send chunks of the pending snapshot within the flow-control window."""
    snapshot = pr.pending_snapshot
    if snapshot is None:
        return
    chunk = r.config.snapshot_chunk_size
    window = chunk * r.config.max_snapshot_chunks_inflight
    md = snapshot.metadata
    checksum = _checksum(r, snapshot)
    while (piece := pr.next_snapshot_chunk(chunk, window)) is not None:
        offset, end, done = piece
        r.send(
            InstallSnapshot(
                term=r.term,
                sender=r.node_id,
                to=to,
                snapshot_index=md.index,
                snapshot_term=md.term,
                conf_state=md.conf_state,
                offset=offset,
                data=snapshot.data[offset:end],
                done=done,
                total=len(snapshot.data),
                checksum=checksum,
            )
        )


def _checksum(r: Raft, snapshot: Snapshot) -> int:
    """The checksum of the snapshot being sent: computed once per snapshot, not
    per chunk or per follower."""
    cached = r.sent_snapshot_checksum
    if cached is not None and cached[0] is snapshot:
        return cached[1]
    checksum = snapshot_checksum(snapshot.data)
    r.sent_snapshot_checksum = (snapshot, checksum)
    return checksum


def resend_snapshot(r: Raft, to: NodeId, pr: Progress) -> None:
    """Restart sending from the last acknowledged chunk (lost chunks, §7)."""
    if pr.pending_snapshot is None:
        return
    pr.rewind_snapshot(r.config.snapshot_chunk_size)
    _send_chunks(r, to, pr)


def handle_snapshot_response(r: Raft, msg: InstallSnapshotResponse, pr: Progress) -> None:
    """A follower acknowledged chunks, asked to go on from an offset, or reports
    the snapshot installed (then replication resumes by probing)."""
    if msg.done:
        pr.snapshot_installed(msg.snapshot_index)
        maybe_send_timeout_now(r, msg.sender, pr)
        r.send_append(msg.sender, pr)
        return
    snapshot = pr.pending_snapshot
    if pr.state is not _SNAPSHOT or snapshot is None:
        return
    if msg.snapshot_index != snapshot.metadata.index:
        return
    pr.snapshot_acked(msg.offset, reject=msg.reject)
    _send_chunks(r, msg.sender, pr)


# -- the follower's side ----------------------------------------------------


def handle_install_snapshot(r: Raft, msg: InstallSnapshot) -> None:
    """Follower side of InstallSnapshot: collect chunks, then restore (§7, Figure 13)."""
    if msg.snapshot_index <= r.log.committed:
        # We already hold (and committed) everything the snapshot covers.
        r.snapshot_in.drop()
        _reply(r, msg, r.log.committed, done=True)
        return
    # While the driver still applies committed entries we handed out (a
    # Ready is in flight), the last chunk waits: restoring now would switch
    # the state and membership under them.
    got = r.snapshot_in.add(msg, may_finish=r.log.applying <= r.log.applied)
    if isinstance(got, Ack):
        _reply(r, msg, got.offset, reject=got.reject)
        return
    if isinstance(got, Corrupt):
        # Corrupted in transit or assembled wrongly: never hand it to the
        # driver. Discarded; ask for the whole snapshot again.
        logger.warning(
            "%s: snapshot %d/%d from %s fails its checksum; asking for it again",
            r.node_id,
            got.term,
            got.index,
            msg.sender,
        )
        _reply(r, msg, 0, reject=True)
        return
    md = got.metadata
    if restore(r, got):
        logger.debug("%s restored snapshot at %d/%d", r.node_id, md.term, md.index)
        _reply(r, msg, md.index, done=True)
    else:
        _reply(r, msg, r.log.committed, done=True)


def _reply(
    r: Raft,
    msg: InstallSnapshot,
    offset_or_index: int,
    *,
    done: bool = False,
    reject: bool = False,
) -> None:
    reply = InstallSnapshotResponse(
        term=r.term,
        sender=r.node_id,
        to=msg.sender,
        snapshot_index=offset_or_index if done else msg.snapshot_index,
        offset=0 if done else offset_or_index,
        done=done,
        reject=reject,
    )
    r.send(reply)


def restore(r: Raft, snapshot: Snapshot) -> bool:
    """Install a leader's snapshot; False if our log already covers it."""
    md = snapshot.metadata
    if md.index <= r.log.committed:
        return False
    if r.log.match_term(md.index, md.term):
        # Our log already matches up to the snapshot: just commit (§7:
        # "retain log entries following it").
        r.log.commit_to(md.index)
        return False
    r.log.restore(snapshot)
    switch_membership(r, Membership.from_conf_state(md.conf_state))
    return True
