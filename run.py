"""Start a local 3-node raftkv cluster: ``python run.py`` (= ``raftkv cluster --nodes 3``).

Works from a checkout without installing: the repository root is put on
``sys.path``. Extra arguments are passed on, e.g. ``python run.py --no-fsync``.
Ctrl-C stops every node cleanly.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raftkv.cli import main

if __name__ == "__main__":
    main(["cluster", "--nodes", "3", *sys.argv[1:]], prog_name="run.py")
