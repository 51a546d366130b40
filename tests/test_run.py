"""``python run.py`` typed with any interpreter: it moves into the checkout's
.venv when there is one, and otherwise says in one line what to run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checkout(tmp_path: Path) -> Path:
    """A copy of run.py in a directory with no .venv and no raftkv dependencies."""
    shutil.copy(ROOT / "run.py", tmp_path / "run.py")
    shutil.copytree(ROOT / "raftkv", tmp_path / "raftkv")
    return tmp_path / "run.py"


def _bare(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages, so click, aiohttp and msgpack are missing.
    return subprocess.run(
        [sys.executable, "-S", str(script), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_without_dependencies_it_says_what_to_run_in_one_line(tmp_path: Path) -> None:
    done = _bare(_checkout(tmp_path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "make run" in lines[0] and "is missing" in lines[0], done.stderr


def test_it_reexecutes_itself_in_the_checkouts_venv(tmp_path: Path) -> None:
    script = _checkout(tmp_path)
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "venv python: $* reexec=$RAFTKV_RUN_REEXEC"\n')
    fake.chmod(0o755)
    done = _bare(script, "--no-fsync")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"venv python: {script} --no-fsync reexec=1"
