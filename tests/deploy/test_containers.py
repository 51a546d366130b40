"""The containers' exact command lines and environments, run as local processes.

deploy/rolling_restart.py builds each node's argv and environment from the
Dockerfile (ENTRYPOINT, CMD, ENV) and the compose file or the rendered
StatefulSet (args, env with fieldRef and $(VAR) expansion); only the pod IPs
(loopback addresses), the peer DNS names and the volumes are local stand-ins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def addrs(spec: rr.StatefulSetSpec, ordinal: int) -> tuple[str, ...]:
    """``--raft-addr``/``--api-addr`` of pod ``raftkv-<ordinal>`` (a DNS name; here an IP)."""
    ip = spec.ip(ordinal)
    return ("--raft-addr", f"{ip}:{spec.raft_port}", "--api-addr", f"{ip}:{spec.api_port}")


def members(pods: list[rr.Node]) -> dict[str, Any]:
    listed = cli(pods, "members", "list")
    assert listed.returncode == 0, listed.stderr
    return dict(json.loads(listed.stdout))


def wait_not_ready(pod: rr.Node, text: str, timeout: float = 30.0) -> str:
    """Wait until ``pod`` answers its readiness probe 503 with ``text`` in the reason."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        assert pod.proc is not None and pod.proc.poll() is None, pod.log()[-3000:]
        last = rr.http("GET", pod.url + "/v1/health/ready", timeout=2.0)
        if last[0] == 503 and text in str(last[1]):
            assert rr.http("GET", pod.url + "/v1/health/live")[0] == 200  # not restarted
            return str(last[1]["error"])
        time.sleep(0.1)
    raise AssertionError(f"{pod.name} never said {text!r}: {last}\n{pod.log()[-3000:]}")


def promote(pods: list[rr.Node], node_id: str) -> None:
    """``raftkv members promote``, retried while the learner catches up (409)."""
    deadline = time.monotonic() + 20
    while (promoted := cli(pods, "members", "promote", node_id)).returncode != 0:
        assert time.monotonic() < deadline, promoted.stderr
        time.sleep(0.2)


def test_statefulset_pods_derive_their_peers_and_scale_through_membership(
    tmp_path: Path,
) -> None:
    """docs/deploy.md "Scale up" and "Scale down", then a later scale-up of the
    same ordinal: its old member id was removed for good, so the pod adopts the
    new id registered at its address."""
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
        for i in range(3):  # founding pods run as their pod names
            assert (spec.volume(i) / "node_id").read_text() == f"raftkv-{i}\n"

        # Scale up: the pod first (`kubectl scale`), `members add` after -- the
        # pod waits, live but not ready, until a member is registered at its address.
        new = spec.pod(3)
        with rr.running([new]):
            wait_not_ready(new, f"no member is registered at {spec.ip(3)}:{spec.raft_port} yet")
            added = cli(pods, "members", "add", "raftkv-3", "--learner", *addrs(spec, 3))
            assert added.returncode == 0, added.stderr
            rr.wait_ready([new])
            st = new.status()
            assert st is not None and st["id"] == "raftkv-3", st
            assert (spec.volume(3) / "node_id").read_text() == "raftkv-3\n"
            promote(pods, "raftkv-3")
            got = cli([new], "get", "x", "--stale")
            assert got.stdout.strip() == "1", got.stderr
            assert sorted(members(pods)["voters"]) == [f"raftkv-{i}" for i in range(4)]

            # Scale down: remove the highest ordinal first, then stop its pod.
            removed = cli(pods, "members", "remove", "raftkv-3")
            assert removed.returncode == 0, removed.stderr
            code, _ = new.terminate()
            assert code == 0
        shutil.rmtree(spec.volume(3))  # whenScaled: Delete
        listed = members(pods)
        assert sorted(listed["voters"]) == ["raftkv-0", "raftkv-1", "raftkv-2"]
        assert listed["removed"] == ["raftkv-3"]
        assert cli(pods, "put", "x", "2").returncode == 0

        # Scale up again, the same ordinal: the old id is refused, a new one joins.
        refused = cli(pods, "members", "add", "raftkv-3", "--learner", *addrs(spec, 3))
        assert refused.returncode == 1, refused.stdout
        assert "raftkv-3 was removed" in refused.stderr and "(HTTP 409)" in refused.stderr
        added = cli(pods, "members", "add", "raftkv-3-2", "--learner", *addrs(spec, 3))
        assert added.returncode == 0, added.stderr
        again = spec.pod(3)
        with rr.running([again]):
            rr.wait_ready([again])
            st = again.status()
            assert st is not None and st["id"] == "raftkv-3-2", st
            assert "adopted member id raftkv-3-2" in again.log()
            promote(pods, "raftkv-3-2")
            got = cli([again], "get", "x", "--stale")
            assert got.stdout.strip() == "2", got.stderr
            listed = members(pods)
            assert sorted(listed["voters"]) == ["raftkv-0", "raftkv-1", "raftkv-2", "raftkv-3-2"]
            assert listed["removed"] == ["raftkv-3"]


def test_statefulset_pod_that_lost_its_volume_rejoins_under_a_new_id(tmp_path: Path) -> None:
    """docs/deploy.md "Replace a failed node (lost volume)", with the pod back
    before the operator acts: it does not run as its old member, waits, and
    adopts the new id once the old one is removed and the new one added."""
    spec = rr.StatefulSetSpec.load(tmp_path)
    pods = [spec.pod(i) for i in range(3)]
    with rr.running(pods):
        rr.wait_ready(pods)
        assert cli(pods, "put", "x", "1").returncode == 0
        # After install: a pod that starts with an empty volume joins.
        spec.set_env["RAFTKV_INITIAL_CLUSTER_STATE"] = "existing"
        pods[1].kill()
        shutil.rmtree(spec.volume(1))  # the volume is lost
        others = [pods[0], pods[2]]
        assert cli(others, "put", "x", "2").returncode == 0  # two of three: a quorum
        pods[1] = back = spec.pod(1)  # the StatefulSet recreates the pod, empty
        back.start()
        reason = wait_not_ready(back, "raftkv-1 founded the cluster on this pod, so it had data")
        assert "remove that member and add one under a new id" in reason, reason
        st = pods[0].status()
        assert st is not None and "raftkv-1" in st["voters"]  # it did not rejoin as raftkv-1

        removed = cli(others, "members", "remove", "raftkv-1")
        assert removed.returncode == 0, removed.stderr
        added = cli(others, "members", "add", "raftkv-1-2", *addrs(spec, 1))
        assert added.returncode == 0, added.stderr
        rr.wait_ready([back])
        st = back.status()
        assert st is not None and st["id"] == "raftkv-1-2", st
        got = cli([back], "get", "x", "--stale")
        assert got.stdout.strip() == "2", got.stderr
        # A restart keeps the adopted id: the volume records it.
        code, _ = back.terminate()
        assert code == 0
        back.start()
        rr.wait_ready([back])
        st = back.status()
        assert st is not None and st["id"] == "raftkv-1-2", st
        assert "belongs to member raftkv-1-2: running as raftkv-1-2" in back.log()
        listed = members(pods)
        assert sorted(listed["voters"]) == ["raftkv-0", "raftkv-1-2", "raftkv-2"]
        assert listed["removed"] == ["raftkv-1"]
        assert cli(pods, "put", "x", "3").returncode == 0


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
