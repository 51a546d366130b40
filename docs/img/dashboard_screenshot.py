"""Regenerate docs/img/dashboard.png: a real 3-node cluster's dashboard, in headless Chromium.

Run by ``make screenshots`` (needs chromium). Starts three ``raftkv serve``
processes on free loopback ports with a temporary data dir, writes a few keys,
takes the screenshot from a follower's API, and stops the cluster.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.cluster.harness import http, proc_cluster  # noqa: E402


def main() -> None:
    out = REPO / "docs" / "img" / "dashboard.png"
    with tempfile.TemporaryDirectory() as tmp, proc_cluster(Path(tmp)) as c:
        leader = c.wait_leader()
        for i in range(20):
            http("PUT", c.url(leader) + f"/v1/kv/k{i}", {"value": i})
        follower = next(n for n in c.members if n != leader)
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1000,330",
                "--virtual-time-budget=4000",
                f"--screenshot={out}",
                c.url(follower) + "/",
            ],
            check=True,
            capture_output=True,
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
