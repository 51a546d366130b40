"""The local-cluster launcher's process handling, with stand-in processes
(tests/cluster/test_launch.py starts real nodes)."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.core.types import NodeId
from raftkv.launch import (
    PACKAGE_ROOT,
    LocalCluster,
    NodeExited,
    NotReady,
    ServeOptions,
    child_env,
    free_ports,
    loopback_members,
    spawn,
    stop_processes,
)
from raftkv.replica.membership import Member

PY = sys.executable


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6 and all(0 < p < 65536 for p in ports)
    members = loopback_members(3)
    assert list(members) == ["n1", "n2", "n3"]
    addrs = [a for m in members.values() for a in (m.raft, m.api)]
    assert len(set(addrs)) == 6 and {h for h, _ in addrs} == {"127.0.0.1"}


def test_child_env_puts_the_tree_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = child_env("/tree", RAFTKV_TRACE="t")
    assert env["PYTHONPATH"] == os.pathsep.join(["/tree", "/elsewhere"])
    assert env["RAFTKV_TRACE"] == "t"
    monkeypatch.delenv("PYTHONPATH")
    assert child_env()["PYTHONPATH"] == str(PACKAGE_ROOT)


def test_spawn_appends_output_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "n1.log"
    log.write_text("before\n")
    p = spawn([PY, "-c", "print('hello')"], log_path=log, env=child_env())
    assert p.wait(timeout=30) == 0
    assert log.read_text() == "before\nhello\n"


def test_stop_processes_terms_then_kills() -> None:
    """A process that exits on SIGTERM gets it; one that ignores it is killed
    after the grace period; one already gone is only reaped."""
    stubborn_code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ignoring', flush=True); time.sleep(60)"
    )
    polite = spawn([PY, "-c", "import time; time.sleep(60)"])
    stubborn = spawn([PY, "-c", stubborn_code], stdout=subprocess.PIPE)
    gone = spawn([PY, "-c", "raise SystemExit(3)"])
    gone.wait(timeout=30)
    assert stubborn.stdout is not None
    assert stubborn.stdout.readline() == b"ignoring\n"  # SIGTERM is ignored from here on
    codes = stop_processes([polite, stubborn, gone], grace=0.5)
    stubborn.stdout.close()
    assert codes == [-signal.SIGTERM, -signal.SIGKILL, 3]
    assert stop_processes([polite, stubborn, gone], grace=0.5) == codes  # again: a no-op


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v1/health/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_api() -> Iterator[tuple[str, int]]:
    """An HTTP server that answers /v1/health/ready with 200."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def _cluster(tmp_path: Path, apis: list[tuple[str, int]]) -> LocalCluster:
    members = {NodeId(f"n{i}"): Member(("127.0.0.1", 1), api) for i, api in enumerate(apis, 1)}
    return LocalCluster(members, tmp_path, ServeOptions(fsync=False))


def test_wait_ready_returns_once_every_node_answers(
    tmp_path: Path, ready_api: tuple[str, int]
) -> None:
    c = _cluster(tmp_path, [ready_api])
    c.procs[NodeId("n1")] = spawn([PY, "-c", "import time; time.sleep(60)"])
    clock = _Clock()
    try:
        c.wait_ready(timeout=5, clock=clock, pause=clock.pause)
    finally:
        c.stop(grace=5)
    assert clock.pauses == [] and c.procs == {}


def test_wait_ready_names_the_nodes_not_ready(tmp_path: Path, ready_api: tuple[str, int]) -> None:
    silent = ("127.0.0.1", free_ports(1)[0])  # nobody listens there
    c = _cluster(tmp_path, [ready_api, silent])
    for n in c.members:
        c.procs[n] = spawn([PY, "-c", "import time; time.sleep(60)"])
    clock = _Clock()
    try:
        with pytest.raises(NotReady) as err:
            c.wait_ready(timeout=1, clock=clock, pause=clock.pause)
    finally:
        c.stop(grace=5)
    assert err.value.node_ids == ["n2"] and str(err.value) == "not ready within 1 s: n2"
    assert clock.now >= 1.0


def test_wait_ready_fails_at_once_when_a_node_exits(tmp_path: Path) -> None:
    c = _cluster(tmp_path, [("127.0.0.1", free_ports(1)[0])])
    c.procs[NodeId("n1")] = p = spawn([PY, "-c", "raise SystemExit(70)"])
    p.wait(timeout=30)
    with pytest.raises(NodeExited) as err:
        c.wait_ready(timeout=60)
    assert (err.value.node_id, err.value.returncode) == ("n1", 70)
    assert str(err.value) == "n1 exited with status 70"


def test_the_cluster_runs_each_member_from_its_source_tree(tmp_path: Path) -> None:
    """Each node runs ``python -m raftkv.cli serve ...`` from ``src`` (here a
    stand-in package that prints its argv), with its log and environment; the
    real thing is tests/cluster/test_launch.py."""
    main = tmp_path / "src" / "raftkv" / "cli" / "__main__.py"
    main.parent.mkdir(parents=True)
    (main.parent.parent / "__init__.py").write_text("")
    (main.parent / "__init__.py").write_text("")
    main.write_text("import os, sys; print(os.environ['MARK'], *sys.argv[1:4])\n")
    c = LocalCluster(
        loopback_members(2),
        tmp_path / "data",
        ServeOptions(log_level="WARNING"),
        log_dir=tmp_path / "logs",
        src=tmp_path / "src",
        cwd=tmp_path / "src",
        env={"MARK": "marked"},
    )
    argv = c.argv(NodeId("n2"), "existing")
    assert argv[argv.index("--data-dir") + 1] == os.path.join(tmp_path / "data", "n2")
    assert argv[argv.index("--initial-cluster-state") + 1] == "existing"
    c.start()
    assert {n: p.wait(timeout=30) for n, p in c.procs.items()} == {"n1": 0, "n2": 0}
    assert (tmp_path / "logs" / "n1.log").read_text() == "marked serve --id n1\n"
    assert c.stop() == {"n1": 0, "n2": 0} and c.procs == {}
    assert c.urls() == [m.api_url() for m in c.members.values()]


def test_kill_and_terminate_reap_and_forget_the_node(tmp_path: Path) -> None:
    c = _cluster(tmp_path, [("127.0.0.1", 1), ("127.0.0.1", 2)])
    c.procs[NodeId("n1")] = spawn([PY, "-c", "import time; time.sleep(60)"])
    c.procs[NodeId("n2")] = spawn([PY, "-c", "import time; time.sleep(60)"])
    assert c.running(NodeId("n1"))
    c.kill(NodeId("n1"))
    assert c.terminate(NodeId("n2")) == -signal.SIGTERM
    assert c.procs == {} and not c.running(NodeId("n1"))
    with pytest.raises(KeyError):
        c.kill(NodeId("n1"))
