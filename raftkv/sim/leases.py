"""Simulated lease clients, and the lease checker (``raftkv sim --leases``).

Rule: a lease client does what a service holding a lock does. It grants a lease
(its own id, a TTL of at least 1.5 election timeouts), attaches a key or two
with puts, keeps the lease alive every third of its TTL through the leader
(:class:`KeepAliveRequest`; a follower answers with the leader's id), and after
a while either revokes it or simply stops renewing and lets it expire. Every
node drives its own :class:`~raftkv.replica.lessor.Lessor` -- the code real
nodes run -- on the virtual clock (see :class:`~raftkv.sim.cluster.Cluster`):
promoted once it leads and has applied its term's first entry, demoted when it
stops leading, and its expiries and checkpoints proposed through the log.

The checker (:func:`~raftkv.history.leasecheck.check_leases`, a leaf shared with
the fault test of real nodes; re-exported here) holds the cluster to the
lease contract:

* an expiry is decided only by a leader (:class:`LeaseLog` notes who decided
  each one and whether it led then);
* a lease is never expired before the end of the TTL that a confirmed grant or
  keep-alive started (from when the client *sent* it: the leader restarted the
  TTL later than that), nor within an election timeout of the expiring
  leader's promotion (etcd's promise: every lease gets that long after a new
  leader appears to be renewed);
* a leased key is deleted only by the revoke (or expiry) of its lease, in the
  revision that revoke made, together with every other key of that lease.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.core.frozen import fast_init
from raftkv.history.leasecheck import LeaseCheck, LeaseLog, LeaseRecord, check_leases
from raftkv.replica.kv import (
    Command,
    Compact,
    LeaseGrant,
    LeaseRevoke,
    Put,
    Session,
    encode_command,
)
from raftkv.sim.clock import Clock, Micros, seconds
from raftkv.sim.network import Network
from raftkv.sim.workload import ClientReply, ClientRequest, session_id

__all__ = [
    "LeaseCheck",
    "LeaseClient",
    "LeaseLog",
    "LeaseRecord",
    "LeaseWorkload",
    "check_leases",
]

LEASE_CLIENT_BASE = 1000
"""Lease client ``n`` has client number (and session ``c<number>``) ``1000 + n``."""
KEEPALIVE_BASE = 1500
"""... and its keep-alives ``1500 + n``: a keep-alive may be confirmed by
committing a checkpoint under its own session, which must not interleave with
the client's other requests (a session's sequence numbers only increase)."""
COMPACTOR = 2000
"""The client number of the simulated operator that compacts the history."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAliveRequest:
    """Lease client -> node: keep ``lease_id`` alive (answered by a ClientReply
    whose ``output`` is the TTL; ``found=False`` if the lease is gone)."""

    client_id: int
    request_id: int
    lease_id: int


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LessorForward:
    """Node -> leader: propose this command a lessor returned on a node that
    does not lead (what a node does with any proposal it cannot make)."""

    data: bytes


class LeaseClient:
    """One simulated lease holder (see the module rules)."""

    def __init__(self, number: int, workload: LeaseWorkload, rng: random.Random) -> None:
        self.number = number
        self.client_id = LEASE_CLIENT_BASE + number
        self.endpoint = f"L{number}"
        self._w = workload
        self._rng = rng
        self._seq = 0
        self._leases = 0
        self._target: str | None = None
        self._lease: LeaseRecord | None = None
        self._holding = False
        self._pending: tuple[int, str] | None = None  # (request id, what)
        self._keepalive: tuple[int, Micros] | None = None  # (request id, sent at)
        self._steps: list[Command] = []
        self._sent_at: Micros = 0  # when the grant was sent
        self._release_at: Micros = 0  # when to revoke or stop renewing

    # -- helpers ---------------------------------------------------------------

    def _node(self, *, wander: bool = True) -> str:
        w = self._w
        if (
            self._target is None
            or self._target not in w.node_set
            or (wander and self._rng.random() < 0.1)
        ):
            return w.node_ids[self._rng.randrange(len(w.node_ids))]
        return self._target

    def _session(self) -> Session:
        self._seq += 1
        return Session(client_id=session_id(self.client_id), seq=self._seq)

    def _request(self, cmd: Command, what: str) -> None:
        w = self._w
        assert cmd.session is not None
        rid = cmd.session.seq
        self._pending = (rid, what)
        w.network.send(
            self.endpoint,
            self._node(),
            ClientRequest(client_id=self.client_id, request_id=rid, data=encode_command(cmd)),
            "ClientRequest",
            duplicate=False,
        )
        w.clock.call_later(w.timeout_us, self._timeout, rid)

    def _now_ms(self) -> int:
        return self._w.clock.now // 1000

    # -- the life of a lease -----------------------------------------------------

    def start(self, at: Micros) -> None:
        self._w.clock.call_at(at, self._grant)

    def _grant(self) -> None:
        w = self._w
        if w.clock.now >= w.stop_at or self._pending is not None:
            return
        self._leases += 1
        lease_id = self.client_id * 10_000 + self._leases
        ttl_s = w.min_ttl_s + self._rng.randrange(2)
        self._lease = LeaseRecord(lease_id=lease_id, ttl_s=ttl_s)
        self._holding = False
        self._sent_at = w.clock.now
        self._request(
            LeaseGrant(id=lease_id, ttl_s=ttl_s, time_ms=self._now_ms(), session=self._session()),
            "grant",
        )

    def _after(self, delay: Micros, fn: Callable[[], None]) -> None:
        self._w.clock.call_later(delay, fn)

    def _next_step(self) -> None:
        """While holding: the next put, or the keep-alive loop's end."""
        lease = self._lease
        if lease is None or not self._holding or self._pending is not None:
            return
        w = self._w
        if self._steps:
            cmd = self._steps.pop(0)
            self._request(cmd, "put")
            return
        if w.clock.now >= self._release_at:
            if self._rng.random() < 0.3:
                self._holding = False
                self._request(
                    LeaseRevoke(id=lease.lease_id, time_ms=self._now_ms(), session=self._session()),
                    "revoke",
                )
            else:
                # Stop renewing: the lease must expire on its own.
                self._holding = False
                w.stats["abandoned"] += 1
                self._after(lease.ttl_s * 1_000_000 + seconds(1), self._grant)

    def _held(self) -> None:
        """The grant was confirmed: attach keys, start keeping it alive."""
        lease = self._lease
        assert lease is not None
        w = self._w
        self._holding = True
        self._release_at = w.clock.now + seconds(self._rng.uniform(0.5, 4.0))
        keys = [f"l/{self.number}/{i}" for i in range(1 + self._rng.randrange(2))]
        self._steps = [
            Put(
                key=key,
                value=lease.lease_id,
                time_ms=self._now_ms(),
                session=self._session(),
                lease=lease.lease_id,
            )
            for key in keys
        ]
        if self._rng.random() < 0.2:
            # Detach one again: a put without a lease.
            self._steps.append(
                Put(key=keys[0], value=0, time_ms=self._now_ms(), session=self._session())
            )
        self._schedule_keepalive(lease)
        self._after(self._release_at - w.clock.now, self._next_step)
        self._next_step()

    def _schedule_keepalive(self, lease: LeaseRecord) -> None:
        self._after(lease.ttl_s * 1_000_000 // 3, lambda: self._send_keepalive(lease))

    def _send_keepalive(self, lease: LeaseRecord, *, again: bool = False) -> None:
        if self._lease is not lease or not self._holding:
            return
        w = self._w
        if self._keepalive is None:
            self._seq += 1
            rid = self._seq
            self._keepalive = (rid, w.clock.now)
            w.network.send(
                self.endpoint,
                self._node(wander=False),
                KeepAliveRequest(
                    client_id=KEEPALIVE_BASE + self.number, request_id=rid, lease_id=lease.lease_id
                ),
                "KeepAliveRequest",
                duplicate=False,
            )
            w.clock.call_later(w.timeout_us, self._keepalive_timeout, rid)
        if not again:
            self._schedule_keepalive(lease)

    def _keepalive_timeout(self, rid: int) -> None:
        if self._keepalive is not None and self._keepalive[0] == rid:
            self._keepalive = None
            self._target = None

    def _timeout(self, rid: int) -> None:
        if self._pending is None or self._pending[0] != rid:
            return
        what = self._pending[1]
        self._pending = None
        self._target = None
        self._w.stats[f"{what}-unknown"] += 1
        if what == "grant":
            # It may have been granted: then it expires, unrenewed.
            self._lease = None
            self._after(seconds(self._w.min_ttl_s + 1), self._grant)
        elif what == "revoke":
            self._lease = None
            self._after(seconds(1), self._grant)
        else:
            self._next_step()

    def on_reply(self, reply: ClientReply) -> None:
        w = self._w
        ka = self._keepalive
        if ka is not None and reply.request_id == ka[0]:
            self._keepalive = None
            lease = self._lease
            if reply.ok and lease is not None:
                lease.renewals.append(ka[1])
                w.stats["keepalives"] += 1
                self._target = w.reply_node
            elif not reply.found and lease is not None and self._holding:
                self._holding = False  # the lease is gone: expired
                w.stats["lost"] += 1
                self._after(seconds(0.2), self._grant)
            else:
                # Not the leader: ask the one it names at once.
                self._target = reply.leader
                if lease is not None and reply.leader is not None:
                    held = lease
                    self._after(5_000, lambda: self._send_keepalive(held, again=True))
            return
        p = self._pending
        if p is None or reply.request_id != p[0]:
            return
        what = p[1]
        self._pending = None
        if not reply.ok:
            # Refused before proposing: try again (a new request) at the leader.
            self._target = reply.leader
            w.stats[f"{what}-refused"] += 1
            if what == "grant":
                self._after(20_000, self._grant)
            elif what == "revoke":
                self._lease = None
                self._after(seconds(1), self._grant)
            else:
                self._after(20_000, self._next_step)
            return
        self._target = w.reply_node
        lease = self._lease
        if what == "grant" and lease is not None:
            lease.renewals.append(self._sent_at)
            w.records.append(lease)
            w.stats["granted"] += 1
            self._held()
        elif what == "revoke":
            w.stats["revoked"] += 1
            self._lease = None
            self._after(seconds(self._rng.uniform(0.1, 1.0)), self._grant)
        else:
            w.stats["puts"] += 1
            self._next_step()


class Compactor:
    """A simulated operator that compacts the history now and then (so watchers
    meet compaction)."""

    def __init__(self, workload: LeaseWorkload, revision: Callable[[], int]) -> None:
        self._w = workload
        self._revision = revision
        self._seq = 0
        self.endpoint = "compactor"

    def start(self, at: Micros) -> None:
        self._w.clock.call_at(at, self._compact)

    def _compact(self) -> None:
        w = self._w
        if w.clock.now >= w.stop_at:
            return
        target = self._revision() - w.rng.randrange(1, 12)
        if target > 1:
            self._seq += 1
            cmd = Compact(
                revision=target,
                time_ms=w.clock.now // 1000,
                session=Session(client_id=session_id(COMPACTOR), seq=self._seq),
            )
            node = w.node_ids[w.rng.randrange(len(w.node_ids))]
            w.network.send(
                self.endpoint,
                node,
                ClientRequest(client_id=COMPACTOR, request_id=self._seq, data=encode_command(cmd)),
                "ClientRequest",
                duplicate=False,
            )
            w.stats["compactions-sent"] += 1
        w.clock.call_later(seconds(w.rng.uniform(0.5, 2.5)), self._compact)


class LeaseWorkload:
    """The lease clients of one run (and the compactor).

    Args:
        clock, network: the simulation's.
        rng: the workload's own RNG.
        node_ids: the nodes clients may contact.
        clients: how many lease clients (0: none; the compactor may still run).
        min_ttl_s: the shortest TTL granted (1.5 election timeouts, rounded up).
        timeout_us: how long a client waits for an answer.
        stop_at: nothing new is started at or after this time.
        compactor: the current revision, if the compactor should run.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        network: Network,
        rng: random.Random,
        node_ids: Sequence[str],
        clients: int,
        min_ttl_s: int,
        timeout_us: Micros,
        stop_at: Micros,
        compactor: Callable[[], int] | None = None,
    ) -> None:
        self.clock = clock
        self.network = network
        self.rng = rng
        self.node_ids = tuple(sorted(node_ids))
        self.node_set = frozenset(self.node_ids)
        self.min_ttl_s = min_ttl_s
        self.timeout_us = timeout_us
        self.stop_at = stop_at
        self.stats: Counter[str] = Counter()
        self.records: list[LeaseRecord] = []
        self.reply_node: str | None = None
        self.clients = [
            LeaseClient(i, self, random.Random(f"{rng.random()}/{i}"))
            for i in range(1, clients + 1)
        ]
        for c in self.clients:
            network.register(c.endpoint, self._make_handler(c))
        self.compactor = Compactor(self, compactor) if compactor is not None else None
        if self.compactor is not None:
            network.register(self.compactor.endpoint, lambda src, payload: None)

    def _make_handler(self, c: LeaseClient) -> Callable[[str, object], None]:
        def handle(src: str, payload: object) -> None:
            if type(payload) is ClientReply:
                self.reply_node = src
                c.on_reply(payload)

        return handle

    def set_nodes(self, node_ids: Sequence[str]) -> None:
        self.node_ids = tuple(sorted(node_ids))
        self.node_set = frozenset(self.node_ids)

    def start(self) -> None:
        for c in self.clients:
            c.start(self.clock.now + self.rng.randrange(300_000))
        if self.compactor is not None:
            self.compactor.start(self.clock.now + seconds(1))
