"""Faults: a schedule drawn from the seed, and the nemesis that applies it to real nodes.

Rule 1: :func:`make_schedule` is a pure function of its arguments: the same seed
gives the same faults, at the same offsets, with the same drawn targets. The
targets are *hosts* (``h1`` ..): the node on a host changes when the
``membership`` fault replaces it, so a fault resolves each host to its current
node when it fires, as it does for targets that depend on the run ("the
leader").

Rule 2: faults run one at a time, each to completion *including its own heal*
(a partition is removed, a killed node restarted, a paused node continued, a
removed node replaced); a fault whose start is past the end of the run is
skipped. :meth:`Nemesis.heal_all` then repairs anything a failed step left
behind, so the cluster ends whole: every link up, and on every host a node
running and a member.

Kinds (``--faults``):

* ``partition``: two random halves; the leader isolated; a bridge (two sides
  that cannot see each other and one node that sees both); one-way (one node
  cannot receive from, or cannot send to, all others).
* ``kill``: ``kill -9`` of 1..minority random nodes, or of the leader;
  restarted on the same data dir when the window ends.
* ``pause``: SIGSTOP of a random node or the leader for longer than the
  election timeout, then SIGCONT.
* ``restart``: a rolling restart, SIGTERM (graceful, with leader hand-off), start,
  wait until caught up, next node.
* ``membership``: remove a node (``DELETE /v1/members/ID``), stop it, wipe its
  data dir, add a new member *under a new id* on the same host (``POST
  /v1/members``; the cluster refuses a removed id, as a wiped node may have
  forgotten its votes) and start it empty with ``--initial-cluster-state
  existing``; it catches up from the leader.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkv.core.types import NodeId
from raftkv.jepsen.net import HostId
from raftkv.jepsen.nodes import Cluster
from raftkv.launch import InitialClusterState

__all__ = ["FAULT_KINDS", "Fault", "Nemesis", "make_schedule", "parse_faults"]

FAULT_KINDS = ("partition", "kill", "pause", "restart", "membership")
_WEIGHTS = {"partition": 3, "kill": 2, "pause": 2, "restart": 1, "membership": 1}
PARTITION_SHAPES = ("halves", "leader", "bridge", "one-way")


def parse_faults(spec: str) -> tuple[str, ...]:
    """``all``, ``none``, or a comma-separated subset of :data:`FAULT_KINDS`."""
    spec = spec.strip()
    if spec == "all":
        return FAULT_KINDS
    if spec in ("", "none"):
        return ()
    kinds = tuple(sorted({k.strip() for k in spec.split(",") if k.strip()}))
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kind(s) {', '.join(unknown)}; known: {FAULT_KINDS}")
    return kinds


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One scheduled fault.

    Attributes:
        at: offset from the start of the workload, in seconds.
        kind: one of :data:`FAULT_KINDS`.
        shape: the variant (partition shape; ``random``/``leader`` target; ...).
        duration: how long the fault lasts (an estimate for ``restart`` and
            ``membership``, which take what they take).
        hosts: target hosts drawn from the seed (empty when resolved at run
            time); each stands for the node on it when the fault fires.
        groups: partition sides, as hosts (``halves``, ``bridge``: the bridge
            host is in ``hosts``); for ``one-way`` the direction is in ``shape``.
    """

    at: float
    kind: str
    shape: str
    duration: float
    hosts: tuple[HostId, ...] = ()
    groups: tuple[tuple[HostId, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "kind": self.kind,
            "shape": self.shape,
            "duration": round(self.duration, 3),
            "hosts": list(self.hosts),
            "groups": [list(g) for g in self.groups],
        }


def make_schedule(
    seed: int,
    hosts: Sequence[HostId],
    duration: float,
    kinds: Sequence[str],
    *,
    election_ms: int,
    first_at: float = 2.0,
) -> list[Fault]:
    """The faults of a run, one at a time with quiet gaps (module docstring, Rule 1)."""
    rng = random.Random(f"{seed}/nemesis")
    ordered = sorted(hosts)
    n = len(ordered)
    minority = max(1, (n - 1) // 2)
    pool = [k for k in FAULT_KINDS if k in kinds]
    if not pool or n < 2:
        return []
    weights = [_WEIGHTS[k] for k in pool]
    election_s = election_ms / 1000
    faults: list[Fault] = []
    t = first_at
    while True:
        kind = rng.choices(pool, weights)[0]
        targets: tuple[HostId, ...] = ()
        groups: tuple[tuple[HostId, ...], ...] = ()
        if kind == "partition":
            shape = rng.choice(PARTITION_SHAPES if n >= 3 else ("halves", "leader", "one-way"))
            length = rng.uniform(1.5, 4.0)
            shuffled = rng.sample(ordered, n)
            if shape == "halves":
                cut = rng.randint(1, n // 2)
                groups = (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
            elif shape == "bridge":
                rest = shuffled[1:]
                half = len(rest) // 2
                targets = (shuffled[0],)
                groups = (tuple(sorted(rest[:half])), tuple(sorted(rest[half:])))
            elif shape == "one-way":
                shape = rng.choice(("one-way-in", "one-way-out"))
                targets = (shuffled[0],)
        elif kind == "kill":
            shape = rng.choice(("random", "leader"))
            length = rng.uniform(1.0, 3.0)
            if shape == "random":
                targets = tuple(sorted(rng.sample(ordered, rng.randint(1, minority))))
        elif kind == "pause":
            shape = rng.choice(("random", "leader"))
            length = max(rng.uniform(1.5, 3.0), 2.5 * election_s)
            if shape == "random":
                targets = (rng.choice(ordered),)
        elif kind == "restart":
            shape = "rolling"
            targets = tuple(rng.sample(ordered, n))
            length = 2.5 * n
        else:
            shape = "replace"
            targets = (rng.choice(ordered),)
            length = 6.0
        if t + length > duration:
            break
        faults.append(
            Fault(at=t, kind=kind, shape=shape, duration=length, hosts=targets, groups=groups)
        )
        t += length + rng.uniform(0.5, 2.0)
    return faults


@dataclass(slots=True)
class Applied:
    """A fault as it actually happened (for ``faults.jsonl``)."""

    fault: Fault
    start: float
    end: float = 0.0
    targets: list[str] = field(default_factory=list)
    detail: str = ""
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            **self.fault.to_json(),
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "targets": self.targets,
            "detail": self.detail,
            "ok": self.ok,
        }


class Nemesis:
    """Applies a schedule to ``cluster`` (and its network), logging what it did."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        clock: Callable[[], float],
        log: Callable[[str], None],
        seed: int,
    ) -> None:
        self.cluster = cluster
        self.net = cluster.net
        self.clock = clock
        self.log = log
        self.applied: list[Applied] = []
        self.joined: set[NodeId] = set()  # nodes that must restart as 'existing'
        self._rng = random.Random(f"{seed}/nemesis-runtime")

    def state_for(self, node_id: NodeId) -> InitialClusterState:
        return "existing" if node_id in self.joined else "new"

    async def run(self, schedule: Sequence[Fault], t0: float, end: float) -> None:
        """Apply ``schedule`` (offsets from ``t0``); start no fault at or after ``end``.

        The applied faults record times of ``clock``, like the client history.
        """
        for fault in schedule:
            start = t0 + fault.at
            now = self.clock()
            if start > now:
                await asyncio.sleep(start - now)
            if self.clock() >= end:
                break
            record = Applied(fault, start=self.clock())
            self.applied.append(record)
            try:
                await self._apply(fault, record)
            except Exception as exc:  # a fault that fails is reported, and healed below
                record.ok = False
                record.detail += f" error: {type(exc).__name__}: {exc}"
                self.log(f"nemesis: {fault.kind}/{fault.shape} failed: {exc!r}")
                await self.heal_all()
            record.end = self.clock()
            self.log(
                f"nemesis: t={record.start:7.2f}-{record.end:7.2f} {fault.kind}/{fault.shape} "
                f"{','.join(record.targets)} {record.detail}".rstrip()
            )

    async def _target(self, fault: Fault) -> list[NodeId]:
        """The nodes now on the fault's hosts, or the leader."""
        if fault.hosts:
            return [self.cluster.node_on[h] for h in fault.hosts]
        return [await self._leader()]

    async def _leader(self) -> NodeId:
        """The current leader; a random live node when there is none."""
        leader = await self.cluster.leader()
        if leader is None:
            leader = self._rng.choice(self.cluster.live() or self.cluster.node_ids)
        return leader

    async def _apply(self, fault: Fault, rec: Applied) -> None:
        c = self.cluster
        if fault.kind == "partition":
            links = await self._links(fault, rec)
            await self.net.cut(links)
            await asyncio.sleep(fault.duration)
            await self.net.heal()
        elif fault.kind == "kill":
            targets = await self._target(fault)
            rec.targets = list(targets)
            for node_id in targets:
                c.kill(node_id)
            await asyncio.sleep(fault.duration)
            for node_id in targets:
                c.start(node_id, self.state_for(node_id))
        elif fault.kind == "pause":
            targets = await self._target(fault)
            rec.targets = list(targets)
            for node_id in targets:
                c.pause(node_id)
            await asyncio.sleep(fault.duration)
            for node_id in targets:
                c.resume(node_id)
        elif fault.kind == "restart":
            for host in fault.hosts:
                node_id = c.node_on[host]
                rec.targets.append(node_id)
                code = await c.terminate(node_id)
                c.start(node_id, self.state_for(node_id))
                caught_up = await c.wait_converged([node_id], timeout=10.0)
                rec.detail += f" {node_id}:exit={code},caught_up={caught_up}"
        else:
            victim = (await self._target(fault))[0]
            rec.targets = [victim]
            rec.detail = await self._replace(c.host_of[victim])

    async def _links(self, fault: Fault, rec: Applied) -> list[tuple[HostId, HostId]]:
        """The host-to-host links the partition cuts."""
        c = self.cluster
        hosts = c.hosts
        if fault.shape == "leader":
            leader = c.host_of[await self._leader()]
            groups: tuple[tuple[HostId, ...], ...] = (
                (leader,),
                tuple(h for h in hosts if h != leader),
            )
        elif fault.shape in ("one-way-in", "one-way-out"):
            victim = fault.hosts[0]
            rec.targets = [c.node_on[victim]]
            others = [h for h in hosts if h != victim]
            if fault.shape == "one-way-in":
                rec.detail = "(receives from nobody)"
                return [(o, victim) for o in others]
            rec.detail = "(sends to nobody)"
            return [(victim, o) for o in others]
        else:
            groups = fault.groups
        named = tuple(tuple(c.node_on[h] for h in g) for g in groups)
        if fault.shape == "bridge":
            rec.detail = f"bridge {c.node_on[fault.hosts[0]]} between {named}"
        rec.targets = [" | ".join(",".join(g) for g in named)]
        links: list[tuple[HostId, HostId]] = []
        for i, a_side in enumerate(groups):
            for b_side in groups[i + 1 :]:
                for a in a_side:
                    for b in b_side:
                        links += [(a, b), (b, a)]
        return links

    async def _members(self) -> dict[str, Any] | None:
        for node_id in self.cluster.live():
            code, body = await self.cluster.request("GET", node_id, "/v1/members")
            if code == 200 and isinstance(body, dict) and body.get("leader"):
                return body
        return None

    async def _is_voter(self, node_id: NodeId) -> bool | None:
        members = await self._members()
        if members is None:
            return None
        return node_id in members.get("voters", ()) or node_id in members.get("learners", ())

    async def _membership_call(
        self, method: str, path: str, body: Any, want_member: bool, victim: NodeId, timeout: float
    ) -> bool:
        """Repeat a members call on live nodes until the membership shows the change."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            is_member = await self._is_voter(victim)
            if is_member is want_member:
                return True
            live = [n for n in self.cluster.live() if n != victim] or self.cluster.live()
            if live:
                await self.cluster.request(
                    method, self._rng.choice(live), path, body=body, timeout=3.0
                )
            await asyncio.sleep(0.3)
        return False

    async def _add(self, node_id: NodeId) -> bool:
        """Add ``node_id`` (a new id) with its host's addresses; whether it became a member."""
        body = {"id": node_id, **self.cluster.member(node_id).to_json()}
        return await self._membership_call("POST", "/v1/members", body, True, node_id, 20.0)

    async def _replace(self, host: HostId) -> str:
        """Remove the node on ``host``, wipe it, and put a new member id on ``host``.

        The old id cannot come back: a removed id is refused (409), since a
        wiped node has forgotten the votes it cast under it.
        """
        c = self.cluster
        old = c.node_on[host]
        removed = await self._membership_call(
            "DELETE", f"/v1/members/{old}", None, False, old, timeout=20.0
        )
        if not removed:
            return "remove did not complete"
        c.kill(old)
        c.wipe(old)
        new = c.replace(host)
        self.joined.add(new)
        added = await self._add(new)
        c.start(new, "existing")
        if not added:
            return f"removed, wiped; replaced by {new}; add did not complete"
        caught_up = await c.wait_converged([new], timeout=15.0)
        return f"removed, wiped; replaced by {new}, added; caught_up={caught_up}"

    async def heal_all(self) -> list[str]:
        """Undo every fault (module docstring, Rule 2); return what had to be repaired."""
        c = self.cluster
        repairs: list[str] = []
        await self.net.heal()
        for node_id in list(c.paused):
            c.resume(node_id)
            repairs.append(f"resumed {node_id}")
        for node_id in c.node_ids:
            if not c.running(node_id):
                c.start(node_id, self.state_for(node_id))
                repairs.append(f"started {node_id}")
        await c.wait_leader(timeout=20.0)
        for host in c.hosts:
            node_id = c.node_on[host]
            members = await self._members()
            if members is None or node_id in (
                *members.get("voters", ()),
                *members.get("learners", ()),
            ):
                continue
            if node_id in members.get("removed", ()):
                # Removed, but the replacement did not happen: do it now.
                repairs.append(f"replaced {node_id}: {await self._replace(host)}")
            else:  # a replacement whose add did not complete
                repairs.append(f"added {node_id}: {await self._add(node_id)}")
        return repairs
