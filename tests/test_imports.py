"""Determinism guard: what the core, replica, history and sim packages may import.

Rule (DESIGN.md, STYLE.md "Determinism"): the core and the replica layer never
touch the clock, the OS, threads or any randomness; the simulator may use
``random.Random(seed)`` instances but never the global RNG or the wall clock.
The replica layer is what the simulator proves and the server runs, so it may
import only the core (and the shared limits), never the server; the history
checkers (shared by the simulator and jepsen) only the replica layer and below.

ruff's banned-api rule (configured in pyproject.toml) cannot tell core from sim
for ``random``, so this test is the authoritative check. It parses every module
with :mod:`ast` -- nothing is imported or executed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = REPO_ROOT / "raftkv"

Layer = Literal["core", "replica", "history", "sim"]

# Modules that leak wall-clock time, OS state, concurrency or OS randomness.
_NONDETERMINISTIC = frozenset(
    {
        "time",
        "asyncio",
        "socket",
        "os",
        "threading",
        "datetime",
        "secrets",
        "uuid",
        # Ways around an import ban.
        "importlib",
    }
)
BANNED_MODULES: dict[Layer, frozenset[str]] = {
    "core": _NONDETERMINISTIC | {"random"},
    "replica": _NONDETERMINISTIC | {"random"},
    "history": _NONDETERMINISTIC | {"random"},
    "sim": _NONDETERMINISTIC,
}
# raftkv packages each layer may import (DESIGN.md "Dependency direction").
ALLOWED_RAFTKV: dict[Layer, tuple[str, ...]] = {
    "core": ("raftkv.core",),
    "replica": ("raftkv.core", "raftkv.limits", "raftkv.replica"),
    "history": ("raftkv.core", "raftkv.limits", "raftkv.replica", "raftkv.history"),
    "sim": ("raftkv.core", "raftkv.limits", "raftkv.replica", "raftkv.history", "raftkv.sim"),
}
# The only name of the `random` module the simulator may touch.
ALLOWED_RANDOM_NAMES = frozenset({"Random"})


@dataclass(frozen=True, slots=True)
class Violation:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _module_name(path: Path) -> str:
    """Dotted module name of a file under the repository root."""
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str | None, level: int, current: str, is_package: bool) -> str:
    """Absolute name for ``from <level dots><module> import ...`` inside ``current``."""
    package = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    base = ".".join(package)
    if module:
        return f"{base}.{module}" if base else module
    return base


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check_source(
    source: str,
    *,
    layer: Layer,
    path: str = "<string>",
    module: str | None = None,
    is_package: bool = False,
) -> list[Violation]:
    """Return the determinism violations in one module's source.

    Args:
        source: Python source text.
        layer: which rule set applies.
        path: shown in messages.
        module: the module's dotted name, needed to resolve relative imports
            (defaults to ``raftkv.<layer>.module``).
        is_package: True if ``source`` is a package's ``__init__.py``.
    """
    module = module or f"raftkv.{layer}._checked"
    banned = BANNED_MODULES[layer]
    allowed = ALLOWED_RAFTKV[layer]
    tree = ast.parse(source, filename=path)
    found: list[Violation] = []
    random_aliases: set[str] = set()

    def check_module(name: str, line: int) -> None:
        top = name.split(".")[0]
        if top in banned:
            found.append(Violation(path, line, f"imports banned module {name!r} in {layer}"))
        elif top == "raftkv" and not _within(name, allowed):
            found.append(
                Violation(path, line, f"{layer} may import only {', '.join(allowed)}, not {name!r}")
            )

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check_module(alias.name, node.lineno)
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                name = _resolve_relative(node.module, node.level, module, is_package)
            else:
                name = node.module or ""
            if name == "raftkv" or (node.level and not node.module):
                # `from raftkv import sim` / `from .. import server`: the names are modules.
                for alias in node.names:
                    check_module(f"{name}.{alias.name}", node.lineno)
            else:
                check_module(name, node.lineno)
            if name == "random":
                for alias in node.names:
                    if alias.name not in ALLOWED_RANDOM_NAMES:
                        found.append(
                            Violation(
                                path,
                                node.lineno,
                                f"imports random.{alias.name}; use a random.Random(seed) instance",
                            )
                        )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.append(Violation(path, node.lineno, "calls __import__"))

    if random_aliases:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in random_aliases
                and node.attr not in ALLOWED_RANDOM_NAMES
            ):
                found.append(
                    Violation(
                        path,
                        node.lineno,
                        f"uses global RNG {node.value.id}.{node.attr}; "
                        "use a random.Random(seed) instance",
                    )
                )

    return sorted(found, key=lambda v: (v.line, v.message))


def _layer_files(layer: Layer) -> Iterator[Path]:
    yield from sorted((PACKAGE_ROOT / layer).rglob("*.py"))


def check_layer(layer: Layer) -> list[Violation]:
    violations: list[Violation] = []
    for file in _layer_files(layer):
        violations += check_source(
            file.read_text(encoding="utf-8"),
            layer=layer,
            path=str(file.relative_to(REPO_ROOT)),
            module=_module_name(file),
            is_package=file.name == "__init__.py",
        )
    return violations


# ----------------------------------------------------------------- the real check


@pytest.mark.parametrize("layer", ["core", "replica", "history", "sim"])
def test_layer_is_deterministic(layer: Layer) -> None:
    violations = check_layer(layer)
    assert not violations, "determinism violations:\n" + "\n".join(map(str, violations))


@pytest.mark.parametrize("layer", ["core", "replica", "history", "sim"])
def test_layer_has_modules(layer: Layer) -> None:
    # Guards against the walk silently checking nothing (e.g. a moved package).
    assert any(_layer_files(layer))


# ----------------------------------------------------------------- the checker itself


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("core", "import time\n", "banned module 'time'"),
        ("core", "import os.path\n", "banned module 'os.path'"),
        ("core", "from datetime import datetime\n", "banned module 'datetime'"),
        ("core", "import random\n", "banned module 'random'"),
        ("core", "from random import Random\n", "banned module 'random'"),
        ("core", "import asyncio as aio\n", "banned module 'asyncio'"),
        ("core", "import importlib\n", "banned module 'importlib'"),
        ("core", "m = __import__('socket')\n", "calls __import__"),
        ("core", "from raftkv.server import kv\n", "not 'raftkv.server'"),
        ("core", "import raftkv.sim.cluster\n", "not 'raftkv.sim.cluster'"),
        ("core", "from raftkv import sim\n", "not 'raftkv.sim'"),
        ("core", "from ..storage import wal\n", "not 'raftkv.storage'"),
        ("core", "from .. import transport\n", "not 'raftkv.transport'"),
        ("sim", "import threading\n", "banned module 'threading'"),
        ("sim", "import uuid\n", "banned module 'uuid'"),
        ("sim", "import secrets\n", "banned module 'secrets'"),
        ("sim", "import random\nx = random.randint(1, 6)\n", "random.randint"),
        ("sim", "import random as r\nr.seed(1)\n", "r.seed"),
        ("sim", "import random\nf = random.choice\n", "random.choice"),
        ("sim", "from random import shuffle\n", "random.shuffle"),
        ("sim", "from raftkv.server.node import Node\n", "not 'raftkv.server.node'"),
        ("replica", "from raftkv.server.api import serve\n", "not 'raftkv.server.api'"),
        ("replica", "import time\n", "banned module 'time'"),
        ("replica", "import random\n", "banned module 'random'"),
    ],
)
def test_checker_flags_bad_source(layer: Layer, source: str, expected: str) -> None:
    violations = check_source(source, layer=layer, path="bad.py")
    assert violations, f"checker missed a violation in {source!r}"
    assert any(expected in v.message for v in violations), violations


@pytest.mark.parametrize(
    ("layer", "source"),
    [
        ("core", "from __future__ import annotations\nimport enum\nimport dataclasses\n"),
        ("core", "from raftkv.core.types import Entry\nfrom .types import Term\n"),
        ("core", "from . import types\n"),
        ("core", "import raftkv.core.quorum\n"),
        ("sim", "import random\nrng = random.Random(7)\nx = rng.randint(1, 6)\n"),
        ("sim", "from random import Random\nrng = Random(7)\nrng.shuffle([1, 2])\n"),
        ("sim", "import random\n\ndef f(rng: random.Random) -> int:\n    return rng.random()\n"),
        ("sim", "from raftkv.core import RawNode\nfrom raftkv.sim.clock import Clock\n"),
        ("sim", "from ..core.types import Entry\nfrom .clock import Clock\n"),
        ("sim", "from raftkv.replica import Replica\n"),
        ("replica", "from raftkv.core.types import Entry\nfrom raftkv.limits import is_host\n"),
    ],
)
def test_checker_accepts_good_source(layer: Layer, source: str) -> None:
    module = f"raftkv.{layer}.example"
    assert check_source(source, layer=layer, module=module) == []


def test_relative_import_in_package_init() -> None:
    # In raftkv/core/__init__.py, `from . import x` is raftkv.core.x and `from .. import x`
    # is raftkv.x.
    ok = check_source("from . import types\n", layer="core", module="raftkv.core", is_package=True)
    bad = check_source("from .. import sim\n", layer="core", module="raftkv.core", is_package=True)
    assert ok == []
    assert bad and "not 'raftkv.sim'" in bad[0].message


def test_violation_names_file_and_line() -> None:
    (v,) = check_source("x = 1\nimport time\n", layer="core", path="raftkv/core/x.py")
    assert str(v).startswith("raftkv/core/x.py:2: ")
