"""Watchers on real nodes (``raftkv jepsen --watches``): raw ``GET /v1/watch``
streams that resume, recording every line they receive.

Rules:

1. **Raw streams, our own resume.** A watcher does not use the Python client's
   watch iterator: that one drops an event below its cursor (a duplicate a
   server sent), and the point here is to record what the *server* sent. Each
   watcher keeps the revision up to which it has everything (``last``: the
   newest event or progress revision it received) and opens every stream with
   ``start_revision = last + 1`` -- the resume a correct client does.
2. **Every line is recorded as it arrives** (:class:`~raftkv.history.watchcheck.WatchRecord`,
   the simulator's record): events in arrival order, including any the
   watcher already had; each progress notification with the number of events
   received before it; and the revisions a ``compacted`` cancel said are gone
   (the watcher then restarts from the compact revision, as a client would).
3. **A stream ends** when the server cancels it (``no leader`` on a node cut
   off from the leader, ``slow watcher``, ``node stopping``), when the
   connection drops (a killed node), when nothing arrives for
   :attr:`WatchersConfig.silence_s` although nodes send progress every
   ``--watch-progress-interval-s`` (a paused node, a partition the node has
   not noticed yet), or when the watcher hangs up on its own (random, mean
   :attr:`WatchersConfig.hangup_s`, so resuming is exercised without faults).
   It then reopens, on another random node after a failure.
4. **Where watchers look.** Watcher ``i`` watches :data:`WATCH_RANGES` ``[i %
   5]``: everything, the single-key workload's keys (``g``), the multi-key
   ones (``t/``), the lease clients' keys (``l/``), and one key; every other
   watcher asks for ``prev_kv``. Watcher ``i`` starts on node ``i % N``, so
   every node has watchers.

The check is :mod:`raftkv.jepsen.feeds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from raftkv.core.types import NodeId
from raftkv.history.watchcheck import WatchRecord
from raftkv.jepsen.nodes import Cluster
from raftkv.replica.kv import json_text
from raftkv.replica.mvcc import Event, KeyValue, prefix_range_end
from raftkv.replica.watch import CANCEL_COMPACTED

__all__ = [
    "WATCH_RANGES",
    "WatchersConfig",
    "JepsenWatcher",
    "Watchers",
    "event_of",
]

WATCH_RANGES: tuple[tuple[str, str], ...] = (
    ("prefix", ""),
    ("prefix", "g"),
    ("prefix", "t/"),
    ("prefix", "l/"),
    ("key", "t/a/1"),
)
"""``(kind, text)`` of what watcher ``i`` watches: ``WATCH_RANGES[i % 5]``."""


def _kv_of(obj: Any) -> KeyValue:
    key = str(obj["key"]).encode("utf-8", "surrogateescape")
    if "value" not in obj:  # a delete's tombstone: the key and the revision
        return KeyValue(
            key=key, value=b"", create_revision=0, mod_revision=int(obj["mod_revision"]), version=0
        )
    return KeyValue(
        key=key,
        value=json_text(obj["value"]),
        create_revision=int(obj["create_revision"]),
        mod_revision=int(obj["mod_revision"]),
        version=int(obj["version"]),
        lease=int(obj.get("lease", 0)),
    )


def event_of(obj: Any) -> Event:
    """An event of a ``/v1/watch`` line as the store's :class:`Event`.

    Raises:
        KeyError, TypeError, ValueError: not an event.
    """
    kind = obj["type"]
    if kind not in ("put", "delete"):
        raise ValueError(f"unknown event type {kind!r}")
    prev = obj.get("prev_kv")
    return Event(kind=kind, kv=_kv_of(obj["kv"]), prev_kv=None if prev is None else _kv_of(prev))


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchersConfig:
    seed: int
    watchers: int
    silence_s: float = 2.5
    hangup_s: float = 8.0
    open_timeout_s: float = 2.0


@dataclass(slots=True)
class JepsenWatcher:
    """One watcher: its record for the checker, and where it is."""

    number: int
    kind: str
    text: str
    record: WatchRecord
    last: int = 0
    """The revision up to which it has everything (rule 1)."""
    node: NodeId | None = None
    stats: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def query(self) -> str:
        params = f"{self.kind}={quote(self.text, safe='')}&progress_notify=true"
        if self.record.prev_kv:
            params += "&prev_kv=true"
        if self.last:
            params += f"&start_revision={self.last + 1}"
        return "/v1/watch?" + params


class Watchers:
    """Runs the watchers against ``cluster`` until told to stop (module rules)."""

    def __init__(
        self, cluster: Cluster, config: WatchersConfig, clock: Callable[[], float]
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.watchers: list[JepsenWatcher] = []
        for i in range(config.watchers):
            kind, text = WATCH_RANGES[i % len(WATCH_RANGES)]
            raw = text.encode()
            if kind == "key":
                key, end = raw, b""
            elif raw:
                key, end = raw, prefix_range_end(raw)
            else:
                key, end = b"\0", b"\0"  # every key
            record = WatchRecord(name=f"w{i}", key=key, range_end=end, start=0, prev_kv=i % 2 == 1)
            self.watchers.append(JepsenWatcher(i, kind, text, record))

    @property
    def records(self) -> list[WatchRecord]:
        return [w.record for w in self.watchers]

    def caught_up(self, revision: int) -> bool:
        """Whether every watcher has everything up to ``revision``."""
        return all(w.last >= revision for w in self.watchers)

    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for w in self.watchers:
            total.update(w.stats)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(self._watch(session, w, stop) for w in self.watchers))

    async def _watch(
        self, session: aiohttp.ClientSession, w: JepsenWatcher, stop: asyncio.Event
    ) -> None:
        rng = random.Random(f"{self.config.seed}/watcher/{w.number}")
        nodes = self.cluster.node_ids
        w.node = nodes[w.number % len(nodes)]
        while not stop.is_set():
            stream = asyncio.ensure_future(self._stream(session, w, rng))
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({stream, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stream not in done:
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stream
                return
            stopped.cancel()
            moved = stream.result()
            if moved:
                w.node = rng.choice(self.cluster.node_ids)
                await asyncio.sleep(0.05 + 0.15 * rng.random())

    async def _stream(
        self, session: aiohttp.ClientSession, w: JepsenWatcher, rng: random.Random
    ) -> bool:
        """One stream, until it ends (rule 3); whether to move to another node."""
        cfg = self.config
        assert w.node is not None
        url = self.cluster.url(w.node) + w.query()
        hangup_at = self.clock() + rng.expovariate(1.0 / cfg.hangup_s)
        w.stats["streams"] += 1
        try:
            async with session.get(
                url,
                # sock_read: a paused node accepts the connection but never answers.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=cfg.open_timeout_s, sock_read=cfg.silence_s + 0.5
                ),
            ) as resp:
                if resp.status != 200:
                    w.stats[f"open-{resp.status}"] += 1
                    return True
                while True:
                    wait = min(cfg.silence_s, hangup_at - self.clock())
                    if wait <= 0:
                        w.stats["ended-hang-up"] += 1
                        return rng.random() < 0.5
                    try:
                        line = await asyncio.wait_for(resp.content.readline(), wait)
                    except TimeoutError:
                        if self.clock() >= hangup_at:
                            w.stats["ended-hang-up"] += 1
                            return rng.random() < 0.5
                        w.stats["ended-silence"] += 1
                        return True
                    if not line:
                        w.stats["ended-eof"] += 1
                        return True
                    ended = self._line(w, line)
                    if ended is not None:
                        return ended
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            w.stats[f"ended-{type(exc).__name__}"] += 1
            return True

    def _line(self, w: JepsenWatcher, line: bytes) -> bool | None:
        """Record one line (rule 2); ``None`` to read on, else whether to move."""
        text = line.strip()
        if not text:
            return None
        try:
            body = json.loads(text)
            revision = int(body.get("revision", 0))
        except (ValueError, TypeError, AttributeError):
            w.errors.append(f"not a JSON line: {text[:100]!r}")
            return True
        record = w.record
        if body.get("created") is True:
            if not record.start:
                record.start = revision + 1 if not w.last else w.last + 1
                w.last = record.start - 1
            return None
        if body.get("canceled") is True:
            reason = str(body.get("cancel_reason", ""))
            w.stats[f"canceled-{reason.split(':')[0]}"] += 1
            if reason == CANCEL_COMPACTED:
                compact = int(body.get("compact_revision", 0))
                if compact - 1 > w.last:
                    record.missed.append((w.last + 1, compact - 1))
                    w.last = compact - 1
                return False
            return True
        if body.get("progress") is True:
            record.progress.append((revision, len(record.got)))
            w.stats["progress"] += 1
            w.last = max(w.last, revision)
            return None
        try:
            events = [event_of(e) for e in body.get("events", ())]
        except (KeyError, TypeError, ValueError) as exc:
            w.errors.append(f"bad event in {text[:100]!r}: {exc}")
            return True
        record.got.extend(events)
        w.stats["events"] += len(events)
        w.last = max(w.last, revision)
        return None
