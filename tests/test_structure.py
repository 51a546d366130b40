"""The package's shape: no import cycles, no private names across packages.

Rule (issue 20, STYLE.md): raftkv's modules form a DAG at import time -- an
import under ``if TYPE_CHECKING:`` is for the type checker only and does not
count -- and a package's private modules and names (a leading underscore) are
used only inside that package (``raftkv.core``, ``raftkv.server``, ...).
Parsed with :mod:`ast`; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = REPO_ROOT / "raftkv"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """The module-level imports of ``path``: (module, imported names, line),
    relative imports resolved, TYPE_CHECKING blocks and function bodies left out."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, list[str], int]] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.Import):
                found.extend((a.name, [], node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                found.append((name, [a.name for a in node.names], node.lineno))

    visit(ast.parse(path.read_text(), filename=str(path)).body)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for name, names, _ in imports(path, module):
            if name in modules:
                edges.add(name)
            edges.update(f"{name}.{n}" for n in names if f"{name}.{n}" in modules)
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _package(module: str) -> str:
    """The top-level package a module belongs to: ``raftkv.core``, ``raftkv.server``..."""
    return ".".join(module.split(".")[:2])


def private_crossings(modules: dict[str, Path]) -> list[str]:
    found = []
    for module, path in modules.items():
        for name, names, line in imports(path, module):
            if not name.startswith("raftkv.") or _package(name) == _package(module):
                continue
            where = f"{module}:{line}"
            if any(part.startswith("_") for part in name.split(".")[2:]):
                found.append(f"{where}: imports the private module {name}")
            found.extend(
                f"{where}: imports the private name {name}.{n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            )
    return found


def test_there_are_no_import_cycles() -> None:
    assert cycles(import_graph(_modules())) == []


def test_no_private_name_crosses_a_package() -> None:
    assert private_crossings(_modules()) == []


def test_the_checks_catch_a_cycle_and_a_private_import(tmp_path: Path) -> None:
    """Each check, shown failing on a planted case."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    pkg = tmp_path / "raftkv"
    (pkg / "core").mkdir(parents=True)
    (pkg / "sim").mkdir()
    planted = pkg / "sim" / "x.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "from raftkv.core._hidden import thing\n"
        "from raftkv.core.types import _secret, Public\n"
        "if TYPE_CHECKING:\n    from raftkv.sim.y import Y\n"
    )
    found = private_crossings({"raftkv.sim.x": planted})
    assert [f.split(": ", 1)[1] for f in found] == [
        "imports the private module raftkv.core._hidden",
        "imports the private name raftkv.core.types._secret",
    ]
    assert imports(planted, "raftkv.sim.x")[-1][0] == "raftkv.core.types"  # TYPE_CHECKING skipped
