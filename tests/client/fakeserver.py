"""A scripted HTTP server for client tests (``http.server`` in a thread).

Each server answers from a script: a list of ``(status, body)`` pairs consumed one
per request (the last one repeats), or :data:`DROP` to close the connection
without answering. It records every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DROP = "drop"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeNode:
    script: list[Any]
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def next_answer(self) -> Any:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def keys(self) -> list[str | None]:
        return [s.headers.get("Idempotency-Key") for s in self.seen]


def _handler(node: FakeNode) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            node.seen.append(
                Seen(
                    self.command,
                    self.path,
                    dict(self.headers.items()),
                    json.loads(raw) if raw else None,
                )
            )
            answer = node.next_answer()
            if answer == DROP:
                self.close_connection = True
                return
            status, body = answer
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve

    return Handler


@contextmanager
def fake_nodes(*scripts: list[Any]) -> Iterator[list[FakeNode]]:
    nodes = [FakeNode(list(script)) for script in scripts]
    servers = []
    for node in nodes:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(node))
        server.daemon_threads = True
        node.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield nodes
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
