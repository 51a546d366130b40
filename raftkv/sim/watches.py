"""Simulated watchers, and the watch checker (``raftkv sim --watches``).

Rule: a watcher talks to one node at a time over a *stream*: it opens a watch
(:class:`WatchOpen`) from the revision after the last one it has, and the node
pushes the responses of its :class:`~raftkv.replica.watch.WatchHub` -- the hub
real nodes run -- as numbered :class:`WatchPush` messages. The simulated
network may lose or reorder them, so a watcher reads a stream only as an
unbroken prefix, like a TCP connection: a gap in the numbers, a long silence (a
crashed or cut-off node sends nothing, not even progress), a random hang-up or
a cancel ends the stream, and the watcher opens a new one -- often on another
node -- from where it stopped. A compacted cancel makes it restart from the
compact revision, as a client would, and it notes the revisions it was told it
missed.

The checker (:func:`~raftkv.history.watchcheck.check_watches`, a leaf shared with
the fault test of real nodes; re-exported here) compares what each watcher received with
the revisions the nodes applied (:class:`RevisionLog`, recorded by the cluster
as each revision is first applied): every event of the watcher's range from its
start revision, minus the declared gaps, exactly once, in revision order,
nothing else; every progress revision at least the last one before it and
never ahead of an event the watcher had not received yet.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.core.frozen import fast_init
from raftkv.history.watchcheck import RevisionLog, WatchCheck, WatchRecord, check_watches
from raftkv.replica.mvcc import prefix_range_end
from raftkv.replica.watch import CANCEL_COMPACTED, WatchResponse
from raftkv.sim.clock import Clock, Micros
from raftkv.sim.network import Network

__all__ = [
    "RevisionLog",
    "WatchCheck",
    "WatchRecord",
    "Watcher",
    "WatchWorkload",
    "check_watches",
]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class WatchOpen:
    """Watcher -> node: start stream ``stream`` of a watch."""

    stream: int
    key: bytes
    range_end: bytes
    start_revision: int
    prev_kv: bool
    require_leader: bool


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class WatchClose:
    """Watcher -> node: the watcher hung up stream ``stream``."""

    stream: int


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class WatchPush:
    """Node -> watcher: the next responses of stream ``stream`` (``seq`` counts
    from 0, the node's acknowledgement of the open)."""

    stream: int
    seq: int
    responses: tuple[WatchResponse, ...]
    opened: int = 0
    """In the first push: the revision the watch starts at."""


WATCH_MESSAGES = (WatchOpen, WatchClose)
"""What a node receives from watchers."""


_RANGES: tuple[tuple[bytes, bytes], ...] = (
    (b"k1", b""),
    (b"k", prefix_range_end(b"k")),
    (b"l/", prefix_range_end(b"l/")),
    (b"\0", b"\0"),
    (b"a/", b"b/"),
)
"""What watchers watch: a key, the single-key workload's keys, the lease
clients' keys, everything, the multi-key workload's ``a/`` keys."""


@dataclass(slots=True)
class _Stream:
    stream: int
    node: str
    opened_at: Micros
    expect: int = 0
    last_heard: Micros = 0


class Watcher:
    """One simulated watcher (see the module rules)."""

    def __init__(self, number: int, workload: WatchWorkload, rng: random.Random) -> None:
        self.endpoint = f"w{number}"
        self._w = workload
        self._rng = rng
        key, end = _RANGES[(number - 1) % len(_RANGES)]
        self.require_leader = number % 2 == 0
        self.record = WatchRecord(
            name=self.endpoint, key=key, range_end=end, start=0, prev_kv=number % 3 == 0
        )
        self._last = 0  # the revision up to which it has everything
        self._streams = 0
        self._stream: _Stream | None = None

    def start(self, at: Micros) -> None:
        self._w.clock.call_at(at, self._open)

    def _open(self) -> None:
        w = self._w
        if self._stream is not None or w.clock.now >= w.stop_at:
            return
        nodes = w.node_ids
        node = nodes[self._rng.randrange(len(nodes))]
        self._streams += 1
        now = w.clock.now
        self._stream = _Stream(self._streams, node, now, last_heard=now)
        w.stats["streams"] += 1
        record = self.record
        if not record.start and self._last == 0:
            start = 0  # the first open: from the next revision, whatever it is
        else:
            start = self._last + 1
        w.network.send(
            self.endpoint,
            node,
            WatchOpen(
                stream=self._streams,
                key=record.key,
                range_end=record.range_end,
                start_revision=start,
                prev_kv=record.prev_kv,
                require_leader=self.require_leader,
            ),
            "WatchOpen",
            duplicate=False,
        )
        stream = self._streams
        w.clock.call_later(w.silence_us, self._check_silence, stream)
        w.clock.call_later(int(self._rng.expovariate(1.0 / w.hangup_us)), self._hang_up, stream)

    def _close(self, reason: str, *, reopen_after: Micros | None = None) -> None:
        w = self._w
        s = self._stream
        if s is None:
            return
        self._stream = None
        w.stats[f"ended-{reason}"] += 1
        w.network.send(self.endpoint, s.node, WatchClose(stream=s.stream), "WatchClose")
        if reopen_after is not None:
            delay = reopen_after
        elif self._rng.random() < 0.2:
            delay = 1_000_000 + self._rng.randrange(3_000_000)  # away for a while
        else:
            delay = 1_000 + self._rng.randrange(200_000)
        w.clock.call_later(delay, self._open)

    def _hang_up(self, stream: int) -> None:
        if self._stream is not None and self._stream.stream == stream:
            self._close("hang-up")

    def _check_silence(self, stream: int) -> None:
        s = self._stream
        if s is None or s.stream != stream:
            return
        now = self._w.clock.now
        if now - s.last_heard >= self._w.silence_us:
            self._close("silence")
        else:
            self._w.clock.call_later(
                s.last_heard + self._w.silence_us - now, self._check_silence, stream
            )

    def on_push(self, push: WatchPush) -> None:
        s = self._stream
        if s is None or push.stream != s.stream:
            return  # an old stream's straggler
        if push.seq != s.expect:
            self._close("gap")  # the connection lost something: start over
            return
        s.expect += 1
        s.last_heard = self._w.clock.now
        record = self.record
        w = self._w
        if push.seq == 0 and not record.start:
            record.start = push.opened
            self._last = push.opened - 1
        for r in push.responses:
            if r.canceled:
                if r.cancel_reason == CANCEL_COMPACTED:
                    # Told what it missed; restarts from the compact revision.
                    if r.compact_revision - 1 > self._last:
                        record.missed.append((self._last + 1, r.compact_revision - 1))
                        self._last = r.compact_revision - 1
                    w.stats["compacted"] += 1
                    self._close("compacted", reopen_after=1_000)
                else:
                    w.stats[f"canceled-{r.cancel_reason.split(':')[0]}"] += 1
                    self._close("canceled")
                return
            if r.progress:
                record.progress.append((r.revision, len(record.got)))
                w.stats["progress"] += 1
                if r.revision > self._last:
                    self._last = r.revision
                continue
            record.got.extend(r.events)
            w.stats["events"] += len(r.events)
            self._last = max(self._last, r.revision)


class WatchWorkload:
    """The watchers of one run.

    Args:
        clock, network: the simulation's.
        rng: the watchers' own RNG.
        node_ids: the nodes they may open streams on.
        watchers: how many.
        stop_at: no stream is opened at or after this time.
        silence_us: a stream that sent nothing (not even progress) for this
            long is given up.
        hangup_us: mean time before a watcher hangs up a stream on its own.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        network: Network,
        rng: random.Random,
        node_ids: Sequence[str],
        watchers: int,
        stop_at: Micros,
        silence_us: Micros = 2_500_000,
        hangup_us: Micros = 3_000_000,
    ) -> None:
        self.clock = clock
        self.network = network
        self.node_ids = tuple(sorted(node_ids))
        self.stop_at = stop_at
        self.silence_us = silence_us
        self.hangup_us = hangup_us
        self.stats: Counter[str] = Counter()
        self.watchers = [
            Watcher(i, self, random.Random(f"{rng.random()}/{i}")) for i in range(1, watchers + 1)
        ]
        for wt in self.watchers:
            network.register(wt.endpoint, self._make_handler(wt))
        self._rng = rng

    def set_nodes(self, node_ids: Sequence[str]) -> None:
        self.node_ids = tuple(sorted(node_ids))

    def start(self) -> None:
        for wt in self.watchers:
            wt.start(self.clock.now + self._rng.randrange(200_000))

    @staticmethod
    def _make_handler(wt: Watcher) -> Callable[[str, object], None]:
        def handle(src: str, payload: object) -> None:
            if type(payload) is WatchPush:
                wt.on_push(payload)

        return handle

    def records(self) -> list[WatchRecord]:
        return [wt.record for wt in self.watchers]
