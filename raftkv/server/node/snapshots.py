"""Snapshots: taken every ``snapshot_entries``, installed from the leader, restored at start.

Rule 1: a local snapshot is taken after a Ready's sync, so it never gets ahead
of the durable log, and one at a time. The replica's state is captured on the
loop (cheap for a :class:`~raftkv.replica.statemachine.SnapshotsLater` state
machine: a shallow copy); encoding it and writing the file run in the snapshot
thread while the loop goes on -- heartbeats never wait behind a large image.
Back on the loop, the file becomes the current snapshot and the log is
compacted, keeping a tail for slightly lagging followers. A failed write
crash-stops the node, as a failed WAL write does.

Rule 2: a leader's snapshot is decoded and restored into the replica before it
is persisted: an image this node cannot read must never reach its disk, where
it would fail every restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

from raftkv.core.types import Index, NodeId, Snapshot, SnapshotMetadata
from raftkv.replica.replica import Replica
from raftkv.server.errors import SnapshotUndecodable
from raftkv.server.metrics import NodeMetrics
from raftkv.storage.disk_storage import DiskStorage

__all__ = ["Snapshots"]

logger = logging.getLogger(__name__)


class Snapshots:
    """The snapshots of one node's replica, and the thread that writes them.

    Args:
        node_id: this node (names the thread).
        replica: what is snapshotted and restored.
        metrics: counts snapshots taken and installed.
        every: take a snapshot every this many applied entries.
        fail: crash-stops the node (a snapshot write failed).
        wake: wakes the drive loop (the log was compacted).
    """

    __slots__ = (
        "job",
        "index",
        "_replica",
        "_metrics",
        "_every",
        "_fail",
        "_wake",
        "_thread",
        "_closed",
    )

    def __init__(
        self,
        node_id: NodeId,
        replica: Replica,
        metrics: NodeMetrics,
        *,
        every: int,
        fail: Callable[[str, BaseException], None],
        wake: Callable[[], None],
    ) -> None:
        # Invariant: None, or the snapshot being written in _thread.
        self.job: asyncio.Future[Snapshot] | None = None
        # The index of the latest snapshot restored, installed or taken.
        self.index: Index = 0
        self._replica = replica
        self._metrics = metrics
        self._every = every
        self._fail = fail
        self._wake = wake
        # Snapshots are encoded and written here, one at a time.
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"raftkv-snap-{node_id}"
        )
        self._closed = False  # the storage closes: adopt nothing more

    def restore(self, storage: DiskStorage) -> Index:
        """At start: restore the replica from storage's latest snapshot; its index (0: none)."""
        snap = storage.snapshot()
        if snap.is_empty():
            return 0
        md = snap.metadata
        self._replica.restore(snap.data, md.index, md.conf_state)
        self.index = md.index
        logger.info("restored snapshot", extra={"fields": {"index": md.index}})
        return md.index

    def install(self, storage: DiskStorage, snap: Snapshot) -> None:
        """Restore the leader's ``snap`` into the replica, then persist it (Rule 2).

        Raises:
            SnapshotUndecodable: the image does not decode; nothing was persisted.
        """
        md = snap.metadata
        try:
            self._replica.restore(snap.data, md.index, md.conf_state)
        except Exception as exc:
            raise SnapshotUndecodable(
                f"the snapshot at {md.term}/{md.index} from the leader does not decode "
                f"({exc}); not persisted"
            ) from exc
        storage.apply_snapshot(snap)
        self.index = md.index

    def maybe_take(self, storage: DiskStorage) -> None:
        """Start a snapshot in the snapshot thread if ``every`` entries were
        applied since the last one and none is being written (Rule 1)."""
        replica = self._replica
        if self.job is not None or replica.applied_index - self.index < self._every:
            return
        index = replica.applied_index
        metadata = SnapshotMetadata(
            index=index, term=storage.term(index), conf_state=replica.conf_state
        )
        encode = replica.snapshot_later()

        def write() -> Snapshot:
            return storage.write_snapshot(metadata, encode())

        job = asyncio.get_running_loop().run_in_executor(self._thread, write)
        self.job = job
        job.add_done_callback(lambda done: self._written(storage, done))

    def _written(self, storage: DiskStorage, job: asyncio.Future[Snapshot]) -> None:
        """On the loop: make the snapshot the snapshot thread wrote current, compact."""
        self.job = None
        if job.cancelled() or self._closed:
            return
        exc = job.exception()
        if exc is not None:
            self._fail("snapshot", exc)  # the disk: crash-stop, as for the WAL
            return
        snapshot = job.result()
        index = snapshot.metadata.index
        if not storage.adopt_snapshot(snapshot):
            return  # a leader's snapshot was installed meanwhile; it is newer
        # Keep a tail so slightly lagging followers catch up from the log;
        # followers behind the compaction point get an InstallSnapshot.
        keep = min(1000, self._every // 2)
        if index - keep > storage.first_index():
            storage.compact(index - keep)
        self.index = max(self.index, index)
        self._metrics.snapshots.inc()
        logger.info("snapshot taken", extra={"fields": {"index": index}})
        self._wake()

    def close(self) -> None:
        """The node stops: a snapshot written from now on is not adopted."""
        self._closed = True

    def shutdown(self) -> None:
        """Wait for a snapshot file being written, and end the thread."""
        self._thread.shutdown(wait=True)
