"""Concurrent clients that record a history: reads, unique writes and compare-and-set,
and (``txn``) range reads, transactions, delete-ranges and compactions.

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
5. **Multi-key operations** (``txn``) use the fixed keys :data:`TXN_KEYS`
   (two prefixes of three keys), which single-key operations never write; they
   may read the single-key keys. They are checked by their revisions
   (:mod:`raftkv.history.revisions`), not per key. The HTTP forms they use are in
   :func:`range_path`, :func:`txn_request` and :func:`listing_of` -- the one place
   that knows the ``/v1`` shapes of ranges and transactions.

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
from raftkv.history.linearizability import FAIL, INFO, OK, Operation
from raftkv.history.revhistory import command_from_json, command_to_json
from raftkv.jepsen.nodes import Cluster
from raftkv.replica.kv import (
    ERR_COMPACTED,
    ERR_FUTURE_REVISION,
    Command,
    Compact,
    Compare,
    DeleteRange,
    Item,
    KeyRange,
    KVResult,
    Listing,
    Range,
    Txn,
    TxnDelete,
    TxnOp,
    TxnPut,
    TxnRange,
    json_text,
)

__all__ = [
    "Attempt",
    "OpRecord",
    "WorkloadConfig",
    "Workload",
    "FINAL_READ_CLIENT",
    "SINGLE_KEY_KINDS",
    "MULTI_KEY_KINDS",
    "TXN_KEYS",
    "range_path",
    "txn_request",
    "listing_of",
    "refusal_of",
]

FINAL_READ_CLIENT = 10_000
"""Final reads on node ``nK`` are recorded as client ``FINAL_READ_CLIENT + K``."""

SINGLE_KEY_KINDS = frozenset({"get", "put", "cas"})
"""Kinds checked per key (linearizability) and against the log's values."""
MULTI_KEY_KINDS = frozenset({"range", "txn", "delete_range", "compact"})
"""Kinds checked by their revisions only."""
TXN_PREFIXES = ("t/a/", "t/b/")
TXN_KEYS = tuple(f"{p}{i}" for p in TXN_PREFIXES for i in (1, 2, 3))
_KNOWN_REVISIONS = 8


# ----------------------------------------------------------------------------- /v1 shapes


def _range_json(kr: KeyRange) -> dict[str, Any]:
    body: dict[str, Any] = {"key": kr.key}
    if kr.prefix:
        body["prefix"] = True
    elif kr.range_end is not None:
        body["range_end"] = kr.range_end
    return body


def range_path(cmd: Range) -> str:
    """``GET`` path of a prefix range read: ``/v1/kv?prefix=P[&limit=N][&revision=R]``."""
    assert cmd.range.prefix, "the /v1 API lists prefixes"
    path = f"/v1/kv?prefix={quote(cmd.range.key, safe='')}"
    if cmd.limit:
        path += f"&limit={cmd.limit}"
    if cmd.revision:
        path += f"&revision={cmd.revision}"
    return path


def _txn_op_json(op: TxnOp) -> dict[str, Any]:
    if isinstance(op, TxnPut):
        return {"put": {"key": op.key, "value": op.value}}
    if isinstance(op, TxnDelete):
        return {"delete": {**_range_json(op.range), "prev_kv": op.prev_kv}}
    body = _range_json(op.range)
    if op.limit:
        body["limit"] = op.limit
    return {"range": body}


def txn_request(cmd: Txn) -> dict[str, Any]:
    """The ``POST /v1/txn`` body of a transaction.

    ``{"compare": [{"key", "prefix"|"range_end", "target", "op", "value"}],
    "success": [op...], "failure": [op...]}`` with ops ``{"put": {"key",
    "value"}}``, ``{"delete": {"key", "prefix"|"range_end", "prev_kv"}}`` and
    ``{"range": {"key", "prefix"|"range_end", "limit"}}`` (docs/api.md).
    """
    return {
        "compare": [
            {**_range_json(c.range), "target": c.target, "op": c.cmp, "value": c.value}
            for c in cmd.compares
        ],
        "success": [_txn_op_json(op) for op in cmd.success],
        "failure": [_txn_op_json(op) for op in cmd.failure],
    }


def listing_of(body: Any) -> Listing | None:
    """A range read's answer ``{"kvs": [...], "count", "more", "revision"}``; ``None``
    if ``body`` is not one."""
    if (
        not isinstance(body, dict)
        or "error" in body  # a refusal also says the store's revision
        or "count" not in body
        or not isinstance(body.get("revision"), int)
    ):
        return None
    try:
        items = tuple(
            Item(
                key=str(kv["key"]),
                value_json=json_text(kv["value"]) if "value" in kv else b"",
                create_revision=int(kv["create_revision"]),
                mod_revision=int(kv["mod_revision"]),
                version=int(kv["version"]),
            )
            for kv in body.get("kvs", ())
        )
        return Listing(
            index=int(body.get("index", 0)),
            revision=body["revision"],
            items=items,
            count=int(body.get("count", len(items))),
            more=bool(body.get("more", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def refusal_of(body: Any) -> KVResult | None:
    """A read refused for its revision (compacted, or a future one), as the
    state machine answers it; ``None`` if ``body`` is not such a refusal or
    does not say the store's revision."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None
    error = body["error"]
    revision = body.get("revision")
    if not isinstance(revision, int):
        return None
    if error == ERR_COMPACTED:
        compact = body.get("compact_revision")
        return KVResult(
            ok=False,
            index=0,
            revision=revision,
            error=ERR_COMPACTED,
            compact_revision=compact if isinstance(compact, int) else 0,
        )
    if error == ERR_FUTURE_REVISION:
        return KVResult(ok=False, index=0, revision=revision, error=ERR_FUTURE_REVISION)
    return None


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
    txn: bool = False
    """Also issue range reads, transactions, delete-ranges and compactions."""
    multi_ratio: float = 0.35
    """With ``txn``: the share of operations that are multi-key."""


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
    command: Command | None = None
    """A multi-key operation's command (single-key ones: ``kind``, ``key``...)."""
    answer: Any = None
    """The JSON body of the answer that settled it (for the revision check)."""

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
            "command": None if self.command is None else command_to_json(self.command),
            "answer": self.answer,
            "attempts": [a.to_json() for a in self.attempts],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> OpRecord:
        """The inverse of :meth:`to_json` (ops.jsonl)."""
        command = obj.get("command")
        return cls(
            op_id=int(obj["op_id"]),
            client=int(obj["client"]),
            kind=str(obj["kind"]),
            key=str(obj["key"]),
            call=float(obj["call"]),
            value=obj.get("value"),
            expect=obj.get("expect"),
            ret=obj.get("ret"),
            status=str(obj["status"]),
            output=obj.get("output"),
            found=bool(obj.get("found", True)),
            session=obj.get("session"),
            index=obj.get("index"),
            attempts=[Attempt(**a) for a in obj.get("attempts", ())],
            resolution=str(obj.get("resolution", "")),
            final=bool(obj.get("final", False)),
            pending=bool(obj.get("pending", False)),
            command=None if command is None else command_from_json(command),
            answer=obj.get("answer"),
        )


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
        revisions: list[int] = []  # the newest revisions this client saw
        while not stop.is_set():
            if cfg.txn and rng.random() < cfg.multi_ratio:
                node = rng.choice(self.cluster.node_ids)
                cmd = self._draw_multi(rng, revisions)
                if isinstance(cmd, Range):
                    rec = await self._range(i, node, cmd)
                else:
                    seq += 1
                    rec = await self._multi_write(i, rng, node, cmd, f"{client_id}/{seq}")
                _learn(revisions, rec.answer)
                continue
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

    def _draw_multi(self, rng: random.Random, revisions: list[int]) -> Command:
        """A range read, a transaction, a delete-range or a compaction of :data:`TXN_KEYS`."""
        prefixes = [KeyRange(key=p, prefix=True) for p in TXN_PREFIXES]
        roll = rng.random()
        if roll < 0.03 and len(revisions) > 1:
            return Compact(revision=revisions[rng.randrange(len(revisions) - 1)], time_ms=0)
        if roll < 0.4:
            gen = int((self.clock() - self._t0) // self.config.key_period)
            target = rng.choice([*prefixes, KeyRange(key=f"g{gen}k", prefix=True)])
            old = revisions[rng.randrange(len(revisions))] if revisions else 0
            return Range(
                range=target,
                revision=old if rng.random() < 0.25 else 0,
                limit=rng.randint(1, 3) if rng.random() < 0.2 else 0,
                time_ms=0,
            )
        if roll < 0.52:
            return DeleteRange(range=rng.choice(prefixes), time_ms=0)
        compares = []
        for _ in range(rng.randrange(3)):
            prefix = rng.choice(prefixes)
            if rng.random() < 0.6:
                seen = revisions[rng.randrange(len(revisions))] if revisions else 1
                compares.append(
                    Compare(range=prefix, target="mod_revision", cmp="<", value=seen + 1)
                )
            else:
                compares.append(Compare(range=prefix, target="version", cmp=">", value=0))
        if rng.random() < 0.2:
            reads: tuple[TxnOp, ...] = (TxnRange(range=prefixes[0]), TxnRange(range=prefixes[1]))
            return Txn(compares=tuple(compares), success=reads, failure=reads[:1], time_ms=0)
        success: list[TxnOp] = [
            TxnPut(key=key, value=self._fresh_value()) for key in rng.sample(TXN_KEYS, 2)
        ]
        success.append(TxnRange(range=rng.choice(prefixes)))
        failure: list[TxnOp] = [TxnRange(range=rng.choice(prefixes))]
        return Txn(
            compares=tuple(compares), success=tuple(success), failure=tuple(failure), time_ms=0
        )

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
            rec.answer = body
            self.latest[key] = rec.output
        elif status == 404 and error_text == "not found":
            rec.status, rec.ret, rec.found, rec.output = OK, now, False, None
            rec.index = body.get("index") if isinstance(body, dict) else None
            rec.answer = body
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
        rec = self._new_op(client, kind, key, value=value, session=session)
        if kind == "cas":
            rec.expect = expect
            method, path = "POST", f"/v1/kv/{quote(key, safe='')}/cas"
            body: Any = {"expect": expect, "value": value}
        else:
            method, path, body = "PUT", f"/v1/kv/{quote(key, safe='')}", value

        def settle(status: int, answer: Any, error_text: Any) -> bool:
            if status == 200:
                rec.output = True if kind == "cas" else None
                self.latest[key] = value
                return True
            if status == 409 and kind == "cas" and error_text == "conflict":
                rec.output = False
                if isinstance(answer, dict) and answer.get("found") and "current" in answer:
                    self.latest[key] = answer.get("current")  # not in a replay
                return True
            return False

        return await self._attempts(rec, rng, node_id, method, path, body, settle)

    async def _multi_write(
        self, client: int, rng: random.Random, node_id: NodeId, cmd: Command, session: str
    ) -> OpRecord:
        """A transaction, delete-range or compaction, retried like a write."""
        if isinstance(cmd, Txn):
            kind, method, path, body = "txn", "POST", "/v1/txn", txn_request(cmd)
        elif isinstance(cmd, DeleteRange):
            kind, method, body = "delete_range", "DELETE", None
            path = f"/v1/kv?prefix={quote(cmd.range.key, safe='')}"
        else:
            assert isinstance(cmd, Compact)
            kind, method, path, body = "compact", "POST", "/v1/compact", {"revision": cmd.revision}
        rec = self._new_op(client, kind, "", session=session, command=cmd)

        def settle(status: int, answer: Any, error_text: Any) -> bool:
            if status == 200:
                rec.output = True
                return True
            refused = error_text in (ERR_COMPACTED, ERR_FUTURE_REVISION)
            if kind == "compact" and 400 <= status < 500 and refused:
                rec.output = False  # refused for its revision: executed, no effect
                return True
            return False

        return await self._attempts(rec, rng, node_id, method, path, body, settle)

    async def _range(self, client: int, node_id: NodeId, cmd: Range) -> OpRecord:
        """A range read: one attempt (reads change nothing)."""
        rec = self._new_op(client, "range", cmd.range.key, command=cmd)
        path = range_path(cmd)
        if self.config.stale_reads:
            path += "&consistency=stale"
        rec.call = self.clock()
        status, body, error = await self._request(
            "GET", node_id, path, timeout=self.config.attempt_timeout
        )
        now = self.clock()
        rec.attempts.append(Attempt(node_id, rec.call, now, status, error))
        if (status == 200 and listing_of(body) is not None) or (
            400 <= status < 500 and refusal_of(body) is not None
        ):
            rec.status, rec.ret, rec.answer = OK, now, body
        elif status in (400, 404, 405) and refusal_of(body) is None:
            raise HarnessError(f"GET {path} -> {status} {body!r}")
        else:
            rec.status = FAIL
        rec.pending = False
        return rec

    async def _attempts(
        self,
        rec: OpRecord,
        rng: random.Random,
        node_id: NodeId,
        method: str,
        path: str,
        body: Any,
        settle: Callable[[int, Any, Any], bool],
    ) -> OpRecord:
        """Send a write until a definite answer (``settle`` says which are) or its deadline.

        Module rule 2: an answer ``settle`` accepts makes it ``ok``; without one it
        is ``fail`` only if no attempt may have been applied, else ``info``.
        """
        cfg = self.config
        assert rec.session is not None
        headers = {"Idempotency-Key": rec.session}
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
            if settle(status, answer, error_text):
                rec.status, rec.ret, rec.answer = OK, now, answer
                rec.index = answer.get("index") if isinstance(answer, dict) else None
                rec.pending = False
                return rec
            if status in (400, 404, 405, 413):
                raise HarnessError(f"{method} {path} -> {status} {answer!r}")
            if status == 409:  # "stale sequence": impossible for a sequential client
                self.anomalies.append(f"op {rec.op_id} {rec.session}: {status} {answer!r}")
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


def _learn(revisions: list[int], answer: Any) -> None:
    """Keep the newest revisions a client saw (ascending, at most a few)."""
    revision = answer.get("revision") if isinstance(answer, dict) else None
    if isinstance(revision, int) and (not revisions or revision > revisions[-1]):
        revisions.append(revision)
        if len(revisions) > _KNOWN_REVISIONS:
            del revisions[0]
