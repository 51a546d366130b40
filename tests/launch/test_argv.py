"""serve_argv: what it writes is what ``raftkv serve``'s own click parser reads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import click
import pytest

from raftkv.cli.node import serve
from raftkv.core.types import NodeId
from raftkv.launch import ServeOptions, raftkv_argv, serve_argv
from raftkv.replica.membership import Member
from raftkv.server.config import parse_initial_cluster

MEMBERS = {
    NodeId("n1"): Member(("127.0.0.1", 7001), ("127.0.0.1", 8001)),
    NodeId("n2"): Member(("::1", 7002), ("::1", 8002)),
}


@pytest.fixture(autouse=True)
def _no_serve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve reads $RAFTKV_<FLAG>: none of ours may stand in for a missing flag."""
    for name in list(os.environ):
        if name.startswith("RAFTKV_"):
            monkeypatch.delenv(name)


def parse(argv: list[str]) -> dict[str, Any]:
    """The parameters ``raftkv serve`` gets from ``argv`` (its own parser, no run)."""
    assert argv[:4] == [argv[0], "-m", "raftkv.cli", "serve"]
    ctx = serve.make_context("serve", argv[4:], resilient_parsing=False)
    return dict(ctx.params)


def defaults() -> dict[str, Any]:
    return parse(
        serve_argv("n1", data_dir="d", raft_addr=("h", 1), api_addr=("h", 2), initial_cluster={})
    )


def test_identity_and_addresses_round_trip(tmp_path: Path) -> None:
    argv = serve_argv(
        NodeId("n2"),
        data_dir=tmp_path / "n2",
        raft_addr=("0.0.0.0", 7002),  # listens on another address than it advertises
        api_addr=("::1", 8002),
        grpc_addr=("::1", 2379),
        initial_cluster=MEMBERS,
        initial_cluster_state="existing",
        python="/opt/py",
    )
    params = parse(argv)
    assert argv[0] == "/opt/py"
    assert params["node_id"] == "n2" and params["data_dir"] == str(tmp_path / "n2")
    assert params["raft_addr"] == "0.0.0.0:7002"
    assert params["api_addr"] == "[::1]:8002" and params["grpc_addr"] == "[::1]:2379"
    assert parse_initial_cluster(params["initial_cluster"]) == MEMBERS
    assert params["initial_cluster_state"] == "existing"


def test_no_options_leaves_every_default_of_serve() -> None:
    got = defaults()
    want = {p.name: p.get_default(click.Context(serve)) for p in serve.params}
    changed = {k for k in got if got[k] != want[k]}
    assert changed == {"node_id", "data_dir", "raft_addr", "api_addr", "initial_cluster"}


@pytest.mark.parametrize(
    ("option", "value", "param", "parsed"),
    [
        ("heartbeat_interval_ms", 20, "heartbeat_interval_ms", 20),
        ("election_timeout_ms", 300, "election_timeout_ms", 300),
        ("fsync", False, "no_fsync", True),
        ("snapshot_entries", 50, "snapshot_entries", 50),
        ("log_format", "json", "log_format", "json"),
        ("log_level", "WARNING", "log_level", "WARNING"),
        ("watch_progress_interval_s", 0.5, "watch_progress_interval_s", 0.5),
        ("extra_args", ("--max-watchers", "3"), "max_watchers", 3),
    ],
)
def test_each_option_reaches_its_serve_flag(
    option: str, value: object, param: str, parsed: object
) -> None:
    """Every ServeOptions field moves exactly its own flag off serve's default
    (a flag renamed in ``serve`` fails here, not in a cluster test)."""
    options = ServeOptions(**{option: value})  # type: ignore[arg-type]
    argv = serve_argv(
        "n1",
        data_dir="d",
        raft_addr=("h", 1),
        api_addr=("h", 2),
        initial_cluster={},
        options=options,
    )
    got, base = parse(argv), defaults()
    assert got[param] == parsed
    assert {k for k in got if got[k] != base[k]} == {param}


def test_the_options_cover_every_field() -> None:
    """A ServeOptions field added without a flag in serve_argv is caught here."""
    tested = {
        "heartbeat_interval_ms",
        "election_timeout_ms",
        "fsync",
        "snapshot_entries",
        "log_format",
        "log_level",
        "watch_progress_interval_s",
        "extra_args",
    }
    assert {f.name for f in dataclasses.fields(ServeOptions)} == tested


def test_extra_args_come_last_and_override() -> None:
    options = ServeOptions(heartbeat_interval_ms=20, extra_args=("--heartbeat-interval-ms", "40"))
    argv = serve_argv(
        "n1",
        data_dir="d",
        raft_addr=("h", 1),
        api_addr=("h", 2),
        initial_cluster={},
        options=options,
    )
    assert argv[-2:] == ["--heartbeat-interval-ms", "40"]
    assert parse(argv)["heartbeat_interval_ms"] == 40


def test_raftkv_argv_runs_the_package_module() -> None:
    assert raftkv_argv("get", "x", python="/opt/py") == ["/opt/py", "-m", "raftkv.cli", "get", "x"]
