"""The lease checker: the lease contract against the committed history.

Rule: a leaf, shared by the simulator (:mod:`raftkv.sim.leases`) and the fault
test of real nodes (:mod:`raftkv.jepsen.feeds`). Its inputs say what happened,
not how it was observed:

* :class:`LeaseRecord` -- one lease as its client saw it: the TTL and the send
  times of the grant and of every keep-alive that was confirmed;
* :class:`LeaseLog` -- every expiry decision (when, by which node, whether it
  led, when it was promoted) and the first application of every revoke;
* :class:`~raftkv.history.watchcheck.RevisionLog` -- every committed revision.

:func:`check_leases` holds them to the contract:

* an expiry is decided only by a leader;
* a lease is never expired before the end of the TTL that a confirmed grant or
  keep-alive started (from when the client *sent* it: the leader restarted the
  TTL later than that), less ``allowance_us`` for clocks that cannot be read
  at the same instant, nor within ``extend_us`` of the expiring leader's
  promotion (etcd's promise: every lease gets that long after a new leader
  appears to be renewed);
* a leased key is deleted only by the revoke (or expiry) of its lease, in the
  revision that revoke made, together with every other key of that lease.

Times are microseconds on one clock, whichever the caller uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raftkv.history.watchcheck import RevisionLog
from raftkv.replica.kv import LeaseRevoke

__all__ = ["LeaseRecord", "LeaseLog", "LeaseCheck", "check_leases"]

Micros = int


@dataclass(slots=True)
class LeaseRecord:
    """One lease as its client saw it."""

    lease_id: int
    ttl_s: int
    renewals: list[Micros] = field(default_factory=list)
    """Send times of the grant and the keep-alives that were confirmed."""


class LeaseLog:
    """What the cluster's lessors decided, for the checker."""

    def __init__(self) -> None:
        self.expiries: list[tuple[int, Micros, str, bool, Micros | None]] = []
        """(lease, when, node, whether it led, when it was promoted)."""
        self.revokes: list[tuple[int, int, int]] = []
        """(lease, store revision after it, keys deleted): each revoke applied first."""
        self._revoked: set[int] = set()

    def expiry(
        self, lease_id: int, now: Micros, node: str, leading: bool, promoted: Micros | None
    ) -> None:
        self.expiries.append((lease_id, now, node, leading, promoted))

    def revoked(self, lease_id: int, revision: int, deleted: int) -> None:
        if lease_id not in self._revoked:
            self._revoked.add(lease_id)
            self.revokes.append((lease_id, revision, deleted))


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseCheck:
    ok: bool
    message: str
    expiries: int
    renewals: int


def check_leases(
    lease_log: LeaseLog,
    revisions: RevisionLog,
    records: Sequence[LeaseRecord],
    *,
    extend_us: Micros,
    allowance_us: Micros = 0,
) -> LeaseCheck:
    """Check the lease contract (see the module rules).

    Args:
        lease_log, revisions, records: what happened (module docstring).
        extend_us: the extension a promoted leader gives every lease.
        allowance_us: how much earlier than a renewed TTL's end an expiry may
            be dated without counting as early (0 when one clock times both,
            as in the simulator).
    """
    by_id = {r.lease_id: r for r in records}
    renewals = sum(len(r.renewals) for r in records)

    def fail(message: str) -> LeaseCheck:
        return LeaseCheck(
            ok=False, message=message, expiries=len(lease_log.expiries), renewals=renewals
        )

    # Lessors count whole milliseconds (as real nodes do): compare in them.
    extend_ms = extend_us // 1000
    allowance_ms = allowance_us // 1000
    for lease_id, when, node, leading, promoted in lease_log.expiries:
        at = f"lease {lease_id} expired by {node} at t={when / 1e6:.6f}s"
        when_ms = when // 1000
        if not leading:
            return fail(f"{at}: {node} did not lead (a follower decided an expiry)")
        if promoted is not None and when_ms < promoted // 1000 + extend_ms:
            return fail(
                f"{at}, {(when - promoted) / 1e3:.0f} ms after it was promoted: a new leader "
                f"must give every lease an election timeout ({extend_us / 1e3:.0f} ms) first"
            )
        record = by_id.get(lease_id)
        if record is not None:
            sent = [k for k in record.renewals if k <= when]
            end_ms = max(sent) // 1000 + record.ttl_s * 1000 if sent else 0
            if sent and when_ms < end_ms - allowance_ms:
                return fail(
                    f"{at}: kept alive at t={max(sent) / 1e6:.6f}s (confirmed) with a TTL of "
                    f"{record.ttl_s}s: expired {end_ms - when_ms} ms early"
                )
    # Leased keys go only with their lease, all of them at once.
    attached: dict[bytes, int] = {}
    zero_revokes: dict[int, list[int]] = {}
    for lease_id, revision, deleted in lease_log.revokes:
        if not deleted:
            zero_revokes.setdefault(revision, []).append(lease_id)
    for revision in sorted(revisions.events):
        cmd = revisions.commands[revision]
        deleted_leased: set[bytes] = set()
        for ev in revisions.events[revision]:
            key = ev.kv.key
            if ev.kind == "put":
                if ev.kv.lease:
                    attached[key] = ev.kv.lease
                else:
                    attached.pop(key, None)
                continue
            lease = attached.pop(key, 0)
            if not lease:
                continue
            if not isinstance(cmd, LeaseRevoke) or cmd.id != lease:
                return fail(
                    f"revision {revision}: key {key!r} of lease {lease} deleted by "
                    f"{type(cmd).__name__}, not by its lease's revoke"
                )
            deleted_leased.add(key)
        if isinstance(cmd, LeaseRevoke):
            left = sorted(k for k, lease in attached.items() if lease == cmd.id)
            if left:
                return fail(
                    f"revision {revision}: lease {cmd.id} revoked but its keys {left} survive"
                )
        for lease_id in zero_revokes.get(revision, ()):
            left = sorted(k for k, lease in attached.items() if lease == lease_id)
            if left:
                return fail(f"lease {lease_id} revoked without deleting its keys {left}")
    return LeaseCheck(ok=True, message="", expiries=len(lease_log.expiries), renewals=renewals)
