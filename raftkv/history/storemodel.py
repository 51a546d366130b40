"""A naive model of the MVCC store: the revision checker's oracle.

Rule: simple enough to be obviously right, and independent of the code it
checks. Per key it keeps every version ever written, in a list; a range scans
every key; a transaction stages its writes in a dict and commits them as one
revision. It shares no code with :mod:`raftkv.replica.mvcc` -- a bug there must
not be replayed identically here -- only the command and result vocabulary of
:mod:`raftkv.replica.kv` and JSON equality for values (etcd's semantics as
DESIGN.md states them: one store revision, bumped once per command that
changes something; ``create_revision``, ``mod_revision``, ``version`` per key;
a compare over a range holds if it holds for every key in it, and a value
compare on no key is false).

Compaction is not modelled: the model keeps all history, and
:mod:`raftkv.history.revisions` checks which reads compaction may refuse.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from typing import Any, Final, TypeAlias

from raftkv.replica.kv import (
    ABSENT,
    ERR_CONFLICT,
    ERR_NOT_FOUND,
    Answer,
    Cas,
    Command,
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
    TxnPut,
    json_equal,
    json_text,
)

__all__ = ["StoreModel", "Execution", "NoSuchRevision", "execute", "difference"]

Response: TypeAlias = PutDone | Deleted | Listing

_Version: TypeAlias = tuple[int, int, int, Any]
"""``(mod_revision, create_revision, version, value)``; ``version == 0`` is a tombstone."""


def _utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _in_range(kr: KeyRange, key: str) -> bool:
    """Whether ``key`` is in ``kr`` (etcd's conventions, on the keys' UTF-8)."""
    if kr.prefix:
        return key.startswith(kr.key)
    if kr.range_end is None:
        return key == kr.key
    if kr.range_end == "\0":
        return _utf8(key) >= _utf8(kr.key)
    return _utf8(kr.key) <= _utf8(key) < _utf8(kr.range_end)


class NoSuchRevision(Exception):
    """A read at a revision the model has not reached."""


class StoreModel:
    """A naive multi-version map: per key, every version ever written, in order.

    Invariant: ``keys[k]`` is non-empty, its ``mod_revision``\\ s strictly
    increase and are ``<= revision``; ``written[i]`` lists the keys revision
    ``i + 2`` wrote (so :meth:`undo` can take it back).
    """

    def __init__(self) -> None:
        self.revision = 1
        self.keys: dict[str, list[_Version]] = {}
        self.written: list[list[str]] = []

    def version_at(self, key: str, revision: int) -> _Version | None:
        """The live version of ``key`` at ``revision``, or ``None``."""
        versions = self.keys.get(key)
        if not versions:
            return None
        v = versions[-1]
        if v[0] > revision:
            i = bisect.bisect_right(versions, revision, key=lambda x: x[0]) - 1
            if i < 0:
                return None
            v = versions[i]
        return v if v[2] else None

    def live(
        self, kr: KeyRange, revision: int, overlay: dict[str, _Version] | None = None
    ) -> list[tuple[str, _Version]]:
        """The live keys of ``kr`` at ``revision`` (with a transaction's own
        writes in ``overlay`` on top), in key order."""
        names = set(self.keys)
        if overlay:
            names.update(overlay)
        found = []
        for key in names:
            if not _in_range(kr, key):
                continue
            if overlay and key in overlay:
                v: _Version | None = overlay[key]
                if v is not None and not v[2]:
                    v = None
            else:
                v = self.version_at(key, revision)
            if v is not None:
                found.append((key, v))
        found.sort(key=lambda kv: _utf8(kv[0]))
        return found

    def commit(self, overlay: dict[str, _Version]) -> None:
        """Append a transaction's writes as the next revision."""
        self.revision += 1
        for key, v in overlay.items():
            self.keys.setdefault(key, []).append(v)
        self.written.append(list(overlay))

    def undo(self) -> None:
        """Take back the newest revision."""
        for key in self.written.pop():
            versions = self.keys[key]
            versions.pop()
            if not versions:
                del self.keys[key]
        self.revision -= 1


def _item(key: str, v: _Version, keys_only: bool = False) -> Item:
    return Item(
        key=key,
        value_json=b"" if keys_only else json_text(v[3]),
        create_revision=v[1],
        mod_revision=v[0],
        version=v[2],
    )


_SORT_FIELDS: Final = {"version": 2, "create_revision": 1, "mod_revision": 0}


class Execution:
    """One command executed on the model at its current revision.

    ``overlay`` holds the writes (key -> new version) of the command, to be
    committed as revision ``model.revision + 1`` if it is not empty.
    """

    def __init__(self, model: StoreModel) -> None:
        self.model = model
        self.begin = model.revision
        self.write_revision = model.revision + 1
        self.overlay: dict[str, _Version] = {}

    def current(self, key: str) -> _Version | None:
        if key in self.overlay:
            v = self.overlay[key]
            return v if v[2] else None
        return self.model.version_at(key, self.begin)

    def put(self, key: str, value: object) -> bool:
        """Write ``key``; whether it existed."""
        prev = self.current(key)
        rev = self.write_revision
        if prev is None:
            self.overlay[key] = (rev, rev, 1, value)
        else:
            self.overlay[key] = (rev, prev[1], prev[2] + 1, value)
        return prev is not None

    def delete(self, kr: KeyRange) -> list[tuple[str, _Version]]:
        found = self.model.live(kr, self.begin, self.overlay)
        for key, _ in found:
            self.overlay[key] = (self.write_revision, 0, 0, None)
        return found

    @property
    def revision_now(self) -> int:
        """The store's revision as a response inside the command reports it."""
        return self.write_revision if self.overlay else self.begin

    def listing(
        self,
        kr: KeyRange,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: str = "none",
        sort_target: str = "key",
    ) -> Listing:
        if revision > 0:
            found = self.model.live(kr, revision)
        else:
            found = self.model.live(kr, self.begin, self.overlay)
        count = len(found)
        now = self.revision_now
        if count_only:
            return Listing(index=0, revision=now, items=(), count=count, more=False)
        if sort_target != "key" or sort_order == "descend":
            order = "ascend" if sort_order == "none" else sort_order
            if sort_target == "key":
                found.sort(key=lambda kv: _utf8(kv[0]), reverse=order == "descend")
            elif sort_target == "value":
                found.sort(key=lambda kv: json_text(kv[1][3]), reverse=order == "descend")
            else:
                i = _SORT_FIELDS[sort_target]
                found.sort(key=lambda kv: kv[1][i], reverse=order == "descend")
        more = 0 < limit < len(found)
        if more:
            found = found[:limit]
        items = tuple(_item(k, v, keys_only) for k, v in found)
        return Listing(index=0, revision=now, items=items, count=count, more=more)

    def holds(self, c: Compare) -> bool:
        found = self.model.live(c.range, self.begin)
        if c.target == "value":
            if not found:
                return False
            equal = [json_equal(v[3], c.value) for _, v in found]
            return all(equal) if c.cmp == "==" else not any(equal)
        fields = [_field(c.target, v) for _, v in found] or [0]
        operand = c.value
        assert isinstance(operand, int)
        if c.cmp == "==":
            return all(f == operand for f in fields)
        if c.cmp == "!=":
            return all(f != operand for f in fields)
        if c.cmp == "<":
            return all(f < operand for f in fields)
        return all(f > operand for f in fields)


def _field(target: str, v: _Version) -> int:
    if target == "version":
        return v[2]
    if target == "create_revision":
        return v[1]
    return v[0]


def execute(model: StoreModel, cmd: Command) -> tuple[Answer, Execution]:
    """What ``cmd`` answers on the model now, and its writes (not committed).

    A read at a revision the model has not reached raises :class:`NoSuchRevision`.
    """
    ex = Execution(model)
    begin = ex.begin
    if isinstance(cmd, Put):
        found = ex.put(cmd.key, cmd.value)
        return KVResult(ok=True, index=0, revision=ex.write_revision, found=found), ex
    if isinstance(cmd, Get):
        v = ex.current(cmd.key)
        if v is None:
            return KVResult(ok=False, index=0, revision=begin, error=ERR_NOT_FOUND), ex
        return KVResult(ok=True, index=0, revision=begin, item=_item(cmd.key, v), found=True), ex
    if isinstance(cmd, Delete):
        if not ex.delete(KeyRange(key=cmd.key)):
            return KVResult(ok=False, index=0, revision=begin, error=ERR_NOT_FOUND), ex
        return KVResult(ok=True, index=0, revision=ex.write_revision, found=True), ex
    if isinstance(cmd, Cas):
        v = ex.current(cmd.key)
        if cmd.expect is ABSENT:
            matches = v is None
        else:
            matches = v is not None and json_equal(v[3], cmd.expect)
        if not matches:
            return KVResult(
                ok=False,
                index=0,
                revision=begin,
                error=ERR_CONFLICT,
                found=v is not None,
                current=None if v is None else v[3],
            ), ex
        ex.put(cmd.key, cmd.value)
        return KVResult(ok=True, index=0, revision=ex.write_revision, found=v is not None), ex
    if isinstance(cmd, MultiPut):
        for key, value in cmd.pairs.items():
            ex.put(key, value)
        return KVResult(ok=True, index=0, revision=ex.revision_now), ex
    if isinstance(cmd, Range):
        if cmd.revision > begin:
            raise NoSuchRevision(cmd.revision)
        listing = ex.listing(
            cmd.range,
            cmd.revision,
            cmd.limit,
            cmd.keys_only,
            cmd.count_only,
            cmd.sort_order,
            cmd.sort_target,
        )
        return listing, ex
    if isinstance(cmd, DeleteRange):
        gone = ex.delete(cmd.range)
        prev = tuple(_item(k, v) for k, v in gone) if cmd.prev_kv else ()
        return Deleted(index=0, revision=ex.revision_now, deleted=len(gone), prev=prev), ex
    if isinstance(cmd, Txn):
        succeeded = all(ex.holds(c) for c in cmd.compares)
        responses: list[Response] = []
        for op in cmd.success if succeeded else cmd.failure:
            if isinstance(op, TxnPut):
                ex.put(op.key, op.value)
                responses.append(PutDone(revision=ex.write_revision))
            elif isinstance(op, TxnDelete):
                gone = ex.delete(op.range)
                prev = tuple(_item(k, v) for k, v in gone) if op.prev_kv else ()
                responses.append(
                    Deleted(index=0, revision=ex.revision_now, deleted=len(gone), prev=prev)
                )
            else:
                responses.append(
                    ex.listing(op.range, 0, op.limit, op.keys_only, op.count_only, "none", "key")
                )
        answer = TxnAnswer(
            index=0, revision=ex.revision_now, succeeded=succeeded, responses=tuple(responses)
        )
        return answer, ex
    raise TypeError(f"the model does not run {type(cmd).__name__}")


# ----------------------------------------------------------------------------- comparing


def _items_differ(want: Sequence[Item], seen: Sequence[Item]) -> str | None:
    if len(want) != len(seen):
        return "items differ"
    for w, s in zip(want, seen, strict=True):
        if (w.key, w.create_revision, w.mod_revision, w.version) != (
            s.key,
            s.create_revision,
            s.mod_revision,
            s.version,
        ):
            return f"item {s.key} differs"
        if bool(w.value_json) != bool(s.value_json):
            return f"item {s.key}: value present differs"
        if w.value_json and not json_equal(json.loads(w.value_json), json.loads(s.value_json)):
            return f"item {s.key}: value differs"
    return None


def difference(want: Answer | PutDone, seen: Answer | PutDone, replayed: bool) -> str | None:
    """Why ``seen`` is not the answer ``want`` (``None`` if it is).

    A replayed answer (a retry answered from the session table) carries only
    the outcome and the revision of the first execution.
    """
    if type(want) is not type(seen):
        return f"answer kind {type(seen).__name__}, the model answers {type(want).__name__}"
    if want.revision != seen.revision:
        return "revision differs"
    if isinstance(want, KVResult):
        assert isinstance(seen, KVResult)
        if (want.ok, want.error) != (seen.ok, seen.error):
            return "outcome differs"
        if replayed:
            return None
        if want.found != seen.found:
            return "found differs"
        if want.item is not None or seen.item is not None:
            if want.item is None or seen.item is None:
                return "item differs"
            return _items_differ((want.item,), (seen.item,))
        if want.error == ERR_CONFLICT and seen.found and not json_equal(want.current, seen.current):
            return "current value differs"
        return None
    if isinstance(want, Listing):
        assert isinstance(seen, Listing)
        if (want.count, want.more) != (seen.count, seen.more):
            return "count or more differs"
        return _items_differ(want.items, seen.items)
    if isinstance(want, Deleted):
        assert isinstance(seen, Deleted)
        if replayed:
            return None
        if want.deleted != seen.deleted:
            return "deleted count differs"
        return _items_differ(want.prev, seen.prev)
    if isinstance(want, TxnAnswer):
        assert isinstance(seen, TxnAnswer)
        if want.succeeded != seen.succeeded:
            return "succeeded differs"
        if replayed:
            return None
        if len(want.responses) != len(seen.responses):
            return "number of responses differs"
        for i, (w, s) in enumerate(zip(want.responses, seen.responses, strict=True)):
            why = difference(w, s, False)
            if why is not None:
                return f"response {i + 1}: {why}"
        return None
    return None
