"""The KV store's space quota on a running node: the NOSPACE alarm, raised and
cleared through the log.

Rule 1: the alarm is replicated state. Whether it is raised is decided by
:class:`~raftkv.replica.kv.Alarm` entries, so every replica refuses the same
writes (``KVStateMachine`` rule 5); only the leader proposes them, from the
quota it was started with (``--quota-bytes``), measured on the store's size
(:attr:`~raftkv.replica.kv.KVStateMachine.size_bytes`: its keys and values
plus a fixed overhead per version; rule 4 says when replicas may differ).

Rule 2: the leader checks after each batch of entries it applied: past the
quota with the alarm clear, it proposes ``Alarm(active=True)``; back within the
quota (after a compaction freed space) with the alarm raised,
``Alarm(active=False)``. One proposal at a time: the next check waits until
the entry it proposed was applied (or leadership moved). A leader that finds
the store over its quota at election raises the alarm after applying its first
entry.

Rule 3: while the alarm is raised, the leader refuses a write that may add
data (:func:`may_add_data`) before it is proposed (:class:`~raftkv.server.errors.NoSpace`,
507); reads, deletes and compaction go on. A write proposed just before the
alarm entry is refused by the replica alike.

Rule 4: a compaction frees space in slices (``KVStateMachine.compact_step``):
a few per applied entry, and on every tick :data:`COMPACT_KEYS_PER_TICK` more, so
an idle node finishes the pass too; the tick then checks the quota again (an
alarm clears once the pass has freed enough). How far a replica's pass got is
visible only in its size, which only the leader's check reads, and the alarm
it proposes is what every replica follows -- so replicas need not agree on it.

Rule 5: auto-compaction. With ``--auto-compaction-retention N`` (revisions,
default :data:`~raftkv.server.config.DEFAULT_AUTO_COMPACTION_RETENTION`; 0 turns
it off) the leader keeps the last ``N`` revisions of history: once the store is
``N`` plus a tenth of ``N`` revisions past its compaction point, it proposes
``Compact(revision - N)`` (etcd's revision mode). Without it, history grows
with every write until an operator compacts, and every snapshot carries it.
Like the alarm it is a log entry, so every replica compacts at the same point.

Only a :class:`~raftkv.replica.kv.KVStateMachine` has a quota: for any other
state machine the node has no :class:`SpaceQuota` (:meth:`SpaceQuota.of`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from raftkv.core.errors import NotLeader, ProposalDropped
from raftkv.core.rawnode import RawNode
from raftkv.core.types import Index, Role
from raftkv.replica.kv import (
    ERR_NOSPACE,
    Alarm,
    Cas,
    Command,
    Compact,
    EtcdTxn,
    KVStateMachine,
    LeaseGrant,
    MultiPut,
    Put,
    Txn,
    TxnPut,
    encode_command,
)
from raftkv.replica.statemachine import StateMachine
from raftkv.server.errors import NoSpace
from raftkv.server.metrics import NodeMetrics

__all__ = ["ALARM_NOSPACE", "COMPACT_KEYS_PER_TICK", "SpaceQuota", "may_add_data"]

logger = logging.getLogger(__name__)

ALARM_NOSPACE = "NOSPACE"
"""The alarm's name in ``/v1/status`` and in 507 answers (etcd's)."""
COMPACT_KEYS_PER_TICK = 10_000
"""Keys a compaction's physical pass visits per tick: ~5 ms per 100 ms tick
(about 0.5 us per key visited, counted once per superseded version;
docs/benchmarks.md)."""


def may_add_data(command: Command) -> bool:
    """Whether ``command`` may write a value: a put, a compare-and-set, a
    multi-put, or a transaction (``/v1``'s or etcd's) with a put in either
    branch (which branch runs is known only when it is applied; etcd refuses
    these alike); or grant a lease (the replica refuses a grant under the
    alarm too, as etcd does)."""
    if isinstance(command, Put | Cas | MultiPut | LeaseGrant):
        return True
    if isinstance(command, Txn):
        return any(isinstance(op, TxnPut) for op in (*command.success, *command.failure))
    if isinstance(command, EtcdTxn):
        return command.may_put
    return False


class SpaceQuota:
    """The quota of one node's KV store (the module rules).

    Args:
        state_machine: the store it watches (read-only).
        quota_bytes: the quota, in bytes of the store's logical size.
        metrics: gets the store's gauges.
    """

    __slots__ = ("_sm", "_quota_bytes", "_retention", "_proposed_at")

    def __init__(
        self,
        state_machine: KVStateMachine,
        quota_bytes: int,
        metrics: NodeMetrics,
        *,
        retention: int = 0,
    ) -> None:
        self._sm = state_machine
        self._quota_bytes = quota_bytes
        self._retention = retention
        # Invariant: the index of the Alarm or Compact entry this node proposed
        # as leader and has not applied yet, or None.
        self._proposed_at: Index | None = None
        metrics.watch_store(
            revision=lambda: state_machine.revision,
            compact_revision=lambda: state_machine.compact_revision,
            size_bytes=lambda: state_machine.size_bytes,
            quota_bytes=lambda: quota_bytes,
            nospace=lambda: int(state_machine.alarm),
        )

    @classmethod
    def of(
        cls,
        state_machine: StateMachine,
        quota_bytes: int,
        metrics: NodeMetrics,
        *,
        retention: int = 0,
    ) -> SpaceQuota | None:
        """The quota of ``state_machine``, or None if it is not a KV store."""
        if not isinstance(state_machine, KVStateMachine):
            return None
        return cls(state_machine, quota_bytes, metrics, retention=retention)

    @property
    def alarm(self) -> str | None:
        """``"NOSPACE"`` while the alarm is raised, else None."""
        return ALARM_NOSPACE if self._sm.alarm else None

    def status_fields(self) -> dict[str, Any]:
        """The store's part of ``/v1/status``: its revisions, size, quota and alarm."""
        sm = self._sm
        return {
            "revision": sm.revision,
            "compact_revision": sm.compact_revision,
            "size_bytes": sm.size_bytes,
            "quota_bytes": self._quota_bytes,
            "alarm": self.alarm,
        }

    def admit(self, command: Command) -> None:
        """Rule 3, on the leader before it proposes ``command``.

        Raises:
            NoSpace: the alarm is raised and ``command`` may add data.
        """
        if self._sm.alarm and may_add_data(command):
            raise NoSpace(ERR_NOSPACE)

    def tick(self, raw: RawNode, applied_index: Index) -> None:
        """Rule 4: free a slice of a compaction's history, then check the quota."""
        if self._sm.compacting:
            self._sm.compact_step(COMPACT_KEYS_PER_TICK)
            self.applied(raw, applied_index)

    def applied(self, raw: RawNode, applied_index: Index) -> None:
        """Rule 2: entries up to ``applied_index`` were applied; on the leader,
        propose the alarm's change if the store's size calls for one."""
        if raw.role is not Role.LEADER:
            self._proposed_at = None
            return
        if self._proposed_at is not None:
            if applied_index < self._proposed_at:
                return
            self._proposed_at = None
        sm = self._sm
        over = sm.size_bytes > self._quota_bytes
        if over == sm.alarm:
            self._auto_compact(raw)
            return
        command = encode_command(Alarm(active=over, time_ms=int(time.time() * 1000)))
        try:
            self._proposed_at = raw.propose(command)
        except (NotLeader, ProposalDropped) as exc:  # a transfer: the next leader checks
            logger.debug("alarm proposal dropped: %s", exc)
            return
        fields = {"size_bytes": sm.size_bytes, "quota_bytes": self._quota_bytes}
        if over:
            logger.warning("space quota: raising the NOSPACE alarm", extra={"fields": fields})
        else:
            logger.info("space quota: clearing the NOSPACE alarm", extra={"fields": fields})

    def _auto_compact(self, raw: RawNode) -> None:
        """Rule 5: propose a compaction once history passes the retention."""
        retention = self._retention
        if retention <= 0:
            return
        sm = self._sm
        floor = max(sm.compact_revision, 1)
        if sm.revision - floor < retention + max(1, retention // 10):
            return
        target = sm.revision - retention
        command = encode_command(Compact(revision=target, time_ms=int(time.time() * 1000)))
        try:
            self._proposed_at = raw.propose(command)
        except (NotLeader, ProposalDropped) as exc:  # a transfer: the next leader checks
            logger.debug("auto-compaction proposal dropped: %s", exc)
            return
        logger.debug("auto-compaction", extra={"fields": {"revision": target}})
