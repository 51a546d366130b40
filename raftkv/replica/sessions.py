"""Client sessions: exactly-once writes (Ongaro's dissertation §6.3), bounded.

Rules:

1. A session remembers, per client id, the highest ``seq`` executed, the
   *outcome* of that command -- success, not found, conflict, a read; its log
   index and store revision; whether the key existed -- never a value, its
   owner, and the log time it was last active.
2. A session expires when ``log time - last active > ttl_ms``, checked at apply
   time (:meth:`SessionTable.expire`), so every replica expires the same
   sessions at the same entry. Expiry walks from the front: records are kept
   in order of last activity.
3. A session belongs to the owner it was created with; creating one beyond
   ``max_sessions`` in total, or ``max_sessions_per_owner`` for one owner, is
   refused (:meth:`SessionTable.refuse_new`). These limits and the TTL decide
   what is applied, so every replica must use the same values.
4. A session costs at most :data:`MAX_SESSION_SNAPSHOT_BYTES` of a snapshot.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from raftkv.replica.commands import InvalidCommand, InvalidSnapshot, Session

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_OWNER",
    "DEFAULT_SESSION_TTL_MS",
    "MAX_SESSION_SNAPSHOT_BYTES",
    "Outcome",
    "SessionRecord",
    "SessionTable",
]

DEFAULT_SESSION_TTL_MS: Final = 10 * 60 * 1000
DEFAULT_MAX_SESSIONS: Final = 100_000
"""Most client sessions alive at once, in total (at most ~18.6 MB of a snapshot)."""
DEFAULT_MAX_SESSIONS_PER_OWNER: Final = 10_000
"""Most client sessions alive at once with the same owner (client token)."""
MAX_SESSION_SNAPSHOT_BYTES: Final = 186
"""The most one session adds to a snapshot: its msgpack array of a 128-character
client id (130), seq, last-active time, index and revision (9 each), outcome and
found (1 each) and a 16-character owner (17), plus the array's own header (1)."""


class Outcome(enum.IntEnum):
    """What a session remembers of its last command (its snapshot code)."""

    OK = 0
    NOT_FOUND = 1
    CONFLICT = 2
    READ = 3  # a read: a retry reads again


@dataclass(slots=True)
class SessionRecord:
    """A client session: its last command's ``seq`` and outcome, never a value."""

    seq: int
    index: int  # of the entry that executed ``seq``
    revision: int  # the store's revision after it
    outcome: Outcome
    found: bool  # the key existed before that command
    last_active_ms: int
    owner: str | None

    def to_wire(self, client_id: str) -> list[Any]:
        return [
            client_id,
            self.seq,
            self.last_active_ms,
            self.index,
            int(self.outcome),
            self.found,
            self.owner,
            self.revision,
        ]

    @classmethod
    def from_wire(cls, item: object) -> tuple[str, SessionRecord]:
        """A snapshot item: 8 fields (version 3), or 7 (version 2: no revision).

        Raises:
            InvalidSnapshot, InvalidCommand: not one.
        """
        if not isinstance(item, list) or len(item) not in (7, 8):
            raise InvalidSnapshot(
                "session items must be [id, seq, last_active, index, outcome, found, owner, "
                "revision]"
            )
        cid, seq, last_active, index, outcome, found, owner = item[:7]
        revision = item[7] if len(item) == 8 else 0
        Session(client_id=cid, seq=seq, owner=owner)  # validates
        if type(last_active) is not int or type(index) is not int or type(revision) is not int:
            raise InvalidSnapshot("session last_active, index and revision must be integers")
        if type(outcome) is not int or not isinstance(found, bool):
            raise InvalidSnapshot("session outcome must be an integer and found a boolean")
        try:
            code = Outcome(outcome)
        except ValueError:
            raise InvalidSnapshot(f"unknown session outcome {outcome}") from None
        return cid, cls(seq, index, revision, code, found, last_active, owner)

    @classmethod
    def from_wire_v1(cls, item: object) -> tuple[str, SessionRecord]:
        """A version-1 snapshot item ``[id, seq, last_active, cached result]``: its
        outcome is kept, the values in the cached result are dropped.

        Raises:
            InvalidSnapshot, InvalidCommand: not one.
        """
        if not isinstance(item, list) or len(item) != 4:
            raise InvalidSnapshot("session items must be [id, seq, last_active, result]")
        cid, seq, last_active, raw = item
        Session(client_id=cid, seq=seq)  # validates
        if type(last_active) is not int:
            raise InvalidSnapshot("session last_active must be an integer")
        if not isinstance(raw, list) or len(raw) != 6:
            raise InvalidSnapshot("cached result must be a list of 6 items")
        ok, index, value, found, error, _current = raw
        if not isinstance(ok, bool) or not isinstance(found, bool) or type(index) is not int:
            raise InvalidSnapshot("cached result has bad ok/index/found")
        if ok and error is None:
            # Only a get's result held a value; a retried get reads again.
            outcome = Outcome.OK if value is None else Outcome.READ
        elif not ok and error == "not found":
            outcome = Outcome.NOT_FOUND
        elif not ok and error == "conflict":
            outcome = Outcome.CONFLICT
        else:
            raise InvalidSnapshot(f"cached result has an unknown error {error!r}")
        return cid, cls(seq, index, 0, outcome, found, last_active, None)


class SessionTable:
    """The sessions of one replica (module rules).

    Args:
        ttl_ms: how long (in log time) a session lives after its last command.
        max_sessions: most sessions alive at once.
        max_sessions_per_owner: most sessions alive at once of one owner.
    """

    __slots__ = ("ttl_ms", "max_sessions", "max_sessions_per_owner", "_records", "_owners")

    def __init__(
        self,
        *,
        ttl_ms: int = DEFAULT_SESSION_TTL_MS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_sessions_per_owner: int = DEFAULT_MAX_SESSIONS_PER_OWNER,
    ) -> None:
        if ttl_ms <= 0:
            raise ValueError("session_ttl_ms must be positive")
        if max_sessions <= 0 or max_sessions_per_owner <= 0:
            raise ValueError("max_sessions and max_sessions_per_owner must be positive")
        self.ttl_ms = ttl_ms
        self.max_sessions = max_sessions
        self.max_sessions_per_owner = max_sessions_per_owner
        # Invariant: ordered by last_active_ms, non-decreasing (oldest first), so
        # expiry pops from the front.
        self._records: dict[str, SessionRecord] = {}
        # Invariant: owner -> how many records have it (> 0; no None).
        self._owners: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, client_id: str) -> SessionRecord | None:
        return self._records.get(client_id)

    def view(self) -> dict[str, tuple[int, int]]:
        """``client_id -> (last seq, last active log time)``, sorted by client id."""
        return {cid: (r.seq, r.last_active_ms) for cid, r in sorted(self._records.items())}

    def expire(self, log_time_ms: int) -> None:
        """Drop the sessions idle for longer than the TTL at ``log_time_ms``."""
        horizon = log_time_ms - self.ttl_ms
        records = self._records
        while records:
            cid, record = next(iter(records.items()))
            if record.last_active_ms >= horizon:
                break
            del records[cid]
            if record.owner is not None:
                left = self._owners.pop(record.owner) - 1
                if left:
                    self._owners[record.owner] = left

    def refuse_new(self, owner: str | None) -> bool | None:
        """Whether a new session of ``owner`` would exceed a limit: ``None`` if
        not, ``False`` for the total limit, ``True`` for the per-owner one."""
        if len(self._records) >= self.max_sessions:
            return False
        if owner is not None and self._owners.get(owner, 0) >= self.max_sessions_per_owner:
            return True
        return None

    def touch(self, client_id: str, record: SessionRecord, log_time_ms: int) -> None:
        """Mark a session active now (last in the expiry order)."""
        record.last_active_ms = log_time_ms
        del self._records[client_id]
        self._records[client_id] = record

    def record(
        self,
        session: Session,
        *,
        index: int,
        revision: int,
        outcome: Outcome,
        found: bool,
        log_time_ms: int,
    ) -> None:
        """Remember that ``session.seq`` was executed (creating the session if new)."""
        cid = session.client_id
        old = self._records.pop(cid, None)  # re-inserted last: the newest activity
        if old is None and session.owner is not None:
            self._owners[session.owner] = self._owners.get(session.owner, 0) + 1
        self._records[cid] = SessionRecord(
            seq=session.seq,
            index=index,
            revision=revision,
            outcome=outcome,
            found=found,
            last_active_ms=log_time_ms,
            owner=session.owner,
        )

    def to_wire(self) -> list[list[Any]]:
        """Every session, sorted by client id (snapshots)."""
        return sorted((r.to_wire(cid) for cid, r in self._records.items()), key=_client_id)

    def restore(self, items: list[tuple[str, SessionRecord]]) -> None:
        """Replace every session (a snapshot's, already decoded).

        Raises:
            InvalidSnapshot: a client id appears twice.
        """
        items = sorted(items, key=lambda r: (r[1].last_active_ms, r[0]))  # the invariant
        records = dict(items)
        if len(records) != len(items):
            raise InvalidSnapshot("a client id appears twice in the sessions")
        owners: dict[str, int] = {}
        for record in records.values():
            if record.owner is not None:
                owners[record.owner] = owners.get(record.owner, 0) + 1
        self._records = records
        self._owners = owners

    def copy_wire(self) -> list[list[Any]]:
        """The records as wire lists, unsorted: a cheap capture for a snapshot
        encoded later (:meth:`to_wire` order is restored by sorting then)."""
        return [r.to_wire(cid) for cid, r in self._records.items()]


def _client_id(wire: list[Any]) -> str:
    cid: str = wire[0]
    return cid


def decode_sessions(raw: object, version: int) -> list[tuple[str, SessionRecord]]:
    """The session items of a KV snapshot of ``version``.

    Raises:
        InvalidSnapshot: malformed.
    """
    if not isinstance(raw, list):
        raise InvalidSnapshot("snapshot needs a sessions list")
    read = SessionRecord.from_wire_v1 if version == 1 else SessionRecord.from_wire
    try:
        return [read(item) for item in raw]
    except InvalidCommand as exc:
        raise InvalidSnapshot(str(exc)) from exc
