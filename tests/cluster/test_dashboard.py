"""The live dashboard (``GET /`` on any node) of a real 3-node cluster, in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from raftkv.core.types import NodeId
from tests.cluster.harness import REPO_ROOT, ProcCluster, http, proc_cluster

pytestmark = pytest.mark.cluster

ARTIFACTS = REPO_ROOT / "results" / "screenshots"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on this machine (make test installs Debian's when run as root)")


def _load(url: str, screenshot: Path | None = None) -> tuple[str, str]:
    """The dashboard's DOM after it polled the cluster for a while, and the console log."""
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,500"]
    dom = subprocess.run(
        [
            *base,
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=4000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    if screenshot is not None:
        subprocess.run(
            [*base, "--virtual-time-budget=4000", f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=60,
            check=True,
        )
    return dom.stdout, dom.stderr


def _rows(dom: str) -> dict[str, str]:
    """node id -> the row's class (its role, or ``down``)."""
    return dict(
        (node, cls)
        for cls, node in re.findall(r'<tr class="member ([\w-]+)" data-node="(\w+)"', dom)
    )


def test_dashboard_shows_the_cluster_and_follows_a_new_leader(tmp_path: Path) -> None:
    with proc_cluster(tmp_path) as c:
        leader = c.wait_leader()
        serving = next(n for n in c.members if n != leader)
        code, cluster = http("GET", c.url(serving) + "/v1/cluster", timeout=5.0)
        assert code == 200 and isinstance(cluster, dict)
        assert sorted(m["id"] for m in cluster["members"]) == sorted(c.members)
        assert all(m["status"] is not None for m in cluster["members"])
        assert all(isinstance(m["status"]["requests_served"], int) for m in cluster["members"])

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        dom, console = _load(c.url(serving) + "/", ARTIFACTS / "dashboard.png")
        assert "Uncaught" not in console and "CONSOLE" not in console, console
        rows = _rows(dom)
        assert sorted(rows) == sorted(c.members), dom[:2000]
        assert rows[leader] == "leader"
        assert f'data-leader="{leader}"' in dom
        status = c.status(serving)
        assert status is not None and status["leader"] == leader

        c.kill(leader)
        new_leader = _wait_new_leader(c, leader)
        deadline = time.monotonic() + 10
        while True:
            dom, console = _load(c.url(serving) + "/")
            rows = _rows(dom)
            if f'data-leader="{new_leader}"' in dom and rows.get(leader) == "down":
                break
            assert time.monotonic() < deadline, dom[:2000]
        assert "Uncaught" not in console, console
        assert rows[new_leader] == "leader"
        assert "recent leadership changes" in dom
        assert "requests/s" in dom and "commits/s" in dom


def _wait_new_leader(c: ProcCluster, old: NodeId) -> NodeId:
    survivors = [n for n in c.members if n != old]
    return c.wait_leader(among=survivors)


def test_dashboard_page_needs_no_token_but_its_data_does(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("ro s3cr3t-read-only-token reader\n")
    with proc_cluster(tmp_path, extra_args=["--client-token-file", str(tokens)]) as c:
        url = c.url(next(iter(c.members)))
        deadline = time.monotonic() + 15
        while True:
            code, page = http("GET", url + "/", timeout=2.0)
            if code == 200:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert isinstance(page, str) and "raftkv cluster" in page
        code, _ = http("GET", url + "/v1/cluster", timeout=2.0)
        assert code == 401
        auth = {"Authorization": "Bearer s3cr3t-read-only-token"}
        code, cluster = http("GET", url + "/v1/cluster", headers=auth, timeout=5.0)
        assert code == 200 and len(cluster["members"]) == 3
