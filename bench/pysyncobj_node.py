"""One PySyncObj node with an HTTP front, for kv_bench's PySyncObj cluster (issue 7).

PySyncObj (PyPI ``pysyncobj``, written against 0.3.17, the newest release) is the
Raft library Python projects use today. This process runs one member of a
PySyncObj cluster holding a replicated dict of JSON values, and serves the
routes kv_bench's load generator uses for raftkv, so the same closed loop can
drive all three systems:

- ``PUT /v1/kv/{key}``, body a JSON value: 200 ``{"ok": true, "index": N,
  "leader": ADDR}`` once the command is committed and applied on this node.
- ``POST /v1/kv``, body a JSON object of key -> value: the same, as one
  replicated call (one log entry).
- ``GET /v1/kv/{key}``: 200 ``{"key": .., "value": .., "index": N}`` or 404.
  Always a local read of this node's state (``?consistency=`` is accepted and
  ignored): PySyncObj has no linearizable read (no ReadIndex, no lease), so a
  follower, or a deposed leader, may answer with stale data.
- ``GET /v1/status``: ``{"role": "leader"|"follower"|"candidate", "term", "leader",
  "commit_index", "applied_index", ...}`` from ``SyncObj.getStatus()``.
- ``GET /v1/health/ready``: 200 once the node knows a leader and has caught up
  with it once (``SyncObj.isReady()``), else 503.

Every failure (no leader, PySyncObj's ``FAIL_REASON`` -- QUEUE_FULL, MISSING_LEADER,
DISCARDED, NOT_LEADER, LEADER_CHANGED, UNKNOWN_OUTCOME -- or no answer within
``--request-timeout-ms``) is a 503 with a JSON body ``{"error": ...}``, so a client
retries. A timed-out or LEADER_CHANGED write may still be applied later, as with
any Raft store. Followers need no forwarding code: PySyncObj itself sends a
command given to a follower to the leader and calls back when the follower has
applied it.

The HTTP server (aiohttp, on uvloop when importable) runs on the main thread;
PySyncObj runs its own tick thread (``autoTick``). A write registers a callback
that PySyncObj calls on its tick thread; the callback queues the result and
wakes the event loop with ``loop.call_soon_threadsafe`` (once per batch of
results, not once per result), and the request's future is resolved there, so
the event loop never blocks on PySyncObj.

State machine: a ``SyncObjConsumer`` of our own (``put``/``put_many`` on a dict)
rather than ``pysyncobj.batteries.ReplDict``. The cost per write is the same as
ReplDict's ``set``/``update`` (one pickled ``(method id, args)`` entry, one dict
store on apply), but our methods return the log index they were applied at,
which the HTTP answer carries like raftkv's. A consumer rather than a SyncObj
subclass, because its state exists before SyncObj's tick thread starts, so a
full dump always loads into it.

Durability (read from pysyncobj 0.3.17's source): PySyncObj never fsyncs.
``journalFile`` is a memory-mapped file; an append writes the record into the
mapping (the page cache) and nothing calls ``msync`` except ``destroy()`` at a
clean shutdown (``FileJournal._destroy`` -> ``mmap.flush``). The ``.meta`` file
beside it (current term, vote, commit index) is written with ``write`` +
``rename`` and no fsync -- the term and vote synchronously, the commit index
once a second. The ``fullDumpFile`` (a gzipped pickle written by a forked child
at log compaction) is renamed into place, again without fsync. So an
acknowledged write survives ``kill -9`` of any node (the page cache outlives the
process) but not a power loss or kernel crash of a majority, and a vote can be
forgotten the same way. raftkv and etcd fsync before they acknowledge.

Settings (SyncObjConf; everything else is PySyncObj's default):

- ``appendEntriesPeriod`` = ``--heartbeat-ms`` (100 ms, the default too), the
  heartbeat of raftkv and etcd in kv_bench.
- ``raftMinTimeout``/``raftMaxTimeout`` = T and 2T for ``--election-ms`` T (default
  1000 ms; PySyncObj's default is 0.4-1.4 s): raftkv and etcd draw the election
  timeout from [T, 2T).
- ``connectionTimeout`` = max(3.5 s, 2T): PySyncObj requires it >= raftMaxTimeout.
- ``appendEntriesUseBatch`` = False: the one setting that decides throughput
  here. With batching on, a command waits for the next tick (up to
  ``autoTickPeriod``, 50 ms) to enter the log and then for the next periodic
  appendEntries (up to 100 ms), and a follower learns the commit index only
  with the following heartbeat, so a closed loop of C clients is held to about
  C / 0.2 s whatever the CPU can do (a write sent to a follower waits longest).
  With it off, a queued command wakes the tick thread through a pipe, the
  leader sends appendEntries at once and again right after applying (carrying
  the new commit index), so latency is network + CPU. The price is no
  batching at all: one appendEntries message (pickled, zlib-compressed) per
  command per follower, and one forwarding message per command a follower
  receives; PySyncObj has no setting that batches without waiting for the
  heartbeat period. Measured here at c=64: batching on, p50 216 ms and 315
  puts/s; off, p50 63 ms and 845 puts/s (same busy machine, back to back).
- ``commandsWaitLeader`` = False: with no leader known a command fails at once
  (MISSING_LEADER -> 503, the client retries) instead of waiting in
  PySyncObj's queue with no deadline, as raftkv and etcd answer then.
- ``connectionRetryTime`` = 1 s (default 5 s): a member that started before its
  partner listened, or a restarted one, is connected within a second rather
  than five (raftkv's redial backoff is capped at 1 s); no effect on load.
- ``maxBindRetries`` = 5 (default 0, for ever): a node whose Raft port is taken
  exits after about 5 s with an error instead of waiting unready for ever.
- ``journalFile``, ``fullDumpFile`` in ``--data-dir``: durable as far as PySyncObj
  allows (see above); a restarted node comes back from them.

Left at their defaults, on purpose: ``autoTick`` (True: PySyncObj's own tick
thread; an event-loop-driven ``doTick`` would have to poll), ``autoTickPeriod``
(0.05 s: with the pipe notifier it only bounds idle waits), ``pollerType``
(``auto`` = poll(2); three sockets and a pipe, select would be no faster),
``commandsQueueSize`` (100,000, far above 256 clients), ``appendEntriesBatchSizeBytes``
(64 KiB; only a lagging follower's catch-up uses more than one entry per
message), ``logCompactionMinEntries`` (5,000; the dump is written by a forked
child, off the tick thread, and raising it to 10^7 changed nothing measurable
at c=64), ``useFork`` (True, for that reason). ``--conf NAME=VALUE`` overrides
any SyncObjConf option, for experiments; ``--pysyncobj-version`` prints the
installed version (exit 0) or says it is missing (exit 1), for a harness.

Usage: python bench/pysyncobj_node.py --self 127.0.0.1:RAFTPORT
       --partners 127.0.0.1:P2,127.0.0.1:P3 --http 127.0.0.1:HTTPPORT
       --data-dir DIR [--heartbeat-ms 100] [--election-ms 1000]
       [--request-timeout-ms 5000] [--conf NAME=VALUE ...]
       python bench/pysyncobj_node.py --pysyncobj-version

Needs ``pysyncobj`` and ``aiohttp`` in the interpreter that runs it (uvloop is
used when present). SIGTERM or SIGINT stops it cleanly: the HTTP server closes,
then the SyncObj is destroyed (which flushes the journal mapping). Not run by
tests.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import collections
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

_ROLES = {0: "follower", 1: "candidate", 2: "leader"}  # pysyncobj.syncobj._RAFT_STATE
_JSON = "application/json"

Result = tuple[Any, int]  # (the replicated method's return value, FAIL_REASON code)
_Done = tuple["asyncio.Future[Result]", Any, int]


def _pysyncobj_version() -> str | None:
    """The installed PySyncObj's version, or None if it is not importable."""
    if importlib.util.find_spec("pysyncobj") is None:
        return None
    try:
        return importlib.metadata.version("pysyncobj")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _addr(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def _conf_override(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare string, e.g. pollerType=select
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    version = _pysyncobj_version()
    if argv is None:
        argv = sys.argv[1:]
    if "--pysyncobj-version" in argv:
        if version is None:
            sys.exit(f"PySyncObj is not installed in {sys.executable}")
        print(version)
        sys.exit(0)
    installed = (
        f"PySyncObj {version} is installed."
        if version is not None
        else "PySyncObj is NOT installed in this interpreter "
        f"({sys.executable}): pip install pysyncobj."
    )
    p = argparse.ArgumentParser(
        description="One PySyncObj node (a replicated dict of JSON values) with an "
        "HTTP front serving raftkv's KV routes, for bench/kv_bench.py.",
        epilog=installed + " Durability: PySyncObj never fsyncs (see the module docstring).",
    )
    p.add_argument(
        "--self",
        dest="self_addr",
        required=True,
        type=_addr,
        metavar="HOST:PORT",
        help="this node's Raft address",
    )
    p.add_argument(
        "--partners",
        required=True,
        metavar="HOST:PORT,...",
        help="the other members' Raft addresses, comma-separated",
    )
    p.add_argument(
        "--http", required=True, type=_addr, metavar="HOST:PORT", help="where the HTTP API listens"
    )
    p.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        help="journal and full dump live here (created if missing)",
    )
    p.add_argument(
        "--heartbeat-ms", type=int, default=100, help="appendEntriesPeriod (default 100)"
    )
    p.add_argument(
        "--election-ms",
        type=int,
        default=1000,
        help="election timeout T, drawn from [T, 2T) (default 1000)",
    )
    p.add_argument(
        "--request-timeout-ms",
        type=int,
        default=5000,
        help="a write not answered by then gets 503 (default 5000)",
    )
    p.add_argument(
        "--conf",
        action="append",
        default=[],
        type=_conf_override,
        metavar="NAME=VALUE",
        help="override a SyncObjConf option (a Python literal); for experiments",
    )
    p.add_argument("--log-level", default="WARNING")
    p.add_argument(
        "--pysyncobj-version",
        action="store_true",
        help="print the installed PySyncObj's version and exit (exit 1 if it is missing)",
    )
    args = p.parse_args(argv)
    args.partners = [_addr(a.strip()) for a in args.partners.split(",") if a.strip()]
    if not args.partners:
        p.error("--partners needs at least one address")
    if version is None:
        p.exit(2, f"{p.prog}: error: {installed}\n")
    return args


# ----------------------------------------------------------------------------- PySyncObj


def make_conf(args: argparse.Namespace) -> Any:
    """The tuned SyncObjConf (see the module docstring for why each setting)."""
    from pysyncobj import SyncObjConf

    heartbeat = args.heartbeat_ms / 1000
    election = args.election_ms / 1000
    args.data_dir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "appendEntriesPeriod": heartbeat,
        "raftMinTimeout": election,
        "raftMaxTimeout": 2 * election,
        "connectionTimeout": max(3.5, 2 * election),
        "appendEntriesUseBatch": False,
        "commandsWaitLeader": False,
        "maxBindRetries": 5,
        "connectionRetryTime": 1.0,
        "journalFile": str(args.data_dir / "journal.bin"),
        "fullDumpFile": str(args.data_dir / "dump.bin"),
    }
    options.update(dict(args.conf))
    conf = SyncObjConf(**options)
    unknown = sorted(set(options) - set(vars(conf)))
    if unknown:
        raise SystemExit(f"unknown SyncObjConf option(s): {', '.join(unknown)}")
    return conf


def make_store() -> Any:
    """A SyncObjConsumer holding the dict; defined here so pysyncobj loads lazily."""
    from pysyncobj import SyncObjConsumer, replicated

    class KVStore(SyncObjConsumer):  # type: ignore[misc]
        """key -> JSON value; each replicated method returns the index it applied at."""

        def __init__(self) -> None:
            super().__init__()
            self.data: dict[str, Any] = {}  # after super().__init__: part of the dump

        def _index(self) -> int:
            # Called while PySyncObj applies the entry: raftLastApplied is the one before.
            return int(self._syncObj.raftLastApplied) + 1

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: Any) -> int:
            self.data[key] = value
            return self._index()

        @replicated  # type: ignore[untyped-decorator]
        def put_many(self, pairs: dict[str, Any]) -> int:
            self.data.update(pairs)
            return self._index()

    return KVStore()


def _fail_reasons() -> dict[int, str]:
    from pysyncobj import FAIL_REASON

    return {v: k for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}


class Bridge:
    """Hands PySyncObj callbacks (tick thread) to asyncio futures (event loop).

    The tick thread appends ``(future, result, error)`` and wakes the loop with
    ``call_soon_threadsafe`` only if no drain is already scheduled; a drain
    resolves everything queued so far. The flag is cleared before draining, so
    an append that saw it set is drained by the pending (or running) drain.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._done: collections.deque[_Done] = collections.deque()
        self._scheduled = False

    def callback(self, fut: asyncio.Future[Result]) -> Callable[[Any, int], None]:
        def on_result(res: Any, err: int) -> None:  # PySyncObj's tick thread
            self._done.append((fut, res, err))
            if not self._scheduled:
                self._scheduled = True
                with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                    self._loop.call_soon_threadsafe(self._drain)

        return on_result

    def _drain(self) -> None:
        self._scheduled = False
        done = self._done
        while done:
            fut, res, err = done.popleft()
            if not fut.done():
                fut.set_result((res, err))


# ----------------------------------------------------------------------------- HTTP


def _answer(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=_JSON)


def _unavailable(error: str, **extra: Any) -> web.Response:
    return _answer(503, {"error": error, **extra})


class Api:
    """The HTTP routes of one node."""

    def __init__(self, syncobj: Any, store: Any, bridge: Bridge, timeout_s: float) -> None:
        self.syncobj = syncobj
        self.store = store
        self.bridge = bridge
        self.timeout_s = timeout_s
        self.reasons = _fail_reasons()
        self.success = next(k for k, v in self.reasons.items() if v == "SUCCESS")

    def _leader(self) -> str | None:
        leader = self.syncobj._getLeader()
        return None if leader is None else str(leader)

    async def _write(self, call: Callable[..., None], *args: Any) -> web.Response:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        call(*args, callback=self.bridge.callback(fut))
        try:
            async with asyncio.timeout(self.timeout_s):
                res, err = await fut
        except TimeoutError:
            return _unavailable("timeout: not applied in time (it may still be)")
        if err != self.success:
            return _unavailable(self.reasons.get(err, f"fail reason {err}"), leader=self._leader())
        return _answer(200, {"ok": True, "index": res, "leader": self._leader()})

    async def _json_body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"body is not JSON: {exc}"}), content_type=_JSON
            ) from None

    async def put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        value = await self._json_body(request)
        return await self._write(self.store.put, key, value)

    async def multi_put(self, request: web.Request) -> web.Response:
        pairs = await self._json_body(request)
        if not isinstance(pairs, dict) or not pairs:
            return _answer(400, {"error": "body must be a non-empty JSON object of key/value"})
        return await self._write(self.store.put_many, pairs)

    async def get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        data = self.store.data
        index = self.syncobj.raftLastApplied
        if key not in data:
            return _answer(404, {"error": "not found", "key": key, "index": index})
        return _answer(200, {"key": key, "value": data[key], "index": index})

    def _status(self) -> dict[str, Any]:
        for _ in range(10):
            try:  # getStatus() iterates dicts the tick thread may be changing
                st = self.syncobj.getStatus()
                break
            except RuntimeError:
                continue
        else:
            raise web.HTTPServiceUnavailable(text='{"error": "status busy"}', content_type=_JSON)
        leader = st.get("leader")
        plain = (int, float, bool, str, type(None))
        raw = {k: v if isinstance(v, plain) else str(v) for k, v in st.items()}
        return {
            "id": str(st["self"]),
            "role": _ROLES.get(st["state"], str(st["state"])),
            "term": st["raft_term"],
            "leader": None if leader is None else str(leader),
            "commit_index": st["commit_idx"],
            "applied_index": st["last_applied"],
            "log_len": st["log_len"],
            "has_quorum": st["has_quorum"],
            "ready": self.syncobj.isReady(),
            "keys": len(self.store.data),
            "pysyncobj": st["version"],
            "pysyncobj_status": raw,  # getStatus() as is, nodes as "host:port"
        }

    async def status(self, request: web.Request) -> web.Response:
        return _answer(200, self._status())

    async def ready(self, request: web.Request) -> web.Response:
        leader = self._leader()
        if leader is None:
            return _unavailable("not ready: no leader known")
        if not self.syncobj.isReady():
            return _unavailable("not ready: not caught up with the leader yet", leader=leader)
        return _answer(200, {"status": "ready", "leader": leader})


def build_app(api: Api) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    app.add_routes(
        [
            web.put("/v1/kv/{key}", api.put),
            web.get("/v1/kv/{key}", api.get, allow_head=False),
            web.post("/v1/kv", api.multi_put),
            web.get("/v1/status", api.status, allow_head=False),
            web.get("/v1/health/ready", api.ready, allow_head=False),
        ]
    )
    return app


# ----------------------------------------------------------------------------- main


async def serve(args: argparse.Namespace) -> None:
    from pysyncobj import SyncObj, SyncObjException

    loop = asyncio.get_running_loop()
    store = make_store()
    syncobj = SyncObj(args.self_addr, args.partners, conf=make_conf(args), consumers=[store])
    try:
        try:
            await asyncio.to_thread(syncobj.waitBinded)
        except SyncObjException:
            msg = f"pysyncobj_node: cannot bind the Raft address {args.self_addr}"
            raise SystemExit(msg) from None
        api = Api(syncobj, store, Bridge(loop), args.request_timeout_ms / 1000)
        runner = web.AppRunner(build_app(api), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        host, _, port = args.http.rpartition(":")
        try:
            await web.TCPSite(runner, host, int(port)).start()
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            print(
                f"pysyncobj {_pysyncobj_version()} node {args.self_addr}: http://{args.http}, "
                f"partners {','.join(args.partners)}, data {args.data_dir}",
                file=sys.stderr,
                flush=True,
            )
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        await asyncio.to_thread(syncobj.destroy_synchronous)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {args.self_addr} %(name)s %(levelname)s %(message)s",
    )
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
