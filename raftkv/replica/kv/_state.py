"""What the KV state machine holds, and what may be read from it without applying
an entry: local reads (after a ReadIndex barrier, or stale) and the change feed
a watch hub follows.

Rule: every field of :class:`~raftkv.replica.kv.KVStateMachine` is set here,
with its invariant, by :class:`_KVState`; the command families
(:mod:`._txn`, :mod:`._leasecmds`) and the apply loop (:mod:`._statemachine`)
are subclasses that add methods. The lease invariant is kept by
:meth:`_KVState._sync_leases`, after every write that may move a key's lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from raftkv.replica.commands import (
    Command,
    JSONValue,
    KeyRange,
)
from raftkv.replica.kv._answers import (
    ERR_COMPACTED,
    ERR_FUTURE_REVISION,
    ERR_INVALID_COMMAND,
    ERR_NOT_FOUND,
    Item,
    KVResult,
    Listing,
    NotJSON,
    _listing,
    stored_json,
)
from raftkv.replica.leases import LeaseTable
from raftkv.replica.mvcc import (
    CompactedError,
    Event,
    FutureRevisionError,
    MVCCError,
    MVCCStore,
    RangeOp,
    RangeResult,
    SortOrder,
    SortTarget,
)
from raftkv.replica.sessions import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_OWNER,
    DEFAULT_SESSION_TTL_MS,
    SessionTable,
)

_SORT_ORDERS: Final = {
    "none": SortOrder.NONE,
    "ascend": SortOrder.ASCEND,
    "descend": SortOrder.DESCEND,
}
_SORT_TARGETS: Final = {
    "key": SortTarget.KEY,
    "version": SortTarget.VERSION,
    "create_revision": SortTarget.CREATE,
    "mod_revision": SortTarget.MOD,
    "value": SortTarget.VALUE,
}


class _KVState:
    """The state machine's state and its reads; a base of :class:`KVStateMachine`."""

    def __init__(
        self,
        *,
        session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_sessions_per_owner: int = DEFAULT_MAX_SESSIONS_PER_OWNER,
        decode_cache: dict[bytes, Command] | None = None,
    ) -> None:
        self._sessions = SessionTable(
            ttl_ms=session_ttl_ms,
            max_sessions=max_sessions,
            max_sessions_per_owner=max_sessions_per_owner,
        )
        self._decoded = decode_cache
        self._store = MVCCStore()
        self._leases = LeaseTable()
        # Invariant: a key is attached to lease L in _leases iff its newest
        # version in _store is live with lease L (leases.py rule 2).
        self._restores = 0
        # Invariant: how many times restore() replaced the state.
        # Invariant: the NOSPACE alarm, as the last Alarm entry applied left it.
        self._alarm = False
        # Invariant: the index of the last entry passed to apply() (or restored).
        self._applied_index = 0
        # Invariant: the largest time_ms of any command applied (or restored).
        self._log_time_ms = 0

    # ------------------------------------------------------------------ inspection

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied or restored."""
        return self._applied_index

    @property
    def log_time_ms(self) -> int:
        """The state machine's clock: the largest ``time_ms`` applied so far."""
        return self._log_time_ms

    @property
    def session_ttl_ms(self) -> int:
        return self._sessions.ttl_ms

    @property
    def revision(self) -> int:
        """The store's current revision (1 in a fresh store)."""
        return self._store.revision

    @property
    def compact_revision(self) -> int:
        """The revision the store is compacted to (0: never)."""
        return self._store.compact_revision

    @property
    def size_bytes(self) -> int:
        """The store's size as the quota measures it (:attr:`MVCCStore.size_bytes`)."""
        return self._store.size_bytes

    @property
    def compacting(self) -> bool:
        """Whether a compaction's physical pass is unfinished (:meth:`compact_step`)."""
        return self._store.compacting

    def compact_step(self, budget: int) -> bool:
        """Free the old versions of up to ``budget`` keys of a compaction; whether
        work is left. Unobservable but in :attr:`size_bytes` and memory, so a
        node may call it whenever it is idle (:meth:`MVCCStore.compact_step`)."""
        return self._store.compact_step(budget)

    @property
    def alarm(self) -> bool:
        """Whether the NOSPACE alarm is raised (rule 5)."""
        return self._alarm

    @property
    def leases(self) -> LeaseTable:
        """The lease table (read it, never change it: only entries do)."""
        return self._leases

    @property
    def restores(self) -> int:
        """How many snapshots :meth:`restore` installed in this object (a
        watch hub re-syncs its watchers when it changes)."""
        return self._restores

    def last_events(self) -> tuple[int, tuple[Event, ...]] | None:
        """The current revision and its events (in key order, with ``prev_kv``)
        if an entry applied to this state machine since its last restore wrote
        it; else ``None``. Cheap until called: the store records only the keys
        a revision writes. A watch hub calls it after each applied entry and
        ignores revisions it has seen."""
        return self._store.last_events()

    def events_between(
        self, key: bytes, range_end: bytes, start_revision: int, end_revision: int
    ) -> list[Event]:
        """The store's :meth:`~raftkv.replica.mvcc.MVCCStore.events_between`.

        Raises:
            CompactedError: ``start_revision`` is below the compact revision.
        """
        return self._store.events_between(key, range_end, start_revision, end_revision)

    def sessions(self) -> dict[str, tuple[int, int]]:
        """``client_id -> (last seq, last active log time)``, sorted by client id."""
        return self._sessions.view()

    def read(self, key: str) -> KVResult:
        """Read ``key`` from local state (after a ReadIndex barrier, or stale).

        ``index`` is the applied index the value is current as of.
        """
        store = self._store
        kv = store.get(key.encode("utf-8"))
        if kv is None:
            return KVResult(
                ok=False, index=self._applied_index, revision=store.revision, error=ERR_NOT_FOUND
            )
        return KVResult(
            ok=True,
            index=self._applied_index,
            revision=store.revision,
            item=Item.of(kv),
            found=True,
        )

    def range(
        self,
        key_range: KeyRange,
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: str = "none",
        sort_target: str = "key",
    ) -> Listing:
        """Read a range from local state (after a ReadIndex barrier, or stale).

        Raises:
            CompactedError: ``revision`` is below the compaction point.
            FutureRevisionError: ``revision`` is above the current revision.
        """
        result = self._range(
            key_range, revision, limit, keys_only, count_only, sort_order, sort_target
        )
        return _listing(self._applied_index, result)

    def etcd_range(self, op: RangeOp) -> RangeResult:
        """An etcd v3 range read on raw bytes from local state (after a ReadIndex
        barrier, or stale): the store's own answer.

        Raises:
            InvalidRequestError: the empty key.
            RevisionError: ``op.revision`` is compacted or in the future.
        """
        result = self._store.execute(op)
        assert isinstance(result, RangeResult)
        return result

    def items(self) -> Iterator[tuple[str, JSONValue | NotJSON]]:
        """``(key, value)`` pairs in key order, at the current revision
        (:data:`NOT_JSON` for a value that is not JSON text)."""
        for kv in self._store.range(b"\0", b"\0").kvs:
            yield kv.key.decode("utf-8", "surrogateescape"), stored_json(kv.value)

    def __len__(self) -> int:
        return self._store.key_count

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store.get(key.encode("utf-8")) is not None

    def _error(self, index: int, error: str, **fields: Any) -> KVResult:
        return KVResult(ok=False, index=index, revision=self._store.revision, error=error, **fields)

    def _sync_leases(self, force: bool) -> None:
        """After a write: attach each key the revision wrote to the lease its new
        version names (a delete's tombstone names none). Nothing to do while no
        key has a lease and the write attached none (``force``)."""
        leases = self._leases
        if not (force or leases.attached_keys):
            return
        written = self._store.last_written()
        if written is None:
            return
        for key in written[1]:
            kv = self._store.get(key)
            leases.attach(key, 0 if kv is None else kv.lease)

    def _range(
        self,
        key_range: KeyRange,
        revision: int,
        limit: int,
        keys_only: bool,
        count_only: bool,
        sort_order: str,
        sort_target: str,
    ) -> RangeResult:
        key, end = key_range.to_bytes()
        return self._store.range(
            key,
            end,
            revision=revision,
            limit=limit,
            keys_only=keys_only,
            count_only=count_only,
            sort_order=_SORT_ORDERS[sort_order],
            sort_target=_SORT_TARGETS[sort_target],
        )

    def _revision_error(self, index: int, exc: MVCCError) -> KVResult:
        if isinstance(exc, CompactedError):
            return self._error(index, ERR_COMPACTED, compact_revision=self._store.compact_revision)
        if isinstance(exc, FutureRevisionError):
            return self._error(index, ERR_FUTURE_REVISION)
        return self._error(index, f"{ERR_INVALID_COMMAND}: {exc}")
