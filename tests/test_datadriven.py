"""Tests of the data-driven script runner itself (tests/datadriven.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datadriven import (
    Command,
    DataDrivenError,
    ScriptSyntaxError,
    parse_command_line,
    rewrite_from_env,
    run_script,
    scripts,
)

SCRIPT = """\
# A tiny calculator.
add 1 2
----
3

echo a b=c list=(x,y) empty=() name="two words"
----
echo args=(a) kwargs=b:c,empty:,list:x|y,name:two words

lines
first
second
----
----
first

second
----
----

nothing
----

sum
1
2
3
----
6
"""


def calculator(cmd: Command) -> str:
    if cmd.name == "add":
        return str(sum(int(a) for a in cmd.args)) + "\n"
    if cmd.name == "sum":
        return str(sum(int(line) for line in cmd.input))
    if cmd.name == "echo":
        kwargs = ",".join(
            f"{k}:{'|'.join(v) if isinstance(v, tuple) else v}"
            for k, v in sorted(cmd.kwargs.items())
        )
        return f"echo args=({','.join(cmd.args)}) kwargs={kwargs}"
    if cmd.name == "lines":
        return "\n\n".join(cmd.input)
    if cmd.name == "nothing":
        return ""
    raise AssertionError(f"{cmd.pos}: unknown command {cmd.name}")


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "calc.txt"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


def test_passing_script(script: Path) -> None:
    seen: list[tuple[str, int]] = []

    def handler(cmd: Command) -> str:
        seen.append((cmd.name, cmd.line_no))
        return calculator(cmd)

    run_script(script, handler, rewrite=False)
    assert seen == [("add", 2), ("echo", 6), ("lines", 10), ("nothing", 21), ("sum", 24)]
    assert script.read_text(encoding="utf-8") == SCRIPT


def test_mismatch_names_file_line_and_diffs(script: Path) -> None:
    script.write_text(SCRIPT.replace("----\n3\n", "----\n4\n"), encoding="utf-8")
    with pytest.raises(AssertionError) as info:
        run_script(script, calculator, rewrite=False)
    message = str(info.value)
    assert f"{script}:2:" in message
    assert "-4" in message
    assert "+3" in message
    # The file is left alone.
    assert "----\n4\n" in script.read_text(encoding="utf-8")


def test_mismatch_in_multiline_output(script: Path) -> None:
    script.write_text(SCRIPT.replace("first\n\nsecond\n----", "first\nsecond\n----"), "utf-8")
    with pytest.raises(AssertionError, match=r"calc\.txt:10:"):
        run_script(script, calculator, rewrite=False)


def test_rewrite_replaces_outputs_and_keeps_the_rest(script: Path) -> None:
    broken = (
        SCRIPT.replace("----\n3\n", "----\nwrong\nmore wrong\n")
        .replace("----\n6\n", "----\n")
        .replace("----\n----\nfirst\n\nsecond\n----\n----\n", "----\nstale\n")
    )
    script.write_text(broken, encoding="utf-8")
    run_script(script, calculator, rewrite=True)
    assert script.read_text(encoding="utf-8") == SCRIPT
    # And the rewritten file now passes.
    run_script(script, calculator, rewrite=False)


def test_rewrite_from_multiline_to_single_keeps_blocks_apart(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("a\n----\n----\nx\n\ny\n----\n----\nb\n----\nold\n", encoding="utf-8")
    run_script(path, lambda cmd: cmd.name.upper(), rewrite=True)
    assert path.read_text(encoding="utf-8") == "a\n----\nA\n\nb\n----\nB\n"


def test_rewrite_from_env(monkeypatch: pytest.MonkeyPatch, script: Path) -> None:
    monkeypatch.setenv("RAFTKV_REWRITE", "1")
    assert rewrite_from_env()
    script.write_text(SCRIPT.replace("----\n3\n", "----\n4\n"), encoding="utf-8")
    run_script(script, calculator)  # rewrite=None: decided by the environment
    assert script.read_text(encoding="utf-8") == SCRIPT
    monkeypatch.setenv("RAFTKV_REWRITE", "0")
    assert not rewrite_from_env()


def test_handler_exception_gets_position_note(script: Path) -> None:
    def handler(cmd: Command) -> str:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom") as info:
        run_script(script, handler, rewrite=False)
    assert any(f"{script}:2" in note for note in info.value.__notes__)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cmd a b\n", "missing '----'"),
        ("cmd\n----\n----\nnever closed\n", "unterminated"),
        ("cmd x=(a,b\n----\n", "unterminated"),
        ("cmd x=a)\n----\n", "unbalanced"),
        ("cmd x=1 x=2\n----\n", "given twice"),
    ],
)
def test_syntax_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScriptSyntaxError, match=message):
        run_script(path, lambda cmd: "", rewrite=False)


def test_parse_command_line() -> None:
    cmd = parse_command_line(
        'deliver-msgs 1 2 drop=(2, 3) type=MsgApp note="a (b)" # trailing comment',
        path="x.txt",
        line_no=7,
    )
    assert cmd.name == "deliver-msgs"
    assert cmd.args == ("1", "2")
    assert cmd.kwargs == {"drop": ("2", "3"), "type": "MsgApp", "note": "a (b)"}
    assert cmd.pos == "x.txt:7"
    assert cmd.get("type") == "MsgApp"
    assert cmd.get_list("drop") == ("2", "3")
    assert cmd.get_list("type") == ("MsgApp",)
    assert cmd.get_int("missing", 5) == 5
    with pytest.raises(DataDrivenError, match=r"x\.txt:7: deliver-msgs: missing argument k="):
        cmd.get("k")
    with pytest.raises(DataDrivenError, match="not an integer"):
        cmd.get_int("type")


def test_scripts_lists_txt_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.txt", "a.txt", "sub/c.txt", "ignored.py"):
        (tmp_path / name).write_text("", encoding="utf-8")
    assert [p.relative_to(tmp_path).as_posix() for p in scripts(tmp_path)] == [
        "a.txt",
        "b.txt",
        "sub/c.txt",
    ]


def test_rewrite_fixture_is_a_bool(rewrite: bool) -> None:
    # tests/conftest.py provides it from --rewrite or RAFTKV_REWRITE.
    assert isinstance(rewrite, bool)
