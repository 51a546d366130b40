"""The revision checker's input: client operations (:class:`RevOp`), their
JSON-lines file, and one-line descriptions of commands and answers.

Rule: this is the history's format, shared by whoever records a history (the
simulator's workload, the Jepsen runner) and the checker
(:mod:`raftkv.history.revisions`); it knows nothing of how the history is checked.
Importable without the simulator: it imports only the replica layer's command
and result types.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any, Final

import msgpack

from raftkv.history.linearizability import FAIL, INFO, OK
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
    Item,
    KeyRange,
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
    decode_command,
    encode_command,
    json_text,
)

__all__ = [
    "RevOp",
    "describe_command",
    "describe_answer",
    "command_to_json",
    "command_from_json",
    "answer_to_json",
    "answer_from_json",
    "write_rev_history",
    "read_rev_history",
]

_STATUSES: Final = (OK, FAIL, INFO)
_SUPPORTED: Final = (Put, Delete, Cas, MultiPut, Get, Range, DeleteRange, Txn, Compact)


# ----------------------------------------------------------------------------- history


@dataclass(frozen=True, slots=True, kw_only=True)
class RevOp:
    """One client operation, as the revision checker sees it.

    Attributes:
        op_id: unique within the history.
        client_id: the client (process) that issued it.
        command: what was asked (its ``time_ms`` and ``session`` do not matter).
        call: invocation time.
        ret: completion time (``None`` unless ``ok``).
        status: ``ok``, ``fail`` or ``info`` (:mod:`raftkv.history.linearizability`'s).
        answer: for ``ok``: the store's answer (``KVResult``, ``Listing``,
            ``Deleted`` or ``TxnAnswer``, as :class:`~raftkv.replica.kv.KVStateMachine`
            returns them; ``index`` is not checked).

    Raises:
        ValueError: an unknown status or command, an ``ok`` op without a return
            time or an answer, a return before the call.
    """

    op_id: int
    client_id: int
    command: Command
    call: float
    ret: float | None = None
    status: str = OK
    answer: Answer | None = None

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"op {self.op_id}: unknown status {self.status!r}")
        if not isinstance(self.command, _SUPPORTED):
            raise ValueError(f"op {self.op_id}: unsupported command {type(self.command).__name__}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError(f"op {self.op_id}: returns ({self.ret}) before its call ({self.call})")
        if self.status == OK and (self.ret is None or self.answer is None):
            raise ValueError(f"op {self.op_id}: an ok operation needs a return time and an answer")

    def describe(self) -> str:
        """One line: id, client, interval, command and (if ok) answer."""
        ret = "?" if self.ret is None or self.status != OK else _time(self.ret)
        text = f"#{self.op_id} c{self.client_id} [{_time(self.call)}, {ret}] "
        text += describe_command(self.command)
        if self.status == OK and self.answer is not None:
            return text + " -> " + describe_answer(self.answer)
        return text + f" -> {self.status}"

    def to_json(self) -> dict[str, Any]:
        """A JSON object (see :func:`write_rev_history`)."""
        return {
            "op_id": self.op_id,
            "client_id": self.client_id,
            "command": command_to_json(self.command),
            "call": self.call,
            "ret": self.ret,
            "status": self.status,
            "answer": None if self.answer is None else answer_to_json(self.answer),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RevOp:
        """The inverse of :meth:`to_json`.

        Raises:
            ValueError: a missing or invalid field.
        """
        try:
            raw_answer = obj.get("answer")
            return cls(
                op_id=int(obj["op_id"]),
                client_id=int(obj["client_id"]),
                command=command_from_json(obj["command"]),
                call=obj["call"],
                ret=obj.get("ret"),
                status=str(obj.get("status", OK)),
                answer=None if raw_answer is None else answer_from_json(raw_answer),
            )
        except KeyError as exc:
            raise ValueError(f"operation is missing field {exc.args[0]!r}: {obj!r}") from None


def _time(t: float) -> str:
    if isinstance(t, int):
        return str(t)
    return f"{t:.6f}".rstrip("0").rstrip(".")


def command_to_json(command: Command) -> dict[str, Any]:
    """A command as a JSON object: the fields :func:`~raftkv.replica.kv.encode_command`
    writes (JSON values, range triples, the session)."""
    body: dict[str, Any] = msgpack.unpackb(encode_command(command), raw=False)
    return body


def command_from_json(obj: object) -> Command:
    """The inverse of :func:`command_to_json`.

    Raises:
        ValueError: not a command (an :class:`~raftkv.replica.kv.InvalidCommand`).
    """
    if not isinstance(obj, dict):
        raise ValueError(f"a command must be an object, not {obj!r}")
    return decode_command(msgpack.packb(obj, use_bin_type=True))


def _item_to_json(item: Item) -> dict[str, Any]:
    return item.to_json(keys_only=not item.value_json)


def _item_from_json(obj: object) -> Item:
    if not isinstance(obj, dict):
        raise ValueError(f"an item must be an object, not {obj!r}")
    return Item(
        key=str(obj["key"]),
        value_json=json_text(obj["value"]) if "value" in obj else b"",
        create_revision=int(obj["create_revision"]),
        mod_revision=int(obj["mod_revision"]),
        version=int(obj["version"]),
    )


def answer_to_json(answer: Answer | PutDone) -> dict[str, Any]:
    """An answer as a JSON object (the history file's form; ``index`` is kept)."""
    if isinstance(answer, KVResult):
        return {
            "type": "kv",
            "ok": answer.ok,
            "index": answer.index,
            "revision": answer.revision,
            "item": None if answer.item is None else _item_to_json(answer.item),
            "found": answer.found,
            "error": answer.error,
            "current": answer.current,
            "replayed": answer.replayed,
            "compact_revision": answer.compact_revision,
        }
    if isinstance(answer, Listing):
        return {
            "type": "range",
            "index": answer.index,
            "revision": answer.revision,
            "items": [_item_to_json(i) for i in answer.items],
            "count": answer.count,
            "more": answer.more,
            "replayed": answer.replayed,
        }
    if isinstance(answer, Deleted):
        return {
            "type": "deleted",
            "index": answer.index,
            "revision": answer.revision,
            "deleted": answer.deleted,
            "prev": [_item_to_json(i) for i in answer.prev],
            "replayed": answer.replayed,
        }
    if isinstance(answer, TxnAnswer):
        return {
            "type": "txn",
            "index": answer.index,
            "revision": answer.revision,
            "succeeded": answer.succeeded,
            "responses": [answer_to_json(r) for r in answer.responses],
            "replayed": answer.replayed,
        }
    return {"type": "put", "revision": answer.revision}


def answer_from_json(obj: object) -> Answer:
    """The inverse of :func:`answer_to_json`.

    Raises:
        ValueError: not an answer.
    """
    result = _answer_from_json(obj)
    if isinstance(result, PutDone):
        raise ValueError("a put response is not an operation's answer")
    return result


def _answer_from_json(obj: object) -> Answer | PutDone:
    if not isinstance(obj, dict):
        raise ValueError(f"an answer must be an object, not {obj!r}")
    kind = obj.get("type")
    index = int(obj.get("index", 0))
    revision = int(obj["revision"])
    replayed = bool(obj.get("replayed", False))
    if kind == "kv":
        item = obj.get("item")
        return KVResult(
            ok=bool(obj["ok"]),
            index=index,
            revision=revision,
            item=None if item is None else _item_from_json(item),
            found=bool(obj.get("found", False)),
            error=obj.get("error"),
            current=obj.get("current"),
            replayed=replayed,
            compact_revision=int(obj.get("compact_revision", 0)),
        )
    if kind == "range":
        return Listing(
            index=index,
            revision=revision,
            items=tuple(_item_from_json(i) for i in obj.get("items", ())),
            count=int(obj["count"]),
            more=bool(obj.get("more", False)),
            replayed=replayed,
        )
    if kind == "deleted":
        return Deleted(
            index=index,
            revision=revision,
            deleted=int(obj["deleted"]),
            prev=tuple(_item_from_json(i) for i in obj.get("prev", ())),
            replayed=replayed,
        )
    if kind == "txn":
        responses = []
        for raw in obj.get("responses", ()):
            response = _answer_from_json(raw)
            if not isinstance(response, PutDone | Deleted | Listing):
                raise ValueError(f"not a transaction response: {raw!r}")
            responses.append(response)
        return TxnAnswer(
            index=index,
            revision=revision,
            succeeded=bool(obj["succeeded"]),
            responses=tuple(responses),
            replayed=replayed,
        )
    if kind == "put":
        return PutDone(revision=revision)
    raise ValueError(f"unknown answer type {kind!r}")


def write_rev_history(path: str | PurePath | IO[str], ops: Iterable[RevOp]) -> None:
    """Write ``ops`` as JSON lines, one :meth:`RevOp.to_json` object per line."""
    lines = "".join(json.dumps(op.to_json(), sort_keys=True) + "\n" for op in ops)
    if isinstance(path, str | PurePath):
        with open(path, "w", encoding="utf-8") as f:
            f.write(lines)
    else:
        path.write(lines)


def read_rev_history(path: str | PurePath | IO[str]) -> list[RevOp]:
    """Read a history written by :func:`write_rev_history`."""
    if isinstance(path, str | PurePath):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        text = path.read()
    return [RevOp.from_json(json.loads(line)) for line in text.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- describing


def _show(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _describe_range(kr: KeyRange) -> str:
    if kr.prefix:
        return f"{kr.key}*"
    if kr.range_end is None:
        return kr.key
    return f"[{kr.key}, {'<end>' if kr.range_end == chr(0) else kr.range_end})"


def _describe_txn_op(op: TxnOp) -> str:
    if isinstance(op, TxnPut):
        return f"put {op.key}={_show(op.value)}"
    if isinstance(op, TxnDelete):
        return f"delete {_describe_range(op.range)}" + (" prev_kv" if op.prev_kv else "")
    text = f"range {_describe_range(op.range)}"
    if op.limit:
        text += f" limit={op.limit}"
    if op.keys_only:
        text += " keys_only"
    if op.count_only:
        text += " count_only"
    return text


def _describe_compare(c: Compare) -> str:
    return f"{c.target}({_describe_range(c.range)}) {c.cmp} {_show(c.value)}"


def describe_command(cmd: Command) -> str:
    """A stable one-line description of a command (for traces and reports)."""
    if isinstance(cmd, Put):
        return f"put {cmd.key}={_show(cmd.value)}"
    if isinstance(cmd, Delete | Get):
        return f"{cmd.op} {cmd.key}"
    if isinstance(cmd, Cas):
        expect = "<absent>" if cmd.expect is ABSENT else _show(cmd.expect)
        return f"cas {cmd.key} {expect}->{_show(cmd.value)}"
    if isinstance(cmd, MultiPut):
        return "multi_put " + ",".join(f"{k}={_show(v)}" for k, v in sorted(cmd.pairs.items()))
    if isinstance(cmd, Range):
        text = f"range {_describe_range(cmd.range)}"
        if cmd.revision:
            text += f" @{cmd.revision}"
        if cmd.limit:
            text += f" limit={cmd.limit}"
        if cmd.keys_only:
            text += " keys_only"
        if cmd.count_only:
            text += " count_only"
        if cmd.sort_order != "none":
            text += f" sort={cmd.sort_target}:{cmd.sort_order}"
        return text
    if isinstance(cmd, DeleteRange):
        return f"delete_range {_describe_range(cmd.range)}" + (" prev_kv" if cmd.prev_kv else "")
    if isinstance(cmd, Txn):
        compares = " and ".join(_describe_compare(c) for c in cmd.compares) or "true"
        then = ", ".join(_describe_txn_op(op) for op in cmd.success) or "-"
        other = ", ".join(_describe_txn_op(op) for op in cmd.failure) or "-"
        return f"txn if {compares} then {then} else {other}"
    if isinstance(cmd, Compact):
        return f"compact {cmd.revision}"
    return repr(cmd)


def _describe_item(item: Item) -> str:
    value = "-" if not item.value_json else item.value_json.decode("utf-8", "replace")
    return f"{item.key}={value}@{item.mod_revision}(c{item.create_revision},v{item.version})"


def describe_answer(answer: Answer | PutDone) -> str:
    """A stable one-line description of an answer."""
    replay = " (replayed)" if getattr(answer, "replayed", False) else ""
    if isinstance(answer, KVResult):
        if answer.error is not None:
            extra = (
                f" compact_revision={answer.compact_revision}" if answer.compact_revision else ""
            )
            return f"{answer.error} rev={answer.revision}{extra}{replay}"
        item = f" {_describe_item(answer.item)}" if answer.item is not None else ""
        return f"ok rev={answer.revision}{item} found={answer.found}{replay}"
    if isinstance(answer, Listing):
        items = " ".join(_describe_item(i) for i in answer.items)
        more = " more" if answer.more else ""
        return f"rev={answer.revision} count={answer.count}{more} [{items}]{replay}"
    if isinstance(answer, Deleted):
        prev = " prev=[" + " ".join(_describe_item(i) for i in answer.prev) + "]"
        return (
            f"deleted={answer.deleted} rev={answer.revision}{prev if answer.prev else ''}{replay}"
        )
    if isinstance(answer, TxnAnswer):
        responses = "; ".join(describe_answer(r) for r in answer.responses)
        branch = "succeeded" if answer.succeeded else "failed"
        return f"{branch} rev={answer.revision} {{{responses}}}{replay}"
    return f"put rev={answer.revision}"
