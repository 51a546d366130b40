"""The ``raftkv sim`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from raftkv.cli import main, parse_seeds
from raftkv.sim.faults import parse_faults
from raftkv.sim.mutants import LeaderOverwritesLog
from raftkv.sim.runner import SimConfig, run_simulation


def test_parse_seeds() -> None:
    assert parse_seeds("7") == [7]
    assert parse_seeds("1-3,10,2") == [1, 2, 3, 10]
    for bad in ("", "3-1", "x", "1-y"):
        with pytest.raises(click.BadParameter):
            parse_seeds(bad)


def test_single_seed_is_reproducible(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["sim", "--seed", "3", "--nodes", "3", "--time", "4", "--faults", "all"]
    first = runner.invoke(main, args)
    second = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    assert "OK: no violations" in first.output


def test_trace_and_timing(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    page = tmp_path / "t.html"
    result = CliRunner().invoke(
        main,
        [
            "sim",
            "--seed",
            "1",
            "--time",
            "2",
            "--timing",
            "--trace",
            str(trace),
            "--html",
            str(page),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "deliveries/s" in result.output
    lines = trace.read_text().splitlines()
    assert lines and all(json.loads(line)["t"] >= 0 for line in lines)
    text = page.read_text()
    assert text.startswith("<!doctype html>") and '"nodes":["n1","n2","n3","n4","n5"]' in text


def test_sweep_reports_failures_with_a_replay_command() -> None:
    result = CliRunner().invoke(
        main,
        [
            "sim",
            "--seeds",
            "1-10",
            "--time",
            "10",
            "--jobs",
            "1",
            "--raft-class",
            "raftkv.sim.mutants:LeaderOverwritesLog",
        ],
    )
    assert result.exit_code == 1
    assert "replay: raftkv sim --seed " in result.output
    assert "--raft-class raftkv.sim.mutants:LeaderOverwritesLog" in result.output


def test_sweep_ok_in_parallel() -> None:
    result = CliRunner().invoke(main, ["sim", "--seeds", "1-4", "--time", "3", "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "swept 4 seeds" in result.output and "0 failed" in result.output


def test_bad_options() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["sim", "--faults", "meteor"]).exit_code == 2
    assert runner.invoke(main, ["sim", "--seed", "1", "--seeds", "1-2"]).exit_code == 2
    assert runner.invoke(main, ["sim", "--leases", "--txn"]).exit_code == 2
    assert "--faults" in runner.invoke(main, ["sim", "--help"]).output


@pytest.mark.parametrize("extra", [(), ("--watches", "--leases")])
def test_runs_do_not_depend_on_the_hash_seed(tmp_path: Path, extra: tuple[str, ...]) -> None:
    """str/bytes hashing is salted per process; nothing observable may depend on it."""
    outputs = []
    for hash_seed in ("1", "2"):
        trace = tmp_path / f"trace-{hash_seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "raftkv.cli",
                "sim",
                "--seed",
                "5",
                "--time",
                "4",
                "--trace",
                str(trace),
                *extra,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        outputs.append((proc.stdout, trace.read_text()))
    assert outputs[0] == outputs[1]


def test_mutant_option_is_caught_and_replayable() -> None:
    # The first seed that catches the mutant, found through the library...
    seed = next(
        s
        for s in range(1, 30)
        if run_simulation(
            SimConfig(
                seed=s, duration=10, faults=parse_faults("all"), raft_class=LeaderOverwritesLog
            )
        ).violation
        is not None
    )
    # ...is reported, with exit status 1 and a replay command, by the CLI.
    args = ["sim", "--seed", str(seed), "--time", "10", "--mutant", "leader-overwrites-log"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "VIOLATION" in result.output
    assert "--mutant leader-overwrites-log" in result.output


def test_membership_snapshots_reads_flags_reach_the_run_and_the_replay_command() -> None:
    args = ["sim", "--seed", "4", "--time", "6", "--membership", "--snapshots", "--reads"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    assert header.endswith("membership snapshots=20 reads retries=2"), header
    # A sweep failure's replay line carries the same options (a mutant forces one).
    args = [
        "sim",
        "--seeds",
        "1-3",
        "--jobs",
        "1",
        "--time",
        "6",
        "--mutant",
        "votes-twice",
        "--membership",
        "--snapshots",
        "7",
        "--reads",
        "--retries",
        "1",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    replay = next(line for line in result.output.splitlines() if "replay:" in line)
    assert "--membership --snapshots 7 --reads --retries 1" in replay, replay
