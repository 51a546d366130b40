"""A TCP proxy in front of one host's Raft listener that can drop links (loopback mode).

Rule: the proxy reads the first frame of every connection -- the peer
transport's ``Hello``, which names the sending node -- maps that node to its
host, and then relays bytes both ways. A connection from a host whose link is
*cut* is accepted but never relayed: its bytes are read and discarded (a
silent drop), and the sender's handshake times out. Cutting a link aborts its
live connections; healing closes the held ones, so the sender reconnects.
Bytes are never altered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from raftkv.core.types import NodeId
from raftkv.transport.codec import HEADER_SIZE, Hello, decode_control, frame_length
from raftkv.transport.errors import CodecError

__all__ = ["LinkProxy"]

logger = logging.getLogger(__name__)

_HELLO_TIMEOUT = 5.0
_CHUNK = 1 << 16


class LinkProxy:
    """Relays connections to ``upstream`` (the Raft listener on ``host``) from ``listen``.

    ``locate`` maps a sending node id to its host; an id it does not know is
    its own host (so a proxy without ``locate`` cuts by node id).
    """

    def __init__(
        self,
        host: str,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        locate: Callable[[NodeId], str | None] | None = None,
    ) -> None:
        self.host = host
        self.listen = listen
        self.upstream = upstream
        self._locate = locate
        self._server: asyncio.Server | None = None
        self._cut: set[str] = set()  # sending hosts
        # Invariant: each live connection's writers, by sending node; removed when it ends.
        self._conns: dict[NodeId, set[asyncio.StreamWriter]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, *self.listen, reuse_address=True)

    def _host_of(self, sender: NodeId) -> str:
        host = self._locate(sender) if self._locate is not None else None
        return host if host is not None else sender

    def _abort(self, hosts: set[str]) -> None:
        for sender, writers in list(self._conns.items()):
            if self._host_of(sender) in hosts:
                for writer in list(writers):
                    writer.transport.abort()

    def cut(self, sender_host: str) -> None:
        """Drop everything sent from ``sender_host`` to this host until :meth:`heal`."""
        self._cut.add(sender_host)
        self._abort({sender_host})

    def heal(self) -> None:
        held, self._cut = self._cut, set()
        self._abort(held)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writers in self._conns.values():
            for writer in writers:
                writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, CodecError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(_HELLO_TIMEOUT):
            header = await reader.readexactly(HEADER_SIZE)
            payload = await reader.readexactly(frame_length(header))
        hello = decode_control(payload)
        if not isinstance(hello, Hello):
            return
        sender = NodeId(hello.node_id)
        conns = self._conns.setdefault(sender, set())
        conns.add(writer)
        try:
            if self._host_of(sender) in self._cut:
                while await reader.read(_CHUNK):  # held: discard until aborted by heal()
                    pass
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            try:
                up_writer.write(header + payload)
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.transport.abort()
        finally:
            conns.discard(writer)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
    finally:
        dst.transport.abort()
