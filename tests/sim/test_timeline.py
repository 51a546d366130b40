"""The HTML timeline of a simulation: its model, and the page in a real browser."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from raftkv.sim.faults import parse_faults
from raftkv.sim.mutants import MUTANTS
from raftkv.sim.runner import SimConfig, SimResult, run_simulation
from raftkv.viz.timeline import MAX_MESSAGES, timeline_model, timeline_page

ARTIFACTS = Path(__file__).resolve().parents[2] / "results" / "screenshots"


def traced(config: SimConfig) -> tuple[SimResult, list[str]]:
    sink = io.StringIO()
    result = run_simulation(config, trace_sink=sink)
    return result, sink.getvalue().splitlines()


def test_known_seed_has_the_expected_elections() -> None:
    result, lines = traced(SimConfig(seed=7, nodes=3, duration=5, faults=frozenset()))
    model = timeline_model(lines)
    # The first leader of seed 7, as this simulator has always elected it.
    assert model["elections"][0][1:] == ["n1", 1]
    # Every election the simulator counted is on the timeline, and only those.
    assert {term: node for _, node, term in model["elections"]} == result.leaders_per_term
    assert model["nodes"] == ["n1", "n2", "n3"]


def test_faults_become_bands_and_crashes_down_intervals() -> None:
    result, lines = traced(
        SimConfig(seed=3, nodes=5, duration=8, faults=parse_faults("partition,crash,loss"))
    )
    model = timeline_model(lines)
    kinds = {b["kind"] for b in model["bands"]}
    assert {"partition", "loss"} <= kinds
    crashed = result.cluster.get("crashes", 0)
    assert crashed > 0
    assert sum(len(d) for d in model["down"].values()) == crashed
    for intervals in model["down"].values():
        assert all(a <= b for a, b in intervals)
    # Log lengths come from the Readys: every node's log grows.
    assert all(model["logs"][n] for n in model["nodes"])


def test_long_run_stays_small() -> None:
    _, lines = traced(SimConfig(seed=2, nodes=5, duration=60, faults=parse_faults("all")))
    model = timeline_model(lines)
    assert len(model["messages"]) <= MAX_MESSAGES
    assert model["messages_total"] > MAX_MESSAGES  # so the sample really is a sample
    page = timeline_page(lines)
    assert len(page) < 2_000_000, len(page)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # no network


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on this machine (make test installs Debian's when run as root)")


def _render(page: Path, screenshot: Path) -> tuple[str, str]:
    """Load ``page`` headless; return the DOM after scripts ran, and the console log."""
    browser = _chromium()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,600"]
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    subprocess.run(
        [*common, f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom.stdout, dom.stderr


def test_timeline_of_a_failing_seed_in_headless_chromium(tmp_path: Path) -> None:
    config = SimConfig(
        seed=1, nodes=5, duration=10, faults=parse_faults("all"), raft_class=MUTANTS["votes-twice"]
    )
    result, lines = traced(config)
    assert result.violation is not None
    page = tmp_path / "seed-1.html"
    page.write_text(timeline_page(lines, title="seed 1, votes-twice"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dom, console = _render(page, ARTIFACTS / "timeline-violation.png")
    assert "Uncaught" not in console and "CONSOLE" not in console, console
    assert len(re.findall(r'<g class="lane"', dom)) == 5
    assert 'class="violation"' in dom
    assert "VIOLATION election-safety" in dom
    # The page opens on the violation: every node's log at that instant is listed.
    assert len(re.findall(r'class="logline"', dom)) == 5
    assert len(re.findall(r'class="election"', dom)) >= 2
