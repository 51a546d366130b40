"""The replicated key/value state machine the simulated clients talk to.

Rule: applying a log entry is a pure function of the store's state and the
entry's bytes, so every replica that applies the same log ends in the same
state. Commands are JSON with sorted keys (deterministic bytes). Reads go through
the log too, which makes them linearizable by construction. An entry with empty
data is a leader's no-op. Each client's latest request id is remembered
(dissertation §6.3), so a command that arrives twice -- a duplicated network
message proposed again -- takes effect once and its duplicate returns the first
result; a command older than the client's latest is ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raftkv.core._frozen import fast_init
from raftkv.core.types import Entry, EntryType

KINDS = ("put", "get", "cas", "delete")

_NORMAL = EntryType.NORMAL

# One encoder for every command: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One client operation as carried in a log entry.

    Attributes:
        client_id: the issuing client.
        request_id: the client's sequence number for this operation (increasing).
        op: ``put``, ``get``, ``cas`` or ``delete``.
        key: the key acted on.
        value: the new value (``put``, ``cas``).
        expect: the expected current value for ``cas``; ``None`` means "absent".
    """

    client_id: int
    request_id: int
    op: str
    key: str
    value: Any = None
    expect: Any = None

    def encode(self) -> bytes:
        """Deterministic bytes for a log entry."""
        return _encode(
            {
                "client_id": self.client_id,
                "request_id": self.request_id,
                "op": self.op,
                "key": self.key,
                "value": self.value,
                "expect": self.expect,
            }
        ).encode()

    @staticmethod
    def decode(data: bytes) -> Command:
        """Parse bytes written by :meth:`encode`.

        Raises:
            ValueError: on bytes that are not a command.
        """
        obj = json.loads(data)
        if not isinstance(obj, dict) or obj.get("op") not in KINDS:
            raise ValueError(f"not a command: {data!r}")
        return Command(
            client_id=int(obj["client_id"]),
            request_id=int(obj["request_id"]),
            op=str(obj["op"]),
            key=str(obj["key"]),
            value=obj.get("value"),
            expect=obj.get("expect"),
        )


@fast_init
@dataclass(frozen=True, slots=True)
class Result:
    """What applying a command produced (the fields of a linearizability ``Operation``).

    ``output``: get -> the value (``None`` when absent), cas -> success,
    delete -> whether the key existed, put -> ``None``. ``found`` is meaningful
    for gets only.
    """

    output: Any = None
    found: bool = True


class KVStateMachine:
    """A dict of JSON values plus per-client session state."""

    __slots__ = ("data", "applied_index", "_sessions", "applied_commands", "duplicates", "_decoded")

    def __init__(self, decode_cache: dict[bytes, Command] | None = None) -> None:
        """Args:
        decode_cache: a dict shared by the replicas of one run, so each
            command's JSON is parsed once rather than once per replica.
        """
        self.data: dict[str, Any] = {}
        # Invariant: applied_index is the index of the last entry applied.
        self.applied_index = 0
        # client_id -> (last request id applied, its result)
        self._sessions: dict[int, tuple[int, Result]] = {}
        self.applied_commands = 0
        self.duplicates = 0
        self._decoded: dict[bytes, Command] = decode_cache if decode_cache is not None else {}

    def snapshot(self) -> bytes:
        """Deterministic bytes of the whole replicated state: data, sessions, applied index.

        The session table is part of it (§6.3): a node restored from a snapshot
        must still recognise a retried command as a duplicate.
        """
        return _encode(
            {
                "applied_index": self.applied_index,
                "data": self.data,
                "sessions": [
                    [cid, rid, r.output, r.found]
                    for cid, (rid, r) in sorted(self._sessions.items())
                ],
            }
        ).encode()

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a :meth:`snapshot` image.

        Raises:
            ValueError: ``data`` is not a snapshot image.
        """
        try:
            obj = json.loads(data)
            applied_index = int(obj["applied_index"])
            store = dict(obj["data"])
            sessions = {
                int(cid): (int(rid), Result(output, bool(found)))
                for cid, rid, output, found in obj["sessions"]
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a KV snapshot: {exc}") from exc
        self.data = store
        self._sessions = sessions
        self.applied_index = applied_index

    def apply(self, entry: Entry) -> tuple[Command, Result] | None:
        """Apply one committed entry.

        Returns:
            ``None`` for a no-op (empty data) or for a stale duplicate;
            otherwise the command and its result (for a duplicate of the
            latest request: the first result, without applying it again).

        Raises:
            ValueError: ``entry`` is not the next index to apply, or its data is
                not a command.
        """
        if entry.index != self.applied_index + 1:
            raise ValueError(f"applying index {entry.index} after {self.applied_index}")
        self.applied_index = entry.index
        if not entry.data or entry.type is not _NORMAL:
            return None
        cmd = self._decoded.get(entry.data)
        if cmd is None:
            cmd = self._decoded[entry.data] = Command.decode(entry.data)
        session = self._sessions.get(cmd.client_id)
        if session is not None:
            last_id, last_result = session
            if cmd.request_id == last_id:
                self.duplicates += 1
                return cmd, last_result
            if cmd.request_id < last_id:
                self.duplicates += 1
                return None
        result = self._execute(cmd)
        self._sessions[cmd.client_id] = (cmd.request_id, result)
        self.applied_commands += 1
        return cmd, result

    def _execute(self, cmd: Command) -> Result:
        data = self.data
        if cmd.op == "put":
            data[cmd.key] = cmd.value
            return _NO_OUTPUT
        if cmd.op == "get":
            if cmd.key in data:
                return Result(data[cmd.key], True)
            return _NOT_FOUND
        if cmd.op == "cas":
            current = data.get(cmd.key) if cmd.key in data else None
            present = cmd.key in data
            matches = (not present) if cmd.expect is None else (present and current == cmd.expect)
            if matches:
                data[cmd.key] = cmd.value
            return _TRUE if matches else _FALSE
        existed = cmd.key in data
        data.pop(cmd.key, None)
        return _TRUE if existed else _FALSE


# Results are immutable values, so the common ones are shared rather than
# built again for every command on every replica.
_NO_OUTPUT = Result(None)
_NOT_FOUND = Result(None, False)
_TRUE = Result(True)
_FALSE = Result(False)
