"""The KV state machine: :class:`KVStateMachine`, applying committed entries.

Rule: :meth:`KVStateMachine.apply` decodes an entry once, runs its session
checks (package rule 4), and dispatches the command -- the single-key ones
here, the transactions and the lease commands in their bases' modules -- on
the hot path without another call layer; a snapshot is written and read by
:mod:`._snapshot`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from raftkv.replica.commands import (
    ABSENT,
    Alarm,
    Cas,
    Command,
    Compact,
    Delete,
    DeleteRange,
    EtcdTxn,
    Get,
    InvalidCommand,
    KVError,
    LeaseGrant,
    LeaseRevoke,
    MultiPut,
    Put,
    Range,
    Session,
    Txn,
    decode_command,
    json_text,
)
from raftkv.replica.kv._answers import (
    ERR_CONFLICT,
    ERR_INVALID_COMMAND,
    ERR_NOSPACE,
    ERR_NOT_FOUND,
    ERR_SESSION_OWNER,
    ERR_STALE_SEQUENCE,
    ERR_TOO_MANY_OWNER_SESSIONS,
    ERR_TOO_MANY_SESSIONS,
    NOT_JSON,
    Answer,
    Deleted,
    KVResult,
    LeaseGranted,
    LeaseRevoked,
    Listing,
    TxnAnswer,
    _deleted,
    _json_equal,
    _listing,
    stored_json,
)
from raftkv.replica.kv._leasecmds import _LeaseCommands
from raftkv.replica.kv._snapshot import _encoder, _read
from raftkv.replica.kv._txn import _Transactions
from raftkv.replica.mvcc import (
    DeleteRangeOp,
    DeleteResult,
    MVCCError,
    PutOp,
)
from raftkv.replica.sessions import (
    Outcome,
    SessionRecord,
    SessionTable,
)

COMPACT_KEYS_PER_ENTRY: Final = 16
"""Keys of a compaction's physical pass freed per applied entry (about 0.15 ms with ten
versions per key)."""


class KVStateMachine(_Transactions, _LeaseCommands):
    """The key/value store replicated by raftkv; implements ``StateMachine``.

    Every argument decides what is applied: every replica must use the same values
    (the server uses the defaults).

    Args:
        session_ttl_ms: how long (in log time) a client session lives after its
            last command.
        max_sessions: most sessions alive at once; a command that would create
            one more is refused with :data:`ERR_TOO_MANY_SESSIONS`.
        max_sessions_per_owner: most sessions alive at once with the same (not
            ``None``) owner; beyond: :data:`ERR_TOO_MANY_OWNER_SESSIONS`.
        decode_cache: a dict shared by the replicas of one process (the
            simulator's), so each command's bytes are decoded once rather than
            once per replica. Decoded commands are immutable values.
    """

    # ------------------------------------------------------------------ StateMachine

    def apply(self, index: int, command: bytes) -> Answer:
        """Apply the committed entry at ``index``.

        Empty ``command`` bytes are the leader's no-op. Never raises for bad
        command bytes (see the package rules).

        A retry (the session's last ``seq`` again) is not applied; its result has
        ``replayed=True`` and the first attempt's ``ok``, ``error``, ``found``,
        ``index`` and ``revision`` (a transaction: ``succeeded``). A replayed
        conflict has no ``current`` (the value then was not kept, and the value
        now may match the expectation, which would contradict the conflict). A
        replayed read (get, range) reads again, at ``index`` (a read changes
        nothing, so answering it later is still linearizable).

        Raises:
            KVError: if ``index`` is not above :attr:`applied_index`.
        """
        if index <= self._applied_index:
            raise KVError(f"apply({index}) after index {self._applied_index}: must increase")
        self._applied_index = index
        if not command:
            return KVResult(ok=True, index=index, revision=self._store.revision)
        cache = self._decoded
        cmd = cache.get(command) if cache is not None else None
        if cmd is None:
            try:
                cmd = decode_command(command)
            except InvalidCommand as exc:
                return self._error(index, f"{ERR_INVALID_COMMAND}: {exc}")
            if cache is not None:
                cache[command] = cmd
        if self._store.compacting:
            # The physical half of a compaction, a slice per entry (the node
            # also runs slices while idle: compact_step).
            self._store.compact_step(COMPACT_KEYS_PER_ENTRY)
        if cmd.time_ms > self._log_time_ms:
            self._log_time_ms = cmd.time_ms
        sessions = self._sessions
        sessions.expire(self._log_time_ms)
        session = cmd.session
        if session is None:
            return self._execute(index, cmd)
        record = sessions.get(session.client_id)
        if record is None:
            full = sessions.refuse_new(session.owner)
            if full is not None:
                return self._error(
                    index, ERR_TOO_MANY_OWNER_SESSIONS if full else ERR_TOO_MANY_SESSIONS
                )
        elif record.owner != session.owner:
            # Before the sequence checks: another owner neither moves the session
            # nor learns anything of it (not even its sequence).
            return self._error(index, ERR_SESSION_OWNER)
        elif session.seq <= record.seq:
            # A retry (or a straggler): answer without applying again (§6.3).
            sessions.touch(session.client_id, record, self._log_time_ms)
            if session.seq == record.seq:
                return self._replay(index, record, cmd)
            return self._error(index, ERR_STALE_SEQUENCE)
        result = self._execute(index, cmd)
        if result.executed:
            self._record(session, index, cmd, result)
        return result

    def snapshot(self) -> bytes:
        """The whole state as deterministic msgpack."""
        return self.snapshot_later()()

    def snapshot_later(self) -> Callable[[], bytes]:
        """Capture the state now; the returned function encodes that capture as
        :meth:`snapshot` would have, and may run in another thread while
        :meth:`apply` goes on (``SnapshotsLater``).

        The capture is the store's :meth:`~raftkv.replica.mvcc.MVCCStore.capture`
        (a shallow copy) and the session records' wire form.
        """
        return _encoder(
            self._store.capture(),
            self._sessions.copy_wire(),
            self._leases.to_wire(),
            (self._applied_index, self._log_time_ms, self._alarm),
        )

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot; on error the state is unchanged.

        Reads versions 1 to 3 too (1 and 2: a plain key/value map, put into the
        store in one revision; version 1's cached session values are dropped;
        1 to 3 have no leases). Sessions
        beyond the caps are kept; new ones are refused until enough expire.

        Raises:
            InvalidSnapshot: if ``data`` was not produced by :meth:`snapshot`.
        """
        image = _read(data)
        sessions = SessionTable(
            ttl_ms=self._sessions.ttl_ms,
            max_sessions=self._sessions.max_sessions,
            max_sessions_per_owner=self._sessions.max_sessions_per_owner,
        )
        sessions.restore(image.sessions)
        self._store = image.store
        self._leases = image.leases
        self._restores += 1
        self._sessions = sessions
        self._alarm = image.alarm
        self._applied_index = image.applied_index
        self._log_time_ms = image.log_time_ms

    # ------------------------------------------------------------------ internals

    def _record(self, session: Session, index: int, cmd: Command, result: Answer) -> None:
        if isinstance(cmd, Get | Range):
            outcome = Outcome.READ
        elif isinstance(result, TxnAnswer):
            outcome = Outcome.OK if result.succeeded else Outcome.CONFLICT
        elif isinstance(result, KVResult) and result.error == ERR_NOT_FOUND:
            outcome = Outcome.NOT_FOUND
        elif isinstance(result, KVResult) and result.error == ERR_CONFLICT:
            outcome = Outcome.CONFLICT
        else:
            outcome = Outcome.OK
        found = result.found if isinstance(result, KVResult) else False
        self._sessions.record(
            session,
            index=index,
            revision=result.revision,
            outcome=outcome,
            found=found,
            log_time_ms=self._log_time_ms,
        )

    def _replay(self, index: int, record: SessionRecord, cmd: Command) -> Answer:
        """The answer to a retry of the session's last command (see :meth:`apply`)."""
        if record.outcome is Outcome.READ and isinstance(cmd, Get | Range):
            result = self._execute(index, cmd)
            if isinstance(result, Listing):
                return Listing(
                    index=result.index,
                    revision=result.revision,
                    items=result.items,
                    count=result.count,
                    more=result.more,
                    replayed=True,
                )
            assert isinstance(result, KVResult)
            return KVResult(
                ok=result.ok,
                index=result.index,
                revision=result.revision,
                item=result.item,
                found=result.found,
                error=result.error,
                replayed=True,
            )
        if isinstance(cmd, Txn):
            return TxnAnswer(
                index=record.index,
                revision=record.revision,
                succeeded=record.outcome is Outcome.OK,
                replayed=True,
            )
        if isinstance(cmd, DeleteRange):
            return Deleted(index=record.index, revision=record.revision, deleted=0, replayed=True)
        if isinstance(cmd, LeaseGrant):
            return LeaseGranted(
                index=record.index,
                revision=record.revision,
                id=cmd.id,
                ttl_s=cmd.ttl_s,
                replayed=True,
            )
        if isinstance(cmd, LeaseRevoke):
            return LeaseRevoked(
                index=record.index, revision=record.revision, deleted=0, replayed=True
            )
        return KVResult(
            ok=record.outcome in (Outcome.OK, Outcome.READ),
            index=record.index,
            revision=record.revision,
            found=record.found,
            error=_OUTCOME_ERRORS[record.outcome],
            replayed=True,
        )

    def _execute(self, index: int, cmd: Command) -> Answer:
        store = self._store
        if isinstance(cmd, Put):
            if self._alarm:
                return self._error(index, ERR_NOSPACE)
            if cmd.lease:
                return self._put_with_lease(index, cmd)
            key = cmd.key.encode("utf-8")
            revision, existed = store.put_found(key, json_text(cmd.value))
            if self._leases.attached_keys:
                self._leases.attach(key, 0)  # a plain put leaves the key's lease
            return KVResult(ok=True, index=index, revision=revision, found=existed)
        if isinstance(cmd, Get):
            result = self.read(cmd.key)
            return KVResult(
                ok=result.ok,
                index=index,
                revision=result.revision,
                item=result.item,
                found=result.found,
                error=result.error,
            )
        if isinstance(cmd, Delete):
            revision, deleted = store.delete_range(cmd.key.encode("utf-8"))
            if not deleted:
                return self._error(index, ERR_NOT_FOUND)
            if deleted[0].lease:
                self._leases.attach(deleted[0].key, 0)
            return KVResult(ok=True, index=index, revision=revision, found=True)
        if isinstance(cmd, Cas):
            return self._cas(index, cmd)
        if isinstance(cmd, MultiPut):
            if self._alarm:
                return self._error(index, ERR_NOSPACE)
            ops = [PutOp(key=k.encode("utf-8"), value=json_text(v)) for k, v in cmd.pairs.items()]
            txn = store.txn((), ops, ())
            self._sync_leases(False)
            return KVResult(ok=True, index=index, revision=txn.revision)
        if isinstance(cmd, Range):
            try:
                found = self._range(
                    cmd.range,
                    cmd.revision,
                    cmd.limit,
                    cmd.keys_only,
                    cmd.count_only,
                    cmd.sort_order,
                    cmd.sort_target,
                )
            except MVCCError as exc:
                return self._revision_error(index, exc)
            return _listing(index, found)
        if isinstance(cmd, DeleteRange):
            key, end = cmd.range.to_bytes()
            done = store.execute(DeleteRangeOp(key=key, range_end=end, prev_kv=cmd.prev_kv))
            assert isinstance(done, DeleteResult)
            if done.deleted:
                self._sync_leases(False)
            return _deleted(index, done)
        if isinstance(cmd, Txn):
            return self._txn(index, cmd)
        if isinstance(cmd, EtcdTxn):
            return self._etcd_txn(index, cmd)
        if isinstance(cmd, Compact):
            try:
                store.compact(cmd.revision)
            except MVCCError as exc:
                return self._revision_error(index, exc)
            return KVResult(ok=True, index=index, revision=store.revision)
        if isinstance(cmd, Alarm):
            self._alarm = cmd.active
            return KVResult(ok=True, index=index, revision=store.revision)
        return self._lease_command(index, cmd)

    def _cas(self, index: int, cmd: Cas) -> KVResult:
        store = self._store
        key = cmd.key.encode("utf-8")
        kv = store.get(key)
        if cmd.expect is ABSENT:
            matches = kv is None
        else:
            matches = kv is not None and _json_equal(stored_json(kv.value), cmd.expect)
        if not matches:
            current = None if kv is None else stored_json(kv.value)
            if current is NOT_JSON:
                current = None
            return self._error(index, ERR_CONFLICT, found=kv is not None, current=current)
        if self._alarm:
            return self._error(index, ERR_NOSPACE)
        revision, _ = store.put(key, json_text(cmd.value), prev_kv=False)
        if self._leases.attached_keys:
            self._leases.attach(key, 0)
        return KVResult(ok=True, index=index, revision=revision, found=kv is not None)


_OUTCOME_ERRORS: Final = {
    Outcome.OK: None,
    Outcome.NOT_FOUND: ERR_NOT_FOUND,
    Outcome.CONFLICT: ERR_CONFLICT,
    Outcome.READ: None,
}
