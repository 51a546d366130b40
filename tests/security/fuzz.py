"""Shared settings and mutators of the fuzz tests (hypothesis).

``make test`` runs each fuzz test with ``RAFTKV_FUZZ_EXAMPLES`` examples (default
60: a few seconds in all); ``make fuzz`` raises that to thousands.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("RAFTKV_FUZZ_EXAMPLES", "60"))

fuzz = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,  # a hang is caught by the per-input time limits in the tests
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few random edits: bit flips, overwrites, inserts, deletes, cuts."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice" and data:
            size = draw(st.integers(1, 8))
            data[pos : pos + size] = draw(st.binary(min_size=size, max_size=size))
    return bytes(data)
