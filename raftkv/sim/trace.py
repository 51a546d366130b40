"""An optional event trace: one JSON object per line.

Rule: a trace line is a pure function of the simulated run -- virtual time, event
kind, node and details, serialised with sorted keys -- so two runs of one seed
produce byte-identical traces and equal :meth:`Tracer.sha256` digests. Tracing is
off by default (the cluster checks ``tracer is None`` before building details).
:func:`timeline_html` turns a trace into a per-node HTML timeline.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable
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


def timeline_html(lines: Iterable[str], *, title: str = "raftkv simulation trace") -> str:
    """Render JSONL trace lines as a self-contained HTML timeline.

    One row per event, one column per node (events without a node, such as
    faults, span the row), in trace order. Role changes, crashes and
    violations are highlighted.
    """
    records = [json.loads(line) for line in lines if line.strip()]
    nodes = sorted({str(r["node"]) for r in records if r.get("node") is not None})
    col = {n: i for i, n in enumerate(nodes)}
    css = (
        "body{font:12px monospace}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:2px 4px;vertical-align:top}"
        ".role{background:#ffe9a8}.crash,.restart{background:#f8c4c4}"
        ".fault{background:#d6e4ff}.violation{background:#ff6b6b;font-weight:bold}"
    )
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{css}</style></head><body><h3>{html.escape(title)}</h3><table>",
        "<tr><th>t (s)</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in nodes) + "</tr>",
    ]
    for r in records:
        kind = str(r.get("kind", ""))
        details = {k: v for k, v in r.items() if k not in ("t", "kind", "node")}
        text = html.escape(f"{kind} {json.dumps(details, sort_keys=True)}")
        cls = html.escape(kind)
        t = f"<td>{int(r.get('t', 0)) / 1e6:.6f}</td>"
        node = r.get("node")
        if node is None or str(node) not in col:
            out.append(f"<tr>{t}<td class='{cls}' colspan='{max(1, len(nodes))}'>{text}</td></tr>")
        else:
            cells = ["<td></td>"] * len(nodes)
            cells[col[str(node)]] = f"<td class='{cls}'>{text}</td>"
            out.append(f"<tr>{t}{''.join(cells)}</tr>")
    out.append("</table></body></html>")
    return "\n".join(out)
