"""Coverage-guided fuzzing of raftkv's decoders with atheris (libFuzzer), for ``make fuzz``.

    python tests/security/atheris_fuzz.py TARGET [libFuzzer flags, e.g. -max_total_time=60]

TARGET is one of: codec, wal, snapshot, kv. Each harness feeds the fuzzer's
bytes to a decoder and lets only that decoder's documented error through as
"fine"; any other exception is a crash, which libFuzzer reports with the input
that caused it (saved as ``crash-*`` in the working directory). Not collected by
pytest (the file name does not start with ``test_``); atheris is optional -- the
hypothesis tests in this directory run everywhere.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from raftkv.replica.kv import InvalidCommand, InvalidSnapshot, KVStateMachine, decode_command
    from raftkv.storage import snapshot as snapshot_mod
    from raftkv.storage import wal as wal_mod
    from raftkv.transport.codec import decode_batch, decode_control, encode_batch, encode_control
    from raftkv.transport.errors import CodecError


def fuzz_codec(data: bytes) -> None:
    try:
        batch = decode_batch(data)
    except CodecError:
        pass
    else:
        assert decode_batch(encode_batch(batch)) == batch
    try:
        frame = decode_control(data)
    except CodecError:
        pass
    else:
        assert decode_control(encode_control(frame)) == frame


def fuzz_wal(data: bytes) -> None:
    """What WAL recovery does with one segment's bytes, minus the files."""
    try:
        for _offset, rtype, payload in wal_mod._records(data):
            try:
                wal_mod._decode(rtype, payload)
            except ValueError:
                return  # recovery raises CorruptLogError here
    except wal_mod._BadRecord as bad:
        if bad.maybe_torn:
            wal_mod._valid_record_after(data, bad.offset + 1)


def fuzz_snapshot(data: bytes) -> None:
    with contextlib.suppress(ValueError):  # load() turns it into CorruptSnapshotError
        snapshot_mod._decode(data)


def fuzz_kv(data: bytes) -> None:
    with contextlib.suppress(InvalidSnapshot):
        KVStateMachine().restore(data)
    with contextlib.suppress(InvalidCommand):
        decode_command(data)
    KVStateMachine().apply(1, data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codec": fuzz_codec,
    "wal": fuzz_wal,
    "snapshot": fuzz_snapshot,
    "kv": fuzz_kv,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
