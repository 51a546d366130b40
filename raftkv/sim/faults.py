"""Seeded fault schedules and their injection into a running cluster.

Rule: the schedule -- which kinds of fault start and heal when -- is generated
up front from the faults RNG; choices that depend on the cluster's state at the
moment a fault starts (who is leader, which node to crash, how to split the
nodes) are drawn from the same RNG when it fires, which is deterministic because
events fire in a deterministic order. Each kind has its own lane(s) of
non-overlapping windows. Every fault ends by ``end_us``, when everything heals
and crashed nodes restart, leaving a quiet period for the cluster to converge.

Kinds:

* ``partition``: random halves, isolate the current leader, a bridge (one node
  sees both sides that cannot see each other), or a one-way cut around one node.
* ``crash``: crash a random node or the leader; restart it when the window
  ends. Clusters of five or more get ``(n - 1) // 2`` crash lanes.
* ``loss``, ``dup``, ``reorder``: raise the message drop / duplicate / reorder
  probability of every link for the window.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from raftkv.core import NodeId
from raftkv.sim.clock import Micros, seconds
from raftkv.sim.cluster import Cluster
from raftkv.sim.trace import Tracer

FAULT_KINDS = ("partition", "crash", "loss", "dup", "reorder", "stress", "churn", "hints")
"""Every fault kind, in a fixed order. ``stress`` draws a hostile timing and
batching profile per seed (see :func:`raftkv.sim.runner.draw_profile`) instead
of scheduling fault windows. ``churn`` strikes each newly elected leader: either
it is cut off from every other node at the very instant it wins (its no-op stays
in its own log only) and the leader cut off before it comes back, or it crashes
within a few round trips (after its first appends, before they all reach a
majority) and restarts later, the cut-off leader coming back as it goes down.
Strung together, these are the schedule of the paper's Figure 8: S1's stale
entry, S5's stale entry, S1 back as leader replicating its old entry, S1 down
and S5 back. ``hints`` models the real transport's "unreachable" hint
(:meth:`raftkv.core.RawNode.report_unreachable`): 1-60 ms after any crash
every node still up is told the crashed node is gone, as a refused reconnect
tells a real node; and in its windows, every 50-500 ms, a random follower is
told, falsely, that its live leader is gone."""

ALL_KINDS = tuple(k for k in FAULT_KINDS if k != "hints")
"""What ``all`` means: every kind but ``hints``. Hints make failover fast, and a
fast failover makes the adversarial schedules rarer (Figure 8's needs a slow
one): with them in ``all`` the sweep that catches a leader committing a
previous term's entry by counting replicas found nothing in 80 seeds. So
``all`` keeps the slow, hostile timing, and ``all,hints`` is swept separately
(``tests/sim/test_hints.py``, ``make sim-long``)."""

PARTITION_VARIANTS = ("halves", "isolate-leader", "bridge", "one-way")
CRASH_VARIANTS = ("random", "leader")


def parse_faults(spec: str) -> frozenset[str]:
    """Parse ``"partition,crash"``, ``"all"`` or ``"none"`` into a set of kinds.

    Raises:
        ValueError: on an unknown kind.
    """
    spec = spec.strip()
    if spec in ("", "none"):
        return frozenset()
    kinds: set[str] = set()
    for part in spec.split(","):
        part = part.strip()
        if part == "all":
            kinds.update(ALL_KINDS)
        elif part in FAULT_KINDS:
            kinds.add(part)
        elif part:
            raise ValueError(
                f"unknown fault kind {part!r} (choose from {', '.join(FAULT_KINDS)}, all, none)"
            )
    return frozenset(kinds)


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultWindow:
    """One fault: ``kind`` (and ``variant``) active from ``start`` until ``end``.

    ``lane`` tells apart concurrent windows of one kind; ``level`` is the
    probability for loss/dup/reorder.
    """

    kind: str
    lane: int
    variant: str
    start: Micros
    end: Micros
    level: float = 0.0


def generate_schedule(
    rng: random.Random, kinds: Iterable[str], nodes: int, end_us: Micros
) -> list[FaultWindow]:
    """Fault windows for one run, sorted by (start, kind, lane).

    Args:
        rng: the faults RNG.
        kinds: fault kinds to use.
        nodes: the cluster size (decides crash lanes and partition variants).
        end_us: every window ends at or before this time.
    """
    windows: list[FaultWindow] = []
    for kind in FAULT_KINDS:  # fixed order keeps RNG draws reproducible
        if kind not in kinds or kind == "stress":  # stress is a profile, not windows
            continue
        lanes = max(1, (nodes - 1) // 2) if kind == "crash" else 1
        for lane in range(lanes):
            t = seconds(0.5) + rng.randrange(seconds(3))
            while t < end_us:
                if kind == "partition":
                    variants = PARTITION_VARIANTS if nodes >= 3 else ("halves", "one-way")
                    variant = variants[rng.randrange(len(variants))]
                    length = seconds(0.5) + rng.randrange(seconds(4))
                    level = 0.0
                elif kind == "crash":
                    variant = CRASH_VARIANTS[rng.randrange(len(CRASH_VARIANTS))]
                    length = seconds(0.2) + rng.randrange(seconds(5))
                    level = 0.0
                elif kind == "churn":
                    variant = "new-leader"
                    length = seconds(1) + rng.randrange(seconds(6))
                    level = 0.0
                elif kind == "hints":
                    variant = "false-hints"
                    length = seconds(0.5) + rng.randrange(seconds(4))
                    level = 0.0
                else:
                    variant = kind
                    length = seconds(0.5) + rng.randrange(seconds(4))
                    top = {"loss": 0.3, "dup": 0.2, "reorder": 0.5}[kind]
                    level = round(0.01 + rng.random() * top, 3)
                end = min(t + length, end_us)
                windows.append(
                    FaultWindow(
                        kind=kind, lane=lane, variant=variant, start=t, end=end, level=level
                    )
                )
                t = end + seconds(0.3) + rng.randrange(seconds(4))
    windows.sort(key=lambda w: (w.start, FAULT_KINDS.index(w.kind), w.lane))
    return windows


CHURN_VARIANTS = ("isolate", "crash")
"""How churn strikes a new leader (see :data:`FAULT_KINDS`)."""


class FaultInjector:
    """Starts and heals the windows of a schedule on a :class:`Cluster`."""

    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        schedule: list[FaultWindow],
        end_us: Micros,
        tracer: Tracer | None = None,
        hints_rng: random.Random | None = None,
    ) -> None:
        self._cluster = cluster
        self._rng = rng
        # With the ``hints`` kind: its own RNG, so the other faults draw as without it.
        self._hints_rng = hints_rng
        self._hint_windows: set[int] = set()  # open false-hint lanes
        self.schedule = schedule
        self._end_us = end_us
        self._tracer = tracer
        self._base = cluster.network.params
        self._crashed: dict[int, NodeId] = {}  # crash lane -> node it crashed
        self._churn_open: set[int] = set()  # churn lanes whose window is open
        # The leader churn keeps cut off (at most one), and the links it cut.
        self._churn_isolated: tuple[NodeId, list[NodeId]] | None = None
        # Leaders churn cut off and let back, who have not been struck since.
        self._churn_returned: set[NodeId] = set()
        cluster.on_leader = self._on_leader
        self.counts: Counter[str] = Counter()
        """Faults actually started, by kind (and ``crash-skipped`` etc.)."""

    def install(self) -> None:
        """Schedule every window's start and end, and the final heal."""
        clock = self._cluster.clock
        for w in self.schedule:
            clock.call_at(w.start, self._start, w)
            clock.call_at(w.end, self._heal, w)
        clock.call_at(self._end_us, self.heal_all)

    def _trace(self, what: str, **details: object) -> None:
        if self._tracer is not None:
            self._tracer.emit(self._cluster.clock.now, "fault", None, what=what, **details)

    def _start(self, w: FaultWindow) -> None:
        cluster = self._cluster
        net = cluster.network
        rng = self._rng
        if w.kind == "partition":
            nodes = list(cluster.node_ids)
            rng.shuffle(nodes)
            if w.variant == "halves":
                half = len(nodes) // 2
                net.partition([nodes[:half], nodes[half:]])
                self._trace(
                    "partition",
                    variant=w.variant,
                    groups=[sorted(nodes[:half]), sorted(nodes[half:])],
                )
            elif w.variant == "isolate-leader":
                leader = cluster.leader() or nodes[0]
                rest = [n for n in nodes if n != leader]
                net.partition([[leader], rest])
                self._trace("partition", variant=w.variant, isolated=leader)
            elif w.variant == "bridge":
                bridge = nodes[0]
                rest = nodes[1:]
                half = len(rest) // 2
                net.partition([rest[:half], rest[half:]])
                self._trace(
                    "partition",
                    variant=w.variant,
                    bridge=bridge,
                    groups=[sorted(rest[:half]), sorted(rest[half:])],
                )
            else:
                node = nodes[0]
                inbound = rng.random() < 0.5
                for other in nodes[1:]:
                    if inbound:
                        net.block(other, node)
                    else:
                        net.block(node, other)
                self._trace(
                    "partition",
                    variant=w.variant,
                    target=node,
                    direction="in" if inbound else "out",
                )
            self.counts["partition"] += 1
        elif w.kind == "churn":
            self._churn_open.add(w.lane)
            self._trace("churn", variant=w.variant)
            self.counts["churn"] += 1
            # Start the chain with the leader in office.
            incumbent = cluster.leader()
            if incumbent is not None:
                self._on_leader(incumbent, self._leader_term())
        elif w.kind == "hints":
            self._hint_windows.add(w.lane)
            self._trace("hints", variant=w.variant)
            self.counts["hints"] += 1
            self._false_hint_later(w.lane)
        elif w.kind == "crash":
            up = cluster.up_nodes()
            if len(up) <= 1:
                self.counts["crash-skipped"] += 1
                return
            target = cluster.leader() if w.variant == "leader" else None
            if target is None:
                target = up[rng.randrange(len(up))]
            self._trace("crash", variant=w.variant, target=target)
            self._crash(target)
            self._crashed[w.lane] = target
            self.counts["crash"] += 1
        else:
            field = {"loss": "drop", "dup": "duplicate", "reorder": "reorder"}[w.kind]
            net.update_params(**{field: w.level})
            self._trace(w.kind, level=w.level)
            self.counts[w.kind] += 1

    def _leader_term(self) -> int:
        cluster = self._cluster
        leader = cluster.leader()
        if leader is None:
            return 0
        raw = cluster.nodes[leader].raw
        return raw.term if raw is not None else 0

    def _on_leader(self, leader: NodeId, term: int) -> None:
        """While a churn window is open, strike every leader the instant it is elected."""
        if not self._churn_open:
            return
        cluster = self._cluster
        rng = self._rng
        # Figure 8's choreography, three times in four: cut off a fresh leader
        # (its entries stay local), but crash one that had been cut off and is
        # back in office replicating its stale entries. Otherwise either.
        variant = "crash" if leader in self._churn_returned else "isolate"
        if rng.random() < 0.25:
            variant = CHURN_VARIANTS[rng.randrange(len(CHURN_VARIANTS))]
        if variant == "isolate":
            # The leader cut off before brings its stale entries back, and the
            # new one is cut off synchronously, before its first Ready: its
            # no-op (and whatever it appends next) stays in its own log.
            self._churn_rejoin()
            self._churn_returned.discard(leader)
            others = [n for n in cluster.node_ids if n != leader]
            for other in others:
                cluster.network.block_both(leader, other)
            self._churn_isolated = (leader, others)
            self._trace("churn-isolate", target=leader, term=term)
            self.counts["churn-isolate"] += 1
            return
        # Crash within a few round trips: after its first appends were
        # acknowledged (one round trip and an fsync), before all of them were.
        net = cluster.network.params
        fsync = cluster.params
        lo = 2 * net.latency_us + fsync.fsync_min_us
        hi = 6 * (net.latency_us + net.jitter_us) + 2 * fsync.fsync_max_us
        cluster.clock.call_later(lo + rng.randrange(hi - lo + 1), self._churn_crash, leader, term)

    def _churn_rejoin(self) -> None:
        """Reconnect the leader churn cut off, if any."""
        if self._churn_isolated is None:
            return
        node, others = self._churn_isolated
        self._churn_isolated = None
        self._churn_returned.add(node)
        for other in others:
            self._cluster.network.unblock_both(node, other)
        self._trace("churn-rejoin", target=node)

    def _churn_crash(self, leader: NodeId, term: int) -> None:
        cluster = self._cluster
        raw = cluster.nodes[leader].raw
        if raw is None or raw.term != term:
            return
        # The leader cut off earlier comes back as this one goes down.
        self._churn_returned.discard(leader)
        self._churn_rejoin()
        down = len(cluster.node_ids) - len(cluster.up_nodes())
        if down >= (len(cluster.node_ids) - 1) // 2:
            self.counts["crash-skipped"] += 1
            return
        self._trace("crash", variant="new-leader", target=leader)
        self._crash(leader)
        self.counts["crash"] += 1
        restart_after = seconds(0.2) + self._rng.randrange(seconds(1.5))
        cluster.clock.call_later(restart_after, self._churn_restart, leader)

    def _churn_restart(self, node: NodeId) -> None:
        self._trace("restart", target=node)
        self._cluster.restart(node)

    def _heal(self, w: FaultWindow) -> None:
        cluster = self._cluster
        net = cluster.network
        if w.kind == "partition":
            net.heal()
            self._trace("heal-partition")
        elif w.kind == "crash":
            target = self._crashed.pop(w.lane, None)
            if target is not None:
                self._trace("restart", target=target)
                cluster.restart(target)
        elif w.kind == "churn":
            self._churn_open.discard(w.lane)
            if not self._churn_open:
                self._churn_rejoin()
            self._trace("heal-churn")
        elif w.kind == "hints":
            self._hint_windows.discard(w.lane)
            self._trace("heal-hints")
        else:
            field = {"loss": "drop", "dup": "duplicate", "reorder": "reorder"}[w.kind]
            net.update_params(**{field: getattr(self._base, field)})
            self._trace("heal-" + w.kind)

    # -- unreachable hints ----------------------------------------------------

    def _crash(self, target: NodeId) -> None:
        """Crash ``target``; with hints, tell every node still up, 1-60 ms from now,
        that it is gone (as a refused reconnect tells a real node)."""
        cluster = self._cluster
        cluster.crash(target)
        rng = self._hints_rng
        if rng is None:
            return
        for nid in cluster.up_nodes():
            delay = 1_000 + rng.randrange(59_000)
            gen = cluster.nodes[nid].generation
            cluster.clock.call_later(delay, self._deliver_hint, nid, gen, target, "crash")

    def _false_hint_later(self, lane: int) -> None:
        rng = self._hints_rng
        if rng is not None:
            delay = 50_000 + rng.randrange(450_000)
            self._cluster.clock.call_later(delay, self._false_hint, lane)

    def _false_hint(self, lane: int) -> None:
        """While the lane's window is open: fool a random follower about its leader."""
        rng = self._hints_rng
        if lane not in self._hint_windows or rng is None:
            return
        cluster = self._cluster
        leader = cluster.leader()
        if leader is not None:
            followers = [n for n in cluster.up_nodes() if n != leader]
            if followers:
                nid = followers[rng.randrange(len(followers))]
                self._deliver_hint(nid, cluster.nodes[nid].generation, leader, "false")
        self._false_hint_later(lane)

    def _deliver_hint(self, nid: NodeId, generation: int, peer: NodeId, why: str) -> None:
        cluster = self._cluster
        if cluster.nodes[nid].generation != generation:
            return  # crashed (and maybe restarted) since
        acted = cluster.report_unreachable(nid, peer)
        self._trace("hint", target=nid, peer=peer, why=why, acted=acted)
        self.counts[f"hint-{why}" + ("" if acted else "-ignored")] += 1

    def heal_all(self) -> None:
        """End every fault: heal the network, restore link parameters, restart nodes."""
        cluster = self._cluster
        self._churn_isolated = None
        cluster.network.heal()
        cluster.network.params = self._base
        for lane in sorted(self._crashed):
            cluster.restart(self._crashed[lane])
        self._crashed.clear()
        for nid in cluster.node_ids:
            cluster.restart(nid)
        self._trace("heal-all")
