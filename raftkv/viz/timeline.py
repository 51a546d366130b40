"""A replayable, self-contained HTML timeline of a simulation trace.

Rule: :func:`timeline_model` reduces a JSONL trace (:mod:`raftkv.sim.trace`) to
what the page draws -- role intervals, down intervals, log appends, commit
indexes, elections, fault bands, a sample of messages and the violation -- so
the page stays small and responsive for long runs; :func:`timeline_page` embeds
that model as JSON next to inline CSS and JavaScript. The page needs no network
access: open the file anywhere. Both are pure functions of the trace lines.

The page shows one lane per node along virtual time: the role (coloured) and
term, crashed periods (hatched), log length and commit index (two lines),
elections (triangles), fault windows (shaded bands across all lanes), messages
as arrows (a deterministic sample, filterable by kind) and, for a failing seed,
the violation as a red line with the checker's message. The mouse wheel zooms,
dragging pans, and a click shows every node's log at that instant.
"""

from __future__ import annotations

import html
import json
from collections import deque
from collections.abc import Iterable
from importlib import resources
from typing import Any

MAX_MESSAGES = 4000
"""Arrows kept (every k-th delivery, so the sample spans the whole run)."""

_BANDS = {"loss": "loss", "dup": "dup", "reorder": "reorder", "churn": "churn"}


def _is_node(name: object, nodes: set[str]) -> bool:
    return isinstance(name, str) and name in nodes


def timeline_model(lines: Iterable[str]) -> dict[str, Any]:
    """Reduce trace lines to the timeline's data (see the module docstring)."""
    records = [json.loads(line) for line in lines if line.strip()]
    nodes = sorted({str(r["node"]) for r in records if r.get("kind") == "role"})
    node_set = set(nodes)
    end = max((int(r.get("t", 0)) for r in records), default=0)
    roles: dict[str, list[list[Any]]] = {n: [] for n in nodes}
    down: dict[str, list[list[int]]] = {n: [] for n in nodes}
    logs: dict[str, list[list[Any]]] = {n: [] for n in nodes}
    commits: dict[str, list[list[int]]] = {n: [] for n in nodes}
    elections: list[list[Any]] = []
    bands: list[dict[str, Any]] = []
    open_bands: dict[str, dict[str, Any]] = {}
    down_since: dict[str, int] = {}
    sends: dict[str, deque[int]] = {}
    deliveries: list[list[Any]] = []
    violation: dict[str, Any] | None = None

    def open_band(key: str, t: int, label: str) -> None:
        close_band(key, t)
        open_bands[key] = {"t0": t, "t1": end, "label": label, "kind": key.split(":")[0]}

    def close_band(key: str, t: int) -> None:
        band = open_bands.pop(key, None)
        if band is not None:
            band["t1"] = t
            bands.append(band)

    for r in records:
        t = int(r.get("t", 0))
        kind = r.get("kind")
        node = r.get("node")
        if kind == "role" and _is_node(node, node_set):
            roles[node].append([t, r.get("role"), r.get("term", 0)])
            if r.get("role") == "leader":
                elections.append([t, node, r.get("term", 0)])
        elif kind == "ready" and _is_node(node, node_set):
            entries = r.get("entries")
            if entries:
                first = int(str(entries[0]).split("/")[1])
                terms = [int(str(e).split("/")[0]) for e in entries]
                logs[node].append([t, first, terms])
            hs = r.get("hard_state")
            if hs:
                commit = int(hs[2])
                if not commits[node] or commits[node][-1][1] != commit:
                    commits[node].append([t, commit])
            for desc in (*r.get("send", ()), *r.get("send_after_persist", ())):
                sends.setdefault(str(desc), deque()).append(t)
        elif kind == "deliver" and _is_node(node, node_set) and _is_node(r.get("src"), node_set):
            desc = str(r.get("msg", ""))
            queue = sends.get(desc)
            sent = queue.popleft() if queue else t
            if queue is not None and not queue:
                del sends[desc]
            msg_kind = desc.split(" ")[1] if " " in desc else desc
            deliveries.append([sent, t, r["src"], node, msg_kind])
        elif kind == "crash" and _is_node(node, node_set):
            down_since[node] = t
            logs[node].append([t, -1, int(r.get("durable_last", 0))])
        elif kind in ("restart", "add-node") and _is_node(node, node_set):
            if node in down_since:
                down[node].append([down_since.pop(node), t])
        elif kind == "retire" and _is_node(node, node_set):
            down_since.setdefault(node, t)
        elif kind == "install-snapshot" and _is_node(node, node_set):
            logs[node].append([t, -2, int(r.get("index", 0))])
        elif kind == "fault":
            what = str(r.get("what", ""))
            if what == "partition":
                detail = r.get("groups") or r.get("isolated") or r.get("target") or ""
                open_band("partition", t, f"partition {r.get('variant', '')} {detail}")
            elif what == "heal-partition":
                close_band("partition", t)
            elif what in _BANDS:
                level = r.get("level")
                open_band(what, t, what + (f" {level}" if level is not None else ""))
            elif what.startswith("heal-") and what[5:] in _BANDS:
                close_band(what[5:], t)
            elif what == "churn-isolate":
                open_band("isolate", t, f"churn isolates {r.get('target')}")
            elif what == "churn-rejoin":
                close_band("isolate", t)
            elif what == "heal-all":
                for key in sorted(open_bands):
                    close_band(key, t)
        elif kind == "violation":
            violation = {"t": t, "checker": r.get("checker"), "message": r.get("message")}
    for key in sorted(open_bands):
        close_band(key, end)
    for node, since in sorted(down_since.items()):
        down[node].append([since, end])
    step = max(1, -(-len(deliveries) // MAX_MESSAGES))
    return {
        "nodes": nodes,
        "end": end,
        "roles": roles,
        "down": down,
        "logs": logs,
        "commits": commits,
        "elections": elections,
        "bands": sorted(bands, key=lambda b: (b["t0"], b["label"])),
        "messages": deliveries[::step],
        "messages_total": len(deliveries),
        "violation": violation,
    }


def timeline_page(lines: Iterable[str], *, title: str = "raftkv simulation") -> str:
    """The self-contained HTML page for trace ``lines``."""
    model = timeline_model(lines)
    data = json.dumps(model, separators=(",", ":"), sort_keys=True).replace("</", "<\\/")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h3>{html.escape(title)}</h3>"
        "<div id='controls'>wheel: zoom &middot; drag: pan &middot; click: logs at that instant"
        " &middot; <label><input type='checkbox' id='arrows' checked> messages</label>"
        " <select id='kind'><option value=''>all kinds</option></select>"
        " <button id='reset'>reset zoom</button> <span id='range'></span></div>"
        "<div id='violation'></div><svg id='tl' xmlns='http://www.w3.org/2000/svg'></svg>"
        "<div id='legend'></div><div id='inspect'></div>"
        f"<script id='model' type='application/json'>{data}</script>"
        f"<script>{_script()}</script></body></html>"
    )


_CSS = """
body{font:12px sans-serif;margin:8px}#controls{margin:4px 0}
svg{border:1px solid #ccc;user-select:none;cursor:crosshair;display:block}
#violation{color:#b00;font-weight:bold;margin:4px 0}
#inspect{font:11px monospace;white-space:pre;margin-top:6px}
.term{display:inline-block;width:7px;height:10px;margin-right:1px}
#legend span{display:inline-block;padding:1px 6px;margin-right:6px}
"""


def _script() -> str:
    """The page's JavaScript, read when a page is made (not when the CLI starts)."""
    return (resources.files("raftkv.viz") / "timeline.js").read_text(encoding="utf-8")
