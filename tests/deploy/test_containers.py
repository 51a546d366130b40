"""The containers' exact command lines and environments, run as local processes.

deploy/rolling_restart.py builds each node's argv and environment from the
Dockerfile (ENTRYPOINT, CMD, ENV) and the compose file or the rendered
StatefulSet (args, env with fieldRef and $(VAR) expansion); only the pod IPs
(loopback addresses), the peer DNS names and the volumes are local stand-ins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rolling_restart as rr

from tests.cluster.harness import REPO_ROOT

pytestmark = pytest.mark.cluster


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKV_")}
    full_env.update(env or {}, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, *argv],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def cli(nodes: list[rr.Node], *args: str) -> subprocess.CompletedProcess[str]:
    endpoints = ",".join(n.url for n in nodes)
    return run("-m", "raftkv.cli", *args, "--endpoints", endpoints)


def test_compose_services_form_a_cluster_that_send_py_and_the_cli_use(tmp_path: Path) -> None:
    nodes = rr.compose_nodes(tmp_path)
    assert [n.name for n in nodes] == ["n1", "n2", "n3"]
    assert nodes[0].argv[-1] == "serve" and nodes[0].env["RAFTKV_ID"] == "n1"
    with rr.running(nodes):
        rr.wait_ready(nodes)
        endpoints = ",".join(n.url for n in nodes)
        sent = run("send.py", '{"y": 7}', "--endpoints", endpoints)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith('committed {"y": 7}')
        got = cli(nodes, "get", "y")
        assert got.returncode == 0 and got.stdout.strip() == "7", got.stderr
        members = json.loads(cli(nodes, "members", "list").stdout)
        assert sorted(members["voters"]) == ["n1", "n2", "n3"]
        # The image's HEALTHCHECK command, with a node's environment.
        health = str(rr.ROOT / "deploy" / "healthcheck.py")
        for n in nodes:
            assert run(health, env=n.env).returncode == 0
            assert run(health, "--ready", env=n.env).returncode == 0


def test_statefulset_pods_derive_their_peers_and_scale_through_membership(
    tmp_path: Path,
) -> None:
    spec = rr.StatefulSetSpec.load(tmp_path)
    assert spec.replicas == spec.initial_cluster_size() == 3
    pods = [spec.pod(i) for i in range(3)]
    assert pods[1].env["RAFTKV_ID"] == "raftkv-1"
    assert "RAFTKV_INITIAL_CLUSTER" not in pods[1].env  # derived from the ordinal
    with rr.running(pods):
        rr.wait_ready(pods)
        assert cli(pods, "put", "x", "1").returncode == 0
        st = pods[0].status()
        assert st is not None and sorted(st["voters"]) == ["raftkv-0", "raftkv-1", "raftkv-2"]

        # Scale up (docs/deploy.md): add raftkv-3 as a learner, start it, promote it.
        new = spec.pod(3)
        added = cli(
            pods,
            *("members", "add", "raftkv-3", "--learner"),
            *(
                "--raft-addr",
                f"{new.ip}:{spec.raft_port}",
                "--api-addr",
                f"{new.ip}:{spec.api_port}",
            ),
        )
        assert added.returncode == 0, added.stderr
        with rr.running([new]):
            rr.wait_ready([new])
            deadline = time.monotonic() + 20
            while (promoted := cli(pods, "members", "promote", "raftkv-3")).returncode != 0:
                assert time.monotonic() < deadline, promoted.stderr
                time.sleep(0.2)
            got = cli([new], "get", "x", "--stale")
            assert got.stdout.strip() == "1", got.stderr
            voters = json.loads(cli(pods, "members", "list").stdout)["voters"]
            assert sorted(voters) == [f"raftkv-{i}" for i in range(4)]

            # Scale down: remove the highest ordinal first, then stop its pod.
            removed = cli(pods, "members", "remove", "raftkv-3")
            assert removed.returncode == 0, removed.stderr
            code, _ = new.terminate()
            assert code == 0
        voters = json.loads(cli(pods, "members", "list").stdout)["voters"]
        assert sorted(voters) == ["raftkv-0", "raftkv-1", "raftkv-2"]
        assert cli(pods, "put", "x", "2").returncode == 0


def _check(result: rr.Result) -> None:
    print(result.summary())
    assert result.lost == [], result.lost
    assert result.acknowledged > 50
    assert all(r.exit_code == 0 for r in result.restarts)
    leaders = [r for r in result.restarts if r.was_leader]
    assert leaders, "the leader was never restarted"
    assert all(r.handed_over for r in leaders), "a leader exited without handing over"
    # Few failures: every one a single attempt that a retry would fix.
    assert result.failed <= max(25, 0.05 * result.requests), result.summary()


def test_rolling_restart_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    _check(rr.rolling_restart(tmp_path, rounds=1, clients=2, settle=0.5))


@pytest.mark.slow
def test_rolling_restarts_under_heavier_load(tmp_path: Path) -> None:
    _check(rr.rolling_restart(tmp_path, rounds=3, clients=8, settle=1.0))
