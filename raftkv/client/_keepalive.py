"""When a lease holder renews, and until when it may believe it holds the lease.

Rule: a holder counts its lease from the moment it *sent* the keep-alive that
renewed it, never from the answer: the leader restarts the TTL when it serves
the keep-alive, which is later, so the holder's deadline is never past the
leader's -- a lock holder that stops at its deadline stops before anyone else
can take over. Renewals go every third of the TTL; after a failed one, the
next try comes sooner. Standard library only, no I/O: the clients' keep-alive
helpers pump it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RenewalSchedule"]

_RETRY_S = 0.25
"""Pause after a failed keep-alive before the next try."""


@dataclass(slots=True, kw_only=True)
class RenewalSchedule:
    """The renewal times of one lease.

    Attributes:
        ttl: the lease's TTL in seconds (as the last keep-alive answered).
        renewed_at: when the last successful keep-alive was sent (the
            caller's monotonic clock).
        interval: seconds between renewals; None: a third of the TTL.
        failing: the last keep-alive failed.
    """

    ttl: float
    renewed_at: float
    interval: float | None = None
    failing: bool = False

    @property
    def deadline(self) -> float:
        """Until when the holder may believe it holds the lease."""
        return self.renewed_at + self.ttl

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def next_attempt(self) -> float:
        """When to send the next keep-alive (after a failure: soon)."""
        every = self.interval if self.interval is not None else max(0.2, self.ttl / 3)
        if self.failing:
            return self.renewed_at + min(every, _RETRY_S)
        return self.renewed_at + every

    def wait(self, now: float) -> float:
        """Seconds to sleep before the next thing to do (a renewal or the deadline)."""
        if self.failing:
            return max(0.0, min(_RETRY_S, self.deadline - now))
        return max(0.0, min(self.next_attempt(), self.deadline) - now)

    def renewed(self, sent_at: float, ttl: int) -> None:
        self.renewed_at = sent_at
        self.ttl = ttl
        self.failing = False

    def failed(self) -> None:
        self.failing = True
