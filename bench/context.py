"""What every benchmark records next to its numbers: the commit and the CPU.

Shared by bench/kv_bench.py, bench/kv_restart.py and bench/sim_throughput.py, so a
result line says the same things the same way whichever benchmark wrote it.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """``HEAD``'s sha, with ``-dirty`` if tracked files changed; ``unknown`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def python_build() -> dict[str, str]:
    """Which CPython ran the benchmark, and how it was built.

    The same Python version runs this code at very different speeds depending
    on the build: Debian's package (and the Docker ``python`` images) link
    libpython into the executable and are built with profile-guided
    optimisation; pyenv's default build does neither and was 20-30 % slower on
    the simulator here. ``libpython`` says whether the interpreter loaded
    libpython as a shared library (the slower layout).
    """
    try:
        maps = Path("/proc/self/maps").read_text()
        libpython = "shared" if "libpython" in maps else "static"
    except OSError:
        libpython = "unknown"
    return {
        "version": platform.python_version(),
        "executable": str(Path(sys.executable).resolve()),
        "build": " ".join(platform.python_build()),
        "compiler": platform.python_compiler(),
        "libpython": libpython,
    }
