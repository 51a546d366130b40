"""One replica's state, decided by committed entries alone.

Rule 1: pure. No I/O, clock or randomness: the server's node runtime
(:mod:`raftkv.server.node`) and the simulator's cluster (:mod:`raftkv.sim.cluster`)
drive this same code, so what the simulator proves under faults is proved of
the code that serves traffic.

Rule 2: :meth:`Replica.apply` takes every committed entry once, in log order,
with increasing indexes: a normal entry goes to the application's state
machine (empty data is a leader's no-op); a configuration change is checked
against the membership book (:meth:`~raftkv.replica.membership.MembershipBook.refuse`),
applied to the core through the driver's ``apply_conf`` callback, and
recorded. A change refused by either is answered with a
:class:`~raftkv.replica.membership.Refusal`, alike on every replica; nothing
changed, and the entry counts as applied.

Rule 3: a snapshot image is an envelope (msgpack) of the address book, the
removed ids and the state machine's own image: ``{"v": 1, "members",
"removed", "sm"}``. Envelopes written before ``removed`` existed read as "none
removed". :meth:`Replica.restore` decodes everything before it changes
anything: an image that does not decode raises and leaves the replica as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgpack

from raftkv.core.errors import RaftError, RaftKVError
from raftkv.core.types import ConfChange, ConfState, Entry, EntryType, Index, NodeId
from raftkv.replica.membership import InvalidMember, Member, MembershipBook, Refusal, RefusalKind
from raftkv.replica.statemachine import SnapshotsLater, StateMachine

__all__ = [
    "ConfApplier",
    "ConfApplied",
    "InvalidSnapshotImage",
    "Replica",
    "ReplicaError",
]

ConfApplier = Callable[[ConfChange], ConfState]
"""Applies a configuration change to the core (``RawNode.apply_conf_change``) and
returns the new ConfState; raises :class:`~raftkv.core.errors.RaftError` if the
core refuses it."""

_ENVELOPE_VERSION = 1
_CONF_CHANGE = EntryType.CONF_CHANGE


class ReplicaError(RaftKVError):
    """Misuse of a replica (an index that does not increase)."""


class InvalidSnapshotImage(ReplicaError, ValueError):
    """A snapshot image that is not a replica envelope this version can read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfApplied:
    """A configuration change the core applied: the membership before and after."""

    before: ConfState
    after: ConfState


@dataclass(frozen=True, slots=True, kw_only=True)
class _Image:
    members: dict[NodeId, Member]
    removed: dict[NodeId, Index]
    sm: bytes
    founders: tuple[NodeId, ...] | None = None


class Replica:
    """The application state machine and the membership book of one replica.

    Args:
        state_machine: the application (e.g. :class:`~raftkv.replica.kv.KVStateMachine`).
        members: addresses known before any entry (``--initial-cluster``).
    """

    __slots__ = ("state_machine", "book", "applied_index", "conf_state")

    def __init__(
        self, state_machine: StateMachine, *, members: Mapping[NodeId, Member] | None = None
    ) -> None:
        self.state_machine = state_machine
        self.book = MembershipBook(members)
        # Invariant: the index of the last entry applied, or of the snapshot restored.
        self.applied_index: Index = 0
        # Invariant: the configuration as of applied_index (what the core applied).
        self.conf_state = ConfState()

    # ------------------------------------------------------------------ applying

    def apply(self, entry: Entry, apply_conf: ConfApplier) -> object:
        """Apply one committed entry (Rule 2); its result.

        Returns:
            For a normal entry, what the state machine returned (``None`` for a
            no-op); for a configuration change, :class:`ConfApplied` or a
            :class:`~raftkv.replica.membership.Refusal`.

        Raises:
            ReplicaError: ``entry.index`` is not above :attr:`applied_index`.
            Exception: whatever the state machine or ``apply_conf`` raise other
                than a ``RaftError``: a bug, which must stop the node.
        """
        index = entry.index
        if index <= self.applied_index:
            raise ReplicaError(f"apply({index}) after index {self.applied_index}: must increase")
        if entry.type is _CONF_CHANGE:
            result: object = self._apply_conf_change(entry, apply_conf)
        elif entry.data:
            result = self.state_machine.apply(index, entry.data)
        else:
            result = None
        self.applied_index = index
        return result

    def _apply_conf_change(self, entry: Entry, apply_conf: ConfApplier) -> ConfApplied | Refusal:
        try:
            cc = ConfChange.decode(entry.data)
        except ValueError as exc:
            return Refusal(kind=RefusalKind.CORE, message=f"undecodable conf change: {exc}")
        refusal = self.book.refuse(cc, entry.index, self.conf_state)
        if refusal is not None:
            # Proposed by a node that did not check (an older version) or
            # injected. The core is not told at all, so its configuration stays
            # the one every replica has; the entry still counts as applied, which
            # frees the core to accept the next change (pending_conf_index <= applied).
            return refusal
        before = self.conf_state
        try:
            after = apply_conf(cc)
        except RaftError as exc:
            # Validated against the membership when proposed, so this takes a
            # proposer that did not (an older version) or a membership that
            # changed since. The core changed nothing, the same on every replica.
            return Refusal(kind=RefusalKind.CORE, message=str(exc))
        self.book.applied(cc, entry.index, before, after)
        self.conf_state = after
        return ConfApplied(before=before, after=after)

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The image of the whole replica as of :attr:`applied_index` (Rule 3)."""
        return self.snapshot_later()()

    def snapshot_later(self) -> Callable[[], bytes]:
        """Capture the state now; the returned function encodes the capture and
        may run in another thread while :meth:`apply` goes on.

        Cheap for a :class:`~raftkv.replica.statemachine.SnapshotsLater` state
        machine (a shallow copy); otherwise the state machine's image is taken now.
        """
        sm = self.state_machine
        if isinstance(sm, SnapshotsLater):
            encode_sm = sm.snapshot_later()
        else:
            image = sm.snapshot()

            def encode_sm() -> bytes:
                return image

        members, removed = self.book.to_wire()
        founders = self.book.founders

        def encode() -> bytes:
            body: dict[str, object] = {
                "v": _ENVELOPE_VERSION,
                "members": members,
                "removed": removed,
            }
            if founders is not None:
                body["founders"] = list(founders)
            body["sm"] = encode_sm()
            data: bytes = msgpack.packb(body, use_bin_type=True)
            return data

        return encode

    def restore(self, data: bytes, index: Index, conf_state: ConfState) -> None:
        """Replace the whole state with a snapshot image taken at ``index``.

        The address book becomes the image's; removed ids are merged (what this
        replica knows beyond the snapshot stays true: removals are never undone).

        Raises:
            InvalidSnapshotImage: the envelope does not decode.
            Exception: whatever the state machine's ``restore`` raises (its image
                does not decode); in either case nothing changed.
        """
        image = decode_image(data)
        self.state_machine.restore(image.sm)
        self.book.members = image.members
        self.book.merge_removed(image.removed)
        if image.founders is not None:
            self.book.founders = image.founders
        self.applied_index = index
        self.conf_state = conf_state


def decode_image(data: bytes) -> _Image:
    """The parts of a snapshot image (Rule 3).

    Raises:
        InvalidSnapshotImage: not an envelope this version can read.
    """
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise InvalidSnapshotImage(f"not msgpack: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != _ENVELOPE_VERSION:
        raise InvalidSnapshotImage("unknown snapshot envelope")
    try:
        members = MembershipBook.parse_members(obj["members"])
        removed = MembershipBook.parse_removed(obj.get("removed", {}))
        sm = obj["sm"]
        founders = obj.get("founders")
        if founders is not None:
            founders = tuple(MembershipBook.parse_members_ids(founders))
    except (KeyError, InvalidMember) as exc:
        raise InvalidSnapshotImage(f"malformed snapshot envelope: {exc}") from exc
    if not isinstance(sm, bytes):
        raise InvalidSnapshotImage("malformed snapshot envelope: the state image is not bytes")
    return _Image(members=members, removed=removed, sm=sm, founders=founders)
