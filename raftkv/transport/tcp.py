"""The TCP peer transport: asyncio streams, per-peer queues, batching, handshake.

Rule 1: a slow or dead peer costs bounded memory and blocks nobody. Each peer
has its own bounded queue (messages *and* approximate bytes); when it is full
the *oldest* messages are evicted and counted -- Raft re-sends what matters,
and the newest messages carry the freshest state. Each peer has its own writer
task, so a stalled socket stalls only that peer.

Rule 2: connections are one-way. Node A sends to B over the connection A
opened to B, and B sends to A over the one B opened to A (as etcd's streams
do), so a pair of nodes uses two TCP streams and per-link order is the order
of one stream. After the handshake the accepting side only reads and the
connecting side only writes; the connecting side treats any byte or EOF from
the other end as a closed connection and reconnects with exponential backoff
with jitter (drawn from an injectable ``random.Random``).

Rule 3: nothing is delivered before the handshake completes, and then only
messages whose ``sender`` is the authenticated peer and whose ``to`` is this
node. A frame that fails to decode closes its connection. Bad peers are
logged once per peer (until a connection to it succeeds), and counted in
:class:`~raftkv.transport.base.TransportStats`; they never raise.

Rule 4: an inbound connection that has not completed the handshake below is
bounded in time and in number, and a flood of them cannot lock a member out.
Its handshake has one deadline, ``handshake_timeout`` from its start, that
bytes do not extend. Pending handshakes are limited per source address and in
total; at a limit an old pending one is closed, not the newcomer, and never
one from a member's host for one from elsewhere (the ranking is in
:mod:`raftkv.transport.admission`). A member's host is an IP address in the
peer map or the address a peer last completed a handshake from. With TLS the
handshake starts once TLS is up; TLS has a deadline of the same length before
it, and connections still in TLS are not counted (asyncio holds them).

The handshake itself (its frames and proofs) is :mod:`raftkv.transport.handshake`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Mapping, Sequence

from raftkv.core.types import NodeId
from raftkv.transport.admission import Limit, PendingHandshakes, canonical_ip, source_of
from raftkv.transport.base import Address, OnMessages, TransportStats
from raftkv.transport.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    decode_batch,
    encode_batch,
    encode_frame,
    frame_length,
)
from raftkv.transport.errors import (
    AuthenticationError,
    CodecError,
    HandshakeError,
    TransportClosed,
    TransportError,
)
from raftkv.transport.forward import PeerMessage
from raftkv.transport.handshake import client_handshake, server_handshake
from raftkv.transport.link import Outbound, approx_size, close_writer, set_nodelay, wait_eof

__all__ = [
    "HANDSHAKE_DEADLINE",
    "MAX_PENDING_HANDSHAKES",
    "MAX_PENDING_PER_SOURCE",
    "TcpTransport",
]

logger = logging.getLogger(__name__)

_MAX_LOG_KEYS = 1024
# Pending (unauthenticated) inbound handshakes, in all: a member needs one at a
# time, so this is room for every peer of a large cluster to reconnect at once,
# while a flood's sockets and tasks stay bounded.
MAX_PENDING_HANDSHAKES = 64
# ... and from one source address (an IPv6 /64): a member needs one, a host or
# NAT may carry several members; a crowd there displaces only itself.
MAX_PENDING_PER_SOURCE = 8
# A handshake (and, with TLS, the TLS handshake before it) must complete this
# soon: a few round trips on any network that carries Raft, and the longest a
# socket that sends nothing (or a byte at a time) holds a pending slot.
HANDSHAKE_DEADLINE = 2.0


class TcpTransport:
    """A :class:`~raftkv.transport.base.Transport` over TCP (asyncio streams).

    Args:
        node_id: this node's id.
        listen: (host, port) to accept peer connections on; port 0 picks a free
            port, readable from :attr:`port` after :meth:`start`.
        peers: every other member's (host, port); this node's own id is ignored.
        on_messages: called on the event loop with each received batch.
        cluster_secret: shared secret for the HMAC handshake; ``None`` disables
            authentication (any connection claiming a member id is accepted).
        cluster_id: must match on both sides; guards against cross-wired clusters.
        max_queue: per-peer queue bound in messages; the oldest are evicted.
        max_queue_bytes: per-peer queue bound in approximate bytes.
        max_batch_messages: most messages written in one frame.
        max_batch_bytes: approximate byte budget of one frame.
        max_frame_size: largest frame accepted (checked before reading it) and
            sent; must not exceed the peers' setting.
        reconnect_base: first reconnect delay ceiling, in seconds.
        reconnect_cap: largest reconnect delay ceiling, in seconds.
        connect_timeout: TCP connect timeout, in seconds.
        handshake_timeout: the whole handshake's timeout, in seconds, a
            deadline that bytes do not extend (the TLS handshake, if any, has
            one of the same length before it).
        max_pending_handshakes: most inbound connections waiting for their
            handshake; at the limit an old one is closed (Rule 4).
        max_pending_per_source: the same, per source address (IPv6: per /64).
        write_timeout: a write that cannot drain this long closes the connection.
        rng: randomness for backoff jitter (handshake nonces always come from
            :mod:`secrets`).
        ssl_server: TLS for accepted connections (``None``: plain TCP). For
            mutual TLS it requires client certificates (``CERT_REQUIRED``).
        ssl_client: TLS for outbound connections, verifying the peer's
            certificate (and its host name, if the context checks them).
        on_unreachable: called on the event loop with a peer's id each time a
            connection to it is refused (nothing listens at its address: its
            process is gone, though its host answers). A hint, not a verdict.
    """

    def __init__(
        self,
        node_id: NodeId,
        listen: Address,
        peers: Mapping[NodeId, Address],
        on_messages: OnMessages,
        *,
        cluster_secret: bytes | None = None,
        cluster_id: str = "raftkv",
        max_queue: int = 4096,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_batch_messages: int = 1024,
        max_batch_bytes: int = 4 * 1024 * 1024,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        reconnect_base: float = 0.05,
        reconnect_cap: float = 1.0,
        connect_timeout: float = 2.0,
        handshake_timeout: float = HANDSHAKE_DEADLINE,
        max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
        max_pending_per_source: int = MAX_PENDING_PER_SOURCE,
        write_timeout: float = 10.0,
        rng: random.Random | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        on_unreachable: Callable[[NodeId], None] | None = None,
    ) -> None:
        if (ssl_server is None) != (ssl_client is None):
            raise ValueError("give both ssl_server and ssl_client, or neither")
        if min(max_queue, max_queue_bytes, max_batch_messages, max_batch_bytes) < 1:
            raise ValueError("queue and batch limits must be positive")
        if not 0 < max_frame_size < 2**32:
            raise ValueError("max_frame_size must be in 1 .. 2**32 - 1")
        if cluster_secret is not None and not cluster_secret:
            raise ValueError("cluster_secret must be non-empty (or None to disable auth)")
        self._node_id = node_id
        self._listen = listen
        self._on_messages = on_messages
        self._secret = cluster_secret
        self._cluster_id = cluster_id
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        self._max_batch_messages = max_batch_messages
        self._max_batch_bytes = max_batch_bytes
        self._max_frame_size = max_frame_size
        self._reconnect_base = reconnect_base
        self._reconnect_cap = reconnect_cap
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._write_timeout = write_timeout
        self._rng = rng if rng is not None else random.Random()
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self._on_unreachable = on_unreachable

        self._stats = TransportStats()
        self._peers: dict[NodeId, Address] = {}
        self._outbound: dict[NodeId, Outbound] = {}
        # Invariant: at most one live inbound stream per authenticated peer.
        self._inbound: dict[NodeId, asyncio.StreamWriter] = {}
        self._inbound_tasks: set[asyncio.Task[None]] = set()
        self._pending: PendingHandshakes[asyncio.Task[None]] = PendingHandshakes(
            per_source=max_pending_per_source, total=max_pending_handshakes
        )
        # Source addresses of members' hosts (Rule 4): literal IPs in the peer
        # map, and the address each peer last completed a handshake from.
        self._member_ips: frozenset[str] = frozenset()
        self._peer_sources: dict[NodeId, str] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._logged: set[tuple[str, str]] = set()
        self._server: asyncio.Server | None = None
        self._port = listen[1]
        self._started = False
        self._closed = False
        self.update_peers(peers)

    # ----------------------------------------------------------------- properties

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def stats(self) -> TransportStats:
        return self._stats

    @property
    def port(self) -> int:
        """The listening port (the real one once started, even if 0 was asked for)."""
        return self._port

    @property
    def address(self) -> Address:
        """(host, port) that peers should dial."""
        return (self._listen[0], self._port)

    @property
    def peers(self) -> dict[NodeId, Address]:
        """A copy of the current peer map."""
        return dict(self._peers)

    def is_connected(self, peer: NodeId) -> bool:
        """Whether the connection to ``peer`` is up (handshaken and not seen closed)."""
        out = self._outbound.get(peer)
        return out is not None and out.writer is not None

    def queued(self, peer: NodeId) -> int:
        """Messages waiting for ``peer`` (0 for an unknown peer)."""
        out = self._outbound.get(peer)
        return len(out.queue) if out is not None else 0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen, then start one writer task per peer.

        Raises:
            TransportClosed: the transport was stopped.
            TransportError: it was already started.
            OSError: the listening address cannot be bound.
        """
        if self._closed:
            raise TransportClosed(f"transport {self._node_id} was stopped")
        if self._started:
            raise TransportError(f"transport {self._node_id} is already started")
        host, port = self._listen
        self._server = await asyncio.start_server(
            self._handle_inbound,
            host,
            port,
            ssl=self._ssl_server,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_server else None,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._started = True
        for out in self._outbound.values():
            self._spawn(out)
        logger.info("%s: listening on %s:%d", self._node_id, host, self._port)

    async def stop(self) -> None:
        """Stop listening, cancel every task and close every socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks: set[asyncio.Task[None]] = set(self._retiring)
        for out in self._outbound.values():
            if out.task is not None:
                tasks.add(out.task)
        # A connection accepted just before close() starts its handler task on a
        # later loop iteration; give such handlers a few turns to register.
        for _ in range(3):
            tasks |= self._inbound_tasks
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = set()
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()
        logger.info("%s: transport stopped", self._node_id)

    def update_peers(self, peers: Mapping[NodeId, Address]) -> None:
        """Replace the peer set; queued messages for a peer whose address changed are kept."""
        new = {p: (str(a[0]), int(a[1])) for p, a in peers.items() if p != self._node_id}
        for node_id in list(self._outbound):
            out = self._outbound[node_id]
            if node_id not in new:
                del self._outbound[node_id]
                self._retire(out.task)
                out.task = None
            elif new[node_id] != out.address:
                out.address = new[node_id]
                self._retire(out.task)
                out.task = None
                if self._started and not self._closed:
                    self._spawn(out)
        for node_id, address in new.items():
            if node_id not in self._outbound:
                out = Outbound(node_id, address)
                self._outbound[node_id] = out
                if self._started and not self._closed:
                    self._spawn(out)
        for node_id, writer in list(self._inbound.items()):
            if node_id not in new:
                writer.transport.abort()
        for node_id in list(self._peer_sources):
            if node_id not in new:
                del self._peer_sources[node_id]
        self._peers = new
        self._member_ips = frozenset(canonical_ip(host) for host, _ in new.values())

    # ----------------------------------------------------------------- sending

    def send(self, msgs: Sequence[PeerMessage]) -> None:
        """Queue each message for its ``to`` peer; never blocks.

        Messages to unknown peers are dropped (``dropped_unroutable``); a full
        queue evicts its oldest messages (``dropped_queue_full``).

        Raises:
            TransportClosed: the transport was stopped.
        """
        if self._closed:
            raise TransportClosed(f"transport {self._node_id} was stopped")
        touched: list[Outbound] = []
        for msg in msgs:
            out = self._outbound.get(msg.to)
            if out is None:
                self._stats.dropped_unroutable += 1
                self._log_once("unroutable", msg.to, "no peer %s; dropping messages to it", msg.to)
                continue
            size = approx_size(msg)
            out.queue.append((msg, size))
            out.queued_bytes += size
            while len(out.queue) > self._max_queue or (
                out.queued_bytes > self._max_queue_bytes and len(out.queue) > 1
            ):
                _, evicted = out.queue.popleft()
                out.queued_bytes -= evicted
                self._stats.dropped_queue_full += 1
                self._log_once(
                    "queue-full",
                    out.node_id,
                    "queue for %s full; dropping oldest messages",
                    out.node_id,
                )
            if out not in touched:
                touched.append(out)
        for out in touched:
            writer = out.writer
            if writer is not None and not writer.transport.get_write_buffer_size():
                # The link is up and idle: write now, in this call, rather than
                # a loop iteration later from the writer task. A Ready's
                # messages then leave before the node starts its own disk
                # write, and no task switch is paid per batch.
                try:
                    self._write_queued(out, writer)
                except (OSError, RuntimeError) as exc:  # closing under us: Raft resends
                    logger.debug("%s: write to %s failed: %r", self._node_id, out.node_id, exc)
                else:
                    if not writer.transport.get_write_buffer_size():
                        continue
            out.wake.set()  # the writer task connects, drains, or retries

    def _spawn(self, out: Outbound) -> None:
        out.task = asyncio.get_running_loop().create_task(
            self._run_outbound(out), name=f"raftkv-transport {self._node_id}->{out.node_id}"
        )

    def _retire(self, task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        task.cancel()
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _backoff(self, attempt: int) -> float:
        """Equal-jitter exponential backoff: uniform in [ceiling/2, ceiling]."""
        ceiling = min(self._reconnect_cap, self._reconnect_base * (1 << min(attempt, 32)))
        return ceiling / 2 + self._rng.uniform(0.0, ceiling / 2)

    async def _run_outbound(self, out: Outbound) -> None:
        """Connect, pump the queue until the connection breaks, back off, repeat."""
        attempt = 0
        while True:
            streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            try:
                streams = await self._dial(out)
            except AuthenticationError as exc:
                self._stats.auth_failures += 1
                self._log_once(
                    "auth-out", out.node_id, "handshake with %s refused: %s", out.node_id, exc
                )
            except CodecError as exc:
                self._stats.decode_errors += 1
                self._log_once(
                    "dial", out.node_id, "bad handshake frame from %s: %s", out.node_id, exc
                )
            except ssl.SSLError as exc:  # before OSError, its base class
                self._stats.auth_failures += 1
                self._log_once("tls-out", out.node_id, "TLS with %s failed: %s", out.node_id, exc)
            except (OSError, TimeoutError, EOFError, HandshakeError) as exc:
                self._log_once(
                    "dial",
                    out.node_id,
                    "cannot connect to %s at %s:%d: %r",
                    out.node_id,
                    *out.address,
                    exc,
                )
                if isinstance(exc, ConnectionRefusedError) and self._on_unreachable is not None:
                    # Nothing listens at the peer's address: its process is gone.
                    self._on_unreachable(out.node_id)
            if streams is None:
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            reader, writer = streams
            attempt = 0
            self._stats.connects += 1
            self._forget_logged(out.node_id)
            logger.info("%s: connected to %s at %s:%d", self._node_id, out.node_id, *out.address)
            try:
                await self._pump(out, reader, writer)
            except (OSError, TimeoutError) as exc:
                self._log_once("lost", out.node_id, "connection to %s lost: %r", out.node_id, exc)
            finally:
                await close_writer(writer)
            await asyncio.sleep(self._backoff(0))

    async def _dial(self, out: Outbound) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = out.address
        async with asyncio.timeout(self._connect_timeout):
            if self._ssl_client is None:
                reader, writer = await asyncio.open_connection(host, port)
            else:
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._ssl_client,
                    server_hostname=host,
                    ssl_handshake_timeout=self._handshake_timeout,
                )
        try:
            set_nodelay(writer)
            async with asyncio.timeout(self._handshake_timeout):
                await client_handshake(
                    reader,
                    writer,
                    secret=self._secret,
                    cluster_id=self._cluster_id,
                    node_id=self._node_id,
                    peer=out.node_id,
                )
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    async def _pump(
        self, out: Outbound, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write everything queued for ``out`` in batches until the stream breaks."""
        eof = asyncio.get_running_loop().create_task(wait_eof(reader))

        def closed(_: object) -> None:
            out.writer = None  # send() no longer writes to this stream
            out.wake.set()

        eof.add_done_callback(closed)
        out.writer = writer
        try:
            while True:
                if eof.done():
                    raise ConnectionResetError("the peer closed the connection")
                if out.queue:
                    self._write_queued(out, writer)
                if writer.transport.get_write_buffer_size():
                    # drain() blocks only above the buffer's high-water mark;
                    # below it the bytes leave on their own. Do not loop on it:
                    # with a peer that stopped reading (a partition) that spun
                    # the event loop, piling up a timer per turn.
                    async with asyncio.timeout(self._write_timeout):
                        await writer.drain()
                if out.queue:
                    continue
                out.wake.clear()
                await out.wake.wait()
        finally:
            out.writer = None
            eof.cancel()
            await asyncio.wait([eof])

    def _write_queued(self, out: Outbound, writer: asyncio.StreamWriter) -> None:
        """Write everything queued for ``out`` to ``writer``, in frames of at most a batch."""
        while out.queue:
            batch = self._take_batch(out)
            for frame, count in self._encode_frames(out.node_id, batch):
                writer.write(frame)
                self._stats.frames_out += 1
                self._stats.msgs_out += count

    def _take_batch(self, out: Outbound) -> list[PeerMessage]:
        batch: list[PeerMessage] = []
        size = 0
        while out.queue and len(batch) < self._max_batch_messages:
            msg, msg_size = out.queue[0]
            if batch and size + msg_size > self._max_batch_bytes:
                break
            out.queue.popleft()
            out.queued_bytes -= msg_size
            batch.append(msg)
            size += msg_size
        return batch

    def _encode_frames(self, peer: NodeId, batch: list[PeerMessage]) -> list[tuple[bytes, int]]:
        """Frames for ``batch``, split in halves until each fits; unencodable messages dropped."""
        try:
            payload = encode_batch(batch)
        except CodecError as exc:
            if len(batch) == 1:
                self._stats.dropped_invalid += 1
                self._log_once(
                    "invalid", peer, "dropping an unencodable message to %s: %s", peer, exc
                )
                return []
            payload = None
        if payload is not None and len(payload) <= self._max_frame_size:
            return [(encode_frame(payload, max_frame_size=self._max_frame_size), len(batch))]
        if len(batch) == 1:
            self._stats.dropped_oversize += 1
            self._log_once("oversize", peer, "dropping a message to %s larger than a frame", peer)
            return []
        half = len(batch) // 2
        return self._encode_frames(peer, batch[:half]) + self._encode_frames(peer, batch[half:])

    # ----------------------------------------------------------------- receiving

    async def _handle_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound_tasks.add(task)
        peername = writer.get_extra_info("peername")
        remote = canonical_ip(str(peername[0]) if isinstance(peername, tuple) else str(peername))
        peer: NodeId | None = None
        try:
            if self._closed or not self._admit(task, remote):
                return
            set_nodelay(writer)
            try:
                peer = await self._accept(remote, reader, writer)
            finally:
                self._pending.discard(task)
            if peer is None:
                return
            previous = self._inbound.get(peer)
            if previous is not None:
                previous.transport.abort()
            self._inbound[peer] = writer
            self._peer_sources[peer] = remote
            self._stats.accepts += 1
            logger.info("%s: accepted %s from %s", self._node_id, peer, remote)
            await self._read_loop(peer, reader)
        except OSError as exc:
            logger.debug("%s: inbound connection from %s failed: %r", self._node_id, remote, exc)
        except asyncio.CancelledError:
            # stop() cancels this task, and so does an eviction (Rule 4); it is
            # the root of its own task tree that nobody awaits but asyncio's
            # StreamReaderProtocol, whose done-callback calls task.exception()
            # and so must not see a cancelled task (Python 3.11).
            pass
        finally:
            if peer is not None and self._inbound.get(peer) is writer:
                del self._inbound[peer]
            await close_writer(writer)
            self._inbound_tasks.discard(task)

    def _admit(self, task: asyncio.Task[None], remote: str) -> bool:
        """Count ``task`` as a pending handshake, closing another to make room
        if a limit is reached (Rule 4); False if ``task`` itself is refused."""
        member = remote in self._member_ips or remote in self._peer_sources.values()
        source = source_of(remote)
        admission = self._pending.admit(task, source, member=member)
        victim, limit = admission.victim, admission.limit
        if victim is None:
            return True
        refused = victim is task
        per_source = limit is Limit.PER_SOURCE
        if per_source and refused:
            self._stats.handshakes_refused_per_source += 1
        elif per_source:
            self._stats.handshakes_evicted_per_source += 1
        elif refused:
            self._stats.handshakes_refused_global += 1
        else:
            self._stats.handshakes_evicted_global += 1
        self._log_once(
            "pending-source" if per_source else "pending-global",
            source,
            "%d handshakes pending%s; %s from %s",
            self._pending.count(source) if per_source else len(self._pending),
            " from one source" if per_source else "",
            "refusing a connection" if refused else "closing an older one for a new one",
            source,
        )
        if not refused:
            victim.cancel()
        return not refused

    async def _accept(
        self, remote: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> NodeId | None:
        """Run the server side of the handshake under its deadline; the peer's
        id, or None if refused."""
        try:
            async with asyncio.timeout(self._handshake_timeout):
                return await server_handshake(
                    reader,
                    writer,
                    secret=self._secret,
                    cluster_id=self._cluster_id,
                    node_id=self._node_id,
                    is_peer=lambda peer: peer in self._peers,
                )
        except AuthenticationError as exc:
            self._stats.auth_failures += 1
            self._log_once("auth-in", remote, "refused a connection from %s: %s", remote, exc)
        except HandshakeError as exc:
            self._stats.auth_failures += 1
            self._log_once("auth-in", remote, "bad handshake from %s: %s", remote, exc)
        except CodecError as exc:
            self._stats.decode_errors += 1
            self._log_once("decode-in", remote, "bad handshake frame from %s: %s", remote, exc)
        except (TimeoutError, EOFError) as exc:
            self._stats.handshakes_incomplete += 1
            logger.debug("%s: handshake with %s did not complete: %r", self._node_id, remote, exc)
        return None

    async def _read_loop(self, peer: NodeId, reader: asyncio.StreamReader) -> None:
        """Deliver frames from an authenticated peer until EOF or a bad frame."""
        while True:
            try:
                header = await reader.readexactly(HEADER_SIZE)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    self._bad_frame(peer, "truncated frame header")
                return
            try:
                length = frame_length(header, max_frame_size=self._max_frame_size)
                payload = await reader.readexactly(length)
                msgs = decode_batch(payload)
            except asyncio.IncompleteReadError:
                self._bad_frame(peer, "truncated frame")
                return
            except CodecError as exc:
                self._bad_frame(peer, str(exc))
                return
            self._stats.frames_in += 1
            good = [m for m in msgs if m.sender == peer and m.to == self._node_id]
            if len(good) != len(msgs):
                self._stats.dropped_bad_sender += len(msgs) - len(good)
                self._log_once(
                    "bad-sender",
                    peer,
                    "dropping messages from %s not sent by it or not to us",
                    peer,
                )
            if not good:
                continue
            self._stats.msgs_in += len(good)
            try:
                self._on_messages(good)
            except Exception:
                logger.exception(
                    "%s: on_messages failed; closing the link from %s", self._node_id, peer
                )
                return

    def _bad_frame(self, peer: NodeId, detail: str) -> None:
        self._stats.decode_errors += 1
        self._log_once(
            "decode", peer, "bad frame from %s, closing its connection: %s", peer, detail
        )

    # ----------------------------------------------------------------- logging

    def _log_once(self, kind: str, subject: str, msg: str, *args: object) -> None:
        """Warn about ``subject`` once per ``kind`` until :meth:`_forget_logged`."""
        key = (kind, subject)
        if key in self._logged or len(self._logged) >= _MAX_LOG_KEYS:
            logger.debug("%s: " + msg, self._node_id, *args)
            return
        self._logged.add(key)
        logger.warning("%s: " + msg, self._node_id, *args)

    def _forget_logged(self, subject: str) -> None:
        self._logged = {key for key in self._logged if key[1] != subject}
