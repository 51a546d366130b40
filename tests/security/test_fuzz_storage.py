"""Fuzzing the readers of the disk: WAL segments, snapshot files, KV snapshots/commands.

The property: a damaged file either raises the module's corruption error, or what
loads is exactly what was written -- a recovered WAL entry never differs from the
entry written at its index, entries go missing only from the torn tail of the
last segment, and the hard state is one that was written. No other exception
escapes, so a corrupted log never loads as valid data and never crashes the
reader with a traceback.
"""

from __future__ import annotations

import contextlib
import struct
import tempfile
import zlib
from pathlib import Path

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from raftkv.core.types import ConfState, Entry, HardState, NodeId, Snapshot, SnapshotMetadata
from raftkv.replica.kv import InvalidCommand, InvalidSnapshot, KVStateMachine, Put, decode_command
from raftkv.replica.kv import encode_command as encode_kv
from raftkv.storage.errors import CorruptLogError, CorruptSnapshotError
from raftkv.storage.snapshot import SnapshotStore
from raftkv.storage.wal import (
    RECORD_ENTRY,
    RECORD_HARD_STATE,
    RECORD_SNAPSHOT_MARKER,
    WAL,
    _append_record,
    segment_name,
)
from tests.security.fuzz import fuzz, mutated


def _write_wal(directory: Path) -> tuple[dict[int, Entry], list[HardState]]:
    """A WAL of several small segments: 40 entries, a hard state per batch, one overwrite."""
    wal, _ = WAL.open(directory, fsync=False, segment_bytes=200)
    written: dict[int, Entry] = {}
    states: list[HardState] = []
    with wal:
        for batch in range(8):
            entries = [
                Entry(term=1 + batch // 4, index=i, data=f"v{i}-{batch}".encode() * 3)
                for i in range(batch * 5 + 1, batch * 5 + 6)
            ]
            if batch == 6:  # a follower overwriting a conflicting suffix
                entries = [Entry(term=3, index=i, data=b"overwritten") for i in range(28, 36)]
            hs = HardState(term=1 + batch // 4, vote=NodeId("n1"), commit=batch * 5)
            wal.append(entries, hs)
            wal.sync()
            for e in entries:
                for stale in [i for i in written if i >= e.index]:
                    del written[stale]
                written[e.index] = e
            states.append(hs)
    return written, states


_WAL_TEMPLATE: tuple[dict[int, Entry], list[HardState], dict[str, bytes]] | None = None


def _template() -> tuple[dict[int, Entry], list[HardState], dict[str, bytes]]:
    global _WAL_TEMPLATE
    if _WAL_TEMPLATE is None:
        with tempfile.TemporaryDirectory() as d:
            written, states = _write_wal(Path(d))
            files = {p.name: p.read_bytes() for p in sorted(Path(d).glob("*.wal"))}
        _WAL_TEMPLATE = (written, states, files)
    return _WAL_TEMPLATE


def test_the_template_spans_segments() -> None:
    written, _, files = _template()
    assert len(files) >= 4 and sorted(written) == list(range(1, 41))


@fuzz
@given(data=st.data())
def test_damaged_wal_never_loads_wrong_data(data: st.DataObject) -> None:
    written, states, files = _template()
    names = sorted(files)
    victim = data.draw(st.sampled_from(names), label="segment")
    damaged = data.draw(mutated(files[victim]), label="bytes")
    with tempfile.TemporaryDirectory() as d:
        for name, content in files.items():
            (Path(d) / name).write_bytes(damaged if name == victim else content)
        try:
            wal, recovered = WAL.open(d, fsync=False)
        except CorruptLogError:
            return
        wal.close()
    indexes = [e.index for e in recovered.entries]
    assert indexes == list(range(1, len(indexes) + 1))
    for e in recovered.entries:
        assert e == written[e.index], f"entry {e.index} loaded as {e!r}"
    assert recovered.hard_state in (*states, HardState())
    if victim != names[-1] and damaged != files[victim]:
        # Damage outside the last segment is never "repaired" by dropping data.
        assert len(indexes) == len(written)


@fuzz
@given(
    st.sampled_from([RECORD_ENTRY, RECORD_HARD_STATE, RECORD_SNAPSHOT_MARKER, 4, 0, 255]),
    st.one_of(
        st.binary(max_size=64),
        st.lists(
            st.one_of(st.integers(-5, 2**64 - 1), st.binary(max_size=8), st.text(max_size=8))
            | st.none()
            | st.booleans(),
            max_size=5,
        ).map(lambda x: msgpack.packb(x, use_bin_type=True)),
    ),
)
def test_checksummed_garbage_records(rtype: int, payload: bytes) -> None:
    """A record whose checksum is right but whose payload is nonsense: never a crash."""
    buf = bytearray()
    if rtype in (RECORD_ENTRY, RECORD_HARD_STATE, RECORD_SNAPSHOT_MARKER):
        _append_record(buf, rtype, payload)
    else:
        buf += struct.pack("<IIB", len(payload), zlib.crc32(bytes([rtype]) + payload), rtype)
        buf += payload
    _append_record(buf, RECORD_HARD_STATE, msgpack.packb([1, None, 0]))  # so it is not the tail
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / segment_name(0, 1)).write_bytes(bytes(buf))
        try:
            wal, _ = WAL.open(d, fsync=False)
        except CorruptLogError:
            return
        wal.close()


def _snapshot() -> Snapshot:
    conf = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")), learners=(NodeId("n4"),))
    return Snapshot(
        metadata=SnapshotMetadata(index=42, term=3, conf_state=conf), data=b"state " * 40
    )


@fuzz
@given(data=st.data())
def test_damaged_snapshot_never_loads_wrong_data(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = SnapshotStore(d, fsync=False)
        path = store.save(_snapshot())
        damaged = data.draw(mutated(path.read_bytes()))
        path.write_bytes(damaged)
        try:
            loaded = store.load(path)
        except CorruptSnapshotError:
            return
    assert loaded == _snapshot()


@fuzz
@given(st.binary(max_size=512))
def test_random_snapshot_files(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "snap-0000000000000003-000000000000002a.snap"
        path.write_bytes(raw)
        try:
            SnapshotStore(d, fsync=False).load(path)
        except CorruptSnapshotError:
            return
    raise AssertionError("random bytes loaded as a snapshot")


def _kv_image() -> bytes:
    sm = KVStateMachine()
    for i in range(1, 6):
        sm.apply(i, encode_kv(Put(key=f"k{i}", value={"n": [i, None]}, time_ms=i)))
    return sm.snapshot()


@fuzz
@given(st.one_of(st.binary(max_size=256), st.just(_kv_image()).flatmap(mutated)))
def test_kv_restore_and_apply_take_any_bytes(raw: bytes) -> None:
    sm = KVStateMachine()
    try:
        sm.restore(raw)
    except InvalidSnapshot:
        pass
    else:
        assert KVStateMachine().restore(sm.snapshot()) is None  # what loaded is consistent
    with contextlib.suppress(InvalidCommand):
        decode_command(raw)
    result = KVStateMachine().apply(1, raw)  # never raises: bad bytes are a result
    assert result.index == 1
