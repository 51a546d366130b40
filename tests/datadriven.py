"""A small data-driven test runner for ``.txt`` scripts.

After cockroachdb/datadriven as etcd-io/raft uses it (PyPI's ``datadriven`` is
unrelated). A script is a sequence of blocks::

    # Comments and blank lines between blocks are kept as they are.
    add-nodes 3 voters=(1,2,3) index=2
    optional input line
    another input line
    ----
    expected output
    more expected output

Rules:

* A block starts with a command line: a name, then positional arguments and
  ``key=value`` arguments. ``key=(a,b,c)`` gives a tuple (``key=()`` an empty
  one); a value may be double-quoted to hold spaces or parentheses. A ``#``
  token starts a trailing comment.
* The lines between the command line and ``----`` are the command's *input*.
* The expected output runs from ``----`` to the first blank line (or the end of
  the file).
* Output that contains a blank line (or a ``----`` line) is written between a
  double separator, and may then contain blank lines::

      command
      ----
      ----
      line one

      line three
      ----
      ----

* Output is compared after removing trailing newlines from the handler's
  result; trailing spaces on lines are significant.

With ``rewrite`` on (``RAFTKV_REWRITE=1`` or ``pytest --rewrite``) every expected
output is replaced by the actual one and the file is written back; otherwise the
first mismatch fails with a diff naming ``file:line`` (later blocks usually
depend on earlier state, so they are not run).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Command",
    "DataDrivenError",
    "ScriptSyntaxError",
    "rewrite_from_env",
    "run_script",
    "scripts",
]

SEPARATOR = "----"
REWRITE_ENV = "RAFTKV_REWRITE"

ArgValue = str | tuple[str, ...]


class DataDrivenError(Exception):
    """Base class for errors raised by this runner."""


class ScriptSyntaxError(DataDrivenError):
    """The script itself is malformed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One block of a script, as handed to the handler.

    Attributes:
        name: the first word of the command line.
        args: positional arguments, in order.
        kwargs: ``key=value`` arguments; a parenthesised list is a tuple.
        input: the lines between the command line and ``----``.
        path: the script's path.
        line_no: 1-based line number of the command line.
    """

    name: str
    args: tuple[str, ...] = ()
    kwargs: dict[str, ArgValue] = field(default_factory=dict)
    input: tuple[str, ...] = ()
    path: str = "<script>"
    line_no: int = 0

    @property
    def pos(self) -> str:
        """``file:line`` of the command, for error messages."""
        return f"{self.path}:{self.line_no}"

    @property
    def input_text(self) -> str:
        return "\n".join(self.input)

    def has(self, key: str) -> bool:
        return key in self.kwargs

    def get(self, key: str, default: str | None = None) -> str:
        """A scalar ``key=value`` argument; raises if absent and no default."""
        value = self.kwargs.get(key, default)
        if value is None:
            raise DataDrivenError(f"{self.pos}: {self.name}: missing argument {key}=")
        if isinstance(value, tuple):
            raise DataDrivenError(f"{self.pos}: {self.name}: {key}= must be a single value")
        return value

    def get_int(self, key: str, default: int | None = None) -> int:
        if key not in self.kwargs:
            if default is None:
                raise DataDrivenError(f"{self.pos}: {self.name}: missing argument {key}=")
            return default
        raw = self.get(key)
        try:
            return int(raw)
        except ValueError:
            raise DataDrivenError(f"{self.pos}: {key}={raw!r} is not an integer") from None

    def get_list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list argument; a scalar ``key=x`` counts as ``(x)``."""
        value = self.kwargs.get(key, default)
        return value if isinstance(value, tuple) else (value,)


# ----------------------------------------------------------------- parsing


def _tokenize(line: str, where: str) -> list[str]:
    """Split a command line on spaces outside parentheses and double quotes."""
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    started = False
    for ch in line:
        if quoted:
            current.append(ch)
            if ch == '"':
                quoted = False
            continue
        if ch == '"':
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ScriptSyntaxError(f"{where}: unbalanced ')' in {line!r}")
        elif ch.isspace() and depth == 0:
            if started:
                tokens.append("".join(current))
                current, started = [], False
            continue
        elif ch == "#" and depth == 0 and not started:
            break  # trailing comment
        current.append(ch)
        started = True
    if quoted or depth:
        raise ScriptSyntaxError(f"{where}: unterminated quote or '(' in {line!r}")
    if started:
        tokens.append("".join(current))
    return tokens


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _parse_value(raw: str, where: str) -> ArgValue:
    if raw.startswith("(") and raw.endswith(")"):
        inner = raw[1:-1].strip()
        if not inner:
            return ()
        return tuple(_unquote(part.strip()) for part in inner.split(","))
    if "(" in raw or ")" in raw:
        if raw.startswith('"'):
            return _unquote(raw)
        raise ScriptSyntaxError(f"{where}: malformed value {raw!r}")
    return _unquote(raw)


def parse_command_line(
    line: str, *, path: str = "<script>", line_no: int = 0, input: tuple[str, ...] = ()
) -> Command:
    """Parse ``name arg key=value key=(a,b)`` into a :class:`Command`."""
    where = f"{path}:{line_no}"
    tokens = _tokenize(line, where)
    if not tokens:
        raise ScriptSyntaxError(f"{where}: empty command line")
    name, *rest = tokens
    args: list[str] = []
    kwargs: dict[str, ArgValue] = {}
    for token in rest:
        key, eq, raw = token.partition("=")
        if not eq or token.startswith('"'):
            args.append(_unquote(token))
            continue
        if not key:
            raise ScriptSyntaxError(f"{where}: argument {token!r} has no key")
        if key in kwargs:
            raise ScriptSyntaxError(f"{where}: argument {key}= given twice")
        kwargs[key] = _parse_value(raw, where)
    return Command(
        name=name, args=tuple(args), kwargs=kwargs, input=input, path=path, line_no=line_no
    )


# ----------------------------------------------------------------- running


def _render_output(lines: list[str]) -> list[str]:
    """The lines that follow a command's input, for a given actual output."""
    if any(line == "" or line == SEPARATOR for line in lines):
        return [SEPARATOR, SEPARATOR, *lines, SEPARATOR, SEPARATOR]
    return [SEPARATOR, *lines]


def _output_lines(output: str) -> list[str]:
    output = output.rstrip("\n")
    return output.split("\n") if output else []


def _diff(expected: list[str], actual: list[str]) -> str:
    return "\n".join(difflib.unified_diff(expected, actual, "expected", "actual", lineterm="", n=3))


def rewrite_from_env() -> bool:
    """True if ``RAFTKV_REWRITE`` is set to a true-ish value."""
    return os.environ.get(REWRITE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def run_script(
    path: str | os.PathLike[str],
    handler: Callable[[Command], str],
    rewrite: bool | None = None,
) -> None:
    """Run every block of the script at ``path`` through ``handler``.

    Args:
        path: the ``.txt`` script.
        handler: called once per block, in file order; returns the block's output.
        rewrite: replace expected outputs with actual ones and write the file
            back. ``None`` means "decide from ``RAFTKV_REWRITE``".

    Raises:
        AssertionError: an output differs (not in rewrite mode); the message
            names ``file:line`` and shows a diff.
        ScriptSyntaxError: the script is malformed.
    """
    if rewrite is None:
        rewrite = rewrite_from_env()
    script = Path(path)
    display = str(path)
    text = script.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline
    n = len(lines)
    out: list[str] = []
    i = 0
    while i < n:
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            out.append(line)
            i += 1
            continue

        line_no = i + 1
        start = i
        i += 1
        while i < n and lines[i] != SEPARATOR:
            i += 1
        if i >= n:
            raise ScriptSyntaxError(f"{display}:{line_no}: missing {SEPARATOR!r} after command")
        command_lines = lines[start:i]
        out.extend(command_lines)
        i += 1  # the separator

        expected: list[str] = []
        if i < n and lines[i] == SEPARATOR:  # double-separator block
            i += 1
            while True:
                if i >= n:
                    raise ScriptSyntaxError(
                        f"{display}:{line_no}: unterminated {SEPARATOR}/{SEPARATOR} output"
                    )
                if lines[i] == SEPARATOR and i + 1 < n and lines[i + 1] == SEPARATOR:
                    i += 2
                    break
                expected.append(lines[i])
                i += 1
        else:
            while i < n and lines[i] != "":
                expected.append(lines[i])
                i += 1

        command = parse_command_line(
            command_lines[0], path=display, line_no=line_no, input=tuple(command_lines[1:])
        )
        try:
            result = handler(command)
        except Exception as exc:
            exc.add_note(f"while running {command.pos}: {command_lines[0]}")
            raise
        if not isinstance(result, str):
            raise TypeError(
                f"{command.pos}: handler returned {type(result).__name__}, expected str"
            )
        actual = _output_lines(result)

        if rewrite:
            out.extend(_render_output(actual))
            if i < n and lines[i] != "":
                out.append("")  # keep blocks separated after a double-separator block
        elif actual != expected:
            raise AssertionError(
                f"{command.pos}: output of {command_lines[0]!r} differs "
                f"(-expected +actual; rerun with --rewrite or {REWRITE_ENV}=1 to accept):\n"
                + _diff(expected, actual)
            )

    if rewrite:
        new_text = "\n".join(out) + "\n" if out else ""
        if new_text != text:
            script.write_text(new_text, encoding="utf-8")


def scripts(directory: str | os.PathLike[str]) -> list[Path]:
    """All ``*.txt`` scripts under ``directory``, sorted, for ``pytest.mark.parametrize``."""
    return sorted(Path(directory).rglob("*.txt"))
