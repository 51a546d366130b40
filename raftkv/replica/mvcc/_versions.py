"""How the MVCC store keeps a key's versions, and the pure functions that read them.

Rule: a version is a plain tuple (:data:`_Version`), a key's kept versions one
tuple or a list in revision order (:data:`_Entry`); these functions read or
derive them and never change one (a list is only ever appended to by the
store, or replaced: captures share them).
"""

from __future__ import annotations

from bisect import bisect_right
from operator import itemgetter
from typing import Any, Final, TypeAlias, cast

from raftkv.replica.mvcc._values import KeyValue

VERSION_OVERHEAD_BYTES: Final = 192
"""What each kept version adds to :attr:`MVCCStore.size_bytes` besides its key
and value: a fixed stand-in for its revisions, version, lease and bookkeeping,
close to what a version costs in memory on CPython 3.11 beyond its key and value
bytes (about 190 bytes; ``bench/mvcc_memory.py``), so a quota on ``size_bytes``
bounds the store's memory. Every replica must use the same value: it decides
when writes are refused."""


_Version: TypeAlias = tuple[int, int, int, int, bytes]
"""One kept version inside the store: ``(mod_revision, create_revision, version,
lease, value)``; ``version == 0`` marks a tombstone ``(mod_revision, 0, 0, 0, b"")``.

A tuple rather than a :class:`KeyValue`: it is as small, much cheaper to build,
and a tuple of ints and bytes drops out of the cyclic garbage collector's
bookkeeping, which a store of millions of versions would otherwise make every
full collection walk."""

_Entry: TypeAlias = _Version | list[_Version]
"""A key's kept versions: the one version, or a list of >= 2 in revision order."""

_by_mod_revision = itemgetter(0)
_revision_then_key = itemgetter(0, 1)
_new = object.__new__


def _make_kv(key: bytes, version: _Version, keys_only: bool = False) -> KeyValue:
    """The :class:`KeyValue` for a live version.

    Builds it by storing straight into its slots: :func:`fast_init` removed the
    frozen guard, and this is three times cheaper than the keyword-only
    ``__init__`` on the read path.
    """
    kv: Any = _new(KeyValue)
    kv.key = key
    kv.value = b"" if keys_only else version[4]
    kv.create_revision = version[1]
    kv.mod_revision = version[0]
    kv.version = version[2]
    kv.lease = version[3]
    return cast(KeyValue, kv)


def _visible(entry: _Entry, revision: int) -> _Version | None:
    """The live version of a key at ``revision``, or ``None`` if it was absent then."""
    if isinstance(entry, list):
        v = entry[-1]
        if v[0] > revision:
            i = bisect_right(entry, revision, key=_by_mod_revision) - 1
            if i < 0:
                return None
            v = entry[i]
    else:
        v = entry
        if v[0] > revision:
            return None
    return v if v[2] else None


def _newest(entry: _Entry) -> _Version | None:
    """The key's newest version if it is live, else ``None``."""
    v = entry[-1] if isinstance(entry, list) else entry
    return v if v[2] else None


def _compacted(entry: _Entry, revision: int) -> _Entry | list[_Version] | None:
    """What compaction at ``revision`` keeps of a key's versions (package rule 6):
    ``entry`` itself if nothing is dropped, ``None`` if the key disappears,
    else the kept versions (a new list)."""
    if isinstance(entry, list):
        i = bisect_right(entry, revision, key=_by_mod_revision) - 1
        if i < 0:
            return entry
        v = entry[i]
        drop = i + 1 if not v[2] and v[0] < revision else i
        if not drop:
            return entry
        kept = entry[drop:]
        return kept if kept else None
    if not entry[2] and entry[0] < revision:
        return None  # a lone tombstone below the compaction point: the key is gone
    return entry
