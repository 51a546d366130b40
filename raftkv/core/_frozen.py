"""Cheaper construction of the core's frozen, slotted dataclasses.

Rule: :func:`fast_init` changes how an instance is *built*, never what it *is*.
The class stays a ``@dataclass(frozen=True, slots=True)`` with the same fields,
defaults, signature, equality, hashing, ``repr`` and immutability; only the
generated ``__init__`` is replaced by one that stores each field through its
slot descriptor instead of calling ``object.__setattr__`` by name. The core
builds a message or a Ready for almost every input, and in CPython 3.11 the
dataclass ``__init__`` of a frozen class costs about twice that of a mutable
one; this one costs about a third less.
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
    """Give the frozen, slotted dataclass ``cls`` a faster, equivalent ``__init__``.

    Use it as the outermost class decorator (after ``@dataclass`` has run).

    Raises:
        TypeError: ``cls`` is not a frozen slotted dataclass, or uses a feature
            the replacement does not reproduce (``__post_init__``, ``InitVar``,
            ``init=False`` fields, default factories).
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
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
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        body.append(f"    _set_{f.name}(self, {f.name})\n")
    if len(body) != len(cls.__dict__["__slots__"]):
        raise TypeError(f"{cls.__name__} has slots that are not fields")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({signature}):\n{''.join(body) or '    pass'}\n", namespace)
    init = cast(Callable[..., None], namespace["__init__"])
    # Same name, docstring and annotations; __wrapped__ keeps inspect.signature
    # and typing.get_type_hints answering as for the dataclass's own __init__.
    functools.update_wrapper(init, cls.__init__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
