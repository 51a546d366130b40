"""Which unauthenticated inbound connections may wait for their handshake.

Rule 1: a pending handshake costs a socket and a task until it completes or its
deadline passes, and anyone who reaches the Raft port can open one (no secret
needed). So their number is bounded per source and in total -- and when a
bound is reached, an *old* pending handshake is closed to make room rather
than the newcomer refused: refusing newcomers is exactly how a flood of idle
sockets locks real peers out, while a real peer completes its handshake in a
few round trips and is not the oldest for long.

Rule 2: the victim is chosen by one ranking, from the candidates (the pending
handshakes of the newcomer's source if that source is at its limit, else all
of them) plus the newcomer itself:

1. a connection from a source not known as a member's host goes first;
2. then one from the source with the most pending handshakes;
3. then the oldest.

So a flood from unknown addresses never closes a member's pending handshake;
a flood from one address only displaces itself; and a newcomer is refused
only if every candidate ranks above it (it comes from an unknown address and
every candidate from a member's host).

Rule 3: pure bookkeeping: no I/O, no clock; age is the order of admission.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Admission", "Limit", "PendingHandshakes", "canonical_ip", "source_of"]

K = TypeVar("K", bound=Hashable)


def canonical_ip(host: str) -> str:
    """``host`` as an IP address in canonical form (an IPv4-mapped IPv6 address
    as IPv4, no zone), or unchanged if it is not an IP address (a host name)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def source_of(host: str) -> str:
    """The source a per-source limit counts ``host`` under: an IPv4 address as
    is, an IPv6 address's /64 (one host or LAN holds a whole /64, so counting
    address by address would be no limit), anything else unchanged."""
    address = canonical_ip(host)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


class Limit(enum.Enum):
    """Which bound made room."""

    PER_SOURCE = "per_source"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission(Generic[K]):
    """What :meth:`PendingHandshakes.admit` decided.

    Attributes:
        victim: the connection to close -- a pending one (evicted) or the
            newcomer itself (refused); ``None`` if there was room.
        limit: the bound that was reached (``None`` if there was room).
    """

    victim: K | None = None
    limit: Limit | None = None


@dataclass(slots=True)
class _Pending:
    seq: int
    source: str
    member: bool


class PendingHandshakes(Generic[K]):
    """The pending handshakes, keyed by a connection handle ``K``.

    Args:
        per_source: most pending handshakes from one source (see :func:`source_of`).
        total: most pending handshakes in all.
    """

    def __init__(self, *, per_source: int, total: int) -> None:
        if not 1 <= per_source <= total:
            raise ValueError("need 1 <= per_source <= total")
        self._per_source = per_source
        self._total = total
        self._seq = 0
        # Invariant: len(_pending) <= total; _counts[s] == number of entries from s,
        # and <= per_source; no zero counts.
        self._pending: dict[K, _Pending] = {}
        self._counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def count(self, source: str) -> int:
        """Pending handshakes from ``source``."""
        return self._counts[source]

    def admit(self, key: K, source: str, *, member: bool) -> Admission[K]:
        """Register ``key`` (a new connection from ``source``, a member's host
        or not) and say which connection to close to stay within the bounds.

        The victim, if pending, is already forgotten; if it is ``key``, ``key``
        was not registered.

        Raises:
            ValueError: ``key`` is already pending (a caller bug).
        """
        if key in self._pending:
            raise ValueError(f"{key!r} is already pending")
        new = _Pending(seq=self._seq, source=source, member=member)
        self._seq += 1
        if self._counts[source] >= self._per_source:
            limit = Limit.PER_SOURCE
            candidates = [k for k, p in self._pending.items() if p.source == source]
        elif len(self._pending) >= self._total:
            limit = Limit.GLOBAL
            candidates = list(self._pending)
        else:
            self._add(key, new)
            return Admission()
        counts = self._counts.copy()
        counts[source] += 1

        def rank(k: K) -> tuple[bool, int, int]:
            p = new if k == key else self._pending[k]
            return (not p.member, counts[p.source], -p.seq)

        victim = max([*candidates, key], key=rank)
        if victim != key:
            self.discard(victim)
            self._add(key, new)
        return Admission(victim=victim, limit=limit)

    def discard(self, key: K) -> None:
        """Forget ``key`` (its handshake ended); no-op if it is not pending."""
        p = self._pending.pop(key, None)
        if p is None:
            return
        self._counts[p.source] -= 1
        if not self._counts[p.source]:
            del self._counts[p.source]

    def _add(self, key: K, p: _Pending) -> None:
        self._pending[key] = p
        self._counts[p.source] += 1
