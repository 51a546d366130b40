"""A simulated network: latency, loss, duplication, reordering and partitions.

Rule: the network decides *whether* and *when* a message arrives, never what it
says. Every decision draws from the network's own seeded RNG in send order, so a
run is reproducible. A partition is nothing but a set of blocked directed links
``(src, dst)``; symmetric splits, one-way links, bridges and an isolated leader
are all just different sets. A link is checked both when a message is sent and
when it would arrive, so cutting a link also loses what was in flight on it.
Messages to an endpoint that is down (a crashed node) are dropped on arrival.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from heapq import heappush as _heappush
from math import log as _log

from raftkv.sim.clock import Clock, Micros

Endpoint = str
"""A node id or a client id."""

Handler = Callable[[Endpoint, object], None]
"""Called as ``handler(src, payload)`` when a message arrives."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkParams:
    """How one directed link behaves.

    Attributes:
        latency_us: the fixed part of the one-way delay.
        jitter_us: the mean of an exponentially distributed extra delay.
        drop: probability that a message is lost.
        duplicate: probability that a message is delivered twice (the copy gets
            its own independent delay).
        reorder: probability that a message gets an extra delay drawn uniformly
            from ``[0, reorder_us]``, so later messages overtake it.
        reorder_us: the largest extra delay of a reordered message.
    """

    latency_us: Micros = 500
    jitter_us: Micros = 300
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_us: Micros = 50_000

    def validate(self) -> None:
        """Raise ``ValueError`` on nonsensical values."""
        if self.latency_us < 0 or self.jitter_us < 0 or self.reorder_us < 0:
            raise ValueError("delays must be non-negative")
        for name in ("drop", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")


def _bump(counts: dict[str, int], kind: str) -> None:
    counts[kind] = counts.get(kind, 0) + 1


class Network:
    """Delivers payloads between registered endpoints through the :class:`Clock`.

    Counters are keyed by a caller-supplied ``kind`` string (e.g. the message
    class name), so the network never inspects payloads.
    """

    def __init__(self, clock: Clock, rng: random.Random, params: LinkParams | None = None) -> None:
        self._clock = clock
        self._rng = rng
        self.params: LinkParams = params if params is not None else LinkParams()
        """The parameters of every link without an override."""
        self.params.validate()
        self._link_params: dict[tuple[Endpoint, Endpoint], LinkParams] = {}
        self._handlers: dict[Endpoint, Handler] = {}
        self.blocked: set[tuple[Endpoint, Endpoint]] = set()
        """Directed links ``(src, dst)`` that currently lose every message."""
        self.down: set[Endpoint] = set()
        """Endpoints that currently receive nothing (crashed nodes)."""
        # Plain dicts, not Counters: ``d[k] += 1`` on an exact dict is about
        # twice as fast, and these are bumped for every message. A kind is
        # absent until its first message.
        self.sent: dict[str, int] = {}
        self.delivered: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.duplicated: dict[str, int] = {}
        self.on_deliver: Callable[[Endpoint, Endpoint, str, object], None] | None = None
        """Optional observer called before each delivery (used by tracing)."""

    # -- configuration -------------------------------------------------------

    def register(self, endpoint: Endpoint, handler: Handler) -> None:
        """Deliver messages addressed to ``endpoint`` to ``handler``."""
        self._handlers[endpoint] = handler

    def set_link(self, src: Endpoint, dst: Endpoint, params: LinkParams | None) -> None:
        """Override (or with ``None`` reset) the parameters of one directed link."""
        if params is None:
            self._link_params.pop((src, dst), None)
        else:
            params.validate()
            self._link_params[(src, dst)] = params

    def update_params(self, **changes: float) -> None:
        """Change fields of the default :class:`LinkParams` (e.g. ``drop=0.1``)."""
        new = replace(self.params, **changes)  # type: ignore[arg-type]
        new.validate()
        self.params = new

    def link(self, src: Endpoint, dst: Endpoint) -> LinkParams:
        """The parameters in effect for ``src -> dst``."""
        return self._link_params.get((src, dst), self.params)

    # -- partitions ----------------------------------------------------------

    def block(self, src: Endpoint, dst: Endpoint) -> None:
        """Lose every message from ``src`` to ``dst`` (one direction only)."""
        self.blocked.add((src, dst))

    def block_both(self, a: Endpoint, b: Endpoint) -> None:
        """Lose every message between ``a`` and ``b``."""
        self.blocked.add((a, b))
        self.blocked.add((b, a))

    def unblock_both(self, a: Endpoint, b: Endpoint) -> None:
        """Deliver messages between ``a`` and ``b`` again (both directions)."""
        self.blocked.discard((a, b))
        self.blocked.discard((b, a))

    def partition(self, groups: Iterable[Iterable[Endpoint]]) -> None:
        """Block every link between endpoints of different groups (both ways)."""
        listed = [sorted(g) for g in groups]
        for i, g in enumerate(listed):
            for h in listed[i + 1 :]:
                for a in g:
                    for b in h:
                        self.block_both(a, b)

    def heal(self) -> None:
        """Unblock every link."""
        self.blocked.clear()

    def is_blocked(self, src: Endpoint, dst: Endpoint) -> bool:
        return (src, dst) in self.blocked

    # -- traffic -------------------------------------------------------------

    def send(
        self, src: Endpoint, dst: Endpoint, payload: object, kind: str, *, duplicate: bool = True
    ) -> None:
        """Send ``payload``; it arrives later, twice, or never, per the link.

        With ``duplicate=False`` the link never delivers a second copy.
        """
        try:
            self.sent[kind] += 1
        except KeyError:
            self.sent[kind] = 1
        if self.blocked and (src, dst) in self.blocked:
            _bump(self.dropped, kind)
            return
        p = self._link_params.get((src, dst), self.params) if self._link_params else self.params
        rng = self._rng
        if p.drop and rng.random() < p.drop:
            _bump(self.dropped, kind)
            return
        copy = duplicate and p.duplicate and rng.random() < p.duplicate
        if copy:
            _bump(self.duplicated, kind)
        # Each copy draws its jitter, then its reordering, in that order. The
        # delivery is pushed straight onto the clock's heap: this is
        # Clock.schedule inlined, on the simulator's hottest path.
        jitter = p.jitter_us
        reorder = p.reorder
        if jitter:
            # The exponential distribution, as random.expovariate computes it.
            delay = p.latency_us + int(-_log(1.0 - rng.random()) * jitter)
        else:
            delay = p.latency_us
        if reorder and rng.random() < reorder:
            delay += rng.randrange(p.reorder_us + 1)
        clock = self._clock
        item = (src, dst, payload, kind)
        seq = clock._seq = clock._seq + 1
        _heappush(clock._heap, (clock._now + delay, seq, self._deliver, item))
        if copy:
            delay = p.latency_us
            if jitter:
                delay += int(-_log(1.0 - rng.random()) * jitter)
            if reorder and rng.random() < reorder:
                delay += rng.randrange(p.reorder_us + 1)
            clock._seq += 1
            _heappush(clock._heap, (clock._now + delay, clock._seq, self._deliver, item))

    def _deliver(self, src: Endpoint, dst: Endpoint, payload: object, kind: str) -> None:
        blocked = self.blocked
        if (blocked and (src, dst) in blocked) or dst in self.down:
            _bump(self.dropped, kind)
            return
        handler = self._handlers.get(dst)
        if handler is None:
            _bump(self.dropped, kind)
            return
        try:
            self.delivered[kind] += 1
        except KeyError:
            self.delivered[kind] = 1
        if self.on_deliver is not None:
            self.on_deliver(src, dst, kind, payload)
        handler(src, payload)

    @property
    def total_delivered(self) -> int:
        return sum(self.delivered.values())
