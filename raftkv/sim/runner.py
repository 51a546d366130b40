"""One simulated run: build the world from a seed, run it, check it, summarise it.

Rule: :func:`run_simulation` is a pure function of its :class:`SimConfig` -- no
wall clock, no global RNG -- so a seed replays a run exactly, and
:func:`format_summary` is a pure function of the :class:`SimResult`, so two runs
of one seed print byte-identical summaries. Every RNG is a ``random.Random``
seeded from ``(seed, purpose)``, which keeps streams independent: adding a
client does not change the network's draws.
"""

from __future__ import annotations

import random
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from raftkv.core import NodeId, Raft, Role
from raftkv.history.linearizability import Operation, check_history
from raftkv.history.revhistory import RevOp
from raftkv.history.revisions import check_revisions
from raftkv.replica.kv import Command, KVStateMachine
from raftkv.replica.lessor import Lessor
from raftkv.replica.watch import WatchHub
from raftkv.sim.clock import Clock, seconds
from raftkv.sim.cluster import Cluster
from raftkv.sim.describe import describe_payload
from raftkv.sim.faults import FaultInjector, generate_schedule
from raftkv.sim.invariants import CHECKERS, Invariants, InvariantViolation, Violation
from raftkv.sim.leases import LeaseWorkload, check_leases
from raftkv.sim.network import LinkParams, Network
from raftkv.sim.node import ClusterParams
from raftkv.sim.operator import Operator
from raftkv.sim.trace import Tracer
from raftkv.sim.watches import WatchWorkload, check_watches
from raftkv.sim.workload import Workload


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Everything that determines a run.

    Attributes:
        seed: the seed every RNG derives from.
        nodes: cluster size (ids ``n1``..``nN``).
        duration: virtual seconds to simulate.
        faults: fault kinds to inject (see :data:`raftkv.sim.faults.FAULT_KINDS`).
        quiet: virtual seconds at the end with every fault healed.
        clients: simulated clients.
        keys: keys the clients use.
        client_timeout: seconds a client waits before recording ``info``.
        think_ms: mean pause between a client's operations.
        latency_us: fixed one-way network delay.
        jitter_us: mean exponential extra delay.
        tick_ms: time between two ticks of a node.
        election_tick: ``Config.election_tick``.
        heartbeat_tick: ``Config.heartbeat_tick``.
        pre_vote: ``Config.pre_vote``.
        check_quorum: ``Config.check_quorum``.
        fsync_min_us: shortest fsync.
        fsync_max_us: longest fsync.
        trace: record a trace and report its sha256.
        check_linearizability: check the client history at the end.
        resolve_unknown: before checking, settle operations the clients never
            heard back about from what the nodes applied (see
            :meth:`raftkv.sim.workload.Workload.finish`); otherwise they stay
            ``info``, which can make the check very slow.
        raft_class: the Raft implementation run on every node.
        max_entries_per_msg: ``Config.max_entries_per_msg``.
        max_inflight: ``Config.max_inflight``.
        reads: clients read through ReadIndex (leader or follower) instead of
            proposing their gets.
        retries: how often a client sends a timed-out write again under the
            same request id (the session makes it take effect at most once).
        snapshot_every: every node snapshots its state machine and compacts its
            log each time it has applied this many more entries (0: never).
        snapshot_chunk_size: bytes per InstallSnapshot chunk (small, so a
            transfer takes several chunks and exercises resumption).
        serial_storage: nodes handle one Ready at a time, each waiting for the
            last one's fsync (a server on a fast disk); otherwise asynchronous
            storage writes (a server on a slow disk).
        membership: a simulated operator adds learners, promotes them, removes
            voters (the leader too), replaces voters in one joint change and
            transfers leadership, while the faults go on
            (:mod:`raftkv.sim.operator`).
        operator_interval: mean virtual seconds between two operator actions.
        txn: clients also issue range reads (some at an older revision),
            transactions, delete-ranges and compactions, and the whole history
            is checked by its revisions (:mod:`raftkv.history.revisions`) besides
            the per-key check of the single-key operations.
        state_machine: makes each node's KV state machine from the run's shared
            decode cache (mutation tests plant a broken replica layer).
        cluster_class: the cluster driver (mutation tests plant a broken read path).
        watches: watchers on every node (``watchers`` of them) that disconnect,
            reconnect -- often to another node -- and resume, and a simulated
            operator compacting the history; checked by the watch checker
            (:mod:`raftkv.sim.watches`).
        leases: lease clients (``lease_clients``) that grant, attach keys, keep
            alive, stop renewing and revoke, every node's lessor on the virtual
            clock; checked by the lease checker (:mod:`raftkv.sim.leases`).
        watch_hub_class: the watch hub every node runs (mutation tests).
        lessor_class: the lessor every node runs (mutation tests).
    """

    seed: int
    nodes: int = 5
    duration: float = 30.0
    faults: frozenset[str] = frozenset()
    quiet: float = 5.0
    clients: int = 4
    keys: int = 4
    client_timeout: float = 1.5
    think_ms: float = 30.0
    latency_us: int = 500
    jitter_us: int = 300
    tick_ms: float = 100.0
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    fsync_min_us: int = 200
    fsync_max_us: int = 2_000
    trace: bool = False
    check_linearizability: bool = True
    resolve_unknown: bool = True
    raft_class: type[Raft] = Raft
    max_entries_per_msg: int = 256
    max_inflight: int = 256
    reads: bool = False
    retries: int = 0
    snapshot_every: int = 0
    snapshot_chunk_size: int = 256
    serial_storage: bool = False
    membership: bool = False
    operator_interval: float = 1.5
    txn: bool = False
    state_machine: Callable[[dict[bytes, Command]], KVStateMachine] | None = None
    cluster_class: type[Cluster] = Cluster
    watches: bool = False
    watchers: int = 5
    leases: bool = False
    lease_clients: int = 5
    watch_hub_class: type[WatchHub] = WatchHub
    lessor_class: type[Lessor] = Lessor

    def validate(self) -> None:
        """Raise ``ValueError`` on a configuration that cannot run."""
        if self.nodes < 1:
            raise ValueError("nodes must be at least 1")
        if self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.clients < 0 or self.keys < 1:
            raise ValueError("clients must be >= 0 and keys >= 1")
        if not 0 <= self.fsync_min_us <= self.fsync_max_us:
            raise ValueError("need 0 <= fsync_min_us <= fsync_max_us")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.operator_interval <= 0:
            raise ValueError("operator_interval must be positive")
        if self.snapshot_every < 0 or self.snapshot_chunk_size < 1:
            raise ValueError("need snapshot_every >= 0 and snapshot_chunk_size >= 1")
        if self.leases and self.txn:
            # The revision check models every write; lease grants, expiries and
            # revokes are not in its model yet.
            raise ValueError(
                "leases cannot be combined with txn (the revision check has no leases)"
            )


@dataclass(slots=True, kw_only=True)
class SimResult:
    """What a run did and whether it broke anything. Counters are plain ints/dicts."""

    config: SimConfig
    violation: Violation | None
    end_time_us: int
    events: int
    messages_sent: dict[str, int] = field(default_factory=dict)
    messages_delivered: dict[str, int] = field(default_factory=dict)
    messages_dropped: dict[str, int] = field(default_factory=dict)
    messages_duplicated: dict[str, int] = field(default_factory=dict)
    cluster: dict[str, int] = field(default_factory=dict)
    leaders_per_term: dict[int, str] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    clients: dict[str, int] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    commit_index: int = 0
    final_nodes: dict[str, str] = field(default_factory=dict)
    converged: bool = False
    history_size: int = 0
    history: tuple[Operation, ...] = ()
    """The single-key client history as checked (see ``SimConfig.resolve_unknown``)."""
    rev_history: tuple[RevOp, ...] = ()
    """With ``txn``: every operation, as the revision checker saw it."""
    txn_ops: dict[str, int] = field(default_factory=dict)
    """With ``txn``: answered operations by kind."""
    revisions: dict[str, int] = field(default_factory=dict)
    """With ``txn``: what the revision check covered."""
    watch_stats: dict[str, int] = field(default_factory=dict)
    """With ``watches``: what the watchers did and what the check covered."""
    lease_stats: dict[str, int] = field(default_factory=dict)
    """With ``leases``: what the lease clients and lessors did."""
    trace_sha256: str | None = None
    profile: str = "configured"
    """The timing/batching regime the run used (see :func:`draw_profile`)."""

    @property
    def deliveries(self) -> int:
        """Messages delivered, of every kind."""
        return sum(self.messages_delivered.values())

    @property
    def ok(self) -> bool:
        return self.violation is None


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Timing and batching of one run (after ``stress`` drew its variant)."""

    name: str
    tick_ms: float
    latency_us: int
    jitter_us: int
    max_entries_per_msg: int
    max_inflight: int


_STRESS_TIMINGS = (
    # name, tick_ms, latency_us, jitter_us
    ("tight", 10.0, 3_000, 3_000),
    ("slow-links", 20.0, 8_000, 6_000),
    ("fast", 5.0, 300, 200),
)
_STRESS_BATCHES = ((1, 1), (1, 256), (2, 4), (8, 2), (256, 1))


def draw_profile(config: SimConfig) -> Profile:
    """The run's timing and batching profile.

    Without ``stress`` it is the configured one. With it, each seed draws one
    of several regimes: ticks close to the network delay make elections
    collide (two candidates in one term), and tiny AppendEntries batches or
    windows split a new leader's catch-up into many round trips, opening the
    windows in which Figure 8-style bugs and commit-index bugs show. Half the
    seeds keep the configured timing so ordinary schedules stay covered.
    """
    base = Profile(
        name="configured",
        tick_ms=config.tick_ms,
        latency_us=config.latency_us,
        jitter_us=config.jitter_us,
        max_entries_per_msg=config.max_entries_per_msg,
        max_inflight=config.max_inflight,
    )
    if "stress" not in config.faults:
        return base
    rng = random.Random(f"{config.seed}/profile")
    name, tick_ms, latency_us, jitter_us = base.name, base.tick_ms, base.latency_us, base.jitter_us
    if rng.random() < 0.5:
        name, tick_ms, latency_us, jitter_us = rng.choice(_STRESS_TIMINGS)
    entries, inflight = rng.choice(_STRESS_BATCHES)
    return Profile(
        name=f"{name} entries/msg={entries} inflight={inflight}",
        tick_ms=tick_ms,
        latency_us=latency_us,
        jitter_us=jitter_us,
        max_entries_per_msg=entries,
        max_inflight=inflight,
    )


def node_ids(n: int) -> tuple[NodeId, ...]:
    """``("n1", ..., "nN")``."""
    return tuple(NodeId(f"n{i}") for i in range(1, n + 1))


def run_simulation(config: SimConfig, *, trace_sink: IO[str] | None = None) -> SimResult:
    """Run one simulation and check every property.

    Args:
        config: the run.
        trace_sink: a text file to write the JSONL trace to (implies tracing).

    Returns:
        The result; ``result.violation`` is the first broken property, if any.
    """
    config.validate()
    seed = config.seed
    ids = node_ids(config.nodes)
    profile = draw_profile(config)
    clock = Clock()
    tracer = Tracer(trace_sink) if (config.trace or trace_sink is not None) else None
    network = Network(
        clock,
        random.Random(f"{seed}/network"),
        LinkParams(latency_us=profile.latency_us, jitter_us=profile.jitter_us),
    )
    invariants = Invariants(ids, seed, lambda: clock.now)
    cluster = config.cluster_class(
        seed=seed,
        node_ids=ids,
        clock=clock,
        network=network,
        invariants=invariants,
        params=ClusterParams(
            tick_us=int(profile.tick_ms * 1000),
            election_tick=config.election_tick,
            heartbeat_tick=config.heartbeat_tick,
            pre_vote=config.pre_vote,
            check_quorum=config.check_quorum,
            fsync_min_us=config.fsync_min_us,
            fsync_max_us=config.fsync_max_us,
            max_entries_per_msg=profile.max_entries_per_msg,
            max_inflight=profile.max_inflight,
            snapshot_every=config.snapshot_every,
            snapshot_chunk_size=config.snapshot_chunk_size,
            bootstrap_in_log=config.membership,
            watches=config.watches,
            leases=config.leases,
            # Often (half an election timeout), so that leader changes meet
            # checkpointed remaining times of every size.
            lease_checkpoint_ms=max(1, config.election_tick * int(profile.tick_ms) // 2),
            serial_storage=config.serial_storage,
        ),
        raft_class=config.raft_class,
        tracer=tracer,
        state_machine=config.state_machine,
        watch_hub_class=config.watch_hub_class,
        lessor_class=config.lessor_class,
    )
    end = seconds(config.duration)
    faults_end = max(0, end - seconds(min(config.quiet, config.duration / 2)))
    fault_rng = random.Random(f"{seed}/faults")
    schedule = generate_schedule(fault_rng, config.faults, config.nodes, faults_end)
    hints_rng = random.Random(f"{seed}/hints") if "hints" in config.faults else None
    injector = FaultInjector(cluster, fault_rng, schedule, faults_end, tracer, hints_rng)
    workload = Workload(
        clock=clock,
        network=network,
        rng=random.Random(f"{seed}/workload"),
        node_ids=ids,
        clients=config.clients,
        keys=config.keys,
        timeout_us=seconds(config.client_timeout),
        think_us=int(config.think_ms * 1000),
        stop_at=max(0, end - seconds(config.client_timeout)),
        reads=config.reads,
        retries=config.retries,
        txn=config.txn,
    )
    election_us = config.election_tick * int(profile.tick_ms * 1000)
    watchers: WatchWorkload | None = None
    if config.watches:
        watchers = WatchWorkload(
            clock=clock,
            network=network,
            rng=random.Random(f"{seed}/watchers"),
            node_ids=ids,
            watchers=config.watchers,
            stop_at=max(0, end - seconds(config.client_timeout)),
        )
    leasing: LeaseWorkload | None = None
    if config.leases or config.watches:
        log = cluster.revision_log
        leasing = LeaseWorkload(
            clock=clock,
            network=network,
            rng=random.Random(f"{seed}/leases"),
            node_ids=ids,
            clients=config.lease_clients if config.leases else 0,
            min_ttl_s=max(1, -(-3 * election_us // 2_000_000)),
            timeout_us=seconds(config.client_timeout),
            stop_at=max(0, end - seconds(config.client_timeout)),
            # With txn the clients compact (and the revision check must know of
            # every compaction), so the operator does not.
            compactor=(
                (lambda: max(log.events, default=1)) if config.watches and not config.txn else None
            ),
        )
    changed = [workload.set_nodes]
    if watchers is not None:
        changed.append(watchers.set_nodes)
    if leasing is not None:
        changed.append(leasing.set_nodes)

    def nodes_changed(node_ids: tuple[NodeId, ...]) -> None:
        for fn in changed:
            fn(node_ids)

    cluster.on_nodes_changed = nodes_changed
    operator: Operator | None = None
    if config.membership:
        operator = Operator(
            cluster,
            random.Random(f"{seed}/operator"),
            interval_us=seconds(config.operator_interval),
            stop_at=faults_end,
            tracer=tracer,
        )
    if tracer is not None:
        results = config.txn
        network.on_deliver = lambda src, dst, kind, payload: tracer.emit(
            clock.now, "deliver", dst, src=src, msg=describe_payload(payload, results=results)
        )

    violation: Violation | None = None
    events = 0
    try:
        cluster.start()
        injector.install()
        workload.start()
        if watchers is not None:
            watchers.start()
        if leasing is not None:
            leasing.start()
        if operator is not None:
            operator.start()
        events = clock.run_until(end)
    except InvariantViolation as exc:
        violation = exc.violation
    except Exception as exc:  # a crash in the core or driver is a finding too
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        violation = Violation(
            checker="exception",
            time=clock.now,
            message=f"{type(exc).__name__}: {exc}\n" + "".join(tb[-6:]),
            seed=seed,
        )

    if config.resolve_unknown:
        applied = cluster.first_applied
        history = workload.finish(
            lambda client_id, request_id: applied.get((client_id, request_id))
        )
    else:
        history = workload.finish()
    verdicts: dict[str, str] = {}
    for name in CHECKERS:
        verdicts[name] = "ok"
    if violation is None and config.check_linearizability:
        lin = check_history(history)
        if lin.ok is False:
            violation = Violation(
                checker="linearizability", time=clock.now, message=lin.describe(), seed=seed
            )
        elif lin.ok is None:
            verdicts["linearizability"] = "undecided"
    elif not config.check_linearizability:
        verdicts["linearizability"] = "skipped"
    elif violation is not None:
        verdicts["linearizability"] = "not run"
    revision_stats: dict[str, int] = {}
    if config.txn:
        verdicts["revisions"] = "not run"
        if violation is None:
            rev = check_revisions(workload.rev_history)
            revision_stats = {
                "revisions": rev.revisions,
                "writes": rev.writes,
                "observed": rev.observed,
                "unknown_placed": rev.unknown_placed,
            }
            verdicts["revisions"] = {True: "ok", None: "undecided", False: "VIOLATED"}[rev.ok]
            if rev.ok is False:
                violation = Violation(
                    checker="revisions", time=clock.now, message=rev.describe(), seed=seed
                )
    watch_stats: dict[str, int] = {}
    if watchers is not None:
        verdicts["watch"] = "not run"
        watch_stats = dict(watchers.stats)
        if violation is None:
            wc = check_watches(cluster.revision_log, watchers.records())
            watch_stats["checked_events"] = wc.events
            watch_stats["checked_progress"] = wc.progress
            verdicts["watch"] = "ok" if wc.ok else "VIOLATED"
            if not wc.ok:
                violation = Violation(
                    checker="watch", time=clock.now, message=wc.message, seed=seed
                )
    lease_stats: dict[str, int] = {}
    if config.leases and leasing is not None:
        verdicts["lease"] = "not run"
        lease_stats = dict(leasing.stats)
        if violation is None:
            lc = check_leases(
                cluster.lease_log, cluster.revision_log, leasing.records, extend_us=election_us
            )
            lease_stats["expiries"] = lc.expiries
            lease_stats["renewals_checked"] = lc.renewals
            verdicts["lease"] = "ok" if lc.ok else "VIOLATED"
            if not lc.ok:
                violation = Violation(
                    checker="lease", time=clock.now, message=lc.message, seed=seed
                )
    if violation is not None:
        verdicts[violation.checker] = "VIOLATED"

    if tracer is not None:
        if violation is not None:
            tracer.emit(
                clock.now, "violation", None, checker=violation.checker, message=violation.message
            )
        tracer.emit(clock.now, "end", None)

    final: dict[str, str] = {}
    commits: set[int] = set()
    leaders: list[str] = []
    for nid in cluster.node_ids:
        node = cluster.nodes[nid]
        raw = node.raw
        if raw is None:
            final[nid] = "down"
            continue
        commits.add(raw.commit_index)
        if raw.role is Role.LEADER:
            leaders.append(nid)
        final[nid] = (
            f"{raw.role.value} term={raw.term} commit={raw.commit_index} "
            f"applied={node.replica.applied_index} last={raw.last_index}"
        )
    converged = (
        violation is None
        and len(leaders) == 1
        and len(commits) == 1
        and "down" not in final.values()
    )

    stats: Counter[str] = Counter(cluster.stats)
    if workload.retried:
        stats["client_retries"] = workload.retried
    for nid in sorted(cluster.nodes):
        d = cluster.nodes[nid].disk
        stats["disk_writes"] += d.writes
        stats["lost_writes"] += d.lost_writes
    return SimResult(
        profile=profile.name,
        config=config,
        violation=violation,
        end_time_us=clock.now,
        events=events,
        messages_sent=dict(network.sent),
        messages_delivered=dict(network.delivered),
        messages_dropped=dict(network.dropped),
        messages_duplicated=dict(network.duplicated),
        cluster=dict(stats),
        leaders_per_term=dict(invariants.leaders),
        faults=dict(injector.counts),
        clients=dict(workload.status) | {"resolved-" + k: v for k, v in workload.resolved.items()},
        checks={k: n for k, n in invariants.checks.items() if n},
        verdicts=verdicts,
        commit_index=invariants.committed_index,
        final_nodes=final,
        converged=converged,
        history_size=len(history),
        history=tuple(history),
        rev_history=tuple(workload.rev_history),
        txn_ops=dict(workload.kinds),
        revisions=revision_stats,
        watch_stats=watch_stats,
        lease_stats=lease_stats,
        trace_sha256=tracer.sha256() if tracer is not None else None,
    )


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={d[k]}" for k in sorted(d)) or "-"


def _row(label: str, text: str) -> str:
    return f"  {label:<18}{text}"


def format_summary(result: SimResult, *, wall_seconds: float | None = None) -> str:
    """A human-readable, deterministic report of ``result``.

    Args:
        result: the run.
        wall_seconds: if given, add wall-clock figures (then the text is no
            longer reproducible).
    """
    c = result.config
    cl = result.cluster
    cs = result.clients
    faults = ",".join(sorted(c.faults)) or "none"
    lines = [
        f"raftkv sim seed={c.seed} nodes={c.nodes} time={c.duration:g}s faults={faults} "
        f"clients={c.clients} keys={c.keys}"
        + (" membership" if c.membership else "")
        + (f" snapshots={c.snapshot_every}" if c.snapshot_every else "")
        + (f" reads retries={c.retries}" if c.reads else "")
        + (f" retries={c.retries}" if c.retries and not c.reads else "")
        + (" txn" if c.txn else "")
        + (" watches" if c.watches else "")
        + (" leases" if c.leases else "")
        + (" serial-storage" if c.serial_storage else ""),
        _row("virtual time", f"{result.end_time_us / 1e6:.3f}s, {result.events} events"),
        _row("profile", result.profile),
        _row(
            "elections",
            f"pre-campaigns={cl.get('pre_campaigns', 0)} "
            f"started={cl.get('elections_started', 0)} won={cl.get('elections_won', 0)} "
            f"terms-with-leader={len(result.leaders_per_term)}",
        ),
    ]
    if result.leaders_per_term:
        terms = sorted(result.leaders_per_term)
        shown = " ".join(f"{t}:{result.leaders_per_term[t]}" for t in terms[-8:])
        lines.append(_row("leaders by term", ("... " if len(terms) > 8 else "") + shown))
    lines.append(
        _row(
            "log",
            f"committed={result.commit_index} applied={cl.get('applied', 0)} "
            f"proposals={cl.get('proposals', 0)} fsyncs={cl.get('fsyncs', 0)} "
            f"disk-writes={cl.get('disk_writes', 0)} lost-writes={cl.get('lost_writes', 0)}",
        )
    )
    lines.append(
        _row(
            "faults",
            f"{_counts(result.faults)}; crashes={cl.get('crashes', 0)} "
            f"restarts={cl.get('restarts', 0)}",
        )
    )
    if c.membership:
        lines.append(
            _row(
                "membership",
                f"changes-applied={cl.get('conf_changes_applied', 0)} "
                f"nodes-added={cl.get('nodes_added', 0)} retired={cl.get('nodes_retired', 0)}; "
                "operator: "
                + (
                    ", ".join(
                        f"{k[len('operator_') :].replace('_', '-')}={cl[k]}"
                        for k in sorted(cl)
                        if k.startswith("operator_")
                    )
                    or "-"
                ),
            )
        )
    if c.snapshot_every:
        lines.append(
            _row(
                "snapshots",
                f"taken={cl.get('snapshots_taken', 0)} "
                f"installed={cl.get('snapshots_installed', 0)}",
            )
        )
    if c.reads or c.retries:
        lines.append(
            _row(
                "reads",
                f"read-index={cl.get('read_index', 0)} served={cl.get('reads_served', 0)} "
                f"write-retries={cl.get('client_retries', 0)}",
            )
        )
    for label, counts in (
        ("messages sent", result.messages_sent),
        ("delivered", result.messages_delivered),
        ("dropped", result.messages_dropped),
        ("duplicated", result.messages_duplicated),
    ):
        lines.append(_row(label, f"{sum(counts.values())}: {_counts(counts)}"))
    size = len(result.rev_history) if c.txn else result.history_size
    lines.append(
        _row(
            "client ops",
            f"{size}: ok={cs.get('ok', 0)} fail={cs.get('fail', 0)} "
            f"info={cs.get('info', 0)} (info resolved: applied={cs.get('resolved-applied', 0)} "
            f"never-applied={cs.get('resolved-never-applied', 0)})",
        )
    )
    if c.txn:
        t = result.txn_ops
        lines.append(
            _row(
                "multi-key ops",
                f"ranges={t.get('range', 0)} (refused={t.get('range-refused', 0)}) "
                f"txns={t.get('txn', 0)} (failed={t.get('txn-failed', 0)} "
                f"read-only={t.get('txn-read-only', 0)}) "
                f"delete-ranges={t.get('delete_range', 0)} "
                f"compactions={t.get('compact', 0)} (refused={t.get('compact-refused', 0)})",
            )
        )
        if result.revisions:
            r = result.revisions
            lines.append(
                _row(
                    "revisions",
                    f"replayed={r['revisions']} writes={r['writes']} "
                    f"answers-checked={r['observed']} unknown-placed={r['unknown_placed']}",
                )
            )
    if c.watches:
        ws = result.watch_stats
        lines.append(
            _row(
                "watches",
                f"streams={ws.get('streams', 0)} events={ws.get('events', 0)} "
                f"progress={ws.get('progress', 0)} compacted={ws.get('compacted', 0)} "
                f"no-leader={ws.get('canceled-no leader', 0)} gaps={ws.get('ended-gap', 0)} "
                f"silences={ws.get('ended-silence', 0)} hang-ups={ws.get('ended-hang-up', 0)} "
                f"checked-events={ws.get('checked_events', 0)}",
            )
        )
    if c.leases:
        le = result.lease_stats
        lines.append(
            _row(
                "leases",
                f"granted={le.get('granted', 0)} keepalives={le.get('keepalives', 0)} "
                f"revoked={le.get('revoked', 0)} abandoned={le.get('abandoned', 0)} "
                f"lost={le.get('lost', 0)} expiries={cl.get('lease_expiries', 0)} "
                f"checkpoints={cl.get('lease_checkpoints', 0)} "
                f"promotions={cl.get('lessor_promotions', 0)}",
            )
        )
    for n, state in result.final_nodes.items():
        lines.append(_row("final " + n, state))
    lines.append(_row("converged", "yes" if result.converged else "no"))
    lines.append(_row("checks", ", ".join(f"{k}={result.checks.get(k, 0)}" for k in CHECKERS[:-1])))
    lines.append(_row("verdicts", ", ".join(f"{k}={v}" for k, v in result.verdicts.items())))
    if result.trace_sha256 is not None:
        lines.append(_row("trace sha256", result.trace_sha256))
    if wall_seconds is not None:
        w = wall_seconds if wall_seconds > 0 else 1e-9
        lines.append(
            _row(
                "wall clock",
                f"{wall_seconds:.3f}s, {result.deliveries / w:,.0f} deliveries/s, "
                f"{result.events / w:,.0f} events/s, "
                f"x{result.end_time_us / 1e6 / w:.1f} faster than real time",
            )
        )
    if result.violation is not None:
        lines.append(result.violation.describe())
    else:
        lines.append(_row("result", "OK: no violations"))
    return "\n".join(lines)
