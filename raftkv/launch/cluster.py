"""Local clusters of ``raftkv serve`` processes: ports, start, stop, readiness.

Rule: every process is started by :func:`spawn` as a child of this process and
signalled by its pid only; :func:`stop_processes` (SIGTERM, then SIGKILL after
a grace period shared by all) reaps each of them, and may be called more than
once. Readiness is ``GET /v1/health/ready`` answering 200, over the standard
library only (no raftkv client, no aiohttp).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.core.types import NodeId
from raftkv.launch.argv import InitialClusterState, ServeOptions, serve_argv
from raftkv.launch.errors import NodeExited, NotReady
from raftkv.limits import HostPort
from raftkv.replica.membership import Member

__all__ = [
    "PACKAGE_ROOT",
    "LocalCluster",
    "child_env",
    "free_ports",
    "loopback_members",
    "spawn",
    "stop_processes",
]

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The directory that holds this raftkv package (first on a child's PYTHONPATH)."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports the OS reports free on ``host``.

    All are held open until every one is picked, so they differ; another
    process may still take one before a node binds it.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def loopback_members(count: int, host: str = "127.0.0.1") -> dict[NodeId, Member]:
    """Members ``n1`` .. ``nCOUNT`` on free ports of ``host``."""
    ports = free_ports(2 * count, host)
    return {
        NodeId(f"n{i + 1}"): Member((host, ports[2 * i]), (host, ports[2 * i + 1]))
        for i in range(count)
    }


def child_env(src: Path | str = PACKAGE_ROOT, **extra: str) -> dict[str, str]:
    """This process's environment, with ``src`` first on PYTHONPATH (so the
    child runs that tree's raftkv) and ``extra`` variables set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def spawn(
    argv: list[str],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    new_session: bool = False,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``argv``, its output appended to ``log_path`` (None: inherited).

    Args:
        env: the whole environment (default: :func:`child_env`).
        new_session: its own session, so a terminal's Ctrl-C reaches only us.
        popen: more :class:`subprocess.Popen` arguments (``stdin``, ``preexec_fn``).
    """
    env = dict(env) if env is not None else child_env()
    if log_path is None:
        return subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=new_session, **popen)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=log,
            start_new_session=new_session,
            **popen,
        )


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], grace: float = 10.0) -> list[int]:
    """SIGTERM every process still running, wait up to ``grace`` seconds for
    all of them together, SIGKILL the rest; their exit statuses, in order."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def _ready(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url + "/v1/health/ready", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except OSError:
        return False


@dataclass(eq=False)
class LocalCluster:
    """``raftkv serve`` processes on this machine, one per member (module rule).

    With a ``log_dir``, node ``n`` appends its output to ``LOG_DIR/n.log``.
    """

    members: dict[NodeId, Member]
    """Every founding member's addresses, in start order."""
    data_root: str | os.PathLike[str]
    """Node ``n``'s data dir is ``DATA_ROOT/n``."""
    options: ServeOptions = field(default_factory=ServeOptions)
    grpc: dict[NodeId, HostPort] = field(default_factory=dict)
    """The nodes that serve the etcd v3 gRPC API, and where."""
    log_dir: Path | None = None
    """None: the nodes' output goes to ours."""
    src: Path = PACKAGE_ROOT
    """The directory holding the raftkv package the nodes run."""
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Variables set for the nodes on top of ours."""
    new_session: bool = False
    """Start each node in a session of its own (a terminal's Ctrl-C reaches only us)."""
    python: str = sys.executable
    procs: dict[NodeId, subprocess.Popen[bytes]] = field(default_factory=dict)
    """The started nodes' processes (a killed or terminated node leaves it)."""

    def argv(self, node_id: NodeId, state: InitialClusterState | None = None) -> list[str]:
        """Node ``node_id``'s command line; ``state`` is its --initial-cluster-state."""
        m = self.members[node_id]
        return serve_argv(
            node_id,
            data_dir=os.path.join(self.data_root, node_id),
            raft_addr=m.raft,
            api_addr=m.api,
            grpc_addr=self.grpc.get(node_id),
            initial_cluster=self.members,
            initial_cluster_state=state,
            options=self.options,
            python=self.python,
        )

    def log_path(self, node_id: NodeId) -> Path | None:
        return self.log_dir / f"{node_id}.log" if self.log_dir is not None else None

    def start(self) -> None:
        """Start every member."""
        for node_id in self.members:
            self.start_node(node_id)

    def start_node(self, node_id: NodeId, state: InitialClusterState | None = None) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs[node_id] = spawn(
            self.argv(node_id, state),
            log_path=self.log_path(node_id),
            env=child_env(self.src, **self.env),
            cwd=self.cwd,
            new_session=self.new_session,
        )

    def running(self, node_id: NodeId) -> bool:
        p = self.procs.get(node_id)
        return p is not None and p.poll() is None

    def kill(self, node_id: NodeId) -> None:
        """SIGKILL (no hand-over, no flush) and reap."""
        p = self.procs.pop(node_id)
        p.kill()
        p.wait()

    def terminate(self, node_id: NodeId, timeout: float = 10.0) -> int:
        """SIGTERM (a graceful stop) and reap; SIGKILL after ``timeout`` seconds.

        Raises:
            subprocess.TimeoutExpired: it did not stop in time (it is killed).
        """
        p = self.procs.pop(node_id)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise

    def stop(self, grace: float = 10.0) -> dict[NodeId, int]:
        """Stop every node (:func:`stop_processes`); their exit statuses."""
        nodes = list(self.procs)
        codes = stop_processes((self.procs[n] for n in nodes), grace)
        self.procs.clear()
        return dict(zip(nodes, codes, strict=True))

    def url(self, node_id: NodeId) -> str:
        return self.members[node_id].api_url()

    def urls(self) -> list[str]:
        return [self.url(n) for n in self.members]

    def wait_ready(
        self,
        timeout: float = 30.0,
        nodes: Iterable[NodeId] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        """Wait until each of ``nodes`` (default: the running ones) is ready.

        Raises:
            NodeExited: one of them exited first.
            NotReady: some were not ready within ``timeout`` seconds.
        """
        waiting = list(self.procs if nodes is None else nodes)
        deadline = clock() + timeout
        while True:
            for node_id in waiting:
                code = self.procs[node_id].poll()
                if code is not None:
                    raise NodeExited(node_id, code)
            waiting = [n for n in waiting if not _ready(self.url(n), timeout=1.0)]
            if not waiting:
                return
            if clock() >= deadline:
                raise NotReady(waiting, timeout)
            pause(0.05)
