"""Cheap construction of the core's frozen, slotted dataclasses.

Rule: the type checker, not the interpreter, keeps core values immutable.
A class decorated with :func:`fast_init` is declared
``@dataclass(frozen=True, slots=True)``, so mypy (``--strict`` on all of
``raftkv``, run by ``make test``) rejects any assignment to a field, and the
class keeps the dataclass's fields, defaults, signature, equality, hashing and
``repr``. At run time :func:`fast_init` removes the two things that make a
frozen dataclass slow to build: the ``__setattr__``/``__delattr__`` that raise
``FrozenInstanceError``, and the generated ``__init__`` that must go around
them with a call per field. The new ``__init__`` is a plain ``self.x = x`` per
field, which CPython compiles to a direct slot store.

Why: the core builds a message or a Ready for almost every input. In CPython
3.11 a frozen dataclass's ``__init__`` costs about four times a plain slotted
one (a 5-field message: ~3.1 µs against ~0.8 µs here), and that was 8 % of the
simulator's instructions. The price is that untyped code *can* mutate a core
value at run time; nothing in raftkv does (mypy proves it), and callers
embedding the core should treat messages, entries and Readys as read-only, as
their types say.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")


def fast_init(cls: type[_T]) -> type[_T]:
    """Give the frozen, slotted dataclass ``cls`` a plain ``__init__`` (see the module docstring).

    Use it as the outermost class decorator (after ``@dataclass`` has run).
    Instances stay equal, hashable and printable exactly as before; assigning
    to a field is a type error, no longer a run-time one.

    Raises:
        TypeError: ``cls`` is not a frozen slotted dataclass, or uses a feature
            the replacement does not reproduce (``InitVar``, ``init=False``
            fields, default factories). A ``__post_init__`` is called last, as
            the dataclass's own ``__init__`` would.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    namespace: dict[str, object] = {}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported field")
        if f.default is dataclasses.MISSING:
            param = f.name
        else:
            namespace[f"_default_{f.name}"] = f.default
            param = f"{f.name}=_default_{f.name}"
        (keyword if f.kw_only else positional).append(param)
        body.append(f"    self.{f.name} = {f.name}\n")
    if len(body) != len(cls.__dict__["__slots__"]):
        raise TypeError(f"{cls.__name__} has slots that are not fields")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()\n")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({signature}):\n{''.join(body) or '    pass'}\n", namespace)
    init = cast(Callable[..., None], namespace["__init__"])
    # Same name, docstring and annotations; __wrapped__ keeps inspect.signature
    # and typing.get_type_hints answering as for the dataclass's own __init__.
    functools.update_wrapper(init, cls.__init__)
    cls.__init__ = init  # type: ignore[method-assign]
    # The frozen guard: what remains is object's own attribute setting, so the
    # __init__ above stores straight into the slots.
    del cls.__setattr__
    del cls.__delattr__
    return cls
