"""The KV state machine's snapshot format: version 4 written, 1 to 4 read.

Rule: a snapshot is one msgpack map -- the store's wire form, the sessions,
the leases ``(id, ttl_s, remaining_ms)``, the alarm, ``applied_index`` and
``log_time_ms`` -- with the keys of each lease rebuilt from the store on
restore; the same state gives the same bytes on every replica. Reading checks
everything before the state machine changes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from raftkv.replica.commands import (
    InvalidCommand,
    InvalidSnapshot,
    check_key,
    check_value,
    json_text,
)
from raftkv.replica.leases import LeaseTable
from raftkv.replica.mvcc import (
    MVCCError,
    MVCCStore,
    PutOp,
)
from raftkv.replica.sessions import (
    SessionRecord,
    decode_sessions,
)

# Version 4: the MVCC store and the leases. 3: the MVCC store; 2: a plain map and
# sessions of outcomes; 1: sessions with cached results (their values are dropped
# on restore).
_SNAPSHOT_VERSION: Final = 4
_SNAPSHOT_VERSIONS: Final = (1, 2, 3, 4)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Image:
    """A snapshot, read and checked: what :meth:`KVStateMachine.restore` installs."""

    store: MVCCStore
    leases: LeaseTable
    sessions: list[tuple[str, SessionRecord]]
    alarm: bool
    applied_index: int
    log_time_ms: int


def _encoder(
    pack_store: Callable[[], bytes],
    sessions: list[Any],
    leases: list[Any],
    header: tuple[int, int, bool],
) -> Callable[[], bytes]:
    """The function that encodes a captured state (:meth:`KVStateMachine.snapshot_later`)."""

    def encode() -> bytes:
        applied_index, log_time_ms, alarm = header
        body = {
            "version": _SNAPSHOT_VERSION,
            "applied_index": applied_index,
            "log_time_ms": log_time_ms,
            "alarm": alarm,
            "store": pack_store(),
            "sessions": sorted(sessions, key=lambda wire: str(wire[0])),
            "leases": leases,
        }
        return _pack_snapshot(body)

    return encode


def _read(data: bytes) -> _Image:
    """The snapshot in ``data``, checked (reads versions 1 to 4).

    Raises:
        InvalidSnapshot: if ``data`` was not produced by :meth:`KVStateMachine.snapshot`.
    """
    try:
        body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise InvalidSnapshot(f"not msgpack: {exc}") from exc
    if not isinstance(body, dict) or body.get("version") not in _SNAPSHOT_VERSIONS:
        raise InvalidSnapshot("not a raftkv KV snapshot (version 1 to 4)")
    version = body["version"]
    applied_index = body.get("applied_index")
    log_time_ms = body.get("log_time_ms")
    if type(applied_index) is not int or type(log_time_ms) is not int:
        raise InvalidSnapshot("snapshot needs integer applied_index and log_time_ms")
    alarm = body.get("alarm", False)
    if not isinstance(alarm, bool):
        raise InvalidSnapshot("snapshot alarm must be a boolean")
    store = _store_of(body, version)
    try:
        leases = LeaseTable.from_wire(
            body.get("leases", []) if version >= 4 else [], store.live_leases()
        )
    except ValueError as exc:
        raise InvalidSnapshot(f"bad leases: {exc}") from exc
    records = decode_sessions(body.get("sessions"), version)
    return _Image(
        store=store,
        leases=leases,
        sessions=records,
        alarm=alarm,
        applied_index=applied_index,
        log_time_ms=log_time_ms,
    )


def _pack_snapshot(body: dict[str, Any]) -> bytes:
    """``msgpack.packb(body)``, byte for byte, where ``body["store"]`` arrives
    already packed (:meth:`~raftkv.replica.mvcc.MVCCStore.capture`, which packs
    a chunk of keys per call so the node's event loop runs in between)."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_map_header(len(body))]
    for name, value in body.items():
        parts.append(packer.pack(name))
        parts.append(value if name == "store" else packer.pack(value))
    return b"".join(parts)


def _store_of(body: dict[str, Any], version: int) -> MVCCStore:
    """The store of a snapshot body (rebuilt from a plain map for versions 1-2).

    Raises:
        InvalidSnapshot: malformed.
    """
    if version >= 3:
        try:
            return MVCCStore.from_wire(body.get("store"))
        except MVCCError as exc:
            raise InvalidSnapshot(f"bad store: {exc}") from exc
    raw_data = body.get("data")
    if not isinstance(raw_data, list):
        raise InvalidSnapshot("snapshot needs a data list")
    ops = []
    try:
        for pair in raw_data:
            if not isinstance(pair, list) or len(pair) != 2:
                raise InvalidSnapshot("data items must be [key, value]")
            key = check_key(pair[0]).encode("utf-8")
            ops.append(PutOp(key=key, value=json_text(check_value(pair[1]))))
    except InvalidCommand as exc:
        raise InvalidSnapshot(str(exc)) from exc
    store = MVCCStore()
    if ops:
        try:
            store.txn((), ops, ())
        except MVCCError as exc:
            raise InvalidSnapshot(f"bad data: {exc}") from exc
    return store
