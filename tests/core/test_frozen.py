"""fast_init: the replaced __init__ builds exactly what the dataclass __init__ builds,
and immutability moves from run time to the type checker."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
import typing
from pathlib import Path

import pytest

from raftkv.core import AppendEntries, Entry, HardState, Heartbeat, Ready, RequestVote
from raftkv.core.frozen import fast_init
from raftkv.core.types import EntryType, ReadState, Role, SoftState


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Plain:  # what _Fast must be indistinguishable from
    term: int
    sender: str
    context: bytes = b""
    flag: bool = False


@fast_init
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Fast:
    term: int
    sender: str
    context: bytes = b""
    flag: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class _PlainPositional:
    a: int
    b: str = "x"


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class _FastPositional:
    a: int
    b: str = "x"


def test_same_signature_as_the_dataclass_init() -> None:
    assert str(inspect.signature(_Fast)) == str(inspect.signature(_Plain))
    assert str(inspect.signature(_FastPositional)) == str(inspect.signature(_PlainPositional))
    assert typing.get_type_hints(_Fast.__init__) == typing.get_type_hints(_Plain.__init__)
    assert _Fast.__init__.__qualname__ == "_Fast.__init__"


def test_fields_defaults_equality_hash_and_repr() -> None:
    a = _Fast(term=3, sender="n1")
    assert (a.term, a.sender, a.context, a.flag) == (3, "n1", b"", False)
    assert a == _Fast(term=3, sender="n1", context=b"", flag=False)
    assert a != _Fast(term=4, sender="n1")
    assert hash(a) == hash(_Fast(term=3, sender="n1"))
    assert repr(a) == "_Fast(term=3, sender='n1', context=b'', flag=False)"
    p = _FastPositional(1)
    assert (p.a, p.b) == (1, "x") and _FastPositional(1, b="y").b == "y"


def test_copyable_and_picklable() -> None:
    a = _Fast(term=3, sender="n1")
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.copy(a) == a and copy.deepcopy(a) == a
    assert dataclasses.replace(a, term=9) == _Fast(term=9, sender="n1")


def test_argument_errors_match_the_dataclass_init() -> None:
    for cls in (_Plain, _Fast):
        with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'sender'"):
            cls(term=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="takes 1 positional argument"):
            cls(1, "n1")  # type: ignore[misc]
        with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
            cls(term=1, sender="n1", nope=2)  # type: ignore[call-arg]


def test_rejects_what_it_cannot_reproduce() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        a: tuple[int, ...] = dataclasses.field(default_factory=tuple)

    for cls in (Mutable, WithFactory):
        with pytest.raises(TypeError):
            fast_init(cls)


def test_post_init_runs_last_as_in_the_dataclass_init() -> None:
    seen: list[tuple[int, int]] = []

    @fast_init
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Checked:
        a: int
        b: int = 2

        def __post_init__(self) -> None:
            seen.append((self.a, self.b))  # every field is set by now
            if self.a < 0:
                raise ValueError("a must not be negative")

    assert Checked(a=1) == Checked(a=1, b=2) and seen == [(1, 2), (1, 2)]
    with pytest.raises(ValueError, match="negative"):
        Checked(a=-1)


def test_core_values_are_built_by_fast_init() -> None:
    e = Entry(term=2, index=5, data=b"x")
    assert e == Entry(2, 5, b"x", EntryType.NORMAL) and e.size() == 17
    assert HardState() == HardState(term=0, vote=None, commit=0)
    assert SoftState(None, Role.FOLLOWER) == SoftState(leader=None, role=Role.FOLLOWER)
    assert ReadState(3, b"c").index == 3
    m = AppendEntries(
        term=1, sender="n1", to="n2", prev_log_index=0, prev_log_term=0, entries=(e,), commit=0
    )
    assert m.entries == (e,)
    assert Heartbeat(term=1, sender="n1", to="n2", commit=0).context == b""
    vote = RequestVote(term=1, sender="n1", to="n2", last_log_index=0, last_log_term=0)
    assert vote.pre_vote is False and vote.transfer is False
    for cls in (
        Entry,
        HardState,
        SoftState,
        ReadState,
        AppendEntries,
        Heartbeat,
        RequestVote,
        Ready,
    ):
        # functools.update_wrapper leaves the dataclass's own __init__ here.
        assert hasattr(cls.__init__, "__wrapped__"), cls


def test_plain_slot_stores_at_run_time() -> None:
    # What makes construction cheap: no frozen __setattr__ left on the class.
    assert "__setattr__" not in _Fast.__dict__ and "__delattr__" not in _Fast.__dict__
    assert "__setattr__" in _Plain.__dict__
    for cls in (Entry, HardState, AppendEntries, Heartbeat, Ready):
        assert "__setattr__" not in cls.__dict__, cls


def test_the_type_checker_rejects_assigning_a_field(tmp_path: Path) -> None:
    """Immutability is enforced by mypy (make test runs it on all of raftkv)."""
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "mutates.py"
    snippet.write_text(
        "from raftkv.core import Entry, Heartbeat, NodeId\n"
        "hb = Heartbeat(term=1, sender=NodeId('a'), to=NodeId('b'), commit=0)\n"
        "hb.term = 2\n"
        "e = Entry(term=1, index=1)\n"
        "e.data = b'x'\n"
        "ok = Heartbeat(term=hb.term, sender=hb.sender, to=hb.to, commit=e.index)\n"
    )
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(snippet)]
    )
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["3", "5"], out
    assert 'Property "term" defined in "Heartbeat" is read-only' in out
