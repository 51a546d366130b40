#!/usr/bin/env python3
"""Run deploy/'s container specs as local processes; measure a rolling restart under load.

There is no Docker engine or Kubernetes cluster on the development machines,
so this runs the *exact* container command line and environment -- the
image's ENTRYPOINT/CMD and ENV from deploy/Dockerfile, then the StatefulSet's
(rendered from deploy/k8s/base) or the compose file's args and env, with
Kubernetes' ``fieldRef`` and ``$(VAR)`` expansion -- as ``raftkv serve``
processes. Only what a container runtime provides is replaced: each pod gets
its own loopback address ``127.A.<ordinal>.1`` instead of a pod IP (so every
pod keeps the manifest's ports), the peer DNS names map to those addresses
(``RAFTKV_PEER_HOST`` / the compose host names), and the data volume is a
local directory.

The rolling restart does what the StatefulSet controller does on an update:
highest ordinal first, SIGTERM, wait for the exit, start the pod again, wait
until ``/v1/health/ready`` answers 200, then the next pod. Meanwhile client
threads write unique keys through a "Service" that, like kube-proxy, sends
each request to one of the ready pods (a pod leaves it when it is sent
SIGTERM). Each write is ONE attempt: no client retries, so every failed
request is counted. At the end every acknowledged write is read back.

    python deploy/rolling_restart.py                  # 3 pods, 1 round, 4 clients
    python deploy/rolling_restart.py --rounds 3 --clients 8 --json result.json

Rule: standard library plus raftkv and PyYAML (via check.py); it cleans up
every process it started, even on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check  # deploy/check.py, beside this file

from raftkv.launch import child_env, raftkv_argv, spawn

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "default"


# ----------------------------------------------------------------------------- HTTP


def http(method: str, url: str, body: Any = None, *, timeout: float = 5.0) -> tuple[int | str, Any]:
    """One request, no retry: (status, JSON) or (error kind, message)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read() or b"null")
        except ValueError:
            payload = None
        exc.close()
        return exc.code, payload
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ConnectionRefusedError):
            return "refused", str(reason)
        if isinstance(reason, TimeoutError | socket.timeout):
            return "timeout", str(reason)
        return "error", str(reason)
    except (ConnectionError, TimeoutError, OSError) as exc:
        return ("timeout" if isinstance(exc, TimeoutError) else "reset"), str(exc)


# ----------------------------------------------------------------------------- nodes


@dataclass
class Node:
    """One container, run as a local ``raftkv serve`` process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ip: str
    api_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.api_port}"

    def start(self) -> None:
        # Only the container's RAFTKV_* variables: none of ours leak in.
        env = {k: v for k, v in child_env(ROOT).items() if not k.startswith("RAFTKV_")}
        env.update(self.env)
        self.proc = spawn(self.argv, log_path=self.log_path, env=env, cwd=ROOT, new_session=True)

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM, wait; (exit status, seconds). SIGKILL after ``timeout`` (status -9)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code, time.monotonic() - start

    def kill(self) -> None:
        """SIGKILL (a node that dies with its machine)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.terminate(timeout=10)
        self.proc = None

    def status(self) -> dict[str, Any] | None:
        code, body = http("GET", self.url + "/v1/status", timeout=1.0)
        return body if code == 200 and isinstance(body, dict) else None

    def ready(self) -> bool:
        return http("GET", self.url + "/v1/health/ready", timeout=2.0)[0] == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _local_argv(container_argv: list[str]) -> list[str]:
    """The container's argv with ``raftkv`` run from this checkout's Python."""
    if not container_argv or container_argv[0] != "raftkv":
        raise ValueError(f"expected a raftkv command, got {container_argv}")
    return raftkv_argv(*container_argv[1:])


def _bindable(ip: str, ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


def pick_subnet(count: int, ports: list[int]) -> int:
    """A second octet A such that 127.A.i.1 can bind ``ports`` for i < count."""
    rng = random.Random()
    for _ in range(200):
        a = rng.randint(16, 250)
        if all(_bindable(f"127.{a}.{i}.1", ports) for i in range(count)):
            return a
    raise RuntimeError("no free loopback subnet for the pods")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of env values ($$ escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


@dataclass
class StatefulSetSpec:
    """The container spec of the rendered StatefulSet, runnable as local pods."""

    argv: list[str]
    container_env: list[dict[str, Any]]
    replicas: int
    subnet: int
    workdir: Path
    raft_port: int = check.RAFT_PORT
    api_port: int = check.API_PORT
    set_env: dict[str, str] = field(default_factory=dict)
    """Variables added to the container's env (``kubectl set env statefulset/raftkv``)."""

    @classmethod
    def load(cls, workdir: Path, max_pods: int = 5) -> StatefulSetSpec:
        docs, _ = check.render()
        sts = next(d for d in docs if d["kind"] == "StatefulSet")
        container = sts["spec"]["template"]["spec"]["containers"][0]
        image_argv = check.dockerfile_command()
        # Kubernetes: `command` replaces ENTRYPOINT, `args` replaces CMD.
        entry = container.get("command") or image_argv[:1]
        args = container.get("args") or image_argv[1:]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        return cls(
            argv=[*entry, *args],
            container_env=container.get("env", []),
            replicas=sts["spec"]["replicas"],
            subnet=pick_subnet(max_pods, [ports["raft"], ports["api"]]),
            workdir=workdir,
            raft_port=ports["raft"],
            api_port=ports["api"],
        )

    def ip(self, ordinal: int) -> str:
        return f"127.{self.subnet}.{ordinal}.1"

    def volume(self, ordinal: int) -> Path:
        """Pod ``raftkv-<ordinal>``'s data volume (its PersistentVolumeClaim)."""
        return self.workdir / f"raftkv-{ordinal}"

    def initial_cluster_size(self) -> int:
        for item in self.container_env:
            if item["name"] == "RAFTKV_INITIAL_CLUSTER_SIZE":
                return int(item["value"])
        return 3

    def pod(self, ordinal: int) -> Node:
        """Pod ``raftkv-<ordinal>``: the image ENV, then the container env, expanded."""
        name = f"raftkv-{ordinal}"
        env = dict(check.dockerfile_env())
        for item in self.container_env:
            if "value" in item:
                env[item["name"]] = _expand(str(item["value"]), env)
            else:
                path = item["valueFrom"]["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": name, "metadata.namespace": NAMESPACE}[path]
        env.update(self.set_env)
        # What the container runtime provides: a pod IP, DNS for the peers, a volume.
        ip = self.ip(ordinal)
        env["RAFTKV_PEER_HOST"] = f"127.{self.subnet}.{{ordinal}}.1"
        env["RAFTKV_RAFT_ADDR"] = f"{ip}:{_host_port(env['RAFTKV_RAFT_ADDR'])[1]}"
        env["RAFTKV_API_ADDR"] = f"{ip}:{_host_port(env['RAFTKV_API_ADDR'])[1]}"
        env["RAFTKV_DATA_DIR"] = str(self.volume(ordinal))
        return Node(
            name=name,
            argv=_local_argv(self.argv),
            env=env,
            ip=ip,
            api_port=_host_port(env["RAFTKV_API_ADDR"])[1],
            log_path=self.workdir / f"{name}.log",
        )


def compose_nodes(workdir: Path) -> list[Node]:
    """The compose file's services, each on its own loopback address."""
    doc = check.load_compose()
    services = doc["services"]
    image_argv = check.dockerfile_command()
    subnet = pick_subnet(len(services), [check.RAFT_PORT, check.API_PORT])
    ips = {name: f"127.{subnet}.{i}.1" for i, name in enumerate(sorted(services))}
    nodes = []
    for name, svc in sorted(services.items()):
        env = dict(check.dockerfile_env())
        env.update({k: str(v) for k, v in svc["environment"].items()})
        # Compose DNS: the service names resolve to the containers' addresses.
        env["RAFTKV_INITIAL_CLUSTER"] = re.sub(
            r"(?<=[=/])([A-Za-z0-9.-]+)(?=:\d+)",
            lambda m: ips.get(m.group(1), m.group(1)),
            env["RAFTKV_INITIAL_CLUSTER"],
        )
        ip = ips[name]
        env["RAFTKV_RAFT_ADDR"] = f"{ip}:{_host_port(env['RAFTKV_RAFT_ADDR'])[1]}"
        env["RAFTKV_API_ADDR"] = f"{ip}:{_host_port(env['RAFTKV_API_ADDR'])[1]}"
        env["RAFTKV_DATA_DIR"] = str(workdir / name)
        entry = svc.get("entrypoint") or image_argv[:1]
        cmd = svc.get("command") or image_argv[1:]
        nodes.append(
            Node(
                name=name,
                argv=_local_argv([*entry, *cmd]),
                env=env,
                ip=ip,
                api_port=_host_port(env["RAFTKV_API_ADDR"])[1],
                log_path=workdir / f"{name}.log",
            )
        )
    return nodes


def wait_ready(nodes: list[Node], timeout: float = 60.0) -> float:
    """Wait until every node answers /v1/health/ready with 200; the seconds it took."""
    start = time.monotonic()
    pending = list(nodes)
    while pending:
        pending = [n for n in pending if not n.ready()]
        if not pending:
            break
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not ready after {timeout:.0f}s: {[n.name for n in pending]}")
        for n in pending:
            if n.proc is not None and n.proc.poll() is not None:
                raise RuntimeError(f"{n.name} exited ({n.proc.returncode}):\n{n.log()[-3000:]}")
        time.sleep(0.1)
    return time.monotonic() - start


def leader_of(nodes: list[Node]) -> Node | None:
    for n in nodes:
        st = n.status()
        if st is not None and st.get("role") == "leader":
            return n
    return None


@contextlib.contextmanager
def running(nodes: list[Node]) -> Iterator[list[Node]]:
    """Start ``nodes``; stop every one of them on the way out."""
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop_quietly()


# ----------------------------------------------------------------------------- load


@dataclass
class Load:
    """Client threads writing unique keys through a Service of ready endpoints."""

    clients: int
    timeout: float = 5.0
    endpoints: list[str] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    ok_times: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def set_endpoints(self, endpoints: list[str]) -> None:
        with self._lock:
            self.endpoints = list(endpoints)

    def remove(self, url: str) -> None:
        with self._lock:
            self.endpoints = [e for e in self.endpoints if e != url]

    def add(self, url: str) -> None:
        with self._lock:
            if url not in self.endpoints:
                self.endpoints.append(url)

    def _client(self, cid: int) -> None:
        rng = random.Random(cid)
        seq = 0
        while not self._stop.is_set():
            with self._lock:
                endpoints = list(self.endpoints)
            if not endpoints:
                time.sleep(0.01)
                continue
            key = f"c{cid}-{seq}"
            code, body = http(
                "PUT", f"{rng.choice(endpoints)}/v1/kv/{key}", seq, timeout=self.timeout
            )
            now = time.monotonic()
            with self._lock:
                self.outcomes[str(code)] += 1
                if code != 200:
                    error = body.get("error") if isinstance(body, dict) else body
                    self.errors[f"{code} {error}"] += 1
                if code == 200:
                    self.acked[key] = seq
                    self.ok_times.append(now)
            seq += 1

    def start(self) -> None:
        self.started = time.monotonic()
        for cid in range(self.clients):
            t = threading.Thread(target=self._client, args=(cid,), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        self.stopped = time.monotonic()

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return self.total - self.outcomes.get("200", 0)

    def max_gap(self) -> float:
        """The longest time without any acknowledged write, in seconds."""
        times = sorted([self.started, *self.ok_times, self.stopped])
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def verify(nodes: list[Node], acked: dict[str, int], timeout: float = 60.0) -> list[str]:
    """Every acknowledged write: a linearizable read, and a stale read on every node.

    Returns the keys that are missing or wrong (empty = nothing lost).
    """
    wait_ready(nodes, timeout)
    leader = None
    deadline = time.monotonic() + timeout
    while leader is None and time.monotonic() < deadline:
        leader = leader_of(nodes)
        time.sleep(0.05)
    assert leader is not None, "no leader"
    st = leader.status()
    assert st is not None
    target = st["commit_index"]
    for n in nodes:  # every replica applied everything committed so far
        while True:
            s = n.status()
            if s is not None and s["applied_index"] >= target:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n.name} did not apply {target}")
            time.sleep(0.05)
    checks = [(leader.url, k, "") for k in acked]
    checks += [(n.url, k, "?consistency=stale") for n in nodes for k in acked]

    def read(item: tuple[str, str, str]) -> str | None:
        url, key, query = item
        code, body = http("GET", f"{url}/v1/kv/{key}{query}")
        ok = code == 200 and isinstance(body, dict) and body.get("value") == acked[key]
        return None if ok else f"{url} {key}: {code} {body}"

    with ThreadPoolExecutor(8) as pool:
        return [bad for bad in pool.map(read, checks) if bad is not None]


# ----------------------------------------------------------------------------- rolling restart


@dataclass
class PodRestart:
    pod: str
    was_leader: bool
    handed_over: bool
    exit_code: int
    stop_seconds: float
    ready_seconds: float


@dataclass
class Result:
    pods: int
    rounds: int
    clients: int
    duration_s: float
    requests: int
    acknowledged: int
    failed: int
    outcomes: dict[str, int]
    errors: dict[str, int]
    lost: list[str]
    max_write_gap_s: float
    restarts: list[PodRestart]

    def summary(self) -> str:
        lines = [
            f"rolling restart: {self.pods} pods x {self.rounds} round(s), "
            f"{self.clients} clients, {self.duration_s:.1f}s under load",
            f"  requests       {self.requests} (single attempts, no client retries)",
            f"  acknowledged   {self.acknowledged}",
            f"  failed         {self.failed} ({100 * self.failed / max(1, self.requests):.2f}%) "
            + " ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()) if k != "200"),
            *(f"                 {n} x {e}" for e, n in sorted(self.errors.items())),
            f"  lost acked     {len(self.lost)}",
            f"  max write gap  {self.max_write_gap_s * 1000:.0f} ms",
        ]
        for r in self.restarts:
            lines.append(
                f"  {r.pod:<9} {'leader  ' if r.was_leader else 'follower'} "
                f"exit={r.exit_code} stop={r.stop_seconds * 1000:.0f}ms "
                f"ready-after-start={r.ready_seconds:.2f}s"
                + (f" handed-over={'yes' if r.handed_over else 'NO'}" if r.was_leader else "")
            )
        return "\n".join(lines)


def rolling_restart(
    workdir: Path,
    *,
    pods: int | None = None,
    rounds: int = 1,
    clients: int = 4,
    settle: float = 1.0,
) -> Result:
    """Start the StatefulSet's pods, restart them one by one under load, verify."""
    spec = StatefulSetSpec.load(workdir)
    n = pods or spec.replicas
    if n != spec.initial_cluster_size():
        raise ValueError("--pods must equal RAFTKV_INITIAL_CLUSTER_SIZE of the manifest")
    nodes = [spec.pod(i) for i in range(n)]
    restarts: list[PodRestart] = []
    with running(nodes):
        wait_ready(nodes)
        load = Load(clients)
        load.set_endpoints([node.url for node in nodes])
        load.start()
        try:
            time.sleep(settle)
            for _ in range(rounds):
                for node in reversed(nodes):  # the StatefulSet controller's order
                    leader = leader_of(nodes)
                    was_leader = leader is node
                    handoffs = node.log().count("leadership handed over")
                    load.remove(node.url)
                    code, stop_s = node.terminate()
                    handed_over = node.log().count("leadership handed over") > handoffs
                    node.start()
                    ready_s = wait_ready([node])
                    load.add(node.url)
                    restarts.append(
                        PodRestart(node.name, was_leader, handed_over, code, stop_s, ready_s)
                    )
                time.sleep(settle)
        finally:
            load.stop()
        lost = verify(nodes, load.acked)
    return Result(
        pods=n,
        rounds=rounds,
        clients=clients,
        duration_s=load.stopped - load.started,
        requests=load.total,
        acknowledged=len(load.acked),
        failed=load.failed,
        outcomes=dict(load.outcomes),
        errors=dict(load.errors),
        lost=lost,
        max_write_gap_s=load.max_gap(),
        restarts=restarts,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="restart every pod this many times")
    parser.add_argument("--clients", type=int, default=4, help="concurrent writer threads")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="raftkv-rolling-"))
    result = rolling_restart(workdir, rounds=args.rounds, clients=args.clients)
    print(result.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(result, default=lambda o: o.__dict__, indent=2))
    if args.keep:
        print(f"  data and logs  {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    bad = result.lost or any(r.exit_code != 0 for r in result.restarts)
    bad = bad or any(r.was_leader and not r.handed_over for r in result.restarts)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
