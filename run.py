"""Start a local 3-node raftkv cluster: ``python run.py`` (= ``raftkv cluster --nodes 3``).

Works from a checkout without installing: the repository root is put on
``sys.path``. Extra arguments are passed on, e.g. ``python run.py --no-fsync``.
Ctrl-C stops every node cleanly.

Rule: typed with any ``python``. If the checkout's ``.venv`` exists (``make
setup`` or ``make run`` made it) and this is not its interpreter, run.py
re-executes itself there; if the dependencies are still missing, it says in one
line what to run instead of printing tracebacks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
REEXEC_ENV = "RAFTKV_RUN_REEXEC"  # set on the re-executed process: never loop


def _in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()


def _reexec_in_venv() -> None:
    if VENV_PYTHON.exists() and not _in_venv() and not os.environ.get(REEXEC_ENV):
        env = {**os.environ, REEXEC_ENV: "1"}
        os.execve(
            str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]], env
        )


if __name__ == "__main__":
    _reexec_in_venv()
    sys.path.insert(0, str(ROOT))
    try:
        from raftkv.cli import main
    except ModuleNotFoundError as exc:
        sys.stderr.write(
            f"run.py: raftkv's dependencies are not installed ({exc.name} is missing): "
            "run `make run` (it sets up .venv and starts the cluster)\n"
        )
        sys.exit(1)
    main(["cluster", "--nodes", "3", *sys.argv[1:]], prog_name="run.py")
