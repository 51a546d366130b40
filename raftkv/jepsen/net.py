"""Where the nodes of a fault test live, and how the links between them are cut.

Rule 1: everything a :class:`Network` creates, :meth:`Network.teardown` removes;
teardown is idempotent and also runs after a half-finished ``setup``. Each run
claims a *slot* ``k`` (a lock file naming its pid); every name and address it
creates carries ``k``, so concurrent runs never share anything, and a slot whose
owner died is cleaned up by the next run that claims it.

Rule 2: traffic goes only to addresses this module created: the namespaces'
``10.77.k.0/24`` (host ``hi`` is ``10.77.k.(10+i)``, the host end of the bridge
``10.77.k.1``), or loopback ``127.77.k.(10+i)``. Namespaces get no default
route, so a node cannot reach anything else.

Rule 3: the network knows *hosts* (``h1``, ``h2``, ...), not node ids: a host
keeps its addresses for the whole run while the node on it may change -- the
nemesis replaces a wiped node by a new member with a new id on the same host,
since a removed id is never reused. Links are cut between hosts. The nodes
tell :meth:`Network.place` which id runs where (the loopback proxies identify
a sender by the node id of its handshake).

Two kinds:

* :class:`NetnsNetwork` (needs root and ``ip``): one Linux network namespace per
  node, a veth pair into a bridge. ``cut(src, dst)`` drops every packet from
  ``src`` arriving in ``dst`` -- ``iptables -A INPUT -s SRC -j DROP`` inside
  ``dst``'s namespace, or, where the ``iptables`` binary is missing, a
  ``blackhole`` route to ``dst`` inside ``src``'s namespace (the sender then gets
  an error instead of silence; recorded in :attr:`Network.description`).
  Over TCP a one-way cut stalls both directions of a connection (the
  acknowledgements are dropped too), as with iptables in Jepsen.
* :class:`LoopbackNetwork` (no privileges): hosts on ``127.77.k.(10+i)``; each
  host's advertised Raft address is a proxy (:mod:`raftkv.jepsen.proxy`) that
  learns the sender's node id from the transport handshake, maps it to its
  host, and drops cut links. Raft
  connections are one-way (the sender dials), so a cut here is a true one-way
  message cut. HTTP (client requests and followers forwarding to the leader) is
  not proxied and never cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from raftkv.core.types import NodeId
from raftkv.jepsen.proxy import LinkProxy

__all__ = [
    "HostId",
    "HostPort",
    "host_number",
    "Network",
    "NetnsNetwork",
    "LoopbackNetwork",
    "choose_network",
    "netns_available",
]

logger = logging.getLogger(__name__)

HostPort = tuple[str, int]
HostId = str
"""A host of the run: ``h1`` .. ``hN``."""

RAFT_PORT = 7000
PROXY_PORT = 7100
API_PORT = 8000
_PREFIX = "rkvj"
_SLOTS = 200
_LOCK_DIR = Path(tempfile.gettempdir()) / "raftkv-jepsen"


def host_number(host: HostId) -> int:
    """``h3`` -> 3 (a run's hosts are h1..hN)."""
    return int(host.removeprefix("h"))


class Network(Protocol):
    """The hosts of a run: addresses, a command wrapper, link cuts."""

    kind: str
    """``netns`` or ``loopback``."""

    @property
    def slot(self) -> int:
        """The slot claimed by :meth:`setup`."""
        ...

    description: str
    """One line for the output: what isolates the nodes and how links are cut."""

    async def setup(self, hosts: Sequence[HostId]) -> None: ...

    def place(self, node_id: NodeId, host: HostId) -> None:
        """Record that ``node_id`` runs on ``host`` (Rule 3)."""
        ...

    def raft_listen(self, host: HostId) -> HostPort: ...

    def raft_advertised(self, host: HostId) -> HostPort: ...

    def api_addr(self, host: HostId) -> HostPort: ...

    def wrap(self, host: HostId, argv: list[str]) -> list[str]:
        """The command that runs ``argv`` on ``host``."""
        ...

    async def cut(self, links: Iterable[tuple[HostId, HostId]]) -> None:
        """Drop every message from host ``src`` to host ``dst`` for each ``(src, dst)``."""
        ...

    async def heal(self) -> None:
        """Remove every cut."""
        ...

    async def teardown(self) -> None: ...


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Slot:
    """An exclusive slot number, held through a lock file that names our pid."""

    def __init__(self, lock_dir: Path = _LOCK_DIR) -> None:
        self.lock_dir = lock_dir
        self.number: int | None = None

    def claim(self) -> int:
        """Claim a free slot, or one whose owner died (the caller removes its leftovers)."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        # Start at a per-process offset, so a slot just released by one run is
        # not at once reused by a concurrent one (its leftovers stay attributable).
        offset = os.getpid() % _SLOTS
        for k in [(offset + i) % _SLOTS for i in range(_SLOTS)]:
            path = self.lock_dir / f"slot-{k}"
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = int(path.read_text().strip() or "0")
                except (OSError, ValueError):
                    owner = 0
                if owner and _pid_alive(owner):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.number = k
            return k
        raise RuntimeError(f"no free jepsen slot in {self.lock_dir}")

    def release(self) -> None:
        if self.number is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.lock_dir / f"slot-{self.number}").unlink()
            self.number = None


def netns_available() -> bool:
    """Root, with ``ip`` on the PATH and network namespaces usable."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"{_PREFIX}probe{os.getpid()}"
    if _run(["ip", "netns", "add", probe], check=False).returncode != 0:
        return False
    _run(["ip", "netns", "del", probe], check=False)
    return True


def slot_names(k: int) -> tuple[str, ...]:
    """Prefixes of every namespace and link name slot ``k`` creates (for leak checks)."""
    return (f"{_PREFIX}{k}-", f"{_PREFIX}{k}v", f"{_PREFIX}{k}br")


class NetnsNetwork:
    """One network namespace per node on a private bridge (see the module docstring)."""

    kind = "netns"

    def __init__(self, *, firewall: str | None = None) -> None:
        if firewall is None:
            firewall = "iptables" if shutil.which("iptables") else "blackhole"
        if firewall not in ("iptables", "blackhole"):
            raise ValueError(f"unknown firewall {firewall!r}")
        self.firewall = firewall
        self._slot = _Slot()
        self._hosts: list[HostId] = []
        self._cuts: set[tuple[HostId, HostId]] = set()
        self.description = ""

    # -- names ----------------------------------------------------------------

    @property
    def slot(self) -> int:
        assert self._slot.number is not None, "setup() first"
        return self._slot.number

    def subnet(self) -> str:
        return f"10.77.{self.slot}.0/24"

    def ip(self, host: HostId) -> str:
        return f"10.77.{self.slot}.{10 + host_number(host)}"

    def namespace(self, host: HostId) -> str:
        return f"{_PREFIX}{self.slot}-{host}"

    def _bridge(self, k: int) -> str:
        return f"{_PREFIX}{k}br"

    def _veth(self, k: int, host: HostId) -> str:
        return f"{_PREFIX}{k}v{host_number(host)}"

    # -- Network ----------------------------------------------------------------

    async def setup(self, hosts: Sequence[HostId]) -> None:
        await asyncio.to_thread(self._setup, list(hosts))

    def place(self, node_id: NodeId, host: HostId) -> None:
        """Nothing to do: packets are filtered by the hosts' addresses."""

    def _setup(self, hosts: list[HostId]) -> None:
        k = self._slot.claim()
        _cleanup_slot(k)  # leftovers of a run killed before it could release the slot
        self._check_subnet_unused(k)
        self._hosts = hosts
        bridge = self._bridge(k)
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"10.77.{k}.1/24", "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])
        for host in hosts:
            ns, veth = self.namespace(host), self._veth(k, host)
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p"])
            _run(["ip", "link", "set", veth + "p", "netns", ns])
            _run(["ip", "-n", ns, "link", "set", veth + "p", "name", "eth0"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "link", "set", veth, "master", bridge])
            _run(["ip", "link", "set", veth, "up"])
        how = (
            "iptables INPUT DROP rules inside the receiver's namespace"
            if self.firewall == "iptables"
            else "blackhole routes inside the sender's namespace (iptables not installed)"
        )
        self.description = (
            f"netns: {len(hosts)} network namespaces on bridge {bridge}, "
            f"subnet {self.subnet()}; links cut with {how}"
        )

    def _check_subnet_unused(self, k: int) -> None:
        out = _run(["ip", "-4", "-o", "addr", "show"]).stdout
        if f" 10.77.{k}." in out:
            raise RuntimeError(f"10.77.{k}.0/24 is already in use on this machine: {out!r}")

    def raft_listen(self, host: HostId) -> HostPort:
        return (self.ip(host), RAFT_PORT)

    def raft_advertised(self, host: HostId) -> HostPort:
        return self.raft_listen(host)

    def api_addr(self, host: HostId) -> HostPort:
        return (self.ip(host), API_PORT)

    def wrap(self, host: HostId, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    async def cut(self, links: Iterable[tuple[HostId, HostId]]) -> None:
        new = [link for link in links if link not in self._cuts and link[0] != link[1]]
        await asyncio.to_thread(self._cut, new)

    def _cut(self, links: list[tuple[HostId, HostId]]) -> None:
        for src, dst in links:
            if self.firewall == "iptables":
                cmd = ["iptables", "-w", "-A", "INPUT", "-s", self.ip(src), "-j", "DROP"]
                _run(["ip", "netns", "exec", self.namespace(dst), *cmd])
            else:
                _run(["ip", "-n", self.namespace(src), "route", "add", "blackhole", self.ip(dst)])
            self._cuts.add((src, dst))

    async def heal(self) -> None:
        await asyncio.to_thread(self._heal)

    def _heal(self) -> None:
        if not self._cuts:
            return
        for host in self._hosts:
            if self.firewall == "iptables":
                _run(["ip", "netns", "exec", self.namespace(host), "iptables", "-w", "-F"])
            else:
                _run(["ip", "-n", self.namespace(host), "route", "flush", "type", "blackhole"])
        self._cuts.clear()

    async def teardown(self) -> None:
        await asyncio.to_thread(self._teardown)

    def _teardown(self) -> None:
        if self._slot.number is None:
            return
        _cleanup_slot(self._slot.number)
        self._slot.release()
        self._cuts.clear()


def _cleanup_slot(k: int) -> None:
    """Remove slot ``k``'s namespaces (killing what runs in them), veths and bridge."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        return
    prefix = f"{_PREFIX}{k}-"
    names = _run(["ip", "netns", "list"], check=False).stdout.split()
    for ns in [n for n in names if n.startswith(prefix)]:
        pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        _run(["ip", "netns", "del", ns], check=False)
    links = _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
    for line in links:
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        if name.startswith(f"{_PREFIX}{k}v") or name == f"{_PREFIX}{k}br":
            _run(["ip", "link", "del", name], check=False)


class LoopbackNetwork:
    """Nodes on distinct loopback addresses; Raft links through cutting proxies."""

    kind = "loopback"

    def __init__(self, *, reason: str = "") -> None:
        self._slot = _Slot()
        self._proxies: dict[HostId, LinkProxy] = {}
        self._cuts: set[tuple[HostId, HostId]] = set()
        # Every node id that ever ran, and its host (Rule 3).
        self._host_of: dict[NodeId, HostId] = {}
        self._reason = reason
        self.description = ""

    @property
    def slot(self) -> int:
        assert self._slot.number is not None, "setup() first"
        return self._slot.number

    def ip(self, host: HostId) -> str:
        return f"127.77.{self.slot}.{10 + host_number(host)}"

    async def setup(self, hosts: Sequence[HostId]) -> None:
        self._slot.claim()
        for host in hosts:
            proxy = LinkProxy(
                host, (self.ip(host), PROXY_PORT), self.raft_listen(host), self._host_of.get
            )
            try:
                await proxy.start()
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise RuntimeError(f"{self.ip(host)}:{PROXY_PORT} is in use") from exc
                raise
            self._proxies[host] = proxy
        why = f" ({self._reason})" if self._reason else ""
        self.description = (
            f"loopback{why}: nodes on 127.77.{self.slot}.x, Raft links through per-host TCP "
            "proxies that drop cut links; HTTP is not cut"
        )

    def place(self, node_id: NodeId, host: HostId) -> None:
        self._host_of[node_id] = host

    def raft_listen(self, host: HostId) -> HostPort:
        return (self.ip(host), RAFT_PORT)

    def raft_advertised(self, host: HostId) -> HostPort:
        return (self.ip(host), PROXY_PORT)

    def api_addr(self, host: HostId) -> HostPort:
        return (self.ip(host), API_PORT)

    def wrap(self, host: HostId, argv: list[str]) -> list[str]:
        return argv

    async def cut(self, links: Iterable[tuple[HostId, HostId]]) -> None:
        for src, dst in links:
            if src != dst:
                self._cuts.add((src, dst))
                self._proxies[dst].cut(src)

    async def heal(self) -> None:
        for proxy in self._proxies.values():
            proxy.heal()
        self._cuts.clear()

    async def teardown(self) -> None:
        for proxy in self._proxies.values():
            await proxy.stop()
        self._proxies.clear()
        self._slot.release()


def choose_network(kind: str = "auto") -> Network:
    """``netns``, ``loopback``, or ``auto``: namespaces when possible, else loopback."""
    if kind == "netns":
        return NetnsNetwork()
    if kind == "loopback":
        return LoopbackNetwork(reason="requested")
    if kind != "auto":
        raise ValueError(f"unknown network kind {kind!r}")
    if netns_available():
        return NetnsNetwork()
    reason = "not root" if os.geteuid() != 0 else "network namespaces unavailable"
    return LoopbackNetwork(reason=f"fallback: {reason}")
