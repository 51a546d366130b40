"""Real `raftkv serve` processes at their limits: a full disk, a connection flood, the fd limit.

Crash-stop: a node whose WAL cannot write exits (code 70) within a second and
says why, for a supervisor to restart it. A flood of HTTP connections beyond
--max-connections is refused, and the node keeps committing and applying with
the descriptors it reserved. A --max-connections that the open file limit
cannot hold is refused at start.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from raftkv.core.types import NodeId
from tests.cluster.harness import REPO_ROOT, ProcCluster, http

pytestmark = pytest.mark.cluster

EXIT_NODE_FAILED = 70


@dataclass
class LimitedCluster(ProcCluster):
    """A :class:`ProcCluster` whose nodes run under ``RLIMIT_NOFILE = nofile``."""

    nofile: int = 1024

    def start_node(self, node_id: NodeId, state: str = "new") -> None:
        nofile = self.nofile

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        with open(self.data_dir / f"{node_id}.log", "ab") as log:
            self.procs[node_id] = subprocess.Popen(
                self.command(node_id, state),
                env=env,
                stdout=log,
                stderr=log,
                cwd=REPO_ROOT,
                preexec_fn=limit,
            )


@contextlib.contextmanager
def running(c: ProcCluster) -> Iterator[ProcCluster]:
    c.start()
    try:
        yield c
    finally:
        for node_id in list(c.procs):
            p = c.procs[node_id]
            if p.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.terminate(node_id)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _fill(directory: Path) -> None:
    """Write into ``directory`` until its file system is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        chunk = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, chunk)
    finally:
        os.close(fd)


def test_a_full_disk_makes_the_node_exit_within_a_second(tmp_path: Path) -> None:
    """The data dir on a small tmpfs, filled up: once the WAL's preallocated
    space is used, the next WAL write fails with ENOSPC, and the process logs
    why and exits 70 at once (it used to stay up, answering as leader from
    frozen state). Writes into the preallocated space still succeed: those
    blocks are the WAL's already."""
    c = ProcCluster(tmp_path, n=1)
    [node] = list(c.members)
    with tmpfs(tmp_path / node, "16m"), running(c):
        c.wait_leader()
        assert http("PUT", c.url(node) + "/v1/kv/a", 1)[0] == 200
        _fill(tmp_path / node)
        value = "x" * 100_000
        for i in range(60):  # 6 MB: past the 4 MiB preallocated
            start = time.monotonic()
            code, _ = http("PUT", c.url(node) + f"/v1/kv/b{i}", value, timeout=5)
            if code != 200:
                break
        assert code in (0, 503, 504), code
        proc = c.procs[node]
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        elapsed = time.monotonic() - start
        assert proc.returncode == EXIT_NODE_FAILED, (proc.returncode, c.logs())
        assert elapsed < 1.5, elapsed  # the write's round trip, then at most a second
        log = (tmp_path / f"{node}.log").read_text()
        assert "node failed (drive loop)" in log and "No space left on device" in log, log
        assert http("GET", c.url(node) + "/v1/status", timeout=1)[0] == 0  # nothing answers


def _knock(addr: tuple[str, int]) -> tuple[socket.socket, bytes]:
    """Connect, send one request, and read the start of the answer (b"" if reset)."""
    s = socket.create_connection(addr, timeout=5)
    answer = b""
    with contextlib.suppress(OSError):
        s.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = s.recv(13)
    return s, answer


def test_a_connection_flood_leaves_the_node_committing_and_applying(tmp_path: Path) -> None:
    """1,500 keep-alive connections to the leader's API, which runs under a
    1,024 open file limit and snapshots every 50 entries: the connections
    within the cap are served and held open, every one beyond is answered 503
    (or reset), and the leader keeps committing, snapshotting and applying the
    writes its followers forward. (Without the cap, the descriptors ran out and
    the next snapshot or WAL segment could not be opened.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 2048:  # this process opens the flood
        if hard != resource.RLIM_INFINITY and hard < 2048:
            pytest.skip(f"the test needs 2,048 open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    c = LimitedCluster(tmp_path, n=3, snapshot_entries=50, nofile=1024)
    cap = 1024 - 582  # the limit, less what fdlimit.reserved_fds keeps for 3 members
    flood: list[socket.socket] = []
    with running(c):
        leader = c.wait_leader()
        follower = next(n for n in c.members if n != leader)
        answers: dict[bytes, int] = {}
        try:
            for _ in range(1500):
                s, answer = _knock(c.members[leader].api)
                flood.append(s)
                answers[answer] = answers.get(answer, 0) + 1
            assert answers.get(b"HTTP/1.1 200 ") == cap, answers
            assert answers.get(b"HTTP/1.1 503 ", 0) + answers.get(b"", 0) == 1500 - cap, answers
            applied = []
            for i in range(200):  # four snapshots' worth, forwarded by a follower
                code, body = http("PUT", f"{c.url(follower)}/v1/kv/k{i}", i)
                assert code == 200, (i, code, body, c.logs())
                if i % 50 == 0:
                    status = c.status(follower)
                    assert status is not None and status["leader"] == leader
                    applied.append(status["applied_index"])
            assert applied == sorted(applied) and applied[-1] > applied[0], applied
            assert c.procs[leader].poll() is None, c.logs()
            s, answer = _knock(c.members[leader].api)
            s.close()
            assert answer in (b"HTTP/1.1 503 ", b""), answer  # still full
        finally:
            for s in flood:
                s.close()
        # Once the flood is gone, the leader serves its own clients again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            code, body = http("GET", f"{c.url(leader)}/v1/kv/k199", timeout=2)
            if code == 200:
                break
            time.sleep(0.1)
        assert (code, body["value"]) == (200, 199), (code, body)
        refused = sum(
            c.metric(leader, "raftkv_http_connection_events_total", event=event)
            for event in ("refused", "refused_unanswered")
        )
        assert refused >= 1500 - cap, refused
        assert c.metric(leader, "raftkv_snapshots_total") >= 3


def test_max_connections_beyond_the_fd_limit_is_refused_at_start(tmp_path: Path) -> None:
    c = LimitedCluster(tmp_path, n=1, extra_args=["--max-connections", "5000"], nofile=1024)
    [node] = list(c.members)
    with running(c):
        code = c.procs[node].wait(timeout=30)
    log = (tmp_path / f"{node}.log").read_text()
    assert code == 1, log
    assert "--max-connections 5000 does not fit: the open file limit is 1024" in log, log
