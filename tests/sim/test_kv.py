"""The simulated KV state machine."""

from __future__ import annotations

import pytest

from raftkv.core import Entry
from raftkv.sim.kv import Command, KVStateMachine, Result


def apply_all(
    kv: KVStateMachine, cmds: list[Command | None]
) -> list[tuple[Command, Result] | None]:
    out = []
    for cmd in cmds:
        index = kv.applied_index + 1
        out.append(kv.apply(Entry(term=1, index=index, data=b"" if cmd is None else cmd.encode())))
    return out


def cmd(
    rid: int, op: str, key: str = "k", value: object = None, expect: object = None, client: int = 1
) -> Command:
    return Command(client_id=client, request_id=rid, op=op, key=key, value=value, expect=expect)


def test_encoding_is_deterministic_and_round_trips() -> None:
    c = cmd(3, "cas", value=5, expect=None)
    assert c.encode() == cmd(3, "cas", value=5, expect=None).encode()
    assert Command.decode(c.encode()) == c
    with pytest.raises(ValueError):
        Command.decode(b'{"op": "nope"}')


def test_operations() -> None:
    kv = KVStateMachine()
    results = apply_all(
        kv,
        [
            None,  # leader no-op
            cmd(1, "get"),
            cmd(2, "put", value=1),
            cmd(3, "get"),
            cmd(4, "cas", value=2, expect=7),
            cmd(5, "cas", value=2, expect=1),
            cmd(6, "cas", value=3, expect=None),
            cmd(7, "delete"),
            cmd(8, "delete"),
            cmd(9, "cas", value=4, expect=None),
        ],
    )
    outputs = [None if r is None else r[1] for r in results]
    assert outputs == [
        None,
        Result(None, False),
        Result(None),
        Result(1, True),
        Result(False),
        Result(True),
        Result(False),
        Result(True),
        Result(False),
        Result(True),
    ]
    assert kv.data == {"k": 4} and kv.applied_index == 10


def test_duplicate_commands_take_effect_once() -> None:
    kv = KVStateMachine()
    put = cmd(1, "put", value=1)
    results = apply_all(kv, [put, cmd(1, "put", value=99, client=2), put, cmd(2, "get"), put])
    assert kv.data == {"k": 99}
    assert results[2] == (put, Result(None))  # the latest request again: first result
    assert results[4] is None  # an older request: ignored
    assert kv.duplicates == 2


def test_apply_must_be_in_order() -> None:
    kv = KVStateMachine()
    with pytest.raises(ValueError):
        kv.apply(Entry(term=1, index=2))
