"""`raftkv serve` configuration for containers: env vars and StatefulSet-derived peers."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from raftkv.cli import main, serve
from raftkv.core.types import NodeId
from raftkv.server.config import Member, parse_pod_ordinal, statefulset_initial_cluster
from raftkv.server.errors import ConfigError

K8S_HOST = "{pod}.raftkv-peers.default.svc.cluster.local"


def test_every_serve_flag_has_a_raftkv_env_var() -> None:
    options = [p for p in serve.params if isinstance(p, click.Option)]
    assert len(options) >= 17
    for option in options:
        long = max(option.opts, key=len)
        assert option.envvar == "RAFTKV_" + long.lstrip("-").upper().replace("-", "_"), long


@pytest.mark.parametrize(
    ("pod", "name", "ordinal"),
    [("raftkv-0", "raftkv", 0), ("raftkv-12", "raftkv", 12), ("my-kv-store-3", "my-kv-store", 3)],
)
def test_parse_pod_ordinal(pod: str, name: str, ordinal: int) -> None:
    assert parse_pod_ordinal(pod) == (name, ordinal)


@pytest.mark.parametrize("pod", ["raftkv", "raftkv-", "raftkv-01", "n1", "-3", "Raftkv-1"])
def test_parse_pod_ordinal_rejects_non_statefulset_names(pod: str) -> None:
    with pytest.raises(ConfigError, match="NAME-ORDINAL"):
        parse_pod_ordinal(pod)


def test_founding_pods_all_derive_the_same_new_cluster() -> None:
    results = [
        statefulset_initial_cluster(
            f"raftkv-{i}", peer_host=K8S_HOST, initial_cluster_size=3, raft_port=7001, api_port=8001
        )
        for i in range(3)
    ]
    for members, state in results:
        assert state == "new"
        assert members == results[0][0]
    host = "raftkv-1.raftkv-peers.default.svc.cluster.local"
    assert list(results[0][0]) == ["raftkv-0", "raftkv-1", "raftkv-2"]
    assert results[0][0][NodeId("raftkv-1")] == Member((host, 7001), (host, 8001))


def test_pods_beyond_the_founding_size_join() -> None:
    members, state = statefulset_initial_cluster(
        "raftkv-4", peer_host=K8S_HOST, initial_cluster_size=3, raft_port=7001, api_port=8001
    )
    assert state == "existing"
    assert list(members) == [f"raftkv-{i}" for i in range(5)]


def test_ordinal_template() -> None:
    members, _ = statefulset_initial_cluster(
        "kv-2", peer_host="10.0.{ordinal}.1", initial_cluster_size=3, raft_port=1, api_port=2
    )
    assert [m.raft for m in members.values()] == [("10.0.0.1", 1), ("10.0.1.1", 1), ("10.0.2.1", 1)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"peer_host": "raftkv-peers"}, "must contain"),
        ({"initial_cluster_size": 0}, "at least 1"),
    ],
)
def test_statefulset_config_errors(kwargs: dict, message: str) -> None:
    args = {"peer_host": K8S_HOST, "initial_cluster_size": 3, "raft_port": 1, "api_port": 2}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        statefulset_initial_cluster("raftkv-0", **args)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RAFTKV_ID": "n1"}, "missing --initial-cluster"),
        ({"RAFTKV_INITIAL_CLUSTER": "n1=h:1/h:2"}, "missing --id"),
        (
            {
                "RAFTKV_ID": "raftkv-0",
                "RAFTKV_PEERS_FROM_STATEFULSET": "1",
                "RAFTKV_INITIAL_CLUSTER": "x",
            },
            "not both",
        ),
        ({"RAFTKV_ID": "n1", "RAFTKV_PEERS_FROM_STATEFULSET": "true"}, "NAME-ORDINAL"),
    ],
)
def test_serve_reports_configuration_mistakes_in_one_line(
    tmp_path, env: dict[str, str], message: str
) -> None:
    env = {
        "RAFTKV_DATA_DIR": str(tmp_path),
        "RAFTKV_RAFT_ADDR": "127.0.0.1:0",
        "RAFTKV_API_ADDR": "127.0.0.1:0",
        **env,
    }
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
