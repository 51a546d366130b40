"""The MVCC store's snapshot form: ``to_wire``, ``capture`` and ``from_wire``.

Rule: the wire form holds what compaction keeps (package rule 6), keys in
order, so equal stores give equal bytes; ``capture`` packs exactly
``to_wire``'s result, off the event loop if need be; ``from_wire`` accepts only
what ``to_wire`` can have made, checked against the store's invariants.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Final, Self

import msgpack

from raftkv.replica.keyindex import KeyIndex
from raftkv.replica.mvcc._errors import InvalidSnapshotError
from raftkv.replica.mvcc._state import _StoreState
from raftkv.replica.mvcc._versions import (
    VERSION_OVERHEAD_BYTES,
    _compacted,
    _Entry,
    _Version,
)

WIRE_FORMAT: Final = 1
"""First element of :meth:`MVCCStore.to_wire`; :meth:`MVCCStore.from_wire` refuses others."""

_PACK_CHUNK_KEYS: Final = 512
_PACK_CHUNK_BYTES: Final = 256 * 1024
"""A snapshot packs a chunk of keys per msgpack call (:meth:`MVCCStore.capture`):
at most this many keys, or about this many bytes of values (~0.3 ms each)."""


def _kept_versions(
    keys: Iterable[bytes],
    entries: dict[bytes, _Entry],
    revision: int,
    compact_revision: int,
    compacting: bool,
) -> Iterator[tuple[bytes, Sequence[_Version]]]:
    """Each of ``keys`` with the versions a snapshot at ``revision`` holds: at
    or below ``revision`` (a list may have grown since it was captured), less
    what a compaction at ``compact_revision`` still under way drops (rule 6)."""
    for key in keys:
        entry: _Entry | None = entries[key]
        if isinstance(entry, list):
            versions: list[_Version] = entry[:]  # one atomic copy
            if versions[-1][0] > revision:
                versions = [v for v in versions if v[0] <= revision]
            entry = versions
        if compacting:
            entry = _compacted(entry, compact_revision)  # type: ignore[arg-type]
        if entry is not None:
            yield key, entry if isinstance(entry, list) else (entry,)


def _packed_items(
    packer: msgpack.Packer, items: list[tuple[bytes, Sequence[_Version]]]
) -> memoryview:
    """``items`` packed as msgpack array elements: the array less its header."""
    header = len(packer.pack_array_header(len(items)))
    return memoryview(packer.pack(items))[header:]


class _WireForm(_StoreState):
    """The store's snapshot form; a base of :class:`~raftkv.replica.mvcc.MVCCStore`."""

    __slots__ = ()

    def to_wire(self) -> list[object]:
        """Everything the store holds, as plain msgpack-able sequences, ints and bytes.

        ``[WIRE_FORMAT, revision, compact_revision, keys]`` where ``keys`` is
        ``[[key, versions], ...]`` in key order and each version is
        ``(mod_revision, create_revision, version, lease, value)`` in revision
        order (a tombstone is ``(mod_revision, 0, 0, 0, b"")``). Versions are
        tuples shared with the store (immutable); msgpack writes them as arrays.
        Equal stores give equal results.
        """
        keys = [
            [key, list(versions)]
            for key, versions in _kept_versions(
                self._index, self._entries, self._revision, self._compact_revision, self.compacting
            )
        ]
        return [WIRE_FORMAT, self._revision, self._compact_revision, keys]

    def capture(self) -> Callable[[], bytes]:
        """Capture the store now; the returned function packs :meth:`to_wire`'s
        result as of the capture (``msgpack.packb(to_wire(), use_bin_type=True)``,
        byte for byte), and may run in another thread while the store goes on
        changing (a replica encoding a snapshot off its event loop).

        The capture copies only the key order and the entry map (~0.2 ms for
        10,000 keys): a key's list of versions is shared, which is safe because
        the store only ever appends to a list (versions above the captured
        revision, which the packing leaves out) or replaces it (compaction makes
        a new list); versions themselves are immutable tuples.

        The packing takes a chunk of keys per msgpack call (:data:`_PACK_CHUNK_KEYS`
        keys, or :data:`_PACK_CHUNK_BYTES` of values): one call for the whole
        store would hold the GIL, and stall the node's event loop, for the whole
        encoding (~80 ms for 63 MB), and one call per key costs 40 % more CPU.
        """
        keys = list(self._index)
        entries = self._entries.copy()
        revision, compact_revision = self._revision, self._compact_revision
        compacting = self.compacting

        def pack() -> bytes:
            packer = msgpack.Packer(use_bin_type=True)
            parts: list[bytes | memoryview] = []
            count = 0
            chunk: list[tuple[bytes, Sequence[_Version]]] = []
            chunk_bytes = 0
            items = _kept_versions(keys, entries, revision, compact_revision, compacting)
            for item in items:
                chunk.append(item)
                versions = item[1]
                chunk_bytes += len(versions) * len(versions[-1][4])  # about: the last value's
                if len(chunk) >= _PACK_CHUNK_KEYS or chunk_bytes >= _PACK_CHUNK_BYTES:
                    parts.append(_packed_items(packer, chunk))
                    count += len(chunk)
                    chunk, chunk_bytes = [], 0
            if chunk:
                parts.append(_packed_items(packer, chunk))
                count += len(chunk)
            head = [packer.pack_array_header(4), packer.pack(WIRE_FORMAT)]
            head += [packer.pack(revision), packer.pack(compact_revision)]
            head.append(packer.pack_array_header(count))
            return b"".join(head + parts)

        return pack

    @classmethod
    def from_wire(cls, wire: object) -> Self:
        """Rebuild a store from :meth:`to_wire`'s result (also after a msgpack round trip).

        The result answers every read at every readable revision as the original
        did, and continues with the same revisions.

        Raises:
            InvalidSnapshotError: ``wire`` is not something :meth:`to_wire` makes.
        """
        if not isinstance(wire, list | tuple) or len(wire) != 4:
            raise InvalidSnapshotError("not a 4-element list")
        fmt, revision, compact_revision, keys = wire
        if type(fmt) is not int or fmt != WIRE_FORMAT:
            raise InvalidSnapshotError(f"format {fmt!r}, expected {WIRE_FORMAT}")
        if type(revision) is not int or type(compact_revision) is not int:
            raise InvalidSnapshotError("revisions are not integers")
        if revision < 1 or not 0 <= compact_revision <= revision:
            raise InvalidSnapshotError(
                f"revision {revision}, compact revision {compact_revision}: out of order"
            )
        if not isinstance(keys, list | tuple):
            raise InvalidSnapshotError("keys are not a list")
        store = cls()
        entries = store._entries
        superseded: list[tuple[int, bytes]] = []
        ordered: list[bytes] = []
        size = versions_total = live = 0
        previous_key: bytes | None = None
        for item in keys:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise InvalidSnapshotError("a key is not a [key, versions] pair")
            key, raw_versions = item
            if type(key) is not bytes or not key:
                raise InvalidSnapshotError(f"bad key {key!r}")
            if previous_key is not None and not previous_key < key:
                raise InvalidSnapshotError(f"key {key!r} out of order")
            previous_key = key
            versions = _decode_versions(key, raw_versions, revision, compact_revision)
            ordered.append(key)
            if len(versions) == 1:
                entries[key] = versions[0]
            else:
                entries[key] = versions
                superseded.extend((v[0], key) for v in versions[1:])
            if not versions[0][2]:
                store._floor_tombstones.append(key)
            if versions[-1][2]:
                live += 1
            versions_total += len(versions)
            for v in versions:
                size += len(key) + len(v[4]) + VERSION_OVERHEAD_BYTES
        superseded.sort(key=itemgetter(0))
        store._superseded_keys = [key for _, key in superseded]
        store._superseded_revs = array("q", [rev for rev, _ in superseded])
        store._index = KeyIndex(ordered)
        store._revision = revision
        store._compact_revision = compact_revision
        store._size = size
        store._versions = versions_total
        store._live = live
        return store

    def state_digest(self) -> str:
        """SHA-256 (hex) of :meth:`to_wire` packed with msgpack: equal stores, equal digests."""
        packed = msgpack.packb(self.to_wire(), use_bin_type=True)
        return hashlib.sha256(packed).hexdigest()


def _decode_versions(
    key: bytes, raw: object, revision: int, compact_revision: int
) -> list[_Version]:
    """One key's versions from the wire, checked against the store's invariants."""
    if not isinstance(raw, list | tuple) or not raw:
        raise InvalidSnapshotError(f"key {key!r}: no versions")
    out: list[_Version] = []
    prev: _Version | None = None
    for fields in raw:
        if not isinstance(fields, list | tuple) or len(fields) != 5:
            raise InvalidSnapshotError(f"key {key!r}: a version is not 5 fields")
        mod, create, version, lease, value = fields
        if not (type(mod) is type(create) is type(version) is type(lease) is int):
            raise InvalidSnapshotError(f"key {key!r}: non-integer revision, version or lease")
        if type(value) is not bytes:
            raise InvalidSnapshotError(f"key {key!r}: value is not bytes")
        where = f"key {key!r} at revision {mod}"
        if not 2 <= mod <= revision:
            raise InvalidSnapshotError(f"{where}: revision outside [2, {revision}]")
        if prev is not None and mod <= prev[0]:
            raise InvalidSnapshotError(f"{where}: revisions not increasing")
        if prev is not None and mod <= compact_revision:
            raise InvalidSnapshotError(f"{where}: history below the compact revision")
        if version == 0:
            if create or lease or value:
                raise InvalidSnapshotError(f"{where}: a tombstone with content")
            if prev is None and mod != compact_revision:
                raise InvalidSnapshotError(f"{where}: a tombstone without the version it deletes")
            if prev is not None and not prev[2]:
                raise InvalidSnapshotError(f"{where}: a tombstone after a tombstone")
        elif version < 0:
            raise InvalidSnapshotError(f"{where}: negative version")
        elif prev is not None and prev[2]:
            if version != prev[2] + 1 or create != prev[1]:
                raise InvalidSnapshotError(f"{where}: does not follow the version before it")
        elif prev is not None or mod > compact_revision:
            if version != 1 or create != mod:
                raise InvalidSnapshotError(f"{where}: a created key must be version 1")
        elif not (create == mod if version == 1 else 1 <= create < mod):
            raise InvalidSnapshotError(f"{where}: create revision does not fit its version")
        v: _Version = (mod, create, version, lease, value)
        out.append(v)
        prev = v
    return out
