"""Concurrent clients that record a history: reads, unique writes and compare-and-set.

Rules:

1. **One logical operation, one record.** A client has one operation in flight.
   A write carries ``Idempotency-Key: CLIENT/SEQ`` and is retried with the same
   key on random nodes until it gets a definite answer or its deadline passes.
   Its interval is ``[call of the first attempt, answer]``: whichever attempt
   applied it, that happened inside the interval.
2. **Outcomes are classified conservatively.** A definite answer (200, a cas
   409 ``conflict``) is ``ok``. An operation that never got one is ``fail``
   only when *every* attempt was definitely not applied (connection refused, or
   503: "nothing happened", DESIGN.md); if any attempt may have reached a
   leader (timeout, dropped connection, 5xx other than 503) it is ``info``.
   A read has one attempt; a read that fails is ``fail`` (reads change nothing).
   The analysis later checks these claims against the replicated log.
3. **Values are unique.** Every put and cas writes an integer no other
   operation writes, so the log and the reads say exactly which write they saw.
4. **Keys rotate.** Every ``key_period`` seconds the clients move to a fresh
   set of ``keys`` keys, which bounds each key's history (the checker's search
   is per key). Every key ever used is read at the end, on every node.

Randomness comes from ``random.Random(f"{seed}/client/{i}")``; a seed fixes each
client's choices, not the timing of a real cluster.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from raftkv.core.types import NodeId
from raftkv.jepsen.nodes import Cluster
from raftkv.sim.linearizability import FAIL, INFO, OK, Operation

__all__ = ["Attempt", "OpRecord", "WorkloadConfig", "Workload", "FINAL_READ_CLIENT"]

FINAL_READ_CLIENT = 10_000
"""Final reads on node ``nK`` are recorded as client ``FINAL_READ_CLIENT + K``."""


class HarnessError(Exception):
    """The harness itself misbehaved (e.g. the server rejected a well-formed request)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    seed: int
    clients: int = 10
    keys: int = 4
    key_period: float = 15.0
    read_ratio: float = 0.4
    write_ratio: float = 0.4
    """The rest are compare-and-set."""
    attempt_timeout: float = 1.5
    op_timeout: float = 5.0
    stale_reads: bool = False
    """UNSAFE: read with ``?consistency=stale`` (served from local state)."""


@dataclass(slots=True)
class Attempt:
    node: str
    start: float
    end: float
    status: int
    """HTTP status; 0 when there was no answer."""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "status": self.status,
            "error": self.error,
        }


@dataclass(slots=True)
class OpRecord:
    """One logical client operation as the harness saw it (plus its resolution)."""

    op_id: int
    client: int
    kind: str
    key: str
    call: float
    value: Any = None
    expect: Any = None
    ret: float | None = None
    status: str = INFO
    output: Any = None
    found: bool = True
    session: str | None = None
    """``CLIENT/SEQ``, the Idempotency-Key of a write."""
    index: int | None = None
    """The log index the server answered with."""
    attempts: list[Attempt] = field(default_factory=list)
    resolution: str = ""
    """How the analysis settled an ``info`` write: ``applied@INDEX`` or ``never-applied``."""
    final: bool = False
    pending: bool = True
    """Still in flight (its status is not settled yet)."""

    def to_operation(self) -> Operation:
        return Operation(
            op_id=self.op_id,
            client_id=self.client,
            key=self.key,
            kind=self.kind,
            value=self.value,
            expect=self.expect,
            call=self.call,
            ret=self.ret if self.status == OK else None,
            status=self.status,
            output=self.output if self.status == OK else None,
            found=self.found,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "op_id": self.op_id,
            "client": self.client,
            "kind": self.kind,
            "key": self.key,
            "value": self.value,
            "expect": self.expect,
            "call": round(self.call, 6),
            "ret": None if self.ret is None else round(self.ret, 6),
            "status": self.status,
            "output": self.output,
            "found": self.found,
            "session": self.session,
            "index": self.index,
            "resolution": self.resolution,
            "final": self.final,
            "pending": self.pending,
            "attempts": [a.to_json() for a in self.attempts],
        }


class Workload:
    """Runs the clients against ``cluster``; the records accumulate in :attr:`ops`."""

    def __init__(
        self, cluster: Cluster, config: WorkloadConfig, clock: Callable[[], float]
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.clock = clock
        self.ops: list[OpRecord] = []
        self.keys_used: list[str] = []
        self.latest: dict[str, Any] = {}
        self.anomalies: list[str] = []
        self._next_op = 0
        self._next_value = 0
        self._session: aiohttp.ClientSession | None = None
        self._t0 = 0.0

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        """Run every client until ``stop`` is set; in-flight operations finish first."""
        self._t0 = self.clock()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=5)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            try:
                await asyncio.gather(*(self._client(i, stop) for i in range(self.config.clients)))
            finally:
                self._session = None

    async def final_reads(self, nodes: list[NodeId], deadline_s: float = 15.0) -> int:
        """Read every key used, on each of ``nodes`` (linearizable, retried); return the misses."""
        failed = 0
        async with aiohttp.ClientSession() as session:
            self._session = session
            try:

                async def on_node(node_id: NodeId) -> int:
                    misses = 0
                    client = FINAL_READ_CLIENT + int(node_id.removeprefix("n"))
                    for key in list(self.keys_used):
                        end = time.monotonic() + deadline_s
                        while True:
                            rec = await self._read(client, node_id, key, final=True)
                            if rec.status == OK or time.monotonic() > end:
                                misses += rec.status != OK
                                break
                            await asyncio.sleep(0.1)
                    return misses

                failed = sum(await asyncio.gather(*(on_node(n) for n in nodes)))
            finally:
                self._session = None
        return failed

    # ------------------------------------------------------------------ clients

    def _new_op(self, client: int, kind: str, key: str, **kw: Any) -> OpRecord:
        rec = OpRecord(op_id=self._next_op, client=client, kind=kind, key=key, call=0.0, **kw)
        self._next_op += 1
        self.ops.append(rec)
        return rec

    def _fresh_value(self) -> int:
        self._next_value += 1
        return self._next_value

    def _key(self, rng: random.Random) -> str:
        gen = int((self.clock() - self._t0) // self.config.key_period)
        key = f"g{gen}k{rng.randrange(self.config.keys)}"
        if key not in self.latest:
            self.latest[key] = None
            self.keys_used.append(key)
        return key

    async def _client(self, i: int, stop: asyncio.Event) -> None:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}/client/{i}")
        client_id = f"j{cfg.seed % 100000}c{i}"
        seq = 0
        while not stop.is_set():
            key = self._key(rng)
            node = rng.choice(self.cluster.node_ids)
            r = rng.random()
            if r < cfg.read_ratio:
                await self._read(i, node, key)
                continue
            seq += 1
            session = f"{client_id}/{seq}"
            value = self._fresh_value()
            if r < cfg.read_ratio + cfg.write_ratio:
                await self._write(i, rng, node, "put", key, value, None, session)
            else:
                await self._write(i, rng, node, "cas", key, value, self.latest.get(key), session)

    # ------------------------------------------------------------------ requests

    async def _request(
        self,
        method: str,
        node_id: NodeId,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> tuple[int, Any, str]:
        """``(status, JSON body, error)``; without an answer status is 0 and error says why."""
        assert self._session is not None
        url = self.cluster.url(node_id) + path
        try:
            async with self._session.request(
                method,
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(0.05, timeout)),
            ) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                return resp.status, payload, ""
        except aiohttp.ClientConnectorError as exc:  # nothing was sent
            return 0, None, f"refused: {exc.os_error}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return 0, None, f"unknown: {type(exc).__name__} {exc}".strip()

    async def _read(self, client: int, node_id: NodeId, key: str, final: bool = False) -> OpRecord:
        rec = self._new_op(client, "get", key, final=final)
        path = f"/v1/kv/{quote(key, safe='')}"
        if self.config.stale_reads and not final:
            path += "?consistency=stale"
        rec.call = self.clock()
        status, body, error = await self._request(
            "GET", node_id, path, timeout=self.config.attempt_timeout
        )
        now = self.clock()
        rec.attempts.append(Attempt(node_id, rec.call, now, status, error))
        error_text = body.get("error") if isinstance(body, dict) else None
        if status == 200 and isinstance(body, dict):
            rec.status, rec.ret, rec.found, rec.output = OK, now, True, body.get("value")
            rec.index = body.get("index")
            self.latest[key] = rec.output
        elif status == 404 and error_text == "not found":
            rec.status, rec.ret, rec.found, rec.output = OK, now, False, None
            rec.index = body.get("index") if isinstance(body, dict) else None
        else:
            rec.status = FAIL
        rec.pending = False
        return rec

    async def _write(
        self,
        client: int,
        rng: random.Random,
        node_id: NodeId,
        kind: str,
        key: str,
        value: int,
        expect: Any,
        session: str,
    ) -> OpRecord:
        cfg = self.config
        rec = self._new_op(client, kind, key, value=value, session=session)
        if kind == "cas":
            rec.expect = expect
            method, path = "POST", f"/v1/kv/{quote(key, safe='')}/cas"
            body: Any = {"expect": expect, "value": value}
        else:
            method, path, body = "PUT", f"/v1/kv/{quote(key, safe='')}", value
        headers = {"Idempotency-Key": session}
        rec.call = self.clock()
        deadline = rec.call + cfg.op_timeout
        maybe_applied = False
        backoff = 0.05
        while True:
            start = self.clock()
            timeout = min(cfg.attempt_timeout, deadline - start)
            status, answer, error = await self._request(
                method, node_id, path, body=body, headers=headers, timeout=timeout
            )
            now = self.clock()
            rec.attempts.append(Attempt(node_id, start, now, status, error))
            error_text = answer.get("error") if isinstance(answer, dict) else None
            if status == 200:
                rec.status, rec.ret = OK, now
                rec.output = True if kind == "cas" else None
                rec.index = answer.get("index") if isinstance(answer, dict) else None
                self.latest[key] = value
                rec.pending = False
                return rec
            if status == 409 and kind == "cas" and error_text == "conflict":
                rec.status, rec.ret, rec.output = OK, now, False
                if isinstance(answer, dict):
                    rec.index = answer.get("index")
                    if answer.get("found") and "current" in answer:  # not in a replay
                        self.latest[key] = answer.get("current")
                rec.pending = False
                return rec
            if status in (400, 404, 405, 413):
                raise HarnessError(f"{method} {path} -> {status} {answer!r}")
            if status == 409:  # "stale sequence": impossible for a sequential client
                self.anomalies.append(f"op {rec.op_id} {session}: {status} {answer!r}")
                maybe_applied = True
            elif status == 503 or error.startswith("refused"):
                pass  # this attempt was definitely not applied
            else:
                maybe_applied = True
            if now + backoff >= deadline:
                break
            await asyncio.sleep(backoff * (0.5 + rng.random()))
            backoff = min(0.5, backoff * 2)
            node_id = rng.choice(self.cluster.node_ids)
        rec.status = INFO if maybe_applied else FAIL
        rec.pending = False
        return rec
