"""Checking multi-key histories by their revisions: ranges, transactions, compaction.

Per-key linearizability (:mod:`raftkv.history.linearizability`) cannot check an
operation that reads or writes several keys at once. The store gives every
operation a place in one total order instead -- its *revision* -- and this
checker verifies that order and every answer against a model.

Rules:

1. **Every committed operation has a position.** A write that changed
   something sits at the revision it made (an *effective* write); a write that
   changed nothing (a failed CAS, a delete that found nothing, a transaction
   whose executed branch wrote nothing) and every read sit at the revision the
   store was at when it answered (the answer's ``revision``). A read at an
   older revision sits where it was served; its data is checked at the
   revision it asked for.
2. **Real-time order** (Herlihy & Wing): if operation A returned before B was
   invoked, A's position is ``<=`` B's, and ``<`` when both are effective
   writes. Effective writes have distinct revisions.
3. **Replay.** Revisions 2, 3, ... up to the highest one any answer shows are
   each made by exactly one write. The checker replays them in order on a
   model of the store and, at each revision, checks every operation placed
   there: a write's own answer (found, deleted counts, ``succeeded``, every
   response of a transaction, the revisions it reports), a read's items,
   ``count`` and ``more``, and that a no-change write really changes nothing.
4. **Unknown outcomes.** An ``info`` operation may have taken effect once, or
   never. A revision that no answered write claims is filled by one of them
   (or by an answered write whose own answer cannot tell whether it changed
   something: a retried delete-range or delete-only transaction, answered from
   the session table); the search tries each candidate that real time allows
   there and backtracks if later answers contradict it. A revision nothing can
   fill is a violation (a write that took effect but was never acknowledged,
   or was applied twice).
5. **Compaction** has no revision of its own. A successful compaction to
   ``c`` must not exceed the store's revision; a read at ``r < c`` invoked
   after it returned must fail as compacted; a read (or compaction) that
   failed as compacted must name the revision of a compaction that may have
   happened (``ok`` or ``info``) and ask below it. A read above the store's
   revision must fail as a future revision, and only then.
6. ``fail`` operations never took effect and are ignored.

The model is :class:`StoreModel`, a naive, independent multi-version map (per key
a list of versions; ranges scan every key). It deliberately shares no code
with :mod:`raftkv.replica.mvcc`: the checker is the oracle for that code, so a
bug there must not be replayed identically by the model. It shares the
command and result vocabulary of :mod:`raftkv.replica.kv`, and JSON equality
(:func:`~raftkv.replica.commands.json_equal`) for values.

The operations it checks (:class:`~raftkv.history.revhistory.RevOp`) and their
file format are :mod:`raftkv.history.revhistory`. Importable without the
simulator (the Jepsen analysis uses it): it imports only the replica layer's
command and result types.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from raftkv.history.linearizability import INFO, OK
from raftkv.history.revhistory import RevOp, describe_answer
from raftkv.history.storemodel import NoSuchRevision, StoreModel, difference, execute
from raftkv.replica.kv import (
    ERR_COMPACTED,
    ERR_CONFLICT,
    ERR_FUTURE_REVISION,
    ERR_NOT_FOUND,
    Answer,
    Cas,
    Command,
    Compact,
    Delete,
    Deleted,
    DeleteRange,
    Get,
    KVResult,
    Listing,
    MultiPut,
    Put,
    PutDone,
    Range,
    Txn,
    TxnAnswer,
    TxnDelete,
    TxnOp,
    TxnPut,
)

__all__ = ["RevisionCheck", "check_revisions"]

_DEFAULT_MAX_STEPS: Final = 200_000

# ----------------------------------------------------------------------------- the check


@dataclass(slots=True)
class RevisionCheck:
    """The verdict of :func:`check_revisions`.

    Attributes:
        ok: ``True`` consistent, ``False`` a violation, ``None`` undecided
            within ``max_steps`` (too many ways to place unknown outcomes).
        problems: what was violated (each names the op, its revision, the
            expected and the seen answer).
        revisions: the highest revision replayed.
        writes: effective writes placed (answered or unknown).
        observed: operations checked against the model at their position.
        unknown_placed: ``info`` operations the replay placed at a revision.
        steps: search steps spent.
    """

    ok: bool | None
    problems: list[str] = field(default_factory=list)
    revisions: int = 1
    writes: int = 0
    observed: int = 0
    unknown_placed: int = 0
    steps: int = 0

    def describe(self) -> str:
        if self.ok:
            return (
                f"revisions consistent: {self.revisions} revisions, {self.writes} writes, "
                f"{self.observed} answers checked"
            )
        if self.ok is None:
            return f"revisions undecided after {self.steps} steps"
        return "\n".join(self.problems)


_WRITE = "write"  # effective, revision known
_MAYBE = "maybe"  # revision known, whether it changed anything is not
_OBSERVE = "observe"  # changed nothing (or a read): sits at the answer's revision
_COMPACT = "compact"


def _writes_something(op: TxnOp) -> bool:
    return isinstance(op, TxnPut | TxnDelete)


def _classify(op: RevOp) -> str:
    """What an answered operation says about its effect (module rule 1)."""
    cmd, answer = op.command, op.answer
    assert answer is not None
    if isinstance(cmd, Compact):
        return _COMPACT
    if isinstance(answer, KVResult):
        if not answer.ok or isinstance(cmd, Get | Range):
            return _OBSERVE
        return _WRITE if isinstance(cmd, Put | Delete | Cas | MultiPut) else _OBSERVE
    if isinstance(answer, Listing):
        return _OBSERVE
    if isinstance(answer, Deleted):
        if answer.replayed:
            return _MAYBE
        return _WRITE if answer.deleted else _OBSERVE
    if isinstance(answer, TxnAnswer):
        if answer.replayed:
            assert isinstance(cmd, Txn)
            branch = cmd.success if answer.succeeded else cmd.failure
            if any(isinstance(o, TxnPut) for o in branch):
                return _WRITE
            return _MAYBE if any(isinstance(o, TxnDelete) for o in branch) else _OBSERVE
        for r in answer.responses:
            if isinstance(r, PutDone) or (isinstance(r, Deleted) and r.deleted):
                return _WRITE
        return _OBSERVE
    return _OBSERVE


def _may_write(cmd: Command) -> bool:
    if isinstance(cmd, Put | Delete | Cas | MultiPut | DeleteRange):
        return True
    if isinstance(cmd, Txn):
        return any(_writes_something(o) for o in (*cmd.success, *cmd.failure))
    return False


@dataclass(slots=True)
class _Placed:
    op: RevOp
    kind: str
    position: int


class _Checker:
    def __init__(self, ops: Sequence[RevOp], max_steps: int) -> None:
        self.max_steps = max_steps
        self.result = RevisionCheck(ok=True)
        self.answered: list[_Placed] = []
        self.unknown: list[RevOp] = []
        self.compactions: list[RevOp] = []
        for op in ops:
            if op.status == OK:
                kind = _classify(op)
                assert op.answer is not None
                self.answered.append(_Placed(op, kind, op.answer.revision))
                if kind == _COMPACT:
                    self.compactions.append(op)
            elif op.status == INFO:
                if isinstance(op.command, Compact):
                    self.compactions.append(op)
                elif _may_write(op.command):
                    self.unknown.append(op)

    def fail(self, message: str) -> None:
        self.result.ok = False
        self.result.problems.append(message)

    # -- rule 2 -------------------------------------------------------------

    def check_real_time(self) -> None:
        """Positions never go back in real time; effective writes are unique."""
        by_revision: dict[int, _Placed] = {}
        for p in self.answered:
            if p.kind != _WRITE:
                continue
            other = by_revision.get(p.position)
            if other is not None:
                self.fail(
                    f"revision {p.position} made by two writes:\n  {other.op.describe()}\n"
                    f"  {p.op.describe()}"
                )
            else:
                by_revision[p.position] = p
        by_ret = sorted(self.answered, key=lambda p: (_ret(p.op), p.op.op_id))
        rets = [_ret(p.op) for p in by_ret]
        # Prefix maxima over ops in return order: the op with the highest
        # position among those returned so far.
        best: list[_Placed] = []
        for p in by_ret:
            best.append(p if not best or p.position > best[-1].position else best[-1])
        self._rets = rets
        self._best = best
        reported = 0
        for p in sorted(self.answered, key=lambda p: p.op.op_id):
            n = bisect.bisect_left(rets, p.op.call)  # ops that returned strictly before
            if not n:
                continue
            before = best[n - 1]
            # An effective write invoked after ``before`` returned makes a
            # revision that did not exist when ``before`` was answered.
            if before.position > p.position or (p.kind == _WRITE and before.position == p.position):
                reported += 1
                if reported <= 10:
                    self.fail(
                        f"revision {p.position} out of real-time order: invoked after "
                        f"revision {before.position} was answered\n"
                        f"  before: {before.op.describe()}\n  after:  {p.op.describe()}"
                    )

    def lowest_revision(self, op: RevOp) -> int:
        """The lowest revision real time allows an unknown write ``op`` to make:
        above the position of every op that returned before it was invoked."""
        n = bisect.bisect_left(self._rets, op.call)
        return 2 if not n else max(2, self._best[n - 1].position + 1)

    # -- rule 5 -------------------------------------------------------------

    def check_compaction(self) -> None:
        done = sorted(
            (
                op
                for op in self.compactions
                if op.status == OK and isinstance(op.answer, KVResult) and op.answer.ok
            ),
            key=lambda op: op.ret or 0.0,
        )
        # Per revision, the earliest-invoked compaction to it that may have happened.
        possible: dict[int, RevOp] = {}
        for op in sorted(self.compactions, key=lambda op: (op.call, op.op_id)):
            if isinstance(op.command, Compact) and (
                op.status == INFO or (isinstance(op.answer, KVResult) and op.answer.ok)
            ):
                possible.setdefault(op.command.revision, op)
        for op in done:
            assert isinstance(op.command, Compact) and op.answer is not None
            if op.command.revision > op.answer.revision:
                self.fail(
                    f"compaction to {op.command.revision} succeeded at revision "
                    f"{op.answer.revision}: {op.describe()}"
                )
        for a in done:
            for b in done:
                assert isinstance(a.command, Compact) and isinstance(b.command, Compact)
                if (
                    a.ret is not None
                    and a.ret < b.call
                    and b.command.revision <= a.command.revision
                ):
                    self.fail(
                        f"compaction to {b.command.revision} succeeded after one to "
                        f"{a.command.revision} had returned:\n  {a.describe()}\n  {b.describe()}"
                    )
        for p in self.answered:
            op, answer = p.op, p.op.answer
            asked = op.command.revision if isinstance(op.command, Range | Compact) else 0
            if not isinstance(answer, KVResult) or answer.ok:
                if isinstance(op.command, Range) and asked > 0:
                    for c in done:
                        assert isinstance(c.command, Compact)
                        if c.ret is not None and c.ret < op.call and asked < c.command.revision:
                            self.fail(
                                f"read at revision {asked} succeeded after a compaction to "
                                f"{c.command.revision} had returned:\n  {c.describe()}\n"
                                f"  {op.describe()}"
                            )
                            break
                continue
            if answer.error == ERR_COMPACTED:
                c_rev = answer.compact_revision
                source = possible.get(c_rev)
                if asked >= c_rev and not isinstance(op.command, Compact):
                    self.fail(f"read at {asked} refused as compacted to {c_rev}: {op.describe()}")
                elif isinstance(op.command, Compact) and asked > c_rev:
                    self.fail(f"compaction to {asked} refused at {c_rev}: {op.describe()}")
                elif source is None or (op.ret is not None and op.ret < source.call):
                    self.fail(
                        f"compacted to {c_rev}, but no compaction to {c_rev} could have "
                        f"happened by then: {op.describe()}"
                    )
            elif answer.error == ERR_FUTURE_REVISION and asked <= answer.revision:
                self.fail(
                    f"revision {asked} refused as a future revision at revision "
                    f"{answer.revision}: {op.describe()}"
                )

    # -- rules 3 and 4 ------------------------------------------------------

    def replay(self) -> None:
        writers: dict[int, _Placed] = {}
        maybe: dict[int, list[_Placed]] = {}
        observers: dict[int, list[_Placed]] = {}
        top = 1
        for p in self.answered:
            top = max(top, p.position)
            if p.kind == _WRITE:
                writers.setdefault(p.position, p)
            elif p.kind == _MAYBE:
                maybe.setdefault(p.position, []).append(p)
            elif p.kind == _OBSERVE:
                observers.setdefault(p.position, []).append(p)
        unknown = sorted(self.unknown, key=lambda op: (op.call, op.op_id))
        lowest = {op.op_id: self.lowest_revision(op) for op in unknown}
        model = StoreModel()
        used: set[int] = set()
        deepest: tuple[int, str] = (0, "")

        def note(revision: int, message: str) -> None:
            nonlocal deepest
            if revision > deepest[0] or not deepest[1]:
                deepest = (revision, message)

        def check_observers(revision: int, chosen: _Placed | None) -> str | None:
            """Check the ops placed at ``revision`` (the model is there)."""
            for p in observers.get(revision, ()):
                why = self.observe(model, p)
                if why is not None:
                    return why
            for p in maybe.get(revision, ()):
                if p is not chosen:
                    why = self.observe(model, p)
                    if why is not None:
                        return why
            return None

        why = check_observers(1, None)
        if why is not None:
            self.fail(why)
            return
        # Depth-first over revisions 2..top; a frame per revision: its candidates
        # and the index of the one in place.
        frames: list[tuple[list[_Placed | RevOp], int]] = []
        revision = 2
        steps = 0
        while revision <= top:
            if len(frames) < revision - 1:
                candidates: list[_Placed | RevOp]
                if revision in writers:
                    candidates = [writers[revision]]
                else:
                    candidates = [*maybe.get(revision, ())]
                    candidates += [
                        op
                        for op in unknown
                        if op.op_id not in used and lowest[op.op_id] <= revision
                    ]
                frames.append((candidates, -1))
            candidates, at = frames[-1]
            placed = False
            while at + 1 < len(candidates):
                at += 1
                steps += 1
                if steps > self.max_steps:
                    self.result.steps = steps
                    self.result.ok = None
                    return
                candidate = candidates[at]
                why = self.place(model, candidate, revision)
                if why is not None:
                    note(revision, why)
                    continue
                chosen = candidate if isinstance(candidate, _Placed) else None
                why = check_observers(revision, chosen)
                if why is not None:
                    note(revision, why)
                    model.undo()
                    continue
                if isinstance(candidate, RevOp):
                    used.add(candidate.op_id)
                placed = True
                break
            frames[-1] = (candidates, at)
            if placed:
                revision += 1
                continue
            if not candidates:
                seen = [p.op for p in observers.get(revision, ())][:3]
                note(
                    revision,
                    f"revision {revision} was made by no operation in the history"
                    + "".join(f"\n  answered at it: {op.describe()}" for op in seen),
                )
            # Backtrack: drop this frame, take back the previous revision's write.
            frames.pop()
            revision -= 1
            if revision < 2:
                self.result.steps = steps
                self.fail(deepest[1])
                return
            prev_candidates, prev_at = frames[-1]
            prev = prev_candidates[prev_at]
            if isinstance(prev, RevOp):
                used.discard(prev.op_id)
            model.undo()
        self.result.steps = steps
        self.result.revisions = top
        self.result.unknown_placed = len(used)
        self.result.writes = top - 1
        self.result.observed = sum(len(v) for v in observers.values())

    def place(self, model: StoreModel, candidate: _Placed | RevOp, revision: int) -> str | None:
        """Apply ``candidate`` as the write that makes ``revision``; why not, if it cannot."""
        op = candidate.op if isinstance(candidate, _Placed) else candidate
        answer, ex = execute(model, op.command)
        if not ex.overlay:
            return (
                f"revision {revision}: answered as a write, but changes nothing on the "
                f"model at revision {model.revision}\n  op:       {op.describe()}\n"
                f"  expected: {describe_answer(answer)}"
            )
        if isinstance(candidate, _Placed):
            assert op.answer is not None
            why = difference(answer, op.answer, _replayed(op.answer))
            if why is not None:
                return (
                    f"revision {revision}: {why}\n  op:       {op.describe()}\n"
                    f"  expected: {describe_answer(answer)}"
                )
        model.commit(ex.overlay)
        return None

    def observe(self, model: StoreModel, p: _Placed) -> str | None:
        """Check an op placed at the model's revision that changed nothing."""
        op = p.op
        assert op.answer is not None
        answer = op.answer
        cmd = op.command
        if isinstance(answer, KVResult) and answer.error in (ERR_COMPACTED, ERR_FUTURE_REVISION):
            return None  # rule 5
        if (
            isinstance(answer, KVResult)
            and not answer.ok
            and answer.error
            not in (
                ERR_NOT_FOUND,
                ERR_CONFLICT,
            )
        ):
            return None  # refused (quota, invalid): no effect, nothing to compare
        try:
            want, ex = execute(model, cmd)
        except NoSuchRevision:
            return (
                f"revision {p.position}: read at a revision the store had not reached "
                f"when it answered: {op.describe()}"
            )
        if ex.overlay:
            return (
                f"revision {p.position}: answered as changing nothing, but on the model it "
                f"writes {', '.join(sorted(ex.overlay))}\n  op:       {op.describe()}\n"
                f"  expected: {describe_answer(want)}"
            )
        why = difference(want, answer, _replayed(answer))
        if why is None:
            return None
        return (
            f"revision {p.position}: {why}\n  op:       {op.describe()}\n"
            f"  expected: {describe_answer(want)}"
        )


def _ret(op: RevOp) -> float:
    assert op.ret is not None  # an answered op
    return op.ret


def _replayed(answer: Answer) -> bool:
    return bool(answer.replayed)


def check_revisions(ops: Iterable[RevOp], *, max_steps: int = _DEFAULT_MAX_STEPS) -> RevisionCheck:
    """Check a history by its revisions (module rules 1-6).

    Args:
        ops: the history, in any order.
        max_steps: bound on candidate placements tried for unknown outcomes;
            past it the verdict is ``ok=None``.

    Returns:
        The verdict; its ``problems`` name each violating operation.
    """
    checker = _Checker(list(ops), max_steps)
    checker.check_real_time()
    checker.check_compaction()
    if checker.result.ok is False:
        return checker.result
    checker.replay()
    return checker.result
