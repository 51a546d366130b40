"""A follower's side of a chunked InstallSnapshot transfer (§7, Figure 13).

Rule: :class:`SnapshotAssembler` joins the chunks of one transfer and checks the
whole against its checksum; it decides what to acknowledge, never sends and
never installs. :class:`~raftkv.core.raft.Raft` answers with
``InstallSnapshotResponse`` and restores the assembled snapshot.

A transfer is identified by everything that names it -- the sender and its
term, the snapshot's (index, term) and checksum: two leaders' snapshots at the
same index may differ byte for byte, so chunks of different transfers are never
joined. Flow control is by byte offset: the follower acknowledges what it holds,
a duplicate (behind it) is acknowledged again, a gap (ahead of it) or a chunk of
another transfer asks the leader to go on from what it holds (``reject``).

The leader's side -- which chunk to send next within the window -- is
:class:`~raftkv.core.progress.Progress`'s (``next_snapshot_chunk``).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.core.messages import InstallSnapshot
from raftkv.core.types import (
    ConfState,
    Index,
    NodeId,
    Snapshot,
    SnapshotMetadata,
    Term,
    snapshot_checksum,
)

__all__ = ["Ack", "Corrupt", "SnapshotAssembler"]


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
