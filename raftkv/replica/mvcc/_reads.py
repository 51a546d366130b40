"""The MVCC store's reads: ``get`` and ``range`` at a revision (package rule 4).

Rule: a read changes nothing, and answers from the sorted key index in key
order; a range's filters, sort and limit are etcd's ``executeRange``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeAlias, cast

from raftkv.replica.mvcc._errors import CompactedError, EmptyKeyError, FutureRevisionError
from raftkv.replica.mvcc._state import _StoreState
from raftkv.replica.mvcc._values import (
    KeyValue,
    RangeOp,
    RangeResult,
    SortOrder,
    SortTarget,
)
from raftkv.replica.mvcc._versions import _new, _newest, _Version, _visible

_Found: TypeAlias = tuple[bytes, _Version]
"""A live key and its version, as a range collects them."""

_SORT_KEYS: Final[dict[SortTarget, Callable[[_Found], int | bytes]]] = {
    SortTarget.KEY: lambda found: found[0],
    SortTarget.VERSION: lambda found: found[1][2],
    SortTarget.CREATE: lambda found: found[1][1],
    SortTarget.MOD: lambda found: found[1][0],
    SortTarget.VALUE: lambda found: found[1][4],
}


class _Reads(_StoreState):
    """The store's reads; a base of :class:`~raftkv.replica.mvcc.MVCCStore`."""

    __slots__ = ()

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """The live version of ``key`` at ``revision`` (``<= 0``: current), or ``None``.

        Raises:
            EmptyKeyError: ``key`` is empty.
            FutureRevisionError: ``revision`` is above the current revision.
            CompactedError: ``revision`` is below the compact revision.
        """
        if not key:
            raise EmptyKeyError()
        entry = self._entries.get(key)
        if revision <= 0:
            if entry is None:
                return None
            v = entry[-1] if isinstance(entry, list) else entry
        else:
            self._check_revision(revision, self._revision)
            if entry is None:
                return None
            found = _visible(entry, revision)
            if found is None:
                return None
            v = found
        if not v[2]:
            return None
        kv: Any = _new(KeyValue)  # as _make_kv, inlined: this is the hot read path
        kv.key = key
        kv.value = v[4]
        kv.create_revision = v[1]
        kv.mod_revision = v[0]
        kv.version = v[2]
        kv.lease = v[3]
        return cast(KeyValue, kv)

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: SortOrder = SortOrder.NONE,
        sort_target: SortTarget = SortTarget.KEY,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
    ) -> RangeResult:
        """Read the live keys of a range at a revision (etcd's ``Range``).

        Args:
            key: first key of the range (not empty).
            range_end: ``b""``: only ``key``; ``b"\\0"``: every key ``>= key``;
                otherwise the keys in ``[key, range_end)``.
            revision: the revision to read at; ``<= 0`` reads the current one.
            limit: at most this many ``kvs`` (``<= 0``: no limit); ``more`` tells
                whether it cut any.
            keys_only: return versions with empty values.
            count_only: return only ``count``.
            sort_order: ``NONE`` is ascending key order; with a ``sort_target``
                other than ``KEY``, ``NONE`` means ``ASCEND``. Sorting happens
                before ``limit``.
            sort_target: the field to sort by.
            min_mod_revision: drop keys with a lower mod revision (0: no bound).
            max_mod_revision: drop keys with a higher mod revision (0: no bound).
            min_create_revision: drop keys with a lower create revision (0: no bound).
            max_create_revision: drop keys with a higher create revision (0: no bound).

        Returns:
            The keys, ``count`` (of live keys in the range at the read revision,
            before the revision bounds and ``limit``), ``more``, and the current
            store revision.

        Raises:
            EmptyKeyError: ``key`` is empty.
            FutureRevisionError: ``revision`` is above the current revision.
            CompactedError: ``revision`` is below the compact revision.
        """
        if not key:
            raise EmptyKeyError()
        return self._range(
            RangeOp(
                key=key,
                range_end=range_end,
                revision=revision,
                limit=limit,
                keys_only=keys_only,
                count_only=count_only,
                sort_order=sort_order,
                sort_target=sort_target,
                min_mod_revision=min_mod_revision,
                max_mod_revision=max_mod_revision,
                min_create_revision=min_create_revision,
                max_create_revision=max_create_revision,
            ),
            self._revision,
        )

    def _check_revision(self, revision: int, current: int) -> None:
        """etcd's ``rangeKeys`` bounds for an explicit ``revision > 0``."""
        if revision > current:
            raise FutureRevisionError(current)
        if revision < self._compact_revision:
            raise CompactedError(self._compact_revision)

    def _collect(self, key: bytes, range_end: bytes, revision: int | None) -> list[_Found]:
        """The live keys of a range, in key order, with their versions.

        At ``revision``, or with ``revision=None`` as of the newest versions
        (which include the writes of a running transaction).
        """
        entries = self._entries
        if not range_end:
            entry = entries.get(key)
            if entry is None:
                return []
            v = _newest(entry) if revision is None else _visible(entry, revision)
            return [] if v is None else [(key, v)]
        hi = None if range_end == b"\0" else range_end
        found: list[_Found] = []
        append = found.append
        if revision is None:
            for k in self._index.irange(key, hi):
                v = _newest(entries[k])
                if v is not None:
                    append((k, v))
        else:
            for k in self._index.irange(key, hi):
                entry = entries[k]
                # _visible, inlined for the common case of the newest version.
                v = entry[-1] if isinstance(entry, list) else entry
                if v[0] > revision:
                    older = _visible(entry, revision)
                    if older is None:
                        continue
                    v = older
                if v[2]:
                    append((k, v))
        return found

    def _range(self, op: RangeOp, current: int) -> RangeResult:
        """Execute a range with ``current`` as the revision "now" (etcd's
        ``rangeKeys`` followed by ``executeRange``'s filters, sort and limit)."""
        revision = op.revision
        if revision <= 0:
            revision = current
        else:
            self._check_revision(revision, current)
        found = self._collect(op.key, op.range_end, revision)
        count = len(found)
        if op.count_only:
            return RangeResult(kvs=(), count=count, more=False, revision=current)
        if op.max_mod_revision:
            found = [f for f in found if f[1][0] <= op.max_mod_revision]
        if op.min_mod_revision:
            found = [f for f in found if f[1][0] >= op.min_mod_revision]
        if op.max_create_revision:
            found = [f for f in found if f[1][1] <= op.max_create_revision]
        if op.min_create_revision:
            found = [f for f in found if f[1][1] >= op.min_create_revision]
        order, target = op.sort_order, op.sort_target
        if target is not SortTarget.KEY and order is SortOrder.NONE:
            order = SortOrder.ASCEND
        if not (
            order is SortOrder.NONE or (target is SortTarget.KEY and order is SortOrder.ASCEND)
        ):
            # Stable: ties keep ascending key order, also when descending.
            found.sort(key=_SORT_KEYS[target], reverse=order is SortOrder.DESCEND)
        more = 0 < op.limit < len(found)
        if more:
            found = found[: op.limit]
        kvs: list[KeyValue] = []
        append = kvs.append
        keys_only = op.keys_only
        for k, v in found:
            kv: Any = _new(KeyValue)  # as _make_kv, inlined: ranges build many
            kv.key = k
            kv.value = b"" if keys_only else v[4]
            kv.create_revision = v[1]
            kv.mod_revision = v[0]
            kv.version = v[2]
            kv.lease = v[3]
            append(kv)
        return RangeResult(kvs=tuple(kvs), count=count, more=more, revision=current)
