"""The KV commands on the wire: :func:`encode_command` and :func:`decode_command`.

Rule: a command is a msgpack map with an ``"op"`` and its fields (an
:class:`~raftkv.replica.commands.EtcdTxn` nests its ops as tagged lists);
decoding rebuilds the command through its constructor, so it is validated as
a new one is, and reads every format a released version wrote.
"""

from __future__ import annotations

import enum
from typing import Any, TypeAlias

import msgpack

from raftkv.replica.commands._keys import (
    Alarm,
    Cas,
    Compact,
    Delete,
    DeleteRange,
    Get,
    MultiPut,
    Put,
    Range,
)
from raftkv.replica.commands._leases import LeaseCheckpoint, LeaseGrant, LeaseRevoke
from raftkv.replica.commands._txn import Compare, EtcdTxn, Txn, TxnDelete, TxnOp, TxnPut, TxnRange
from raftkv.replica.commands._values import (
    _INT_MIN,
    _SEQ_MAX,
    ABSENT,
    MAX_VALUE_DEPTH,
    InvalidCommand,
    KeyRange,
    Session,
    _check_time,
)
from raftkv.replica.mvcc import Compare as StoreCompare
from raftkv.replica.mvcc import (
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    Op,
    PutOp,
    RangeOp,
    SortOrder,
    SortTarget,
)
from raftkv.replica.mvcc import TxnOp as StoreTxnOp

Command: TypeAlias = (
    Put
    | Delete
    | Cas
    | MultiPut
    | Get
    | Range
    | DeleteRange
    | Txn
    | Compact
    | Alarm
    | LeaseGrant
    | LeaseRevoke
    | LeaseCheckpoint
    | EtcdTxn
)


# ----------------------------------------------------------------------------- encoding


def _range_fields(body: dict[str, Any], cmd: Range) -> None:
    body["range"] = cmd.range.to_wire()
    body["revision"] = cmd.revision
    body["limit"] = cmd.limit
    body["keys_only"] = cmd.keys_only
    body["count_only"] = cmd.count_only
    body["sort"] = [cmd.sort_order, cmd.sort_target]


def _txn_op_to_wire(op: TxnOp) -> list[object]:
    if isinstance(op, TxnPut):
        if op.lease:
            return ["put", op.key, op.value, op.lease]
        return ["put", op.key, op.value]
    if isinstance(op, TxnDelete):
        return ["delete", op.range.to_wire(), op.prev_kv]
    return ["range", op.range.to_wire(), op.limit, op.keys_only, op.count_only]


def _txn_op_from_wire(raw: object) -> TxnOp:
    if not isinstance(raw, list) or not raw:
        raise InvalidCommand("a transaction op must be a list")
    kind = raw[0]
    if kind == "put" and len(raw) in (3, 4):
        return TxnPut(key=raw[1], value=raw[2], lease=raw[3] if len(raw) == 4 else 0)
    if kind == "delete" and len(raw) == 3:
        return TxnDelete(range=KeyRange.from_wire(raw[1]), prev_kv=raw[2])
    if kind == "range" and len(raw) == 5:
        return TxnRange(
            range=KeyRange.from_wire(raw[1]), limit=raw[2], keys_only=raw[3], count_only=raw[4]
        )
    raise InvalidCommand(f"unknown transaction op {str(raw)[:60]}")


def encode_command(command: Command, *, time_ms: int | None = None) -> bytes:
    """Serialize a command for a log entry (msgpack).

    The command was validated when it was constructed. ``time_ms``, if given,
    is recorded instead of ``command.time_ms`` (the leader stamping a forwarded
    command, without building and validating it again).

    Raises:
        InvalidCommand: ``time_ms`` is not a valid log time, or the command
            cannot be encoded.
    """
    if time_ms is not None:
        _check_time(time_ms)
    body: dict[str, Any] = {"op": command.op}
    if isinstance(command, MultiPut):
        body["pairs"] = dict(command.pairs)
    elif isinstance(command, Put | Delete | Cas | Get):
        body["key"] = command.key
    if isinstance(command, Put | Cas):
        body["value"] = command.value
    if isinstance(command, Put) and command.lease:
        body["lease"] = command.lease  # absent for no lease: old entries read alike
    if isinstance(command, Cas):
        body["expect_absent"] = command.expect is ABSENT
        body["expect"] = None if command.expect is ABSENT else command.expect
    elif isinstance(command, Range):
        _range_fields(body, command)
    elif isinstance(command, DeleteRange):
        body["range"] = command.range.to_wire()
        body["prev_kv"] = command.prev_kv
    elif isinstance(command, Txn):
        body["compares"] = [[c.range.to_wire(), c.target, c.cmp, c.value] for c in command.compares]
        body["success"] = [_txn_op_to_wire(op) for op in command.success]
        body["failure"] = [_txn_op_to_wire(op) for op in command.failure]
    elif isinstance(command, Compact):
        body["revision"] = command.revision
    elif isinstance(command, Alarm):
        body["active"] = command.active
    elif isinstance(command, LeaseGrant):
        body["id"] = command.id
        body["ttl_s"] = command.ttl_s
    elif isinstance(command, LeaseRevoke):
        body["id"] = command.id
        if command.expired:
            body["expired"] = True
    elif isinstance(command, LeaseCheckpoint):
        body["checkpoints"] = [list(pair) for pair in command.checkpoints]
    elif isinstance(command, EtcdTxn):
        body["txn"] = _etcd_txn_to_wire(command.compares, command.success, command.failure)
    body["time_ms"] = command.time_ms if time_ms is None else time_ms
    if command.session is not None:
        body["session"] = [command.session.client_id, command.session.seq]
        if command.session.owner is not None:
            # A field of its own: a decoder that predates owners ignores it.
            body["session_owner"] = command.session.owner
    try:
        data: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate
        raise InvalidCommand(f"cannot encode command: {exc}") from exc
    return data


def _field(fields: dict[str, Any], name: str) -> Any:
    """A field of a decoded command, or None; the dataclasses validate its type."""
    return fields.get(name)


def _tuple(raw: object, name: str) -> list[Any]:
    if not isinstance(raw, list):
        raise InvalidCommand(f"{name} must be a list")
    return raw


def decode_command(data: bytes) -> Command:
    """Parse bytes written by :func:`encode_command` (of any released version).

    Raises:
        InvalidCommand: if ``data`` is not a valid command.
    """
    try:
        body = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise InvalidCommand(f"not msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidCommand("command is not a map")
    fields: dict[str, Any] = body
    op = fields.get("op")
    time_ms = _field(fields, "time_ms")
    raw_session = _field(fields, "session")
    owner = _field(fields, "session_owner")
    session: Session | None = None
    if raw_session is not None:
        if not isinstance(raw_session, list) or len(raw_session) != 2:
            raise InvalidCommand("session must be [client_id, seq]")
        session = Session(client_id=raw_session[0], seq=raw_session[1], owner=owner)
    elif owner is not None:
        raise InvalidCommand("session_owner without a session")
    if op == "put":
        return Put(
            key=_field(fields, "key"),
            value=_field(fields, "value"),
            time_ms=time_ms,
            session=session,
            lease=fields.get("lease", 0),
        )
    if op == "delete":
        return Delete(key=_field(fields, "key"), time_ms=time_ms, session=session)
    if op == "cas":
        expect_absent = _field(fields, "expect_absent")
        if not isinstance(expect_absent, bool):
            raise InvalidCommand("cas needs expect_absent")
        return Cas(
            key=_field(fields, "key"),
            expect=ABSENT if expect_absent else _field(fields, "expect"),
            value=_field(fields, "value"),
            time_ms=time_ms,
            session=session,
        )
    if op == "multi_put":
        return MultiPut(pairs=_field(fields, "pairs"), time_ms=time_ms, session=session)
    if op == "get":
        return Get(key=_field(fields, "key"), time_ms=time_ms, session=session)
    if op == "range":
        sort = _tuple(_field(fields, "sort"), "sort")
        if len(sort) != 2:
            raise InvalidCommand("sort must be [order, target]")
        return Range(
            range=KeyRange.from_wire(_field(fields, "range")),
            revision=_field(fields, "revision"),
            limit=_field(fields, "limit"),
            keys_only=_field(fields, "keys_only"),
            count_only=_field(fields, "count_only"),
            sort_order=sort[0],
            sort_target=sort[1],
            time_ms=time_ms,
            session=session,
        )
    if op == "delete_range":
        return DeleteRange(
            range=KeyRange.from_wire(_field(fields, "range")),
            prev_kv=_field(fields, "prev_kv"),
            time_ms=time_ms,
            session=session,
        )
    if op == "txn":
        compares = []
        for raw in _tuple(_field(fields, "compares"), "compares"):
            if not isinstance(raw, list) or len(raw) != 4:
                raise InvalidCommand("a compare must be [range, target, op, value]")
            compares.append(
                Compare(range=KeyRange.from_wire(raw[0]), target=raw[1], cmp=raw[2], value=raw[3])
            )
        return Txn(
            compares=tuple(compares),
            success=tuple(_txn_op_from_wire(r) for r in _tuple(_field(fields, "success"), "s")),
            failure=tuple(_txn_op_from_wire(r) for r in _tuple(_field(fields, "failure"), "f")),
            time_ms=time_ms,
            session=session,
        )
    if op == "compact":
        return Compact(revision=_field(fields, "revision"), time_ms=time_ms, session=session)
    if op == "alarm":
        return Alarm(active=_field(fields, "active"), time_ms=time_ms, session=session)
    if op == "lease_grant":
        return LeaseGrant(
            id=_field(fields, "id"), ttl_s=_field(fields, "ttl_s"), time_ms=time_ms, session=session
        )
    if op == "lease_revoke":
        return LeaseRevoke(
            id=_field(fields, "id"),
            expired=fields.get("expired", False),
            time_ms=time_ms,
            session=session,
        )
    if op == "lease_checkpoint":
        pairs = []
        for raw in _tuple(_field(fields, "checkpoints"), "checkpoints"):
            if not isinstance(raw, list) or len(raw) != 2:
                raise InvalidCommand("a checkpoint must be [id, remaining_ms]")
            pairs.append((raw[0], raw[1]))
        return LeaseCheckpoint(checkpoints=tuple(pairs), time_ms=time_ms, session=session)
    if op == "etcd_txn":
        txn = _etcd_op_from_wire(["t", *_tuple(_field(fields, "txn"), "txn")])
        assert isinstance(txn, StoreTxnOp)
        return EtcdTxn(
            compares=txn.compares,
            success=txn.success,
            failure=txn.failure,
            time_ms=time_ms,
            session=session,
        )
    raise InvalidCommand(f"unknown operation {op!r}")


# ----------------------------------------------------------------------------- etcd ops
#
# An EtcdTxn's wire form: [compares, success, failure], each a list; a compare
# is [key, range_end, target, result, operand] (enums as their etcd numbers),
# an op a list tagged "r" (range), "p" (put), "d" (delete) or "t" (nested txn).


def _etcd_txn_to_wire(
    compares: tuple[StoreCompare, ...], success: tuple[Op, ...], failure: tuple[Op, ...]
) -> list[object]:
    return [
        [[c.key, c.range_end, c.target.value, c.result.value, c.operand] for c in compares],
        [_etcd_op_to_wire(op) for op in success],
        [_etcd_op_to_wire(op) for op in failure],
    ]


def _etcd_op_to_wire(op: Op) -> list[object]:
    if isinstance(op, PutOp):
        return ["p", op.key, op.value, op.lease, op.prev_kv, op.ignore_value, op.ignore_lease]
    if isinstance(op, DeleteRangeOp):
        return ["d", op.key, op.range_end, op.prev_kv]
    if isinstance(op, RangeOp):
        return [
            "r",
            op.key,
            op.range_end,
            op.revision,
            op.limit,
            op.keys_only,
            op.count_only,
            op.sort_order.value,
            op.sort_target.value,
            op.min_mod_revision,
            op.max_mod_revision,
            op.min_create_revision,
            op.max_create_revision,
        ]
    return ["t", *_etcd_txn_to_wire(op.compares, op.success, op.failure)]


def _bytes(raw: object) -> bytes:
    if not isinstance(raw, bytes):
        raise InvalidCommand("an etcd key or value must be bytes")
    return raw


def _int(raw: object) -> int:
    if type(raw) is not int or not _INT_MIN <= raw <= _SEQ_MAX:
        raise InvalidCommand("an etcd revision, limit or lease must be a 64-bit integer")
    return raw


def _bool(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise InvalidCommand("an etcd flag must be true or false")
    return raw


def _enum(kind: type[enum.Enum], raw: object) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise InvalidCommand(f"bad {kind.__name__} {raw!r}") from None


def _etcd_compare_from_wire(raw: object) -> StoreCompare:
    if not isinstance(raw, list) or len(raw) != 5:
        raise InvalidCommand("an etcd compare must be [key, range_end, target, result, operand]")
    target = _enum(CompareTarget, raw[2])
    operand = _bytes(raw[4]) if target is CompareTarget.VALUE else _int(raw[4])
    return StoreCompare(
        key=_bytes(raw[0]),
        range_end=_bytes(raw[1]),
        target=target,
        result=_enum(CompareResult, raw[3]),
        operand=operand,
    )


def _etcd_op_from_wire(raw: object, depth: int = 0) -> Op:
    if not isinstance(raw, list) or not raw:
        raise InvalidCommand("an etcd op must be a non-empty list")
    kind = raw[0]
    if kind == "p" and len(raw) == 7:
        return PutOp(
            key=_bytes(raw[1]),
            value=_bytes(raw[2]),
            lease=_int(raw[3]),
            prev_kv=_bool(raw[4]),
            ignore_value=_bool(raw[5]),
            ignore_lease=_bool(raw[6]),
        )
    if kind == "d" and len(raw) == 4:
        return DeleteRangeOp(key=_bytes(raw[1]), range_end=_bytes(raw[2]), prev_kv=_bool(raw[3]))
    if kind == "r" and len(raw) == 13:
        return RangeOp(
            key=_bytes(raw[1]),
            range_end=_bytes(raw[2]),
            revision=_int(raw[3]),
            limit=_int(raw[4]),
            keys_only=_bool(raw[5]),
            count_only=_bool(raw[6]),
            sort_order=_enum(SortOrder, raw[7]),
            sort_target=_enum(SortTarget, raw[8]),
            min_mod_revision=_int(raw[9]),
            max_mod_revision=_int(raw[10]),
            min_create_revision=_int(raw[11]),
            max_create_revision=_int(raw[12]),
        )
    if kind == "t" and len(raw) == 4:
        if depth > MAX_VALUE_DEPTH:
            raise InvalidCommand(f"etcd transactions nested deeper than {MAX_VALUE_DEPTH}")
        compares, success, failure = (_tuple(part, "an etcd txn part") for part in raw[1:])
        return StoreTxnOp(
            compares=tuple(_etcd_compare_from_wire(c) for c in compares),
            success=tuple(_etcd_op_from_wire(op, depth + 1) for op in success),
            failure=tuple(_etcd_op_from_wire(op, depth + 1) for op in failure),
        )
    raise InvalidCommand(f"unknown etcd op {str(raw)[:60]}")
