"""The chain hash of a log prefix, shared by the disk model and the checkers.

Rule: ``h[0] = 0`` and ``h[i] = chain(h[i-1], term_i, data_i)``. Two logs have the
same chain hash at index ``i`` exactly when (barring collisions of a 64-bit hash)
their first ``i`` entries are identical, so comparing prefixes is O(1) once the
hashes are maintained incrementally. Hashes live only in one process's memory;
they are never printed or compared across runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftkv.core.types import Entry


def chain(prev: int, term: int, data: bytes) -> int:
    """The chain hash after appending an entry to a prefix whose hash is ``prev``."""
    return hash((prev, term, data))


def extend_hashes(hashes: list[int], entries: Iterable[Entry]) -> None:
    """Replace ``hashes`` from the first entry's index on with the hashes of ``entries``.

    ``hashes[i]`` is the chain hash at index ``i``; ``hashes[0]`` is 0. The
    entries must be contiguous and start at most one past the end of ``hashes``.
    """
    it = iter(entries)
    first = next(it, None)
    if first is None:
        return
    if first.index > len(hashes) or first.index < 1:
        raise ValueError(f"entries start at {first.index}, hashes end at {len(hashes) - 1}")
    del hashes[first.index :]
    h = chain(hashes[-1], first.term, first.data)
    hashes.append(h)
    for e in it:
        h = chain(h, e.term, e.data)
        hashes.append(h)
