"""Lease clients on real nodes (``raftkv jepsen --leases``).

Rules:

1. **A lease's life** is what a service holding a lock does: grant a lease
   (its own id, a TTL of 2-3 s, at least the nodes' minimum), attach one or two
   keys ``l/<client>/<j>`` with ``PUT ?lease=ID`` (a fifth of the time one is
   detached again by a put without the lease), keep it alive every third of its
   TTL for 1-6 s, then revoke it (30 %) or stop renewing and let it expire.
   A keep-alive answered 404 means the lease is gone (expired): the client
   starts a new lease.
2. **Time is the wall clock** (``time.time``), the clock the leader dates an
   expiry with (a ``LeaseRevoke(expired=True)`` entry carries its
   ``time_ms``). Every node and the harness read the same kernel clock. A
   grant or keep-alive counts from when its request was *sent* (the first
   attempt, for a retried grant): the leader restarted the TTL later than that.
3. **Writes are retried like the other clients' writes**: grants, puts and
   revokes carry an ``Idempotency-Key`` and are retried on random nodes until a
   definite answer or a deadline; a keep-alive (not a log entry) gets one
   attempt per node, and moves on to another node after a failure. Values are
   unique strings (``"L<client>.<n>"``), never the single-key workload's
   integers, so the history says exactly which put it saw.

Every request is recorded as a :class:`LeaseOp`; the check is
:mod:`raftkv.jepsen.feeds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from raftkv.core.types import NodeId
from raftkv.history.leasecheck import LeaseRecord
from raftkv.history.linearizability import FAIL, INFO, OK
from raftkv.jepsen.nodes import Cluster
from raftkv.jepsen.workload import HarnessError

__all__ = ["LeaseOp", "LeaseClientsConfig", "LeaseClients", "wall_us"]


def wall_us() -> int:
    """The wall clock in microseconds (rule 2)."""
    return time.time_ns() // 1000


@dataclass(slots=True)
class LeaseOp:
    """One grant, put, keep-alive or revoke as the client saw it.

    Attributes:
        kind: ``grant``, ``put``, ``keepalive`` or ``revoke``.
        sent_us: wall-clock send time of its first attempt.
        status: ``ok`` (a definite answer, ``answer`` is its body with the
            HTTP status under ``"status"``), ``fail`` (definitely not applied)
            or ``info`` (unknown).
    """

    kind: str
    lease_id: int
    sent_us: int
    session: str | None = None
    key: str = ""
    value: str | None = None
    attach: bool = True
    status: str = INFO
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseClientsConfig:
    seed: int
    clients: int
    min_ttl_s: int
    attempt_timeout: float = 1.5
    op_timeout: float = 5.0


class LeaseClients:
    """Runs the lease clients until told to stop (module rules)."""

    def __init__(
        self, cluster: Cluster, config: LeaseClientsConfig, clock: Callable[[], float]
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.records: list[LeaseRecord] = []
        """Every granted lease with the send times of its confirmed renewals."""
        self.ops: list[LeaseOp] = []
        self.stats: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    async def run(self, stop: asyncio.Event) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=5)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            try:
                await asyncio.gather(*(self._client(i, stop) for i in range(self.config.clients)))
            finally:
                self._session = None

    async def _request(
        self,
        method: str,
        node_id: NodeId,
        path: str,
        body: Any,
        headers: dict[str, str],
        timeout: float,
    ) -> tuple[int, Any, bool]:
        """``(status, JSON body, maybe_applied)``; status 0 without an answer."""
        assert self._session is not None
        try:
            async with self._session.request(
                method,
                self.cluster.url(node_id) + path,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(0.05, timeout)),
            ) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                return resp.status, payload, resp.status != 503 and resp.status >= 500
        except aiohttp.ClientConnectorError:
            return 0, None, False  # nothing was sent
        except (TimeoutError, aiohttp.ClientError, OSError):
            return 0, None, True

    async def _write(
        self, rng: random.Random, op: LeaseOp, method: str, path: str, body: Any
    ) -> LeaseOp:
        """Send until a definite answer (2xx, or 404/409 with a JSON error) or the deadline."""
        cfg = self.config
        assert op.session is not None
        headers = {"Idempotency-Key": op.session}
        deadline = self.clock() + cfg.op_timeout
        maybe = False
        backoff = 0.05
        node = rng.choice(self.cluster.node_ids)
        self.ops.append(op)
        while True:
            timeout = min(cfg.attempt_timeout, deadline - self.clock())
            status, answer, unknown = await self._request(
                method, node, path, body, headers, timeout
            )
            if status in (200, 404, 409) and isinstance(answer, dict):
                op.status, op.answer = OK, {**answer, "status": status}
                return op
            if status in (400, 405, 413):
                raise HarnessError(f"{method} {path} -> {status} {answer!r}")
            maybe = maybe or unknown
            if self.clock() + backoff >= deadline:
                break
            await asyncio.sleep(backoff * (0.5 + rng.random()))
            backoff = min(0.5, backoff * 2)
            node = rng.choice(self.cluster.node_ids)
        op.status = INFO if maybe else FAIL
        return op

    async def _client(self, i: int, stop: asyncio.Event) -> None:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}/lease/{i}")
        client_id = f"j{cfg.seed % 100000}L{i}"
        seq = n = 0

        def session() -> str:
            nonlocal seq
            seq += 1
            return f"{client_id}/{seq}"

        while not stop.is_set():
            n += 1
            lease_id = (i + 1) * 1_000_000 + n
            ttl = max(cfg.min_ttl_s, rng.choice((2, 3)))
            grant = await self._write(
                rng,
                LeaseOp("grant", lease_id, wall_us(), session()),
                "POST",
                "/v1/leases",
                {"ttl": ttl, "id": lease_id},
            )
            if grant.status != OK or grant.answer["status"] != 200:
                self.stats[f"grant-{grant.status}"] += 1
                await _sleep(stop, ttl + 1.0)  # if it was granted, it expires unrenewed
                continue
            self.stats["granted"] += 1
            record = LeaseRecord(lease_id=lease_id, ttl_s=int(grant.answer.get("ttl", ttl)))
            record.renewals.append(grant.sent_us)
            self.records.append(record)
            alive = await self._attach(rng, i, n, lease_id, session)
            if alive:
                alive = await self._keep_alive(
                    rng, record, self.clock() + rng.uniform(1.0, 6.0), stop
                )
            if not alive:
                self.stats["lost"] += 1
                continue
            if rng.random() < 0.3:
                revoke = await self._write(
                    rng,
                    LeaseOp("revoke", lease_id, wall_us(), session()),
                    "DELETE",
                    f"/v1/leases/{lease_id}",
                    None,
                )
                self.stats[f"revoke-{revoke.status}"] += 1
            else:
                self.stats["abandoned"] += 1
                await _sleep(stop, record.ttl_s + 0.5)

    async def _attach(
        self, rng: random.Random, i: int, n: int, lease_id: int, session: Callable[[], str]
    ) -> bool:
        """Put the lease's keys (rule 1); False if the lease is gone."""
        keys = [f"l/{i}/{j}" for j in range(1 + rng.randrange(2))]
        steps = [(key, True) for key in keys]
        if rng.random() < 0.2:
            steps.append((keys[0], False))
        for k, (key, attach) in enumerate(steps):
            value = f"L{i}.{n}.{k}"
            path = f"/v1/kv/{quote(key, safe='')}" + (f"?lease={lease_id}" if attach else "")
            op = LeaseOp("put", lease_id, wall_us(), session(), key=key, value=value, attach=attach)
            await self._write(rng, op, "PUT", path, value)
            self.stats[f"put-{op.status}"] += 1
            if op.status == OK and op.answer["status"] == 404:
                return False
        return True

    async def _keep_alive(
        self, rng: random.Random, record: LeaseRecord, until: float, stop: asyncio.Event
    ) -> bool:
        """Renew every third of the TTL until ``until``; False once the lease is gone."""
        cfg = self.config
        period = record.ttl_s / 3
        node = rng.choice(self.cluster.node_ids)
        while self.clock() < until and not stop.is_set():
            await _sleep(stop, period)
            tries_until = self.clock() + period
            while not stop.is_set():
                op = LeaseOp("keepalive", record.lease_id, wall_us())
                self.ops.append(op)
                timeout = min(cfg.attempt_timeout, period)
                status, answer, _ = await self._request(
                    "POST", node, f"/v1/leases/{record.lease_id}/keepalive", None, {}, timeout
                )
                if status == 200:
                    op.status, op.answer = OK, {**(answer or {}), "status": status}
                    record.renewals.append(op.sent_us)
                    self.stats["keepalives"] += 1
                    break
                if status == 404 and isinstance(answer, dict):
                    op.status, op.answer = OK, {**answer, "status": status}
                    return False
                op.status = FAIL
                self.stats["keepalive-failed"] += 1
                node = rng.choice(self.cluster.node_ids)
                if self.clock() >= tries_until:
                    break
                await asyncio.sleep(0.02 + 0.05 * rng.random())
        return True


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
