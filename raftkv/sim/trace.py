"""An optional event trace: one JSON object per line.

Rule: a trace line is a pure function of the simulated run -- virtual time, event
kind, node and details, serialised with sorted keys -- so two runs of one seed
produce byte-identical traces and equal :meth:`Tracer.sha256` digests. Tracing is
off by default (the cluster checks ``tracer is None`` before building details).
:mod:`raftkv.viz.timeline` turns a trace into an HTML timeline.
"""

from __future__ import annotations

import hashlib
import json
from typing import IO, Any


class Tracer:
    """Collects trace lines, hashes them, and optionally writes them to a file.

    Args:
        sink: a text file to write each line to, or ``None`` to only hash them.
        keep: also keep the lines in memory (:attr:`lines`), for tests.
    """

    def __init__(self, sink: IO[str] | None = None, *, keep: bool = False) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.lines: list[str] | None = [] if keep else None
        self.count = 0

    def emit(self, time: int, kind: str, node: str | None = None, **details: Any) -> None:
        """Record one event at virtual ``time`` (microseconds)."""
        record: dict[str, Any] = {"t": time, "kind": kind}
        if node is not None:
            record["node"] = node
        record.update(details)
        line = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.count += 1
        if self._sink is not None:
            self._sink.write(line + "\n")
        if self.lines is not None:
            self.lines.append(line)

    def sha256(self) -> str:
        """The hex digest of every line emitted so far (each followed by a newline)."""
        return self._hash.hexdigest()


def trace_sha256(lines: list[str]) -> str:
    """The digest :meth:`Tracer.sha256` gives for ``lines`` (e.g. read back from a file)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.rstrip("\n").encode())
        h.update(b"\n")
    return h.hexdigest()
