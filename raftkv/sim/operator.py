"""A simulated operator who changes the cluster's membership and moves its leadership.

Rule: the operator does only what an administrator of a real cluster can do,
through the leader's API: add a new, empty node as a learner; promote a learner
that has caught up; remove a voter (sometimes the leader itself); replace a
voter in one joint change (dissertation §4.3); transfer leadership (§3.10). A
request the leader refuses (another change pending, no entry of its term
committed yet, a transfer under way, no leader) is counted and tried again
later. Nodes join with fresh ids (``n6``, ``n7``, ...): an id is never reused,
so a wiped node can never vote twice in a term under an old name. A node that
applied its own removal is shut down by the cluster; one removed while down is
never restarted. Every choice comes from the operator's own RNG, so runs stay
deterministic.
"""

from __future__ import annotations

import random
from collections import Counter

from raftkv.core import (
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfChangeType,
    NodeId,
    NotLeader,
    ProposalDropped,
    RaftError,
    RawNode,
)
from raftkv.sim.clock import Micros
from raftkv.sim.cluster import Cluster
from raftkv.sim.trace import Tracer

ACTIONS = ("add-learner", "promote", "remove", "remove-leader", "replace", "transfer")
"""What the operator may do: drawn with equal weight among those that apply,
except that a pending learner is promoted first half of the time."""

MIN_VOTERS = 3
MAX_VOTERS = 7
ABANDON_AFTER_US: Micros = 3_000_000
"""How long a started node may wait to appear in the configuration."""


class Operator:
    """Acts every ``interval_us`` on average until ``stop_at``.

    Args:
        cluster: the cluster to operate.
        rng: the operator's own RNG.
        interval_us: mean time between two actions.
        stop_at: no action starts at or after this time.
        transfers_only: only move leadership, never change membership.
        tracer: optional trace sink.
    """

    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        *,
        interval_us: Micros,
        stop_at: Micros,
        transfers_only: bool = False,
        tracer: Tracer | None = None,
    ) -> None:
        self._cluster = cluster
        self._rng = rng
        self._interval_us = interval_us
        self._stop_at = stop_at
        self._transfers_only = transfers_only
        self._tracer = tracer
        self._next_id = len(cluster.founders) + 1
        # Started nodes not yet seen in the leader's configuration -> start time.
        self._joining: dict[NodeId, Micros] = {}
        self.counts: Counter[str] = Counter()
        """Actions proposed (by name) and refused (``refused-<name>``)."""

    def start(self) -> None:
        self._schedule()
        self._cluster.clock.call_at(self._stop_at + ABANDON_AFTER_US, self._abandon_orphans)

    def _schedule(self) -> None:
        clock = self._cluster.clock
        delay = self._interval_us // 2 + self._rng.randrange(self._interval_us)
        if clock.now + delay < self._stop_at:
            clock.call_later(delay, self._act)

    def _act(self) -> None:
        try:
            self._act_once()
        finally:
            self._schedule()

    def _act_once(self) -> None:
        cluster = self._cluster
        leader_id = cluster.leader()
        if leader_id is None:
            self.counts["no-leader"] += 1
            return
        raw = cluster.nodes[leader_id].raw
        assert raw is not None
        self._abandon_orphans()
        conf = raw.conf_state()
        if conf.voters_outgoing:
            self.counts["joint"] += 1  # the leader leaves it by itself
            return
        voters = sorted(conf.voters)
        learners = sorted(conf.learners)
        choices = ["transfer"] if len(voters) > 1 else []
        if not self._transfers_only:
            if len(voters) + len(learners) < MAX_VOTERS:
                choices.append("add-learner")
            if learners:
                choices.append("promote")
            if len(voters) > MIN_VOTERS:
                choices += ["remove", "remove-leader"]
            if 1 < len(voters) < MAX_VOTERS:  # another voter to replace
                choices.append("replace")
        if not choices:
            return
        rng = self._rng
        if learners and not self._transfers_only and rng.random() < 0.5:
            # A learner is added to become a voter: promote it soon.
            action = "promote"
        else:
            action = choices[rng.randrange(len(choices))]
        try:
            if action == "transfer":
                target = rng.choice([v for v in voters if v != leader_id])
                raw.transfer_leadership(target)
                self._done(action, target=target)
            elif action == "add-learner":
                new = self._new_id()
                self._propose(raw, action, [ConfChangeSingle(ConfChangeType.ADD_LEARNER, new)])
                self._start_node(new)
            elif action == "promote":
                # Only a learner that has caught up: promoting one far behind
                # would stall commits until it catches up.
                progress = raw.status().progress
                ready = [
                    n
                    for n in learners
                    if n in progress and progress[n].match >= raw.commit_index - 5
                ]
                if not ready:
                    self.counts["refused-promote"] += 1
                    return
                target = rng.choice(ready)
                self._propose(raw, action, [ConfChangeSingle(ConfChangeType.ADD_VOTER, target)])
            elif action in ("remove", "remove-leader"):
                target = (
                    leader_id
                    if action == "remove-leader"
                    else rng.choice([v for v in voters if v != leader_id])
                )
                self._propose(raw, action, [ConfChangeSingle(ConfChangeType.REMOVE_NODE, target)])
            elif action == "replace":
                # Prefer replacing a voter that is down, as an operator would.
                down = [v for v in voters if v != leader_id and cluster.nodes[v].raw is None]
                old = rng.choice(down or [v for v in voters if v != leader_id])
                new = self._new_id()
                self._propose(
                    raw,
                    action,
                    [
                        ConfChangeSingle(ConfChangeType.ADD_VOTER, new),
                        ConfChangeSingle(ConfChangeType.REMOVE_NODE, old),
                    ],
                )
                self._start_node(new)
        except (NotLeader, ProposalDropped, ConfChangeError, RaftError) as exc:
            self.counts["refused-" + action] += 1
            if self._tracer is not None:
                self._tracer.emit(
                    cluster.clock.now, "operator", leader_id, action=action, refused=str(exc)
                )

    def _abandon_orphans(self) -> None:
        """Shut down started nodes whose addition never took effect.

        A proposal can be lost with the leader that took it. Once the leader
        has no configuration change in flight and still does not list a node
        started more than :data:`ABANDON_AFTER_US` ago, the operator gives up
        on it, as an administrator would.
        """
        cluster = self._cluster
        leader_id = cluster.leader()
        if leader_id is None or not self._joining:
            return
        raw = cluster.nodes[leader_id].raw
        assert raw is not None
        conf = raw.conf_state()
        members = {*conf.voters, *conf.learners, *conf.voters_outgoing, *conf.learners_next}
        in_flight = raw.pending_conf_index > raw.applied_index
        now = cluster.clock.now
        for nid, started in sorted(self._joining.items()):
            if nid in members:
                del self._joining[nid]
            elif not in_flight and now - started >= ABANDON_AFTER_US:
                del self._joining[nid]
                self.counts["abandoned"] += 1
                cluster.retire(nid)

    def _new_id(self) -> NodeId:
        """The next fresh node id (used or not, it is never offered again)."""
        nid = NodeId(f"n{self._next_id}")
        self._next_id += 1
        return nid

    def _start_node(self, nid: NodeId) -> None:
        """Start the empty node whose addition the leader just accepted."""
        self._cluster.add_node(nid)
        self._joining[nid] = self._cluster.clock.now

    def _propose(self, raw: RawNode, action: str, changes: list[ConfChangeSingle]) -> None:
        raw.propose_conf_change(ConfChange(changes=tuple(changes)))
        self._done(action, changes=[f"{c.type.value}:{c.node_id}" for c in changes])

    def _done(self, action: str, **details: object) -> None:
        self.counts[action] += 1
        self._cluster.stats["operator_" + action.replace("-", "_")] += 1
        if self._tracer is not None:
            leader = self._cluster.leader()
            self._tracer.emit(self._cluster.clock.now, "operator", leader, action=action, **details)
