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

from raftkv.core.frozen import fast_init
from raftkv.history.linearizability import FAIL, INFO, OK, Operation
from raftkv.history.revhistory import RevOp
from raftkv.replica.kv import (
    ABSENT,
    Answer,
    Cas,
    Command,
    Compact,
    Compare,
    Delete,
    Deleted,
    DeleteRange,
    Get,
    InvalidCommand,
    KeyRange,
    KVResult,
    Listing,
    Put,
    Range,
    Session,
    Txn,
    TxnAnswer,
    TxnDelete,
    TxnOp,
    TxnPut,
    TxnRange,
    encode_command,
)
from raftkv.sim.clock import Clock, Micros
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
    result: Answer | None = None
    """The state machine's whole answer (with its revision), when ``ok``."""


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
    cmd: Command | None = None  # with txn: the command, for the revision history


_WEIGHTS = (("put", 30), ("get", 35), ("cas", 20), ("delete", 15))
_READ_KINDS = ("get", "range")
"""Kinds served through ReadIndex with ``reads``, and never retried."""
_SINGLE_KEY_KINDS = frozenset(("put", "get", "cas", "delete"))

# -- the multi-key workload (``txn``) -------------------------------------------
_SINGLE_KEY_SHARE = 45
"""Percent of a txn run's operations drawn from the single-key workload."""
_MULTI_WEIGHTS = (("range", 35), ("txn", 45), ("delete_range", 17), ("compact", 3))
TXN_PREFIXES = ("a/", "b/")
TXN_KEYS = tuple(f"{p}{i}" for p in TXN_PREFIXES for i in (1, 2, 3))
"""The keys multi-key operations write. Single-key operations use ``k1``...
(checked per key), which multi-key operations only read, so a per-key history
stays complete."""
_RANGES = (
    KeyRange(key="a/", prefix=True),
    KeyRange(key="b/", prefix=True),
    KeyRange(key="", prefix=True),
    KeyRange(key="a/2", range_end="b/2"),
    KeyRange(key="k", prefix=True),
    KeyRange(key="b/", range_end="\0"),
)
_WRITE_RANGES = (
    KeyRange(key="a/", prefix=True),
    KeyRange(key="b/", prefix=True),
    KeyRange(key="a/2", range_end="b/2"),
    KeyRange(key="a/3", range_end="b/"),
)
_SORTS = (("descend", "key"), ("ascend", "mod_revision"), ("descend", "version"))
_KNOWN_REVISIONS = 8


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
        # With txn: the newest revisions this client saw (ascending), and the
        # last value it saw of each key (drive compares and compactions).
        self._revisions: list[int] = []
        self._values: dict[str, Any] = {}

    def start(self, at: Micros) -> None:
        self._w.clock.call_at(at, self._issue)

    def _issue(self) -> None:
        w = self._w
        if w.clock.now >= w.stop_at or self._pending is not None:
            return
        rng = w.rng
        self._next_request += 1
        rid = self._next_request
        if w.txn and rng.randrange(100) >= _SINGLE_KEY_SHARE:
            kind, cmd = self._draw_multi(rid)
            p = _Pending(0, self.client_id, rid, kind, "", None, None, encode_command(cmd), 0, "")
            p.cmd = cmd
        else:
            p = self._draw_single(rid)
        node = self._target
        if node is None or rng.random() < 0.05:
            node = w.node_ids[rng.randrange(len(w.node_ids))]
        p.op_id = w.new_op_id()
        p.call = w.clock.now
        p.node = node
        self._pending = p
        if p.value is not None:
            w.last_written[p.key] = p.value
        self._send(p)

    def _draw_single(self, rid: int) -> _Pending:
        """A put, get, cas or delete of one of the keys ``k1``..."""
        w = self._w
        rng = w.rng
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
        cmd = command(self.client_id, rid, kind, key, value, expect, w.clock.now // 1000)
        p = _Pending(0, self.client_id, rid, kind, key, value, expect, encode_command(cmd), 0, "")
        if w.txn:
            p.cmd = cmd
        return p

    # -- the multi-key workload ----------------------------------------------

    def _draw_multi(self, rid: int) -> tuple[str, Command]:
        """A range read, a transaction, a delete-range or a compaction."""
        w = self._w
        rng = w.rng
        roll = rng.randrange(100)
        kind = "range"
        for name, weight in _MULTI_WEIGHTS:
            if roll < weight:
                kind = name
                break
            roll -= weight
        session = Session(client_id=session_id(self.client_id), seq=rid)
        time_ms = w.clock.now // 1000
        if kind == "compact" and len(self._revisions) > 1:
            # Rarely, and at a revision this client saw (not the newest).
            revision = self._revisions[rng.randrange(len(self._revisions) - 1)]
            return kind, Compact(revision=revision, time_ms=time_ms, session=session)
        if kind == "txn":
            return kind, self._draw_txn(rid, time_ms, session)
        if kind == "delete_range":
            chosen = rng.choice((*_WRITE_RANGES, None))
            kr = KeyRange(key=rng.choice(TXN_KEYS)) if chosen is None else chosen
            return kind, DeleteRange(
                range=kr, prev_kv=rng.random() < 0.5, time_ms=time_ms, session=session
            )
        revision = 0
        if self._revisions and rng.random() < 0.25:
            revision = self._revisions[rng.randrange(len(self._revisions))]
        order, by = "none", "key"
        if rng.random() < 0.1:
            order, by = rng.choice(_SORTS)
        return "range", Range(
            range=rng.choice(_RANGES),
            revision=revision,
            limit=rng.randint(1, 3) if rng.random() < 0.2 else 0,
            keys_only=rng.random() < 0.1,
            count_only=rng.random() < 0.05,
            sort_order=order,
            sort_target=by,
            time_ms=time_ms,
            session=session,
        )

    def _draw_txn(self, rid: int, time_ms: int, session: Session) -> Txn:
        rng = self._w.rng
        compares = tuple(self._draw_compare() for _ in range(rng.randrange(3)))
        if rng.random() < 0.2:
            # A read-only snapshot of both prefixes (one revision for both).
            reads: tuple[TxnOp, ...] = (
                TxnRange(range=_RANGES[0]),
                TxnRange(range=_RANGES[1], limit=rng.choice((0, 2))),
            )
            return Txn(
                compares=compares,
                success=reads,
                failure=reads[:1],
                time_ms=time_ms,
                session=session,
            )
        success: list[TxnOp] = []
        for j, key in enumerate(rng.sample(TXN_KEYS, rng.randint(1, 2))):
            success.append(TxnPut(key=key, value=self.client_id * 1_000_000 + rid * 10 + j))
        if rng.random() < 0.4:
            success.insert(
                rng.randrange(len(success) + 1),
                TxnDelete(range=rng.choice(_WRITE_RANGES), prev_kv=rng.random() < 0.5),
            )
        if rng.random() < 0.5:
            success.append(TxnRange(range=rng.choice(_RANGES)))
        failure: list[TxnOp] = [TxnRange(range=rng.choice(_RANGES))]
        if rng.random() < 0.3:
            key = rng.choice(TXN_KEYS)
            failure.insert(0, TxnPut(key=key, value=self.client_id * 1_000_000 + rid * 10 + 9))
        try:
            return Txn(
                compares=compares,
                success=tuple(success),
                failure=tuple(failure),
                time_ms=time_ms,
                session=session,
            )
        except InvalidCommand:  # a delete covering a key the branch puts
            return Txn(
                compares=compares,
                success=tuple(op for op in success if not isinstance(op, TxnDelete)),
                failure=tuple(failure),
                time_ms=time_ms,
                session=session,
            )

    def _draw_compare(self) -> Compare:
        """A guard that holds often enough to be interesting: over a prefix
        (unchanged since a revision this client saw, every key present, no key
        holding a value) or on one key (its value, version or creation)."""
        rng = self._w.rng
        roll = rng.randrange(100)
        prefix = rng.choice(_RANGES[:2])
        if roll < 35:
            seen = self._revisions[-1] if self._revisions else 1
            since = rng.choice(self._revisions) if self._revisions else 1
            return Compare(
                range=prefix, target="mod_revision", cmp="<", value=rng.choice((seen, since)) + 1
            )
        if roll < 50:
            return Compare(range=prefix, target="version", cmp=">", value=0)
        key = rng.choice(TXN_KEYS) if rng.random() < 0.8 else rng.choice(self._w.keys)
        if roll < 75:
            value = self._values.get(key, self.client_id)
            return Compare(
                range=KeyRange(key=key), target="value", cmp=rng.choice(("==", "!=")), value=value
            )
        if roll < 85 and self._values:
            value = self._values[rng.choice(sorted(self._values))]
            return Compare(range=prefix, target="value", cmp="!=", value=value)
        target = rng.choice(("version", "create_revision"))
        return Compare(
            range=KeyRange(key=key),
            target=target,
            cmp=rng.choice(("==", ">")),
            value=rng.randrange(3),
        )

    def _learn(self, answer: Answer | None) -> None:
        """Remember the revisions and values an answer shows."""
        if answer is None:
            return
        revision = answer.revision
        revisions = self._revisions
        if not revisions or revision > revisions[-1]:
            revisions.append(revision)
            if len(revisions) > _KNOWN_REVISIONS:
                del revisions[0]
        if isinstance(answer, KVResult):
            if answer.item is not None and answer.item.value_json:
                self._values[answer.item.key] = answer.item.value
        elif isinstance(answer, Listing):
            for item in answer.items:
                if item.value_json:
                    self._values[item.key] = item.value
        elif isinstance(answer, TxnAnswer):
            for response in answer.responses:
                if isinstance(response, Listing):
                    self._learn(response)
        elif isinstance(answer, Deleted):
            for item in answer.prev:
                self._values.pop(item.key, None)

    def _send(self, p: _Pending) -> None:
        w = self._w
        w.network.send(
            self.endpoint,
            p.node,
            ClientRequest(
                client_id=self.client_id,
                request_id=p.request_id,
                data=p.data,
                read=w.reads and p.kind in _READ_KINDS,
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
            if w.txn:
                self._learn(reply.result)
            w.record(p, OK, w.clock.now, output, reply.found, reply.result)
            self._target = p.node
            w.clock.call_later(w.think(), self._issue)
        elif p.attempts > 1 and kind not in _READ_KINDS:
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
        if p.kind not in _READ_KINDS and self._retry(p, None):
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
        txn: besides the single-key operations, issue range reads,
            transactions, delete-ranges and compactions (on :data:`TXN_KEYS`),
            and record every operation with its answer in :attr:`rev_history`.
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
        txn: bool = False,
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
        self.txn = txn
        self.history: list[Operation] = []
        """The single-key operations (for the per-key linearizability check)."""
        self.rev_history: list[RevOp] = []
        """With ``txn``: every operation with its answer (for the revision check)."""
        self.kinds: Counter[str] = Counter()
        """With ``txn``: answered operations by kind (``txn-read-only`` and
        ``txn-failed`` too)."""
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
        self,
        resolve: Callable[[int, int], tuple[Micros, Outcome, Answer] | None] | None = None,
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
        guess). ``status`` keeps counting what the clients saw. A resolved
        operation's answer (for :attr:`rev_history`) is the first application's.
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
                when, (output, found), answer = outcome
                self.resolved["applied"] += 1
                output = None if p.kind == "put" else output
                self._append(p, OK, max(when, p.call), output, found, answer)
        self._unknown.clear()
        self.history.sort(key=lambda op: op.op_id)
        self.rev_history.sort(key=lambda op: op.op_id)
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
        self,
        p: _Pending,
        status: str,
        ret: Micros | None,
        output: Any,
        found: bool,
        answer: Answer | None = None,
    ) -> None:
        self.status[status] += 1
        self._append(p, status, ret, output, found, answer)

    def _append(
        self,
        p: _Pending,
        status: str,
        ret: Micros | None,
        output: Any,
        found: bool,
        answer: Answer | None = None,
    ) -> None:
        if self.txn:
            assert p.cmd is not None
            ok = status == OK and answer is not None
            self.rev_history.append(
                RevOp(
                    op_id=p.op_id,
                    client_id=p.client_id,
                    command=p.cmd,
                    call=p.call,
                    ret=ret if ok else None,
                    status=status if ok or status != OK else INFO,
                    answer=answer if ok else None,
                )
            )
            if ok:
                self._count(p.kind, answer)
            if p.kind not in _SINGLE_KEY_KINDS:
                return
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

    def _count(self, kind: str, answer: Answer | None) -> None:
        self.kinds[kind] += 1
        if isinstance(answer, TxnAnswer):
            if not answer.succeeded:
                self.kinds["txn-failed"] += 1
            if answer.responses and all(isinstance(r, Listing) for r in answer.responses):
                self.kinds["txn-read-only"] += 1
        elif (
            isinstance(answer, KVResult)
            and answer.error is not None
            and kind
            in (
                "range",
                "compact",
            )
        ):
            self.kinds[f"{kind}-refused"] += 1

    def _on_message(self, src: str, payload: object) -> None:
        if isinstance(payload, ClientReply):
            client = self._by_endpoint.get(client_endpoint(payload.client_id))
            if client is not None:
                client.on_reply(payload)
