"""Simulated clients that issue KV operations and record a checkable history.

Rule: each client has at most one operation outstanding. By default an
operation is sent exactly once: a timeout records it as ``info`` (outcome
unknown) and the client moves on with a *new* operation. With ``retries`` a
timed-out write is sent again -- to another node, under the *same* request id,
as a real client with a session does (dissertation §6.3) -- and the replicated
session table must make it take effect at most once; once an attempt may have
been proposed, a later rejection no longer proves the operation failed, so it
is retried or recorded as ``info``, never ``fail``. A reply to anything but the
outstanding request is ignored. A definite rejection of a first attempt (the
node refused before proposing) is ``fail``. Client links lose messages like any
other but never duplicate them, so a rejected request cannot come back to life
through a stray copy.

With ``reads`` a ``get`` is not proposed: it asks the node for a ReadIndex
(dissertation §6.4; followers forward it to the leader) and is answered from
the node's state machine once that has applied the read index.

Requests carry the server's own commands (:mod:`raftkv.replica.kv`, with a
session ``c<client>/<request id>``), so the replicas apply exactly what a real
node applies.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raftkv.core._frozen import fast_init
from raftkv.replica.kv import ABSENT, Cas, Command, Delete, Get, Put, Session, encode_command
from raftkv.sim.clock import Clock, Micros
from raftkv.sim.linearizability import FAIL, INFO, OK, Operation
from raftkv.sim.network import Endpoint, Network


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRequest:
    """Client -> node: propose this command."""

    client_id: int
    request_id: int
    data: bytes
    read: bool = False
    """Serve this ``get`` through ReadIndex instead of proposing it."""


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientReply:
    """Node -> client: the outcome of a request.

    ``ok`` false means a definite rejection (not proposed); ``leader`` is the
    node's guess of the leader, if any.
    """

    client_id: int
    request_id: int
    ok: bool
    output: Any = None
    found: bool = True
    leader: str | None = None


Outcome = tuple[Any, bool]
"""What an applied operation returned to its client: ``(output, found)``;
``output`` is the value for a get (``found``: the key existed), whether it
took effect for a cas or a delete, ``None`` for a put."""


def client_endpoint(client_id: int) -> Endpoint:
    """The network endpoint of client ``client_id``."""
    return f"c{client_id}"


def session_id(client_id: int) -> str:
    """The session client id of simulated client ``client_id`` (its endpoint)."""
    return f"c{client_id}"


def command(
    client_id: int, request_id: int, kind: str, key: str, value: Any, expect: Any, time_ms: int
) -> Command:
    """The server command for one simulated operation (``expect=None``: absent)."""
    session = Session(client_id=session_id(client_id), seq=request_id)
    if kind == "put":
        return Put(key=key, value=value, time_ms=time_ms, session=session)
    if kind == "get":
        return Get(key=key, time_ms=time_ms, session=session)
    if kind == "cas":
        expected = ABSENT if expect is None else expect
        return Cas(key=key, expect=expected, value=value, time_ms=time_ms, session=session)
    return Delete(key=key, time_ms=time_ms, session=session)


@dataclass(slots=True)
class _Pending:
    op_id: int
    client_id: int
    request_id: int
    kind: str
    key: str
    value: Any
    expect: Any  # cas: None = the key is absent
    data: bytes  # the encoded command
    call: Micros
    node: str
    attempts: int = 1


_WEIGHTS = (("put", 30), ("get", 35), ("cas", 20), ("delete", 15))


class Client:
    """One simulated client: issue, wait for a reply or a timeout, record, repeat."""

    def __init__(self, client_id: int, workload: Workload) -> None:
        self.client_id = client_id
        self.endpoint = client_endpoint(client_id)
        self._w = workload
        self._next_request = 0
        self._pending: _Pending | None = None
        self._target: str | None = None
        # The last value this client saw for each key (drives plausible cas).
        self._known: dict[str, Any] = {}

    def start(self, at: Micros) -> None:
        self._w.clock.call_at(at, self._issue)

    def _issue(self) -> None:
        w = self._w
        if w.clock.now >= w.stop_at or self._pending is not None:
            return
        rng = w.rng
        self._next_request += 1
        rid = self._next_request
        roll = rng.randrange(100)
        kind = "delete"
        for name, weight in _WEIGHTS:
            if roll < weight:
                kind = name
                break
            roll -= weight
        key = w.keys[rng.randrange(len(w.keys))]
        value: Any = None
        expect: Any = None
        if kind in ("put", "cas"):
            value = self.client_id * 1_000_000 + rid
        if kind == "cas":
            if key in self._known and rng.random() < 0.7:
                expect = self._known[key]
            elif rng.random() < 0.5:
                expect = None
            else:
                expect = w.last_written.get(key)
        data = encode_command(
            command(self.client_id, rid, kind, key, value, expect, w.clock.now // 1000)
        )
        node = self._target
        if node is None or rng.random() < 0.05:
            node = w.node_ids[rng.randrange(len(w.node_ids))]
        op_id = w.new_op_id()
        self._pending = _Pending(
            op_id, self.client_id, rid, kind, key, value, expect, data, w.clock.now, node
        )
        if value is not None:
            w.last_written[key] = value
        self._send(self._pending)

    def _send(self, p: _Pending) -> None:
        w = self._w
        w.network.send(
            self.endpoint,
            p.node,
            ClientRequest(
                client_id=self.client_id,
                request_id=p.request_id,
                data=p.data,
                read=w.reads and p.kind == "get",
            ),
            "ClientRequest",
            duplicate=False,
        )
        w.clock.call_later(w.timeout_us, self._timeout, p.request_id, p.attempts)

    def _retry(self, p: _Pending, node: str | None) -> bool:
        """Send ``p`` again (same request id) if it may; ``False`` when out of retries."""
        w = self._w
        if p.attempts > w.retries or w.clock.now >= w.stop_at:
            return False
        if node is None or node == p.node:
            others = [n for n in w.node_ids if n != p.node] or list(w.node_ids)
            node = others[w.rng.randrange(len(others))]
        p.attempts += 1
        p.node = node
        w.retried += 1
        self._send(p)
        return True

    def on_reply(self, reply: ClientReply) -> None:
        p = self._pending
        if p is None or reply.request_id != p.request_id:
            return
        w = self._w
        self._pending = None
        kind = p.kind
        if reply.ok:
            if kind == "get":
                if reply.found:
                    self._known[p.key] = reply.output
                else:
                    self._known.pop(p.key, None)
            elif kind == "put" or (kind == "cas" and reply.output is True):
                self._known[p.key] = p.value
            elif kind == "delete":
                self._known.pop(p.key, None)
            output = None if kind == "put" else reply.output
            w.record(p, OK, w.clock.now, output, reply.found)
            self._target = p.node
            w.clock.call_later(w.think(), self._issue)
        elif p.attempts > 1 and kind != "get":
            # An earlier attempt may still be in some log: not a definite failure.
            leader = reply.leader if reply.leader in w.node_set else None
            self._pending = p
            if not self._retry(p, leader):
                self._pending = None
                w.record_unknown(p)
                self._target = None
                w.clock.call_later(w.think(), self._issue)
        else:
            w.record(p, FAIL, w.clock.now, None, True)
            self._target = reply.leader if reply.leader in w.node_set else None
            w.clock.call_later(w.backoff(), self._issue)

    def _timeout(self, request_id: int, attempt: int = 1) -> None:
        p = self._pending
        if p is None or p.request_id != request_id or p.attempts != attempt:
            return
        w = self._w
        if p.kind != "get" and self._retry(p, None):
            return
        self._pending = None
        w.record_unknown(p)
        self._target = None
        w.clock.call_later(w.think(), self._issue)

    def abandon(self) -> None:
        """End of run: an outstanding operation's outcome is unknown."""
        p = self._pending
        if p is not None:
            self._pending = None
            self._w.record_unknown(p)


class Workload:
    """The clients of one run and the history they record.

    Args:
        clock: the simulation clock.
        network: the network the clients send on (they register themselves).
        rng: the workload's own RNG.
        node_ids: the nodes clients may contact.
        clients: how many clients.
        keys: how many keys (named ``k1``...).
        timeout_us: how long a client waits for a reply.
        think_us: mean pause between a reply and the next operation.
        stop_at: no operation is issued at or after this time.
        reads: serve ``get`` through ReadIndex instead of the log.
        retries: how many times a timed-out write is sent again under the
            same request id (0: never).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        network: Network,
        rng: random.Random,
        node_ids: Sequence[str],
        clients: int,
        keys: int,
        timeout_us: Micros,
        think_us: Micros,
        stop_at: Micros,
        reads: bool = False,
        retries: int = 0,
    ) -> None:
        self.clock = clock
        self.network = network
        self.rng = rng
        self.node_ids = tuple(sorted(node_ids))
        self.node_set = frozenset(self.node_ids)
        self.keys = tuple(f"k{i}" for i in range(1, keys + 1))
        self.timeout_us = timeout_us
        self.think_us = think_us
        self.stop_at = stop_at
        self.reads = reads
        self.retries = retries
        self.retried = 0
        """Requests sent again after a timeout or an ambiguous rejection."""
        self.history: list[Operation] = []
        self.status: Counter[str] = Counter()
        """Operations by the status the clients observed."""
        self.resolved: Counter[str] = Counter()
        """How :meth:`finish` resolved unknown outcomes."""
        self._unknown: list[_Pending] = []
        self.last_written: dict[str, Any] = {}
        self._op_ids = 0
        self.clients = [Client(i, self) for i in range(1, clients + 1)]
        for c in self.clients:
            network.register(c.endpoint, self._on_message)
        self._by_endpoint = {c.endpoint: c for c in self.clients}

    def set_nodes(self, node_ids: Sequence[str]) -> None:
        """The nodes clients may contact changed (a node joined or was retired)."""
        self.node_ids = tuple(sorted(node_ids))
        self.node_set = frozenset(self.node_ids)

    def start(self) -> None:
        """Schedule every client's first operation within the first 100 ms."""
        for c in self.clients:
            c.start(self.clock.now + self.rng.randrange(100_000))

    def finish(
        self, resolve: Callable[[int, int], tuple[Micros, Outcome] | None] | None = None
    ) -> list[Operation]:
        """Close the history and return it.

        Operations whose outcome the client never learned (timeouts, and those
        still outstanding now) are ``info`` -- unless ``resolve`` is given. The
        simulator can see what the clients cannot: ``resolve(client_id,
        request_id)`` returns when the command was *first applied by any node*
        and its result, or ``None`` if no node ever applied it. An operation
        never applied had no visible effect, so it becomes ``fail``; one that
        was applied becomes ``ok`` returning at its first application (which
        lies after its call, before any reply, and in log order -- a correct
        cluster's history stays linearizable, and the checker no longer has to
        guess). ``status`` keeps counting what the clients saw.
        """
        for c in self.clients:
            c.abandon()
        for p in self._unknown:
            if resolve is None:
                self._append(p, INFO, None, None, True)
                continue
            outcome = resolve(p.client_id, p.request_id)
            if outcome is None:
                self.resolved["never-applied"] += 1
                self._append(p, FAIL, None, None, True)
            else:
                when, (output, found) = outcome
                self.resolved["applied"] += 1
                self._append(p, OK, max(when, p.call), None if p.kind == "put" else output, found)
        self._unknown.clear()
        self.history.sort(key=lambda op: op.op_id)
        return self.history

    def new_op_id(self) -> int:
        self._op_ids += 1
        return self._op_ids

    def think(self) -> Micros:
        return int(self.rng.expovariate(1.0 / self.think_us)) if self.think_us > 0 else 0

    def backoff(self) -> Micros:
        return 10_000 + self.rng.randrange(40_000)

    def record_unknown(self, p: _Pending) -> None:
        """The client gave up on ``p``: its outcome is unknown (``info``)."""
        self.status[INFO] += 1
        self._unknown.append(p)

    def record(
        self, p: _Pending, status: str, ret: Micros | None, output: Any, found: bool
    ) -> None:
        self.status[status] += 1
        self._append(p, status, ret, output, found)

    def _append(
        self, p: _Pending, status: str, ret: Micros | None, output: Any, found: bool
    ) -> None:
        self.history.append(
            Operation(
                op_id=p.op_id,
                client_id=p.client_id,
                key=p.key,
                kind=p.kind,
                value=p.value,
                expect=p.expect,
                call=p.call,
                ret=ret,
                status=status,
                output=output if status == OK else None,
                found=found if status == OK else True,
            )
        )

    def _on_message(self, src: str, payload: object) -> None:
        if isinstance(payload, ClientReply):
            client = self._by_endpoint.get(client_endpoint(payload.client_id))
            if client is not None:
                client.on_reply(payload)
