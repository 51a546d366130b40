"""Linearizability checking of client histories (Wing & Gong / Lowe, as Porcupine).

Rule: a history is linearizable when every operation can be given one instant,
inside its own ``[call, ret]`` interval, at which it takes effect atomically, and
the resulting sequential run is legal for the model (Herlihy & Wing, 1990).

Approach, after Porcupine (github.com/anishathalye/porcupine):

* **P-compositionality.** Linearizability is local, so the history is split by
  the model (``KVModel``: one partition per key) and every partition is checked
  on its own. The history is linearizable iff every partition is.
* **Search.** Per partition, call and return events are sorted by time into a
  doubly linked list. A depth-first search linearizes, at each step, some
  operation whose call comes before the earliest pending return (the "minimal"
  operations), lifting it out of the list; when it meets a return event whose
  operation is not yet linearized it backtracks (Lowe's refinement of WGL).
  Candidates are tried in call order, ``ok`` operations before ``info`` ones.
* **Memoization.** A search state is (set of linearized operations as an int
  bitset, model state); a state that was already reached is never expanded
  again. Operations with an unknown outcome get a second bitset, and a state is
  also pruned when an earlier one had the same linearized ``ok`` operations and
  model state but a *subset* of its unknown operations, because leaving an
  unknown operation out is always allowed.
* **Unknown outcomes.** An ``info`` operation returns at +infinity: it may take
  effect at any instant after its call, or never. The search succeeds as soon
  as every ``ok`` operation is linearized. ``fail`` operations are dropped.
* **Time.** Operation A precedes B only when ``A.ret < B.call`` strictly; at
  equal times the two count as concurrent.
* **Bounded work.** ``max_steps`` bounds the search steps per partition; past it
  the partition's verdict is ``None`` ("unknown"), never a hang.

The checker is deterministic: no clocks or randomness, and every order it
depends on comes from sorting on (time, event kind, ``op_id``) or on keys.

Absent keys: a ``get`` of an absent key is recorded with ``found=False`` (and
``output=None``); ``found=True, output=None`` means the key holds JSON ``null``.
For ``cas``, ``expect=None`` means "the key is absent", so a cas cannot expect
JSON ``null`` (the same convention as the HTTP API).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import IO, Any, Protocol, TypeVar

__all__ = [
    "INFO",
    "FAIL",
    "OK",
    "KINDS",
    "CheckResult",
    "KVModel",
    "Model",
    "Operation",
    "PartitionResult",
    "check_history",
    "check_partition",
    "read_history",
    "write_history",
]

OK = "ok"
"""Status: the operation completed and its ``output`` is known."""
FAIL = "fail"
"""Status: the operation definitely did not take effect; it is not checked."""
INFO = "info"
"""Status: the outcome is unknown; it may have taken effect after ``call``, or never."""

KINDS = ("put", "get", "cas", "delete")
"""Operation kinds understood by :class:`KVModel`."""

_STATUSES = (OK, FAIL, INFO)
_DEFAULT_MAX_STEPS = 1_000_000

StateT = TypeVar("StateT")


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One client operation of a history.

    Attributes:
        op_id: Unique id of the operation within the history.
        client_id: The client (process) that issued it.
        key: The key it acts on.
        kind: One of ``"put"``, ``"get"``, ``"cas"``, ``"delete"``.
        value: For ``put`` and ``cas``: the new value (any JSON value).
        expect: For ``cas``: the expected current value; ``None`` means "absent".
        call: Invocation time.
        ret: Completion time; ``None`` when unknown (only allowed unless ``ok``).
        status: ``"ok"``, ``"fail"`` or ``"info"`` (see the module constants).
        output: For ``ok`` operations: ``get`` -> the value read (``None`` when
            absent); ``cas`` -> bool success; ``delete`` -> bool whether the key
            existed; ``put`` -> ``None``. Ignored for other statuses.
        found: For ``get``: ``False`` when the key was absent. ``True`` with
            ``output=None`` means the key held JSON ``null``.

    Raises:
        ValueError: On an unknown kind or status, an ``ok`` operation without a
            return time, a return before the call, or a mistyped output.
    """

    op_id: int
    client_id: int
    key: str
    kind: str
    value: Any = None
    expect: Any = None
    call: float
    ret: float | None = None
    status: str = OK
    output: Any = None
    found: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"op {self.op_id}: unknown kind {self.kind!r}")
        if self.status not in _STATUSES:
            raise ValueError(f"op {self.op_id}: unknown status {self.status!r}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"op {self.op_id}: returns ({self.ret}) before its call ({self.call})")
        if self.status != OK:
            return
        if self.ret is None:
            raise ValueError(f"op {self.op_id}: an ok operation needs a return time")
        if self.kind in ("cas", "delete") and not isinstance(self.output, bool):
            raise ValueError(f"op {self.op_id}: an ok {self.kind} needs a bool output")
        if self.kind == "get" and not self.found and self.output is not None:
            raise ValueError(f"op {self.op_id}: a get with found=False must have output=None")

    def describe(self) -> str:
        """Return a one-line human-readable description of the operation."""
        if self.kind == "put":
            text = f"put({self.key!r}, {_show(self.value)})"
        elif self.kind == "get":
            text = f"get({self.key!r})"
        elif self.kind == "cas":
            expect = "<absent>" if self.expect is None else _show(self.expect)
            text = f"cas({self.key!r}, {expect} -> {_show(self.value)})"
        else:
            text = f"delete({self.key!r})"
        if self.status == OK:
            if self.kind == "get":
                text += " -> " + (_show(self.output) if self.found else "<absent>")
            elif self.kind != "put":
                text += f" -> {self.output}"
        else:
            text += f" -> {self.status}"
        ret = "?" if self.ret is None or self.status == INFO else f"{self.ret:g}"
        return f"#{self.op_id} c{self.client_id} [{self.call:g}, {ret}] {text}"

    def to_json(self) -> dict[str, Any]:
        """Return the operation as a JSON object (see :func:`write_history`)."""
        return {
            "op_id": self.op_id,
            "client_id": self.client_id,
            "key": self.key,
            "kind": self.kind,
            "value": self.value,
            "expect": self.expect,
            "call": self.call,
            "ret": self.ret,
            "status": self.status,
            "output": self.output,
            "found": self.found,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Operation:
        """Build an operation from a JSON object written by :meth:`to_json`.

        Raises:
            ValueError: When a required field is missing or a field is invalid.
        """
        try:
            return cls(
                op_id=int(obj["op_id"]),
                client_id=int(obj["client_id"]),
                key=str(obj["key"]),
                kind=str(obj["kind"]),
                value=obj.get("value"),
                expect=obj.get("expect"),
                call=obj["call"],
                ret=obj.get("ret"),
                status=str(obj.get("status", OK)),
                output=obj.get("output"),
                found=bool(obj.get("found", True)),
            )
        except KeyError as exc:
            raise ValueError(f"operation is missing field {exc.args[0]!r}: {obj!r}") from None


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _canon(value: Any) -> str:
    """Canonical, hashable encoding of a JSON value (``1`` and ``1.0`` differ).

    Equal to ``json.dumps(value, sort_keys=True, separators=(",", ":"))``; the
    common scalar cases are built directly because this runs on every step.
    """
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is str and value.isascii() and value.isalnum():
        return f'"{value}"'
    if value is None:
        return "null"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Model(Protocol[StateT]):
    """A sequential specification the checker searches against.

    States must be hashable and compare by value: they are memoized.
    """

    def init(self) -> StateT:
        """Return the state before any operation."""
        ...

    def step(self, state: StateT, op: Operation) -> tuple[bool, StateT]:
        """Apply ``op`` to ``state``.

        Returns:
            ``(legal, new_state)``: whether ``op`` with its recorded output is a
            legal next step from ``state``, and the state after it. For a
            non-``ok`` operation the output is unknown: the model must accept it
            whenever the operation may run, and apply the effect it would have.
        """
        ...

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        """Split ``ops`` into independently checkable groups, in a stable order.

        A model may also drop operations that cannot affect the verdict.
        """
        ...

    def describe_state(self, state: StateT) -> str:
        """Return a short human-readable rendering of ``state``."""
        ...


class KVModel:
    """Register-per-key semantics of the raftkv store.

    The state of one key is its canonical JSON encoding, or ``None`` when the
    key is absent (JSON ``null`` is the string ``"null"``, so the two differ).

    * put: sets the value; always legal.
    * get: legal iff the value read (or absence, ``found=False``) is current.
    * cas: succeeds iff the current value equals ``expect`` (``None`` = absent),
      then sets ``value``; a failed cas requires current != expect and changes
      nothing.
    * delete: makes the key absent; its output tells whether the key existed.

    Operations of unknown outcome (``info``) do what they would do from the
    state they are applied to; an ``info`` get changes nothing and is dropped.
    """

    def init(self) -> str | None:
        """Return the state of a key before any operation: absent."""
        return None

    def step(self, state: str | None, op: Operation) -> tuple[bool, str | None]:
        """Apply ``op`` to one key's ``state``; see the class docstring."""
        known = op.status == OK
        kind = op.kind
        if kind == "get":
            if not known:
                return True, state
            observed = _canon(op.output) if op.found else None
            return observed == state, state
        if kind == "put":
            return True, _canon(op.value)
        if kind == "cas":
            expected = None if op.expect is None else _canon(op.expect)
            matches = state == expected
            if known and op.output is not matches:
                return False, state
            return True, (_canon(op.value) if matches else state)
        # delete
        if known and op.output is not (state is not None):
            return False, state
        return True, None

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        """Group operations by key (sorted by key); drop gets of unknown outcome."""
        by_key: dict[str, list[Operation]] = {}
        for op in ops:
            if op.kind == "get" and op.status != OK:
                continue
            by_key.setdefault(op.key, []).append(op)
        return [by_key[key] for key in sorted(by_key)]

    def describe_state(self, state: str | None) -> str:
        """Render one key's state: its JSON value, or ``<absent>``."""
        return "<absent>" if state is None else state


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """The verdict for one partition (for :class:`KVModel`, one key).

    Attributes:
        key: The partition's label: its key (distinct keys joined by commas
            when a model groups several).
        ok: ``True`` linearizable, ``False`` not, ``None`` undecided within
            ``max_steps``.
        ops: The checked operations of the partition, sorted by call time.
        linearization: When ``ok``: a witness order (the ``ok`` operations and
            the ``info`` operations that took effect). Otherwise the longest
            linearizable prefix found.
        stuck: When not ``ok``: the operations that were candidates to go next
            after ``linearization`` (none of them leads to a full linearization).
        state: The model state after ``linearization``, described.
        steps: Search steps spent.
    """

    key: str
    ok: bool | None
    ops: tuple[Operation, ...]
    linearization: tuple[Operation, ...]
    stuck: tuple[Operation, ...] = ()
    state: str = ""
    steps: int = 0

    def describe(self) -> str:
        """Return a multi-line human-readable report of this partition."""
        verdict = {
            True: "linearizable",
            False: "NOT linearizable",
            None: "unknown (step bound hit)",
        }
        lines = [f"key {self.key!r}: {verdict[self.ok]} ({len(self.ops)} ops, {self.steps} steps)"]
        if self.ok:
            return lines[0]
        lines.append(f"  longest linearizable prefix ({len(self.linearization)} ops):")
        lines.extend(f"    {op.describe()}" for op in self.linearization)
        lines.append(f"  state after the prefix: {self.state}")
        if self.stuck:
            lines.append("  none of these can be linearized next:")
            lines.extend(f"    {op.describe()}" for op in self.stuck)
        lines.append("  all operations on the key:")
        lines.extend(f"    {op.describe()}" for op in self.ops)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a whole history.

    Attributes:
        ok: ``True`` when every partition is linearizable, ``False`` when some
            partition is not, ``None`` when none fails but some is undecided.
        partitions: Per-partition verdicts, in the model's partition order.
    """

    ok: bool | None
    partitions: tuple[PartitionResult, ...] = field(default=())

    @property
    def failures(self) -> tuple[PartitionResult, ...]:
        """The partitions that are not linearizable."""
        return tuple(p for p in self.partitions if p.ok is False)

    @property
    def undecided(self) -> tuple[PartitionResult, ...]:
        """The partitions whose search hit the step bound."""
        return tuple(p for p in self.partitions if p.ok is None)

    def verdicts(self) -> dict[str, bool | None]:
        """Return ``{partition key: verdict}``."""
        return {p.key: p.ok for p in self.partitions}

    def describe(self) -> str:
        """Return a human-readable report: a summary plus each failing or undecided partition."""
        verdict = {True: "linearizable", False: "NOT linearizable", None: "unknown"}
        head = f"history is {verdict[self.ok]} ({len(self.partitions)} partitions"
        head += f", {len(self.failures)} failing, {len(self.undecided)} undecided)"
        details = [p.describe() for p in self.partitions if p.ok is not True]
        return "\n".join([head, *details])

    def __str__(self) -> str:
        return self.describe()


class _Entry:
    """A node of an event list: the call or the return of one operation."""

    __slots__ = ("op", "time", "is_call", "info", "bit", "match", "prev", "next")

    def __init__(
        self, op: Operation | None, time: float, is_call: bool, info: bool, bit: int
    ) -> None:
        self.op = op
        self.time = time
        self.is_call = is_call
        self.info = info
        self.bit = bit
        self.match: _Entry | None = None  # call -> its return (None for info ops)
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _link(entries: list[tuple[float, int, int, _Entry]]) -> _Entry:
    """Sort events by (time, call before return, op_id) into a list with a head."""
    entries.sort()  # (time, kind, op_id) is unique, so entries never get compared
    head = _Entry(None, float("-inf"), False, False, 0)
    prev = head
    for _, _, _, entry in entries:
        prev.next = entry
        entry.prev = prev
        prev = entry
    return head


def _build_lists(ops: Sequence[Operation]) -> tuple[_Entry, _Entry]:
    """Return (ok list of calls and returns, info list of calls), each with a head.

    Info operations never return, so they live in a list of their own; the
    search tries them only after the ``ok`` candidates of the same step.
    """
    ok_events: list[tuple[float, int, int, _Entry]] = []
    info_events: list[tuple[float, int, int, _Entry]] = []
    for op in ops:
        if op.status != OK:
            info_events.append(
                (op.call, 0, op.op_id, _Entry(op, op.call, True, True, 1 << len(info_events)))
            )
            continue
        assert op.ret is not None
        bit = 1 << (len(ok_events) // 2)
        call = _Entry(op, op.call, True, False, bit)
        ret = _Entry(op, op.ret, False, False, bit)
        call.match = ret
        ok_events.append((op.call, 0, op.op_id, call))
        ok_events.append((op.ret, 1, op.op_id, ret))
    return _link(ok_events), _link(info_events)


def _lift(entry: _Entry) -> None:
    assert entry.prev is not None
    entry.prev.next = entry.next
    if entry.next is not None:
        entry.next.prev = entry.prev
    ret = entry.match
    if ret is not None:
        assert ret.prev is not None
        ret.prev.next = ret.next
        if ret.next is not None:
            ret.next.prev = ret.prev


def _unlift(entry: _Entry) -> None:
    ret = entry.match
    if ret is not None:
        assert ret.prev is not None
        ret.prev.next = ret
        if ret.next is not None:
            ret.next.prev = ret
    assert entry.prev is not None
    entry.prev.next = entry
    if entry.next is not None:
        entry.next.prev = entry


def check_partition(
    ops: Sequence[Operation],
    model: Model[Any],
    max_steps: int = _DEFAULT_MAX_STEPS,
) -> PartitionResult:
    """Check one partition (operations the model treats as one object).

    Args:
        ops: The partition's operations; ``fail`` operations are ignored.
        model: The sequential specification.
        max_steps: Bound on search steps; past it the verdict is ``None``.

    Returns:
        The partition's verdict, with a witness or the longest prefix found.
    """
    checked = sorted((op for op in ops if op.status != FAIL), key=lambda o: (o.call, o.op_id))
    label = ",".join(sorted({op.key for op in checked}))
    remaining = sum(1 for op in checked if op.status == OK)
    ok_head, info_head = _build_lists(checked)
    state = model.init()
    init_state = state
    stack: list[tuple[_Entry, Any]] = []
    ok_bits = 0
    info_bits = 0
    memo: dict[tuple[int, Any], list[int]] = {}
    best: list[_Entry] = []  # the deepest dead-end path seen
    common = 0  # Invariant: best[:common] == the entries of stack[:common]
    steps = 0
    # The candidates of a step: ok calls before the first return in the ok list,
    # then info calls made no later than that return (``horizon``).
    entry = ok_head.next
    horizon = float("-inf")
    verdict: bool | None = True if remaining == 0 else None

    while remaining:
        if steps >= max_steps:
            verdict = None
            break
        steps += 1
        if entry is not None and entry.is_call and (not entry.info or entry.time <= horizon):
            op = entry.op
            assert op is not None
            legal, new_state = model.step(state, op)
            if legal:
                if entry.info:
                    new_ok, new_info = ok_bits, info_bits | entry.bit
                else:
                    new_ok, new_info = ok_bits | entry.bit, info_bits
                seen = memo.get((new_ok, new_state))
                if seen is None:
                    memo[(new_ok, new_state)] = [new_info]
                    fresh = True
                elif any((old & ~new_info) == 0 for old in seen):
                    fresh = False  # reached before with a subset of these info ops
                else:
                    seen.append(new_info)
                    fresh = True
                if fresh:
                    stack.append((entry, state))
                    state, ok_bits, info_bits = new_state, new_ok, new_info
                    _lift(entry)
                    if not entry.info:
                        remaining -= 1
                        if remaining == 0:
                            verdict = True
                            break
                    entry = ok_head.next
                    continue
            entry = entry.next
            continue
        if entry is not None and not entry.info:
            # The first pending return: the ok candidates are exhausted.
            assert not entry.is_call
            horizon = entry.time
            entry = info_head.next
            continue
        # Every candidate failed: this branch is dead.
        if len(stack) > len(best):
            del best[common:]
            best.extend(e for e, _ in stack[common:])
            common = len(stack)
        if not stack:
            verdict = False
            break
        entry, state = stack.pop()
        common = min(common, len(stack))
        if entry.info:
            info_bits &= ~entry.bit
        else:
            ok_bits &= ~entry.bit
            remaining += 1
        _unlift(entry)
        entry = entry.next

    if verdict is True:
        order = tuple(e.op for e, _ in stack if e.op is not None)
        return PartitionResult(
            key=label,
            ok=True,
            ops=tuple(checked),
            linearization=order,
            state=model.describe_state(state),
            steps=steps,
        )
    if len(stack) > len(best):
        best = [e for e, _ in stack]
    prefix = tuple(e.op for e in best if e.op is not None)
    after = init_state
    for op in prefix:
        _, after = model.step(after, op)
    return PartitionResult(
        key=label,
        ok=verdict,
        ops=tuple(checked),
        linearization=prefix,
        stuck=_candidates(checked, prefix),
        state=model.describe_state(after),
        steps=steps,
    )


def _candidates(ops: Sequence[Operation], prefix: Sequence[Operation]) -> tuple[Operation, ...]:
    """Operations not in ``prefix`` that are minimal: called by the earliest pending return."""
    done = {op.op_id for op in prefix}
    rest = [op for op in ops if op.op_id not in done]
    pending_rets = [op.ret for op in rest if op.status == OK and op.ret is not None]
    if not pending_rets:
        return ()
    horizon = min(pending_rets)
    return tuple(op for op in rest if op.call <= horizon)


def check_history(
    ops: Iterable[Operation],
    model: Model[Any] | None = None,
    max_steps: int = _DEFAULT_MAX_STEPS,
) -> CheckResult:
    """Check that a history is linearizable with respect to ``model``.

    Args:
        ops: The history, in any order; ``fail`` operations are ignored.
        model: The sequential specification; defaults to :class:`KVModel`.
        max_steps: Bound on search steps per partition; a partition that needs
            more gets the verdict ``None``.

    Returns:
        ``CheckResult`` with ``ok`` True/False/None and per-partition verdicts.

    Raises:
        ValueError: When two operations share an ``op_id``.
    """
    history = list(ops)
    ids = [op.op_id for op in history]
    if len(set(ids)) != len(ids):
        raise ValueError("operation ids must be unique")
    spec: Model[Any] = KVModel() if model is None else model
    live = sorted((op for op in history if op.status != FAIL), key=lambda o: (o.call, o.op_id))
    results = tuple(check_partition(part, spec, max_steps) for part in spec.partition(live))
    verdicts = [r.ok for r in results]
    ok: bool | None
    if False in verdicts:
        ok = False
    elif None in verdicts:
        ok = None
    else:
        ok = True
    return CheckResult(ok=ok, partitions=results)


def write_history(dest: str | PurePath | IO[str], ops: Iterable[Operation]) -> None:
    """Write operations as JSON Lines: one object per line, keys sorted.

    Args:
        dest: A path, or a text file open for writing.
        ops: The operations, written in the given order.
    """
    if isinstance(dest, (str, PurePath)):
        with open(dest, "w", encoding="utf-8") as f:
            _write_lines(f, ops)
    else:
        _write_lines(dest, ops)


def _write_lines(f: IO[str], ops: Iterable[Operation]) -> None:
    for op in ops:
        f.write(json.dumps(op.to_json(), sort_keys=True) + "\n")


def read_history(src: str | PurePath | IO[str]) -> list[Operation]:
    """Read operations written by :func:`write_history`; blank lines are skipped.

    Args:
        src: A path, or a text file open for reading.

    Returns:
        The operations, in file order.

    Raises:
        ValueError: On a malformed line (the message names the line number).
    """
    if isinstance(src, (str, PurePath)):
        with open(src, encoding="utf-8") as f:
            return _read_lines(f)
    return _read_lines(src)


def _read_lines(f: IO[str]) -> list[Operation]:
    ops: list[Operation] = []
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            ops.append(Operation.from_json(obj))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return ops
