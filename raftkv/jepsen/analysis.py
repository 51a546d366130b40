"""Checking a fault test: the client history against the replicated log, and itself.

Rule: the verdict rests on two independent views, and each is checked against
the other. The *client view* is the history the workload recorded. The *state
machine's view* is the committed log, read from every node's data dir after
the nodes stopped and replayed through a fresh
:class:`~raftkv.replica.kv.KVStateMachine` -- the code the servers run.

Checks:

* **log agreement** -- every node's log, up to its own durable commit index,
  equals the reference log (the longest committed one) entry for entry.
* **durability** -- every acknowledged write (an ``ok`` put, an ``ok`` cas that
  succeeded) is executed in the committed log. A write is identified by its
  ``Idempotency-Key``, and values are unique, so this is exact.
* **exactly-once** -- no ``Idempotency-Key`` is executed twice. Retries that
  reached the log again are counted as deduplicated (the session table
  answered them from its cache).
* **answers agree with the log** -- an ``ok`` write's answer (applied or
  conflict, and its index) is what the log's execution of it produced; a write
  the harness classified ``fail`` (every attempt definitely not applied, e.g.
  503) is not in the log; every ``ok`` read returned the key's value at the
  applied index it reported.
* **linearizability** -- the single-key history, including the final reads,
  is checked by :mod:`raftkv.history.linearizability`, the simulator's checker.
  First each ``info`` write is settled from the log, as the simulator settles
  its own: not executed means it never took effect (``fail``); executed stays
  ``info`` (it took effect at some unknown instant after its call). Settling
  only ever removes operations the log says never happened, so a read of such
  a write's value is still caught.
* **revisions** -- the whole history, multi-key operations included, is
  checked by :mod:`raftkv.history.revisions`, the simulator's revision checker
  (:func:`revision_history` builds its input). Every write enters with the
  command and the answer of its first execution in the log (an ``info`` write
  the log executed enters as answered at the end of the run); reads enter with
  the answer the client got, when it carries the store's revision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.core.types import Entry, EntryType, NodeId
from raftkv.history.linearizability import FAIL, INFO, OK, CheckResult, check_history
from raftkv.history.revhistory import RevOp
from raftkv.history.revisions import RevisionCheck, check_revisions
from raftkv.history.watchcheck import RevisionLog
from raftkv.jepsen.workload import (
    MULTI_KEY_KINDS,
    SINGLE_KEY_KINDS,
    OpRecord,
    listing_of,
    refusal_of,
)
from raftkv.replica.kv import (
    ERR_CONFLICT,
    ERR_NOT_FOUND,
    Answer,
    Cas,
    Command,
    Delete,
    Deleted,
    Get,
    InvalidCommand,
    Item,
    KeyRange,
    KVResult,
    KVStateMachine,
    LeaseRevoke,
    LeaseRevoked,
    MultiPut,
    Put,
    Txn,
    TxnAnswer,
    TxnDelete,
    decode_command,
    json_text,
)
from raftkv.storage.disk_storage import DiskStorage

__all__ = [
    "NodeLog",
    "Execution",
    "Replay",
    "Verdict",
    "read_node_log",
    "replay",
    "revision_history",
    "analyze",
]

_MAX_EXAMPLES = 10
LEASE_CLIENT = 20_000
"""The client number lease writes enter the revision check with."""


@dataclass(frozen=True, slots=True)
class NodeLog:
    """What one node's data dir holds: its durable commit index and its stored entries."""

    node_id: NodeId
    commit: int
    entries: tuple[Entry, ...]

    @property
    def first_index(self) -> int:
        return self.entries[0].index if self.entries else 0


def read_node_log(node_id: NodeId, data_dir: Path) -> NodeLog | None:
    """Open a stopped node's data dir read-only in effect; ``None`` if it has no state."""
    if not (data_dir / "wal").exists():
        return None
    storage = DiskStorage.open(data_dir, fsync=False)
    try:
        hard_state, _ = storage.initial_state()
        return NodeLog(node_id, hard_state.commit, tuple(storage.all_entries()))
    finally:
        storage.close()


@dataclass(frozen=True, slots=True)
class Execution:
    """One committed entry that carries an ``Idempotency-Key``."""

    index: int
    session: str
    executed: bool
    """False when the session table answered it from its cache (a retry)."""
    ok: bool
    error: str | None
    command: Command | None = None
    """The command as the log holds it."""
    answer: Answer | None = None
    """What the state machine answered (the whole answer, with its revision)."""


@dataclass(slots=True)
class Replay:
    """The committed log, replayed through the state machine."""

    reference: NodeId | None = None
    commit_index: int = 0
    entries: int = 0
    by_session: dict[str, list[Execution]] = field(default_factory=dict)
    # key -> [(index, canonical value or None when deleted)], in log order
    writes: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)
    undecodable: int = 0
    history: RevisionLog = field(default_factory=RevisionLog)
    """Every revision the committed log made: its events and its command (what
    watchers must have seen, :mod:`raftkv.jepsen.feeds`)."""
    revokes: list[tuple[int, int, int]] = field(default_factory=list)
    """``(lease, revision, keys deleted)`` of each lease's first applied revoke."""
    expiries: list[tuple[int, int, int]] = field(default_factory=list)
    """``(lease, time_ms, index)`` of every committed expiry revoke: ``time_ms``
    is the wall clock of the leader that decided it."""
    revoke_deletes: list[tuple[int, int, tuple[str, ...]]] = field(default_factory=list)
    """``(index, revision, keys)`` of every revoke (a client's or an expiry)
    that deleted keys: the revision check sees it as a transaction deleting them."""

    def executed(self, session: str) -> list[Execution]:
        return [e for e in self.by_session.get(session, ()) if e.executed]

    def value_at(self, key: str, index: int) -> str | None:
        """The canonical JSON of ``key`` after applying entries up to ``index`` (None: absent)."""
        current: str | None = None
        for at, value in self.writes.get(key, ()):
            if at > index:
                break
            current = value
        return current


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def replay(logs: Mapping[NodeId, NodeLog]) -> Replay:
    """Replay the longest committed log and compare every node's log with it."""
    out = Replay()
    complete = [log for log in logs.values() if log.first_index == 1]
    if not complete:
        out.disagreements.append("no node holds the log from index 1")
        return out
    out.commit_index = max(log.commit for log in logs.values())
    holders = [log for log in complete if len(log.entries) >= out.commit_index]
    if not holders:
        out.disagreements.append(f"no node holds the log up to commit index {out.commit_index}")
        holders = complete
        out.commit_index = max(len(log.entries) for log in complete)
    ref = max(holders, key=lambda log: (log.commit, log.node_id))
    out.reference = ref.node_id
    committed = ref.entries[: out.commit_index]
    for log in logs.values():
        upto = min(log.commit, out.commit_index)
        for entry in log.entries:
            if entry.index > upto:
                break
            want = committed[entry.index - 1]
            if (entry.term, entry.data, entry.type) != (want.term, want.data, want.type):
                out.disagreements.append(
                    f"{log.node_id} index {entry.index}: term {entry.term} differs from "
                    f"{ref.node_id}'s committed entry (term {want.term})"
                )
                break
    sm = KVStateMachine()
    for entry in committed:
        if entry.type is not EntryType.NORMAL or not entry.data:
            continue
        out.entries += 1
        try:
            cmd = decode_command(entry.data)
        except InvalidCommand:
            out.undecodable += 1
            sm.apply(entry.index, entry.data)
            continue
        session = cmd.session
        before = sm.revision
        result = sm.apply(entry.index, entry.data)
        made = None
        if sm.revision != before:
            made = sm.last_events()
            if made is not None and made[0] == sm.revision:
                out.history.record(made[0], made[1], cmd)
        if isinstance(cmd, LeaseRevoke):
            if cmd.expired:
                out.expiries.append((cmd.id, cmd.time_ms, entry.index))
            first = all(lease != cmd.id for lease, _, _ in out.revokes)
            if isinstance(result, LeaseRevoked) and not result.replayed and first:
                out.revokes.append((cmd.id, result.revision, result.deleted))
                if result.deleted and made is not None and made[0] == result.revision:
                    keys = tuple(e.kv.key.decode("utf-8", "surrogateescape") for e in made[1])
                    out.revoke_deletes.append((entry.index, result.revision, keys))
        if session is not None:
            key = f"{session.client_id}/{session.seq}"
            # Not a replay from the session table, and not refused (a refusal --
            # a compaction below the point, NOSPACE -- changes nothing and is
            # not recorded: its retry runs again).
            executed = result.executed
            out.by_session.setdefault(key, []).append(
                Execution(entry.index, key, executed, result.ok, result.error, cmd, result)
            )
            if not executed:
                continue
        if isinstance(cmd, Put) or (isinstance(cmd, Cas) and result.ok):
            out.writes.setdefault(cmd.key, []).append((entry.index, _canon(cmd.value)))
        elif isinstance(cmd, Delete) and result.ok:
            out.writes.setdefault(cmd.key, []).append((entry.index, None))
        elif isinstance(cmd, MultiPut):
            for k, v in cmd.pairs.items():
                out.writes.setdefault(k, []).append((entry.index, _canon(v)))
    out.final = dict(sm.items())
    return out


@dataclass(slots=True)
class Verdict:
    """Everything the analysis found; :attr:`ok` is the overall pass/fail."""

    linearizable: bool | None
    check: CheckResult | None
    replay: Replay
    revisions: RevisionCheck | None = None
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    answer_mismatches: list[str] = field(default_factory=list)
    read_mismatches: list[str] = field(default_factory=list)
    fail_but_applied: list[str] = field(default_factory=list)
    resolved_applied: int = 0
    resolved_never: int = 0
    dedup_hits: int = 0
    retried_writes: int = 0
    sessions_executed: int = 0

    @property
    def durable(self) -> bool:
        return not self.lost

    @property
    def exactly_once(self) -> bool:
        return not self.duplicated

    @property
    def consistent(self) -> bool:
        """The log agrees across nodes and with every answer the clients got."""
        return not (
            self.replay.disagreements
            or self.answer_mismatches
            or self.read_mismatches
            or self.fail_but_applied
        )

    @property
    def revisions_ok(self) -> bool | None:
        """The revision check's verdict (``None``: undecided, or not run)."""
        return None if self.revisions is None else self.revisions.ok

    @property
    def ok(self) -> bool:
        return (
            self.linearizable is True
            and self.revisions_ok is True
            and self.durable
            and self.exactly_once
            and self.consistent
        )

    def problems(self, *, max_lines_per_key: int | None = 40) -> list[str]:
        """Human-readable lines, a few examples per kind of problem.

        Args:
            max_lines_per_key: cut each non-linearizable key's report to this
                many lines (``None``: the whole report).
        """
        lines: list[str] = []
        groups = [
            ("log disagreement", self.replay.disagreements),
            ("lost acknowledged write", self.lost),
            ("executed more than once", self.duplicated),
            ("answer differs from the log", self.answer_mismatches),
            ("read differs from the log at its index", self.read_mismatches),
            ("classified fail but applied", self.fail_but_applied),
        ]
        for label, items in groups:
            for item in items[:_MAX_EXAMPLES]:
                lines.append(f"{label}: {item}")
            if len(items) > _MAX_EXAMPLES:
                lines.append(f"{label}: ... {len(items) - _MAX_EXAMPLES} more")
        if self.revisions is not None and self.revisions.ok is False:
            for problem in self.revisions.problems[:_MAX_EXAMPLES]:
                lines.extend(f"revisions: {line}" for line in problem.splitlines()[:1])
                lines.extend(f"  {line}" for line in problem.splitlines()[1:])
        if self.check is not None and self.check.ok is not True:
            for part in self.check.partitions:
                if part.ok is True:
                    continue
                text = part.describe().splitlines()
                if max_lines_per_key is not None and len(text) > max_lines_per_key:
                    cut = len(text) - max_lines_per_key
                    text = [*text[:max_lines_per_key], f"  ... {cut} more lines"]
                lines.extend(text)
        return lines


def analyze(
    ops: Iterable[OpRecord],
    logs: Mapping[NodeId, NodeLog],
    *,
    max_steps: int = 2_000_000,
    lease_sessions: Sequence[str] = (),
) -> Verdict:
    """Settle ``info`` writes from the log, then run every check (module docstring).

    ``ops`` are updated in place: settled ``info`` writes get ``status=fail`` and
    a ``resolution``. ``lease_sessions`` are the lease clients' puts
    (:func:`revision_history`).
    """
    records = list(ops)
    rp = replay(logs)
    v = Verdict(linearizable=None, check=None, replay=rp)
    for execs in rp.by_session.values():
        v.dedup_hits += sum(1 for e in execs if not e.executed)
        if sum(1 for e in execs if e.executed) > 1:
            v.duplicated.append(
                f"{execs[0].session} at indexes {[e.index for e in execs if e.executed]}"
            )
        else:
            v.sessions_executed += 1
    for rec in records:
        if rec.kind == "range":
            continue
        if rec.kind == "get":
            if rec.status == OK and rec.index is not None:
                want = rp.value_at(rec.key, rec.index)
                got = _canon(rec.output) if rec.found else None
                if want != got:
                    v.read_mismatches.append(
                        f"op {rec.op_id} read {rec.key!r} at index {rec.index} on "
                        f"{rec.attempts[-1].node}: got {got}, the log has {want}"
                    )
            continue
        assert rec.session is not None
        if len(rec.attempts) > 1:
            v.retried_writes += 1
        executed = rp.executed(rec.session)
        first = executed[0] if executed else None
        if rec.status == OK and rec.kind == "compact" and rec.output is False:
            # Refused for its revision (410/400): a refusal changes nothing and
            # is not recorded, so the log has no execution of it -- unless a
            # retry of it succeeded, which would contradict the answer.
            if first is not None:
                v.answer_mismatches.append(
                    f"op {rec.op_id} {rec.session}: answered a refused compaction, but it "
                    f"was executed at index {first.index}"
                )
            continue
        if rec.status == OK:
            multi = rec.kind in MULTI_KEY_KINDS
            applied = multi or rec.kind == "put" or rec.output is True
            if first is None:
                if applied:
                    v.lost.append(
                        f"op {rec.op_id} {rec.kind} {rec.key!r}={rec.value} {rec.session}"
                    )
                else:
                    v.answer_mismatches.append(
                        f"op {rec.op_id} {rec.session}: answered conflict, not in the log"
                    )
                continue
            if multi:
                mismatch = _multi_mismatch(rec, first)
                if mismatch is not None:
                    v.answer_mismatches.append(mismatch)
            elif first.ok != applied or (not applied and first.error != ERR_CONFLICT):
                v.answer_mismatches.append(
                    f"op {rec.op_id} {rec.session}: answered applied={applied}, the log's "
                    f"execution at {first.index} gave ok={first.ok} error={first.error}"
                )
            elif rec.index is not None and rec.index != first.index:
                v.answer_mismatches.append(
                    f"op {rec.op_id} {rec.session}: answered index {rec.index}, executed at "
                    f"{first.index}"
                )
        elif rec.status == FAIL:
            if first is not None:
                v.fail_but_applied.append(
                    f"op {rec.op_id} {rec.session}: every attempt answered 503 or was refused, "
                    f"but it was executed at index {first.index}"
                )
        elif rec.status == INFO:
            if first is None:
                rec.status = FAIL
                rec.resolution = "never-applied"
                v.resolved_never += 1
            elif rec.kind == "cas" and not first.ok:
                # Executed, but the comparison failed: it had no effect on the state.
                rec.status = FAIL
                rec.resolution = f"applied@{first.index} (conflict, no effect)"
                v.resolved_never += 1
            else:
                rec.resolution = f"applied@{first.index}"
                v.resolved_applied += 1
    v.check = check_history(
        (rec.to_operation() for rec in records if rec.kind in SINGLE_KEY_KINDS),
        max_steps=max_steps,
    )
    v.linearizable = v.check.ok
    v.revisions = check_revisions(revision_history(records, rp, lease_sessions))
    return v


def _multi_mismatch(rec: OpRecord, first: Execution) -> str | None:
    """Whether a multi-key write's answer disagrees with the log's execution of it."""
    refused = rec.output is False
    if first.ok == refused:
        return (
            f"op {rec.op_id} {rec.session}: answered {'refused' if refused else 'ok'}, the "
            f"log's execution at {first.index} gave ok={first.ok} error={first.error}"
        )
    answered = rec.answer.get("revision") if isinstance(rec.answer, dict) else None
    made = None if first.answer is None else first.answer.revision
    if isinstance(answered, int) and made is not None and answered != made:
        return (
            f"op {rec.op_id} {rec.session}: answered revision {answered}, the log's "
            f"execution at {first.index} made revision {made}"
        )
    return None


def _get_answer(rec: OpRecord) -> KVResult | None:
    """A single-key read's answer, if it carries the store's revision."""
    body = rec.answer
    if not isinstance(body, dict) or not isinstance(body.get("revision"), int):
        return None
    revision = body["revision"]
    if not rec.found:
        return KVResult(ok=False, index=0, revision=revision, error=ERR_NOT_FOUND)
    try:
        item = Item(
            key=rec.key,
            value_json=json_text(body["value"]),
            create_revision=int(body["create_revision"]),
            mod_revision=int(body["mod_revision"]),
            version=int(body["version"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return KVResult(ok=True, index=0, revision=revision, item=item, found=True)


def revision_history(
    records: Iterable[OpRecord], rp: Replay, lease_sessions: Iterable[str] = ()
) -> list[RevOp]:
    """The input of the revision check (module docstring): writes as the log
    executed them, reads as the clients saw them (when their answer says the
    store's revision). Run after the ``info`` writes were settled.

    Writes of the lease clients (``lease_sessions``, their puts) and the
    revokes that deleted keys (:attr:`Replay.revoke_deletes`; the model has no
    leases: a revoke enters as a transaction deleting exactly the keys it
    deleted) enter as the log executed them, called at 0 and answered by the
    end: their timing is the lease check's business (:mod:`raftkv.jepsen.feeds`)."""
    records = list(records)
    end = max((rec.ret for rec in records if rec.ret is not None), default=0.0) + 1.0
    ops: list[RevOp] = []
    foreign = 1 + max((rec.op_id for rec in records), default=0)
    for session in lease_sessions:
        executed = rp.executed(session)
        if executed and executed[0].command is not None:
            made = executed[0].answer
            if isinstance(made, KVResult) and made.ok:
                ops.append(
                    RevOp(
                        op_id=foreign,
                        client_id=LEASE_CLIENT,
                        command=executed[0].command,
                        call=0.0,
                        ret=end,
                        answer=made,
                    )
                )
                foreign += 1
    for index, revision, keys in rp.revoke_deletes:
        deletes = tuple(TxnDelete(range=KeyRange(key=k)) for k in keys)
        responses = tuple(Deleted(index=index, revision=revision, deleted=1) for _ in keys)
        ops.append(
            RevOp(
                op_id=foreign,
                client_id=LEASE_CLIENT,
                command=Txn(compares=(), success=deletes, failure=(), time_ms=0),
                call=0.0,
                ret=end,
                answer=TxnAnswer(
                    index=index, revision=revision, succeeded=True, responses=responses
                ),
            )
        )
        foreign += 1
    for rec in records:
        answer: Answer | None
        command: Command
        if rec.session is not None:
            executed = rp.executed(rec.session)
            if not executed or rec.status == FAIL:
                continue  # never applied; or reported (lost, fail but applied)
            first = executed[0]
            if first.command is None or first.answer is None:
                continue
            # An info write the log executed: answered, at the latest, by the end.
            ret = rec.ret if rec.status == OK and rec.ret is not None else end
            command, answer = first.command, first.answer
        elif rec.status == OK and rec.kind == "range" and rec.command is not None:
            answer = listing_of(rec.answer) or refusal_of(rec.answer)
            if answer is None:
                continue
            command, ret = rec.command, rec.ret if rec.ret is not None else end
        elif rec.status == OK and rec.kind == "get":
            answer = _get_answer(rec)
            if answer is None:
                continue
            command, ret = Get(key=rec.key, time_ms=0), rec.ret if rec.ret is not None else end
        else:
            continue
        ops.append(
            RevOp(
                op_id=rec.op_id,
                client_id=rec.client,
                command=command,
                call=rec.call,
                ret=ret,
                answer=answer,
            )
        )
    return ops
