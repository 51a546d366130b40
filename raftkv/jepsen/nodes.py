"""The ``raftkv serve`` processes of a fault test, and the admin calls the nemesis needs.

Rule: every process started here is a child of this process, signalled only by
its pid, and reaped by :meth:`Cluster.shutdown` (SIGCONT, SIGTERM, then SIGKILL
after a grace period), which is safe to call at any time and more than once.
Each node's output goes to ``logs/<id>.log``; the harness writes a marker line
there before every start, so the log reads as one story per node.

Nodes live on hosts (:mod:`raftkv.jepsen.net`, Rule 3): ``n1`` .. ``nN`` found
the cluster on ``h1`` .. ``hN``, and :meth:`Cluster.replace` puts a new member
id on a host whose node was removed -- ``n(N+1)``, ``n(N+2)``, ... in the
order of the replacements, so a seed's ids are the same in every run. A
removed id is never used again (the cluster refuses it: a wiped node may
have forgotten its votes). Addresses belong to hosts, so every id that ever
ran keeps resolving to its host's (:meth:`Cluster.url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from raftkv.core.types import NodeId
from raftkv.jepsen.net import HostId, Network
from raftkv.launch import (
    InitialClusterState,
    ServeOptions,
    serve_argv,
    spawn,
)
from raftkv.replica.membership import Member

__all__ = ["Cluster"]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the harness dies (Linux ``PR_SET_PDEATHSIG``)."""
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Cluster:
    """The nodes on the hosts of ``net``; data under ``data_root``, logs under ``log_root``."""

    def __init__(
        self,
        net: Network,
        hosts: list[HostId],
        *,
        data_root: Path,
        log_root: Path,
        heartbeat_ms: int,
        election_ms: int,
        fsync: bool = True,
        clock: Callable[[], float] = time.monotonic,
        watch_progress_s: float | None = None,
    ) -> None:
        self.net = net
        self.watch_progress_s = watch_progress_s
        """``--watch-progress-interval-s`` of the nodes (None: their default)."""
        self.hosts = hosts
        # Invariant: node_on and host_of agree for the current nodes; host_of
        # keeps every id that ever ran (the analysis reads all their logs).
        self.node_on: dict[HostId, NodeId] = {}
        self.host_of: dict[NodeId, HostId] = {}
        for i, host in enumerate(hosts, 1):
            self._place(NodeId(f"n{i}"), host)
        self.data_root = data_root
        self.log_root = log_root
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.fsync = fsync
        self.clock = clock
        self.procs: dict[NodeId, subprocess.Popen[bytes]] = {}
        self.paused: set[NodeId] = set()
        self.starts = 0
        self._http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ identities

    def _place(self, node_id: NodeId, host: HostId) -> None:
        self.node_on[host] = node_id
        self.host_of[node_id] = host
        self.net.place(node_id, host)

    @property
    def node_ids(self) -> list[NodeId]:
        """The current node of every host, in host order."""
        return [self.node_on[h] for h in self.hosts]

    @property
    def all_ids(self) -> list[NodeId]:
        """Every node id that ever ran, in the order they were created."""
        return list(self.host_of)

    def replace(self, host: HostId) -> NodeId:
        """Put a new id on ``host`` (its node was removed); returns the id.

        The caller stops and wipes the old node first; the new one starts empty.
        """
        old = self.node_on[host]
        if self.running(old):
            raise RuntimeError(f"replace {host}: {old} still runs")
        new = NodeId(f"n{len(self.host_of) + 1}")
        self._place(new, host)
        return new

    # ------------------------------------------------------------------ addresses

    def member(self, node_id: NodeId) -> Member:
        """Where ``node_id`` is reached: its host's addresses."""
        host = self.host_of[node_id]
        return Member(self.net.raft_advertised(host), self.net.api_addr(host))

    def members(self) -> dict[NodeId, Member]:
        """The current nodes' addresses."""
        return {n: self.member(n) for n in self.node_ids}

    def url(self, node_id: NodeId) -> str:
        return self.member(node_id).api_url()

    def data_dir(self, node_id: NodeId) -> Path:
        return self.data_root / node_id

    def log_path(self, node_id: NodeId) -> Path:
        return self.log_root / f"{node_id}.log"

    # ------------------------------------------------------------------ processes

    def command(self, node_id: NodeId, state: InitialClusterState) -> list[str]:
        host = self.host_of[node_id]
        argv = serve_argv(
            node_id,
            data_dir=self.data_dir(node_id),
            raft_addr=self.net.raft_listen(host),
            api_addr=self.net.api_addr(host),
            initial_cluster=self.members(),
            initial_cluster_state=state,
            options=ServeOptions(
                heartbeat_interval_ms=self.heartbeat_ms,
                election_timeout_ms=self.election_ms,
                # Keep every entry in the WAL: the checker replays the whole log.
                snapshot_entries=100_000_000,
                fsync=self.fsync,
                log_level="INFO",
                watch_progress_interval_s=self.watch_progress_s,
            ),
        )
        return self.net.wrap(host, argv)

    def note(self, node_id: NodeId, text: str) -> None:
        """Write a harness marker line into ``node_id``'s log."""
        with open(self.log_path(node_id), "a", encoding="utf-8") as f:
            f.write(f"=== jepsen t={self.clock():.3f}: {text}\n")

    def start(self, node_id: NodeId, state: InitialClusterState = "new") -> None:
        if self.running(node_id):
            return
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.log_root.mkdir(parents=True, exist_ok=True)
        self.note(node_id, f"start (initial-cluster-state={state})")
        self.procs[node_id] = spawn(
            self.command(node_id, state),
            log_path=self.log_path(node_id),
            new_session=True,  # a Ctrl-C on the terminal reaches only the harness
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.paused.discard(node_id)
        self.starts += 1

    def running(self, node_id: NodeId) -> bool:
        p = self.procs.get(node_id)
        return p is not None and p.poll() is None

    def live(self) -> list[NodeId]:
        """Nodes whose process runs and is not paused."""
        return [n for n in self.node_ids if self.running(n) and n not in self.paused]

    def kill(self, node_id: NodeId) -> None:
        """``kill -9``."""
        p = self.procs.pop(node_id, None)
        self.paused.discard(node_id)
        if p is None:
            return
        self.note(node_id, "kill -9")
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGKILL)
        p.wait()

    def pause(self, node_id: NodeId) -> None:
        p = self.procs.get(node_id)
        if p is None or p.poll() is not None or node_id in self.paused:
            return
        self.note(node_id, "SIGSTOP")
        p.send_signal(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: NodeId) -> None:
        p = self.procs.get(node_id)
        if node_id not in self.paused:
            return
        self.paused.discard(node_id)
        if p is not None and p.poll() is None:
            self.note(node_id, "SIGCONT")
            p.send_signal(signal.SIGCONT)

    async def terminate(self, node_id: NodeId, grace: float = 15.0) -> int | None:
        """SIGTERM (a graceful stop with leader hand-off); SIGKILL after ``grace`` seconds."""
        self.resume(node_id)
        p = self.procs.pop(node_id, None)
        if p is None:
            return None
        self.note(node_id, "SIGTERM")
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while p.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if p.poll() is None:
            self.note(node_id, f"still running {grace:.0f}s after SIGTERM: kill -9")
            p.kill()
        return p.wait()

    def wipe(self, node_id: NodeId) -> None:
        shutil.rmtree(self.data_dir(node_id), ignore_errors=True)

    async def shutdown(self, grace: float = 15.0) -> dict[NodeId, int | None]:
        """Stop every node gracefully (in parallel); return their exit statuses."""
        for node_id in list(self.paused):
            self.resume(node_id)
        nodes = list(self.procs)
        codes = await asyncio.gather(*(self.terminate(n, grace) for n in nodes))
        return dict(zip(nodes, codes, strict=True))

    def kill_all(self) -> None:
        """The last resort (on errors and interrupts): SIGKILL everything still running."""
        for node_id in list(self.procs):
            self.kill(node_id)

    # ------------------------------------------------------------------ HTTP admin

    async def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def request(
        self, method: str, node_id: NodeId, path: str, body: Any = None, timeout: float = 2.0
    ) -> tuple[int, Any]:
        """One admin request; ``(0, error text)`` when the node did not answer."""
        http = await self.http()
        try:
            async with http.request(
                method,
                self.url(node_id) + path,
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                try:
                    payload = await resp.json(content_type=None)
                except ValueError:
                    payload = await resp.text()
                return resp.status, payload
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    async def status(self, node_id: NodeId, timeout: float = 1.0) -> dict[str, Any] | None:
        if not self.running(node_id) or node_id in self.paused:
            return None
        code, body = await self.request("GET", node_id, "/v1/status", timeout=timeout)
        return body if code == 200 and isinstance(body, dict) else None

    async def statuses(self) -> dict[NodeId, dict[str, Any]]:
        nodes = self.live()
        results = await asyncio.gather(*(self.status(n) for n in nodes))
        return {n: s for n, s in zip(nodes, results, strict=True) if s is not None}

    async def leader(self) -> NodeId | None:
        """The leader of the highest term any live node reports, if that node says so too."""
        sts = await self.statuses()
        best: tuple[int, NodeId] | None = None
        for node_id, st in sts.items():
            if st.get("role") == "leader" and (best is None or st["term"] > best[0]):
                best = (int(st["term"]), node_id)
        return best[1] if best is not None else None

    async def wait_leader(self, timeout: float) -> NodeId | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = await self.leader()
            if leader is not None:
                return leader
            await asyncio.sleep(0.1)
        return None

    async def wait_converged(self, nodes: list[NodeId], timeout: float) -> bool:
        """Every node of ``nodes`` answers, agrees on the leader and has applied its commit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sts = await self.statuses()
            if all(n in sts for n in nodes):
                leaders = {sts[n]["leader"] for n in nodes}
                leader = next(iter(leaders))
                if len(leaders) == 1 and leader is not None and leader in sts:
                    commit = sts[leader]["commit_index"]
                    if all(sts[n]["applied_index"] >= commit for n in nodes):
                        return True
            await asyncio.sleep(0.2)
        return False
