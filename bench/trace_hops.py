"""Where one put's time goes, hop by hop: timestamps in every node, one client.

Copies the source tree to a temporary directory, adds trace points to that
copy (HTTP request in and answer out, forwarding, each Ready: sent, written,
synced, applied, advanced, messages received, the WAL's fdatasync), starts a
3-node cluster from it with fsync on, sends puts one at a time (to every node,
as ``kv_bench.py`` does, or to the leader only), and prints the median
timeline of a forwarded put and of a put sent to the leader, in microseconds
from the request's arrival. The clocks agree: every node reads
``time.perf_counter_ns`` (CLOCK_MONOTONIC) on the same machine.

The trace points are text edits of the copy; when the code they anchor to
changes, the script stops and names the edit that no longer applies. The tree
you run it from is never modified.

    .venv/bin/python bench/trace_hops.py [--seconds 8] [--leader-only]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from raftkv.core.types import NodeId
from raftkv.launch import LocalCluster, ServeOptions, loopback_members

ROOT = Path(__file__).resolve().parent.parent

_TRACER = """import atexit, os, time
ON = bool(os.environ.get("RAFTKV_TRACE"))
buf = []
def t(label):
    if ON:
        buf.append((time.perf_counter_ns(), label))
def _dump():
    if ON:
        with open(os.environ["RAFTKV_TRACE"] + f".{os.getpid()}", "w") as f:
            for ns, label in buf:
                f.write(f"{ns} {label}\\n")
atexit.register(_dump)
"""

_T = "from raftkv._trace_hops import t as _t; "

# (file, anchor, text inserted before the anchor's first line, indented alike)
_POINTS: list[tuple[str, str, str]] = [
    (
        "raftkv/server/http/connections.py",
        "status, body, headers = await server.handler(request, self.remote)",
        "_t('http in')",
    ),
    ("raftkv/server/http/connections.py", "transport.write(\n", "_t('http out')"),
    ("raftkv/server/node/runtime.py", "if rd.soft_state is not None:", "_t(_rd_label(rd))"),
    ("raftkv/server/node/runtime.py", "sync = False\n", "_t('sent') if replicate_first else None"),
    ("raftkv/server/node/runtime.py", "answered = False\n        if rd.committed", "_t('written')"),
    ("raftkv/server/node/runtime.py", "answered = self._reads.answered(", "_t('applied')"),
    ("raftkv/server/node/runtime.py", "self._send(rd.messages_after_persist)", "_t('synced')"),
    ("raftkv/server/node/runtime.py", "# After the sync: a snapshot", "_t('advanced')"),
    (
        "raftkv/server/node/runtime.py",
        "self.metrics.received(msgs)",
        "_t('recv ' + ','.join(type(m).__name__ for m in msgs))",
    ),
    ("raftkv/storage/wal.py", "datasync(self._fd)\n            except", "_t('fdatasync start')"),
    (
        "raftkv/storage/wal.py",
        "self._dirty = False\n\n    def release_before",
        "_t('fdatasync end')",
    ),
    ("raftkv/server/node/forwarding.py", "loop = asyncio.get_running_loop()", "_t('forward')"),
    ("raftkv/server/node/forwarding.py", "handler = self.handler", "_t('serve forwarded')"),
    ("raftkv/server/node/forwarding.py", "pending[1].set_result(", "_t('forward answered')"),
]

_RD_LABEL = """

def _rd_label(rd):
    return (
        f"ready: {len(rd.entries)} new, {len(rd.committed_entries)} committed, "
        f"{len(rd.messages) + len(rd.messages_after_persist)} messages"
    )
"""


def instrument(tree: Path) -> None:
    (tree / "raftkv" / "_trace_hops.py").write_text(_TRACER)
    for rel, anchor, code in _POINTS:
        path = tree / rel
        text = path.read_text()
        at = text.find(anchor)
        if at < 0:
            raise SystemExit(f"trace point {code!r}: anchor {anchor!r} not found in {rel}")
        line_start = text.rfind("\n", 0, at) + 1
        indent = text[line_start:at]
        if indent.strip():  # the anchor is not at the start of its line
            raise SystemExit(f"trace point {code!r}: anchor {anchor!r} is mid-line in {rel}")
        text = text[:line_start] + f"{indent}{_T}{code}\n" + text[line_start:]
        path.write_text(text)
    runtime = tree / "raftkv/server/node/runtime.py"
    runtime.write_text(runtime.read_text() + _RD_LABEL)


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


async def _load(urls: list[str], seconds: float) -> int:
    import aiohttp

    rng = random.Random(7)
    value = json.dumps("x" * 98).encode()
    done = 0
    async with aiohttp.ClientSession() as s:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            url = f"{rng.choice(urls)}/v1/kv/key{rng.randrange(10_000)}"
            async with s.put(url, data=value) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"PUT {url}: {r.status} {await r.text()}")
            done += 1
    return done


def _events(prefix: str) -> tuple[list[tuple[int, int, str]], list[int]]:
    events: list[tuple[int, int, str]] = []
    pids = []
    for i, path in enumerate(sorted(Path(prefix).parent.glob(Path(prefix).name + ".*"))):
        pids.append(int(path.suffix[1:]))
        for line in path.read_text().splitlines():
            ns, label = line.split(" ", 1)
            events.append((int(ns), i, label))
    events.sort()
    return events, pids


def timelines(prefix: str, leader_pid: int) -> dict[str, list[tuple[float, str]]]:
    """Median timeline of each kind of request (forwarded, to the leader), by the
    most common sequence of events, in µs from the request's arrival."""
    events, pids = _events(prefix)
    leader_i = pids.index(leader_pid) if leader_pid in pids else None
    requests: list[list[tuple[int, int, str]]] = []
    current: list[tuple[int, int, str]] | None = None
    for ev in events:
        if ev[2] == "http in":
            current = [ev]
        elif current is not None:
            current.append(ev)
            if ev[2] == "http out":
                requests.append(current)
                current = None
    requests = requests[len(requests) // 5 :]  # past the warm-up
    out: dict[str, list[tuple[float, str]]] = {}
    for kind, group in (
        ("forwarded by a follower", [r for r in requests if r[0][1] != leader_i]),
        ("sent to the leader", [r for r in requests if r[0][1] == leader_i]),
    ):
        if not group:
            continue

        def who(i: int, first: int, leader_i: int | None = leader_i) -> str:
            if i == leader_i:
                return "leader"
            return "follower (client's)" if i == first else "follower"

        def shape(r: list[tuple[int, int, str]]) -> tuple[tuple[str, str], ...]:
            return tuple((who(i, r[0][1]), label.split(":")[0]) for _, i, label in r)

        top, count = collections.Counter(shape(r) for r in group).most_common(1)[0]
        same = [r for r in group if shape(r) == top]
        rows = []
        for k, (name, _) in enumerate(top):
            med = statistics.median((r[k][0] - r[0][0]) / 1000 for r in same)
            rows.append((med, f"{name:20s} {same[0][k][2]}"))
        total = statistics.median((r[-1][0] - r[0][0]) / 1000 for r in group)
        rows.append((total, f"(median of all {len(group)}; this shape: {count})"))
        out[kind] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--leader-only", action="store_true", help="send every put to the leader")
    parser.add_argument("--data-dir", default=None, help="parent of the temp dir (fsync on it)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raftkv-trace-", dir=args.data_dir))
    launch: LocalCluster | None = None
    try:
        tree = work / "src"
        shutil.copytree(ROOT / "raftkv", tree / "raftkv")
        instrument(tree)
        launch = LocalCluster(
            loopback_members(3),
            work,
            ServeOptions(log_level="WARNING"),
            log_dir=work,
            src=tree,
            cwd=tree,
            env={"RAFTKV_TRACE": str(work / "trace")},
        )
        launch.start()
        ids = list(launch.members)
        urls = launch.urls()
        leader = None
        for _ in range(100):
            try:
                leader = _get_json(urls[0] + "/v1/status").get("leader")
            except OSError:
                leader = None
            if leader:
                break
            time.sleep(0.1)
        if not leader:
            raise SystemExit(f"no leader; logs in {work}")
        targets = [urls[ids.index(NodeId(str(leader)))]] if args.leader_only else urls
        ops = asyncio.run(_load(targets, args.seconds))
        print(f"{ops} puts in {args.seconds:g} s, one at a time, leader {leader}")
        leader_pid = launch.procs[NodeId(str(leader))].pid
        launch.stop(grace=30)
        for kind, rows in timelines(str(work / "trace"), leader_pid).items():
            print(f"\nA put {kind} (µs from arrival):")
            for t, what in rows:
                print(f"  {t:8.1f}  {what}")
    finally:
        if launch is not None:
            launch.stop(grace=0)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
