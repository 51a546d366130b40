"""One etcd ``Watch`` stream: its watchers on the node's watch hub.

Rule 1: the node's watches decide (:mod:`raftkv.server.node.watches`, the
same hub and limits as ``GET /v1/watch``); this only translates. A create
request opens a watcher (``watch_id`` 0: the stream picks the lowest free id
from 0 up, as etcd's); a cancel request closes one; the stream's watchers share
one wake-up event and one writer, so everything is answered in one order:
each watcher's ``created`` before its events, its events in revision order
(one response per revision), its cancel last.

Rule 2: etcd's answers. ``created`` carries the store revision the watch
starts after; a start revision below the compaction is a ``canceled``
response with ``compact_revision`` (no reason, as etcd's); a request the hub
refuses is ``created`` and ``canceled`` at once with the reason, watch id -1;
a slow watcher (over ``--watch-buffer-bytes``) and the node stopping cancel
the watcher with the reason. A stream opened with ``hasleader`` metadata
(``clientv3.WithRequireLeader``) cannot start without a leader and ends with
"etcdserver: no leader" once the node has had none for an election timeout.

Rule 3: progress never overtakes events. A progress request is answered (watch
id -1, the header's revision) once every watcher of the stream is synced with
nothing queued -- at the hub's cursor, up to which each has everything -- and
not before; periodic progress goes to the watchers that asked for it
(``progress_notify``). ``fragment`` is ignored: a response holds one
revision's events, never split.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from raftkv.etcd import convert, errors
from raftkv.etcd.errors import EtcdError
from raftkv.etcd.pb import rpc_pb2
from raftkv.replica.watch import (
    CANCEL_COMPACTED,
    CANCEL_NO_LEADER,
    FILTER_NO_DELETE,
    FILTER_NO_PUT,
    WatchResponse,
)
from raftkv.server.errors import BadRequest, NoLeader, ServerError, TooManyWatchers
from raftkv.server.node.watches import REASON_STOPPING, WatchStream

if TYPE_CHECKING:
    from raftkv.etcd.service import EtcdService

__all__ = ["WatchSession", "INVALID_WATCH_ID"]

logger = logging.getLogger(__name__)

INVALID_WATCH_ID: Final = -1
"""etcd's ``clientv3.InvalidWatchID``: a refused create, a stream-wide progress answer."""
_FILTERS: Final = {
    rpc_pb2.WatchCreateRequest.NOPUT: FILTER_NO_PUT,
    rpc_pb2.WatchCreateRequest.NODELETE: FILTER_NO_DELETE,
}


class WatchSession:
    """The watchers of one ``Watch`` stream (the module rules).

    Args:
        service: the etcd API's handlers (the node, headers).
        require_leader: the stream came with ``hasleader`` metadata.
    """

    def __init__(self, service: EtcdService, *, require_leader: bool) -> None:
        self._service = service
        self._require_leader = require_leader
        self._ready = asyncio.Event()
        self._watchers: dict[int, WatchStream] = {}
        # Invariant: the open watchers, by the stream's watch id.
        self._next_id = 0
        self._control: list[rpc_pb2.WatchResponse] = []
        # Answers to the requests read so far, in order, not yet sent.
        self._progress_wanted = False
        self._error: EtcdError | None = None
        # Set: the stream ends with it once what precedes it is sent.

    async def run(
        self, requests: AsyncIterator[rpc_pb2.WatchRequest]
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """The stream's responses, until the client goes away or it ends with an error.

        Raises:
            EtcdError: no leader (Rule 2).
        """
        node = self._service.node
        if self._require_leader and node.leader is None:
            raise errors.NO_LEADER
        reader = asyncio.ensure_future(self._read(requests))
        reader.add_done_callback(lambda _: self._ready.set())
        try:
            while True:
                self._ready.clear()
                for response in self._collect():
                    yield response
                if self._error is not None:
                    raise self._error
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    logger.debug("watch stream reader ended: %r", reader.exception())
                    return
                await self._ready.wait()
        finally:
            reader.cancel()
            for stream in self._watchers.values():
                stream.close()
            self._watchers.clear()

    # ------------------------------------------------------------------ requests

    async def _read(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        async for request in requests:
            kind = request.WhichOneof("request_union")
            if kind == "create_request":
                self._create(request.create_request)
            elif kind == "cancel_request":
                self._cancel(request.cancel_request.watch_id)
            elif kind == "progress_request":
                self._progress_wanted = True
            self._ready.set()
        # The client closed its side: etcd keeps sending until it goes away.

    def _create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        service = self._service
        # etcd's conventions: an empty key is the smallest, "\0" alone as the
        # end means "every key from key" (the hub's b"\0").
        key = req.key or b"\0"
        range_end = req.range_end
        watch_id = req.watch_id
        if watch_id and watch_id in self._watchers:
            self._refuse("mvcc: duplicate watch ID provided on the WatchStream")
            return
        if watch_id < 0:
            self._refuse("mvcc: watch ID must be >= 0")  # -1 is etcd's "no watch"
            return
        limit = service.config.max_watchers_per_stream
        if len(self._watchers) >= limit:
            self._refuse(
                f"{errors.TOO_MANY_REQUESTS.message}: a watch stream holds at most "
                f"{limit} watchers (--max-watchers-per-stream)"
            )
            return
        if watch_id == 0:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        try:
            stream = service.node.open_watch(
                key,
                range_end,
                start_revision=req.start_revision,
                prev_kv=req.prev_kv,
                filters=frozenset(_FILTERS[f] for f in req.filters if f in _FILTERS),
                progress_notify=req.progress_notify,
                require_leader=self._require_leader,
                ready=self._ready,
            )
        except NoLeader:
            self._error = errors.NO_LEADER
            return
        except BadRequest as exc:
            self._refuse(exc.message)
            return
        except TooManyWatchers as exc:
            self._refuse(f"{errors.TOO_MANY_REQUESTS.message}: {exc.message}")
            return
        except ServerError:
            self._error = errors.STOPPED
            return
        self._watchers[watch_id] = stream
        self._control.append(
            rpc_pb2.WatchResponse(header=service.header(), watch_id=watch_id, created=True)
        )

    def _refuse(self, reason: str) -> None:
        self._control.append(
            rpc_pb2.WatchResponse(
                header=self._service.header(),
                watch_id=INVALID_WATCH_ID,
                created=True,
                canceled=True,
                cancel_reason=reason,
            )
        )

    def _cancel(self, watch_id: int) -> None:
        stream = self._watchers.pop(watch_id, None)
        if stream is None:
            return  # etcd answers nothing for an unknown id
        stream.close()
        self._control.append(
            rpc_pb2.WatchResponse(header=self._service.header(), watch_id=watch_id, canceled=True)
        )

    # ------------------------------------------------------------------ responses

    def _collect(self) -> list[rpc_pb2.WatchResponse]:
        """Everything to send now, in order (Rule 1, Rule 3)."""
        out, self._control = self._control, []
        for watch_id, stream in list(self._watchers.items()):
            taken = stream.take()
            for r in taken:
                if r.canceled:
                    del self._watchers[watch_id]
                    stream.close()
                    if r.cancel_reason == CANCEL_NO_LEADER:
                        # etcd ends the whole stream (its watchers share the
                        # hasleader metadata): no cancel response.
                        self._error = errors.NO_LEADER
                        continue
                out.append(self._response(watch_id, r))
            if watch_id in self._watchers and stream.ended and not taken:
                # The node stopped (a failed hub gives no cancel response).
                del self._watchers[watch_id]
                stream.close()
                out.append(self._cancelled(watch_id, REASON_STOPPING))
        if self._progress_wanted:
            revision = self._progress_revision()
            if revision is not None:
                self._progress_wanted = False
                out.append(
                    rpc_pb2.WatchResponse(
                        header=self._service.header(revision), watch_id=INVALID_WATCH_ID
                    )
                )
        return out

    def _progress_revision(self) -> int | None:
        """The revision every watcher of the stream has everything up to, or None
        while one is catching up."""
        if not self._watchers:
            return self._service.header().revision
        revisions = set()
        for stream in self._watchers.values():
            revision = stream.progress_revision()
            if revision is None:
                return None
            revisions.add(revision)
        return min(revisions)

    def _cancelled(self, watch_id: int, reason: str) -> rpc_pb2.WatchResponse:
        return rpc_pb2.WatchResponse(
            header=self._service.header(), watch_id=watch_id, canceled=True, cancel_reason=reason
        )

    def _response(self, watch_id: int, r: WatchResponse) -> rpc_pb2.WatchResponse:
        header = self._service.header(r.revision)
        if r.canceled:
            if r.cancel_reason == CANCEL_COMPACTED:
                return rpc_pb2.WatchResponse(
                    header=header,
                    watch_id=watch_id,
                    canceled=True,
                    compact_revision=r.compact_revision,
                )
            return rpc_pb2.WatchResponse(
                header=header, watch_id=watch_id, canceled=True, cancel_reason=r.cancel_reason
            )
        return rpc_pb2.WatchResponse(
            header=header, watch_id=watch_id, events=[convert.event(e) for e in r.events]
        )
