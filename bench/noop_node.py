"""A no-op HTTP/1.1 server: the load generator's ceiling for bench/kv_bench.py.

Answers every request with ``200 {}`` without looking at it, so a closed loop
against it measures what the client (and the machine) can do at all. kv_bench's
``noop`` system starts one per node (the same number of processes as the real
systems) and drives it exactly like them; "stale get near the client ceiling"
(issue 7) compares against this, measured in the same run.

Keep-alive and pipelining are honoured (one answer per request, in order);
request bodies are skipped by ``Content-Length``. ``GET /v1/status`` says
``{"role": "leader"}`` on the process started with ``--leader``, so the
harness's leader lookups work. asyncio protocol, on uvloop when importable.

Usage: python bench/noop_node.py --http HOST:PORT [--leader]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _answer(leader: bool, path: bytes) -> bytes:
    if path.startswith(b"/v1/status"):
        body = b'{"role": "%s"}' % (b"leader" if leader else b"follower")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        return head % len(body) + body
    return _OK


class _Noop(asyncio.Protocol):
    def __init__(self, leader: bool) -> None:
        self.leader = leader
        self.buf = b""
        self.skip = 0  # body bytes of the current request still to drop
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        out = []
        while True:
            if self.skip:
                n = min(self.skip, len(buf))
                buf, self.skip = buf[n:], self.skip - n
                if self.skip:
                    break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buf = buf[:end], buf[end + 4 :]
            line, _, headers = head.partition(b"\r\n")
            parts = line.split(b" ")
            path = parts[1] if len(parts) > 1 else b"/"
            for h in headers.split(b"\r\n"):
                name, _, value = h.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.skip = int(value.strip() or b"0")
            out.append(_answer(self.leader, path))
        self.buf = buf
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def _serve(host: str, port: int, leader: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Noop(leader), host, port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--leader", action="store_true", help="report role leader")
    args = parser.parse_args()
    host, _, port = args.http.rpartition(":")
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_serve(host, int(port), args.leader))


if __name__ == "__main__":
    main()
