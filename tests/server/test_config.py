"""``--initial-cluster`` parsing and ServerConfig validation: good inputs, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raftkv.cli import main
from raftkv.core.types import NodeId
from raftkv.server.config import (
    Member,
    ServerConfig,
    format_initial_cluster,
    parse_host_port,
    parse_initial_cluster,
)
from raftkv.server.errors import ConfigError

SPEC = "n1=127.0.0.1:7001/127.0.0.1:8001,n2=127.0.0.1:7002/127.0.0.1:8002"


def test_parses_members_in_order_with_both_addresses() -> None:
    members = parse_initial_cluster(SPEC)
    assert list(members) == ["n1", "n2"]
    assert members[NodeId("n1")] == Member(("127.0.0.1", 7001), ("127.0.0.1", 8001))
    assert members[NodeId("n2")].api_url() == "http://127.0.0.1:8002"


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        " n1 = 127.0.0.1:7001/127.0.0.1:8001 , n2=127.0.0.1:7002/127.0.0.1:8002 ,",
        "n1=raft-0.raft.default.svc:7001/raft-0.raft.default.svc:8001",
        "node-a.1_x=[::1]:7001/[::1]:8001",
        "n1=localhost:0/localhost:65535",
    ],
)
def test_good_specs_round_trip(spec: str) -> None:
    members = parse_initial_cluster(spec)
    assert parse_initial_cluster(format_initial_cluster(members)) == members


def test_ipv6_addresses() -> None:
    m = parse_initial_cluster("n1=[::1]:7001/[fe80::1]:8001")[NodeId("n1")]
    assert m.raft == ("::1", 7001)
    assert m.api_url() == "http://[fe80::1]:8001"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "--initial-cluster is empty"),
        (" , ,", "--initial-cluster is empty"),
        ("n1", "expected ID=RAFTHOST:PORT/APIHOST:PORT, got 'n1'"),
        ("=127.0.0.1:7001/127.0.0.1:8001", "expected ID=RAFTHOST:PORT/APIHOST:PORT"),
        ("n1=127.0.0.1:7001", "n1 needs RAFTHOST:PORT/APIHOST:PORT, got '127.0.0.1:7001'"),
        ("n1=127.0.0.1/127.0.0.1:8001", "n1 raft address: expected HOST:PORT, got '127.0.0.1'"),
        ("n1=127.0.0.1:7001/127.0.0.1:http", "n1 api address: port 'http' is not a number"),
        ("n1=127.0.0.1:7001/127.0.0.1:70000", "n1 api address: port 70000 out of range"),
        ("n1=:7001/127.0.0.1:8001", "n1 raft address: missing host"),
        ("n1=[::1:7001/127.0.0.1:8001", "n1 raft address: expected [HOST]:PORT"),
        ("n1=a:1/a:2,n1=b:1/b:2", "duplicate id 'n1'"),
        ("n1=a:1/a:2,n2=a:1/b:2", "address a:1 is used twice"),
        ("n1=a:1/a:1", "address a:1 is used twice"),
        ("n 1=a:1/a:2", "bad id 'n 1'"),
        ("n/1=a:1/a:2", "bad id"),
        ("-n1=a:1/a:2", "bad id '-n1'"),
        ("x" * 64 + "=a:1/a:2", "1-63 characters"),
        ("n1=evil.com@a:1/a:2", "bad host"),
    ],
)
def test_bad_specs_name_the_offending_part(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_initial_cluster(spec)
    assert message in info.value.message
    assert "\n" not in info.value.message


def test_parse_host_port_what() -> None:
    assert parse_host_port(" example.com:80 ") == ("example.com", 80)
    with pytest.raises(ConfigError, match="--api-addr: expected HOST:PORT"):
        parse_host_port("8001", what="--api-addr")


def _config(**kw: object) -> ServerConfig:
    base: dict[str, object] = {
        "node_id": NodeId("n1"),
        "data_dir": "/tmp/x",
        "raft_addr": ("127.0.0.1", 7001),
        "api_addr": ("127.0.0.1", 8001),
        "initial_cluster": parse_initial_cluster(SPEC),
    }
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


def test_validate_accepts_new_and_existing() -> None:
    _config().validate()
    _config(initial_cluster_state="existing").validate()
    assert _config().initial_cluster_state == "new"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"node_id": NodeId("n9")}, "--id n9 is not in --initial-cluster (n1, n2)"),
        ({"node_id": NodeId("")}, "--id '': must be 1-63 characters"),
        ({"initial_cluster_state": "fresh"}, "--initial-cluster-state must be new or existing"),
        ({"election_timeout_ms": 150}, "at least twice --heartbeat-interval-ms"),
        ({"heartbeat_interval_ms": 0}, "--heartbeat-interval-ms must be positive"),
        ({"log_format": "xml"}, "--log-format must be text or json"),
    ],
)
def test_validate_rejects(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(**kw).validate()
    assert message in info.value.message


def test_serve_prints_one_line_errors(tmp_path: object) -> None:
    runner = CliRunner()
    args = ["serve", "--id", "n1", "--data-dir", str(tmp_path), "--raft-addr", "127.0.0.1:1"]
    args += ["--api-addr", "127.0.0.1:2"]
    result = runner.invoke(main, [*args, "--initial-cluster", "n1=127.0.0.1:7001"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --initial-cluster: n1 needs RAFTHOST:PORT/APIHOST:PORT, got '127.0.0.1:7001'"
    )
    result = runner.invoke(main, [*args, "--initial-cluster", SPEC, "--initial-cluster-state", "x"])
    assert result.exit_code == 2 and "'x' is not one of 'new', 'existing'" in result.output
    result = runner.invoke(
        main, [*args, "--initial-cluster", SPEC], env={"RAFTKV_INITIAL_CLUSTER_STATE": "bogus"}
    )
    assert result.exit_code == 2 and "'bogus' is not one of" in result.output


def test_from_flags_builds_what_serve_runs_and_names_the_flag_that_is_wrong(
    tmp_path: Path,
) -> None:
    """raftkv serve's flags -> ServerConfig in one place: parsed, defaults of
    the dataclass for what is not given, every field flag passed through."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 32)
    secret.chmod(0o600)
    flags: dict[str, Any] = {
        "node_id": "n1",
        "data_dir": str(tmp_path / "n1"),
        "raft_addr": "127.0.0.1:7001",
        "api_addr": "127.0.0.1:8001",
        "initial_cluster": "n1=127.0.0.1:7001/127.0.0.1:8001,n2=127.0.0.1:7002/127.0.0.1:8002",
    }
    config = ServerConfig.from_flags(
        **flags,
        grpc_addr="127.0.0.1:2379",
        no_fsync=True,
        cluster_secret_file=str(secret),
        no_leader_hints=True,
        log_level="debug",
        snapshot_entries=123,
        quota_bytes=4096,
    )
    assert config.node_id == "n1" and config.raft_addr == ("127.0.0.1", 7001)
    assert config.grpc_addr == ("127.0.0.1", 2379)
    assert sorted(config.initial_cluster) == ["n1", "n2"]
    assert config.initial_cluster_state == "new"
    assert (config.fsync, config.leader_hints, config.log_level) == (False, False, "DEBUG")
    assert config.cluster_secret == b"s" * 32
    assert (config.snapshot_entries, config.quota_bytes) == (123, 4096)
    defaults = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    assert config.max_watchers == defaults["max_watchers"]  # not given: the default
    for change, message in [
        ({"node_id": None}, "missing --id"),
        ({"initial_cluster": None}, "missing --initial-cluster"),
        ({"raft_addr": "nowhere"}, "--raft-addr"),
        ({"cluster_secret": "x" * 32, "cluster_secret_file": str(secret)}, "not both"),
        ({"peers_from_statefulset": True}, "not both"),
        ({"election_timeout_ms": 100}, "--election-timeout-ms"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ServerConfig.from_flags(**{**flags, **change})
