"""One fault-test run, start to verdict: hosts, nodes, clients, nemesis, heal, check.

Rule: whatever happens -- a violation, an exception, Ctrl-C or SIGTERM -- the
run ends with every node process gone and every namespace, bridge and
firewall rule removed. The async body cleans up in ``finally``; the
synchronous wrapper :func:`run_jepsen` repeats the cleanup without an event
loop in case the loop itself was torn down.

Phases: set up the network and start the nodes; run the clients and the
nemesis for ``time`` seconds; heal everything; keep the clients running for
``recovery`` seconds; stop them; read every key on every node; stop the nodes
gracefully; read their logs; analyze (:mod:`raftkv.jepsen.analysis`); write
the results directory::

    RESULTS/<date>-n<N>-seed<S>/
      summary.txt     what was printed, ending with the verdict line
      verdict.json    every count and every problem found
      history.jsonl   the per-key checker's input (raftkv.history.linearizability format)
      revisions.jsonl the revision checker's input (raftkv.history.revhistory format)
      ops.jsonl       every operation with its attempts, nodes and settlement
      watches.jsonl   (--watches) what each watcher received
      leases.jsonl    (--leases) every lease request
      schedule.json   the fault schedule drawn from the seed
      faults.jsonl    the faults as applied (wall-clock offsets, targets)
      logs/nK.log     each node's output, with the harness's markers
      data/nK/        the data dirs (kept on failure or with --keep-data)

Nodes ``n1..nN`` start on hosts ``h1..hN``; a node the nemesis replaces gets a
new id (``n(N+1)``, ...) on the same host. Every id that ran is checked: its
log (if its data survived), its answers in the history; ``verdict.json``
lists each id's host under ``nodes``.

The verdict line is the last line printed::

    linearizable=true durable=true exactly-once=true revisions=true [watch=true] [lease=true]
        ops=... ok=... info=... fail=... faults=... seed=... nodes=... net=...     (one line)

With ``watches`` the watchers (:mod:`~raftkv.jepsen.watchers`) run beside the
clients and, once the clients stop, until they have reached the store's
revision; with ``leases`` the lease clients (:mod:`~raftkv.jepsen.leasing`)
stop with the clients. Both are checked by :mod:`~raftkv.jepsen.feeds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raftkv.core.types import NodeId
from raftkv.history.linearizability import FAIL, INFO, OK, write_history
from raftkv.history.revhistory import write_rev_history
from raftkv.jepsen.analysis import NodeLog, Verdict, analyze, read_node_log, revision_history
from raftkv.jepsen.feeds import (
    FeedVerdict,
    acknowledged_writes,
    check_lease_feeds,
    check_watch_feeds,
)
from raftkv.jepsen.leasing import LeaseClients, LeaseClientsConfig, wall_us
from raftkv.jepsen.nemesis import FAULT_KINDS, Nemesis, make_schedule
from raftkv.jepsen.net import HostId, Network, choose_network
from raftkv.jepsen.nodes import Cluster
from raftkv.jepsen.watchers import Watchers, WatchersConfig
from raftkv.jepsen.workload import SINGLE_KEY_KINDS, Workload, WorkloadConfig, listing_of
from raftkv.server.node.leases import min_ttl_s

__all__ = ["JepsenConfig", "JepsenResult", "run_jepsen"]

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_UNDECIDED = 2
EXIT_INTERRUPTED = 130
WATCH_PROGRESS_S = 0.5
"""The nodes' ``--watch-progress-interval-s`` with watchers: a stream that
says nothing for 5 of these is given up (:mod:`raftkv.jepsen.watchers`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JepsenConfig:
    """Options of one run (``raftkv jepsen --help`` explains each)."""

    seed: int
    nodes: int = 3
    time: float = 60.0
    recovery: float = 5.0
    faults: tuple[str, ...] = FAULT_KINDS
    clients: int = 10
    keys: int = 4
    key_period: float = 15.0
    net: str = "auto"
    results: Path = Path("results/jepsen")
    heartbeat_ms: int = 50
    election_ms: int = 500
    attempt_timeout: float = 1.5
    op_timeout: float = 5.0
    stale_reads: bool = False
    fsync: bool = True
    keep_data: bool = False
    max_steps: int = 2_000_000
    txn: bool | None = None
    """Multi-key operations too: ``None`` when the nodes answer range reads."""
    watches: bool = False
    """Watchers on every node (:mod:`raftkv.jepsen.watchers`)."""
    watchers: int = 0
    """How many (0: two per node)."""
    leases: bool = False
    """Lease clients (:mod:`raftkv.jepsen.leasing`)."""
    lease_clients: int = 4

    def replay_command(self) -> str:
        parts = [
            "raftkv jepsen",
            f"--seed {self.seed}",
            f"--nodes {self.nodes}",
            f"--time {self.time:g}",
            f"--faults {','.join(self.faults) or 'none'}",
            f"--clients {self.clients}",
            f"--keys {self.keys}",
            f"--net {self.net}",
        ]
        if self.stale_reads:
            parts.append("--unsafe-stale-reads")
        if not self.fsync:
            parts.append("--no-fsync")
        if self.txn is not None:
            parts.append("--txn" if self.txn else "--no-txn")
        if self.watches:
            parts.append("--watches")
        if self.leases:
            parts.append("--leases")
        return " ".join(parts)


@dataclass(slots=True)
class JepsenResult:
    """The outcome of :func:`run_jepsen`."""

    exit_code: int
    summary: str
    out_dir: Path
    verdict: Verdict | None = None
    counts: dict[str, int] = field(default_factory=dict)
    faults_applied: int = 0
    fault_kinds: dict[str, int] = field(default_factory=dict)
    net: str = ""
    slot: int | None = None
    """The network slot the run used (names and subnet carry it)."""
    duration_s: float = 0.0
    error: str | None = None


def _out_dir(config: JepsenConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = config.results / f"{stamp}-n{config.nodes}-seed{config.seed}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    path.mkdir(parents=True)
    return path


class _Run:
    def __init__(self, config: JepsenConfig, out: Callable[[str], None]) -> None:
        self.config = config
        self._print = out
        self.out_dir = _out_dir(config)
        self.lines: list[str] = []
        self.t_start = time.monotonic()
        self.wall0_us = wall_us()
        """The wall clock at ``t_start`` (lease times count from it)."""
        self.net: Network | None = None
        self.cluster: Cluster | None = None
        self.result = JepsenResult(exit_code=EXIT_UNDECIDED, summary="", out_dir=self.out_dir)

    def clock(self) -> float:
        return time.monotonic() - self.t_start

    def say(self, line: str) -> None:
        self.lines.append(line)
        self._print(line)

    async def main(self) -> JepsenResult:
        try:
            return await self._main()
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        if self.cluster is not None:
            self.cluster.kill_all()
            await self.cluster.close()
        if self.net is not None:
            await self.net.teardown()

    async def _main(self) -> JepsenResult:
        cfg = self.config
        hosts = [HostId(f"h{i}") for i in range(1, cfg.nodes + 1)]
        self.say(
            f"raftkv jepsen seed={cfg.seed} nodes={cfg.nodes} time={cfg.time:g}s "
            f"recovery={cfg.recovery:g}s faults={','.join(cfg.faults) or 'none'} "
            f"clients={cfg.clients} keys={cfg.keys}"
            + (" UNSAFE-STALE-READS" if cfg.stale_reads else "")
            + ("" if cfg.fsync else " NO-FSYNC")
        )
        self.say(f"  results    {self.out_dir}")
        self.net = net = choose_network(cfg.net)
        await net.setup(hosts)
        self.result.net = net.kind
        self.result.slot = net.slot
        self.say(f"  network    {net.description}")
        self.cluster = cluster = Cluster(
            net,
            hosts,
            data_root=self.out_dir / "data",
            log_root=self.out_dir / "logs",
            heartbeat_ms=cfg.heartbeat_ms,
            election_ms=cfg.election_ms,
            fsync=cfg.fsync,
            clock=self.clock,
            watch_progress_s=WATCH_PROGRESS_S if cfg.watches else None,
        )
        for node_id in cluster.node_ids:
            cluster.start(node_id)
        leader = await cluster.wait_leader(timeout=30.0)
        if leader is None:
            raise RuntimeError("no leader elected within 30 s of starting the nodes")
        self.say(f"  started    {cfg.nodes} nodes, leader {leader} after {self.clock():.1f}s")

        schedule = make_schedule(cfg.seed, hosts, cfg.time, cfg.faults, election_ms=cfg.election_ms)
        (self.out_dir / "schedule.json").write_text(
            json.dumps([f.to_json() for f in schedule], indent=1) + "\n"
        )
        self.say(f"  schedule   {len(schedule)} faults drawn from seed {cfg.seed}")
        txn = cfg.txn
        if txn is None:
            code, body = await cluster.request("GET", leader, "/v1/kv?prefix=t/", timeout=5.0)
            txn = code == 200 and listing_of(body) is not None
            self.say(
                "  txn        "
                + ("on" if txn else "off: the nodes do not list GET /v1/kv?prefix= (--txn forces)")
            )
        workload = Workload(
            cluster,
            WorkloadConfig(
                seed=cfg.seed,
                clients=cfg.clients,
                keys=cfg.keys,
                key_period=cfg.key_period,
                attempt_timeout=cfg.attempt_timeout,
                op_timeout=cfg.op_timeout,
                stale_reads=cfg.stale_reads,
                txn=txn,
            ),
            self.clock,
        )
        nemesis = Nemesis(cluster, clock=self.clock, log=self.say, seed=cfg.seed)
        stop_clients = asyncio.Event()
        stop_watchers = asyncio.Event()
        watchers = leasers = None
        feeds: list[asyncio.Task[None]] = []
        if cfg.watches:
            watchers = Watchers(
                cluster,
                WatchersConfig(seed=cfg.seed, watchers=cfg.watchers or 2 * cfg.nodes),
                self.clock,
            )
            feeds.append(asyncio.create_task(watchers.run(stop_watchers)))
        if cfg.leases:
            leasers = LeaseClients(
                cluster,
                LeaseClientsConfig(
                    seed=cfg.seed,
                    clients=cfg.lease_clients,
                    min_ttl_s=min_ttl_s(cfg.election_ms),
                    attempt_timeout=cfg.attempt_timeout,
                    op_timeout=cfg.op_timeout,
                ),
                self.clock,
            )
            feeds.append(asyncio.create_task(leasers.run(stop_clients)))
        clients = asyncio.create_task(workload.run(stop_clients))
        progress = asyncio.create_task(self._progress(workload))
        try:
            t0 = self.clock()
            end = t0 + cfg.time
            await nemesis.run(schedule, t0, end)
            if self.clock() < end:
                await asyncio.sleep(end - self.clock())
            repairs = await nemesis.heal_all()
            self.say(
                f"  healed     at t={self.clock():.1f}s"
                + (f" (repaired: {'; '.join(repairs)})" if repairs else "")
            )
            await asyncio.sleep(cfg.recovery)
            converged = await cluster.wait_converged(cluster.node_ids, timeout=30.0)
            self.say(f"  converged  {'yes' if converged else 'NO'} at t={self.clock():.1f}s")
        finally:
            stop_clients.set()
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
            await clients
            if leasers is not None:
                await feeds[-1]
            target = 0
            if watchers is not None:
                target = await self._watchers_catch_up(watchers)
            stop_watchers.set()
            for task in feeds:
                await task
        unread = await workload.final_reads(cluster.live())
        finals = sum(1 for op in workload.ops if op.final and op.status == OK)
        self.say(
            f"  final      {finals} reads of {len(workload.keys_used)} keys on "
            f"{len(cluster.live())} nodes ({unread} unanswered)"
        )
        codes = await cluster.shutdown()
        self.say(f"  stopped    exit statuses {codes}")

        raw_counts = _counts(workload)
        gone = [n for n in cluster.all_ids if n not in cluster.node_ids]
        if gone:
            self.say(
                "  nodes      "
                + " ".join(f"{n}@{cluster.host_of[n]}" for n in cluster.node_ids)
                + f" (replaced: {', '.join(gone)})"
            )
        logs: dict[NodeId, NodeLog] = {}
        for node_id in cluster.all_ids:
            log = await asyncio.to_thread(read_node_log, node_id, cluster.data_dir(node_id))
            if log is not None:
                logs[node_id] = log
        t_check = time.monotonic()
        lease_sessions = [
            op.session for op in (leasers.ops if leasers else ()) if op.kind == "put" and op.session
        ]
        verdict = await asyncio.to_thread(
            functools.partial(
                analyze,
                workload.ops,
                logs,
                max_steps=cfg.max_steps,
                lease_sessions=lease_sessions,
            )
        )
        watch_v = lease_v = None
        if watchers is not None:
            acked = acknowledged_writes(workload.ops, leasers.ops if leasers else ())
            watch_v = check_watch_feeds(
                verdict.replay.history,
                watchers.records,
                acknowledged=acked,
                target=target,
                lasts=[w.last for w in watchers.watchers],
                errors=[e for w in watchers.watchers for e in w.errors],
            )
        if leasers is not None:
            lease_v = check_lease_feeds(
                verdict.replay, leasers.records, leasers.ops, origin_us=self.wall0_us
            )
        check_s = time.monotonic() - t_check
        self._write_files(workload, nemesis, verdict, lease_sessions)
        self._write_feeds(watchers, leasers)
        return self._finish(
            workload,
            nemesis,
            verdict,
            raw_counts,
            check_s,
            unread,
            watchers,
            watch_v,
            leasers,
            lease_v,
        )

    async def _watchers_catch_up(self, watchers: Watchers, timeout: float = 20.0) -> int:
        """The store's revision now; wait until every watcher has reached it."""
        assert self.cluster is not None
        target = 0
        leader = await self.cluster.leader()
        if leader is not None:
            code, body = await self.cluster.request(
                "GET", leader, "/v1/kv?prefix=t/&limit=1", timeout=5.0
            )
            if code == 200 and isinstance(body, dict) and isinstance(body.get("revision"), int):
                target = body["revision"]
        end = self.clock() + timeout
        while not watchers.caught_up(target) and self.clock() < end:
            await asyncio.sleep(0.1)
        behind = sum(1 for w in watchers.watchers if w.last < target)
        self.say(
            f"  watchers   {'caught up' if not behind else f'{behind} behind'} with revision "
            f"{target} at t={self.clock():.1f}s"
        )
        return target

    def _write_feeds(self, watchers: Watchers | None, leasers: LeaseClients | None) -> None:
        out = self.out_dir
        if watchers is not None:
            with open(out / "watches.jsonl", "w", encoding="utf-8") as f:
                for w in watchers.watchers:
                    r = w.record
                    f.write(
                        json.dumps(
                            {
                                "watcher": r.name,
                                "watch": f"{w.kind}={w.text}",
                                "prev_kv": r.prev_kv,
                                "start": r.start,
                                "last": w.last,
                                "missed": r.missed,
                                "progress": r.progress,
                                "stats": dict(w.stats),
                                "errors": w.errors,
                                "events": [
                                    [e.kv.mod_revision, e.kind, e.kv.key.decode("utf-8", "replace")]
                                    for e in r.got
                                ],
                            }
                        )
                        + "\n"
                    )
        if leasers is not None:
            with open(out / "leases.jsonl", "w", encoding="utf-8") as f:
                for op in leasers.ops:
                    f.write(json.dumps(asdict(op), sort_keys=True) + "\n")

    async def _progress(self, workload: Workload) -> None:
        while True:
            await asyncio.sleep(10.0)
            c = _counts(workload)
            self.say(
                f"  progress   t={self.clock():.0f}s ops={c['ops']} ok={c['ok']} "
                f"info={c['info']} fail={c['fail']}"
            )

    def _write_files(
        self, workload: Workload, nemesis: Nemesis, verdict: Verdict, lease_sessions: list[str]
    ) -> None:
        out = self.out_dir
        write_history(
            out / "history.jsonl",
            (op.to_operation() for op in workload.ops if op.kind in SINGLE_KEY_KINDS),
        )
        write_rev_history(
            out / "revisions.jsonl",
            revision_history(workload.ops, verdict.replay, lease_sessions),
        )
        with open(out / "ops.jsonl", "w", encoding="utf-8") as f:
            for op in workload.ops:
                f.write(json.dumps(op.to_json(), sort_keys=True) + "\n")
        with open(out / "faults.jsonl", "w", encoding="utf-8") as f:
            for applied in nemesis.applied:
                f.write(json.dumps(applied.to_json(), sort_keys=True) + "\n")

    def _finish(
        self,
        workload: Workload,
        nemesis: Nemesis,
        verdict: Verdict,
        raw: dict[str, int],
        check_s: float,
        unread: int,
        watchers: Watchers | None = None,
        watch_v: FeedVerdict | None = None,
        leasers: LeaseClients | None = None,
        lease_v: FeedVerdict | None = None,
    ) -> JepsenResult:
        cfg = self.config
        rp = verdict.replay
        kinds: dict[str, int] = {}
        for applied in nemesis.applied:
            name = f"{applied.fault.kind}/{applied.fault.shape}"
            kinds[name] = kinds.get(name, 0) + 1
        lin = {True: "true", False: "false", None: "unknown"}[verdict.linearizable]
        self.say(
            f"  faults     {len(nemesis.applied)} applied: "
            + (", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none")
            + f"; node starts={self.cluster.starts if self.cluster else 0}"
        )
        self.say(
            f"  ops        {raw['ops']}: ok={raw['ok']} info={raw['info']} fail={raw['fail']} "
            f"(writes retried={verdict.retried_writes}; info settled from the log: "
            f"applied={verdict.resolved_applied} never-applied={verdict.resolved_never})"
        )
        attempts = _attempt_counts(workload)
        self.say(
            f"  attempts   {attempts['total']} HTTP requests: answered={attempts['answered']} "
            f"unknown-outcome={attempts['unknown']} (timeouts, dropped connections, 5xx but 503) "
            f"unavailable={attempts['unavailable']} (503) refused={attempts['refused']}"
        )
        self.say(
            f"  log        commit={rp.commit_index} commands={rp.entries} (from {rp.reference}); "
            f"idempotency keys executed once={verdict.sessions_executed}, "
            f"retries answered from the session cache={verdict.dedup_hits}"
        )
        check = verdict.check
        partitions = len(check.partitions) if check is not None else 0
        rev = verdict.revisions
        revs = {True: "true", False: "false", None: "unknown"}[verdict.revisions_ok]
        multi = _multi_counts(workload)
        self.say(
            f"  multi-key  ranges={multi['range']} txns={multi['txn']} "
            f"delete-ranges={multi['delete_range']} compactions={multi['compact']}; "
            f"revisions={revs} ({rev.revisions if rev else 0} revisions, "
            f"{rev.writes if rev else 0} writes, {rev.observed if rev else 0} answers checked)"
        )
        self.say(
            f"  checks     linearizable={lin} ({partitions} keys, {check_s:.1f}s) "
            f"durable={str(verdict.durable).lower()} (lost={len(verdict.lost)}) "
            f"exactly-once={str(verdict.exactly_once).lower()} "
            f"(duplicated={len(verdict.duplicated)}) revisions={revs} "
            f"log-agreement={str(not rp.disagreements).lower()} "
            f"answers-match-log={str(verdict.consistent).lower()}"
        )
        feeds_ok = True
        feed_words = ""
        if watch_v is not None and watchers is not None:
            c, st = watch_v.counts, watchers.stats()
            ended = ", ".join(
                f"{k.removeprefix('ended-').removeprefix('canceled-')}={v}"
                for k, v in sorted(st.items())
                if k.startswith(("ended-", "canceled-"))
            )
            found_once = not any(p.startswith("history:") for p in watch_v.problems)
            self.say(
                f"  watches    {c['watchers']} watchers: events={c['events']} (checked "
                f"{c['checked']}) progress={c['progress']} missed-to-compaction={c['missed']} "
                f"streams={st['streams']} (ended: {ended or 'none'}); history: "
                f"{c['revisions']} revisions, {c['acknowledged']} acknowledged writes each "
                f"found once={str(found_once).lower()}"
            )
            feeds_ok = feeds_ok and bool(watch_v.ok)
            feed_words += f" watch={str(watch_v.ok).lower()}"
        if lease_v is not None and leasers is not None:
            c = lease_v.counts
            other = " ".join(f"{k}={v}" for k, v in c.items() if "-" in k)
            slack = c.get("min_slack_ms")
            self.say(
                f"  leases     {c['leases']} granted, {c['renewals']} grants and keep-alives "
                f"confirmed; in the log {c['revokes']} ended ({c['expiries']} by expiry"
                + (f", the earliest {slack} ms after its TTL ran out" if slack is not None else "")
                + "); "
                f"requests: {other}"
            )
            feeds_ok = feeds_ok and bool(lease_v.ok)
            feed_words += f" lease={str(lease_v.ok).lower()}"
        problems = verdict.problems()
        for v in (watch_v, lease_v):
            if v is not None:
                problems.extend(v.problems[:20])
        for line in problems[:120]:
            self.say("  " + line)
        if len(problems) > 120:
            self.say(f"  ... {len(problems) - 120} more lines in problems.txt")
        if problems:
            full = verdict.problems(max_lines_per_key=None)
            (self.out_dir / "problems.txt").write_text("\n".join(full) + "\n")
        if workload.anomalies:
            self.say(f"  anomalies  {workload.anomalies[:5]}")
        if not feeds_ok:
            code = EXIT_VIOLATION
        elif verdict.ok:
            code = EXIT_OK
        elif (
            None in (verdict.linearizable, verdict.revisions_ok)
            and False not in (verdict.linearizable, verdict.revisions_ok)
            and verdict.durable
            and verdict.exactly_once
        ):
            code = EXIT_UNDECIDED if verdict.consistent else EXIT_VIOLATION
        else:
            code = EXIT_VIOLATION
        if code != EXIT_OK:
            self.say(f"  replay     {cfg.replay_command()}")
        elapsed = time.monotonic() - self.t_start
        self.say(f"  wall time  {elapsed:.1f}s")
        summary = (
            f"linearizable={lin} durable={str(verdict.durable).lower()} "
            f"exactly-once={str(verdict.exactly_once).lower()} revisions={revs}"
            f"{feed_words} ops={raw['ops']} ok={raw['ok']} "
            f"info={raw['info']} fail={raw['fail']} faults={len(nemesis.applied)} "
            f"seed={cfg.seed} nodes={cfg.nodes} net={self.result.net}"
        )
        self.say(summary)
        r = self.result
        r.exit_code, r.summary, r.verdict, r.counts = code, summary, verdict, raw
        r.faults_applied, r.fault_kinds, r.duration_s = len(nemesis.applied), kinds, elapsed
        verdict_json: dict[str, Any] = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "summary": summary,
            "exit_code": code,
            "linearizable": verdict.linearizable,
            "durable": verdict.durable,
            "exactly_once": verdict.exactly_once,
            "revisions": verdict.revisions_ok,
            "consistent": verdict.consistent,
            "watch": None if watch_v is None else watch_v.ok,
            "watch_counts": None if watch_v is None else watch_v.counts,
            "lease": None if lease_v is None else lease_v.ok,
            "lease_counts": None if lease_v is None else lease_v.counts,
            "multi_key": multi,
            "counts": raw,
            "attempts": attempts,
            "unanswered_final_reads": unread,
            "faults": kinds,
            "faults_applied": len(nemesis.applied),
            "net": self.result.net,
            "nodes": dict(self.cluster.host_of) if self.cluster else {},
            "commit_index": rp.commit_index,
            "log_commands": rp.entries,
            "dedup_hits": verdict.dedup_hits,
            "retried_writes": verdict.retried_writes,
            "resolved_applied": verdict.resolved_applied,
            "resolved_never": verdict.resolved_never,
            "problems": problems,
            "anomalies": workload.anomalies,
            "wall_time_s": round(elapsed, 1),
            "check_time_s": round(check_s, 1),
        }
        (self.out_dir / "verdict.json").write_text(json.dumps(verdict_json, indent=1) + "\n")
        (self.out_dir / "summary.txt").write_text("\n".join(self.lines) + "\n")
        if code == EXIT_OK and not cfg.keep_data:
            shutil.rmtree(self.out_dir / "data", ignore_errors=True)
        return r


def _attempt_counts(workload: Workload) -> dict[str, int]:
    """Per HTTP request: answered (2xx/4xx), 503, refused, or unknown outcome."""
    c = {"total": 0, "answered": 0, "unknown": 0, "unavailable": 0, "refused": 0}
    for op in workload.ops:
        for a in op.attempts:
            c["total"] += 1
            if a.status == 503:
                c["unavailable"] += 1
            elif a.error.startswith("refused"):
                c["refused"] += 1
            elif a.status == 0 or a.status >= 500:
                c["unknown"] += 1
            else:
                c["answered"] += 1
    return c


def _multi_counts(workload: Workload) -> dict[str, int]:
    """Answered multi-key operations by kind."""
    c = {"range": 0, "txn": 0, "delete_range": 0, "compact": 0}
    for op in workload.ops:
        if op.kind in c and op.status == OK:
            c[op.kind] += 1
    return c


def _counts(workload: Workload) -> dict[str, int]:
    """Counts as the clients saw them (before any settling from the log)."""
    counts = {"ops": 0, OK: 0, INFO: 0, FAIL: 0}
    for op in workload.ops:
        if op.pending:
            continue
        counts["ops"] += 1
        status = INFO if op.resolution else op.status
        counts[status] += 1
    return counts


def run_jepsen(config: JepsenConfig, out: Callable[[str], None] = print) -> JepsenResult:
    """Run one test and return its result; never leaves processes or namespaces behind.

    SIGTERM is turned into a cancellation, like Ctrl-C, so cleanup runs.
    """
    run = _Run(config, out)

    async def guarded() -> JepsenResult:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await run.main()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.say("  interrupted: nodes stopped, network removed")
        run.result.exit_code = EXIT_INTERRUPTED
        run.result.summary = f"interrupted seed={config.seed}"
        (run.out_dir / "summary.txt").write_text("\n".join(run.lines) + "\n")
        return run.result
    except Exception as exc:
        run.result.error = f"{type(exc).__name__}: {exc}"
        run.say(f"  error      {run.result.error}")
        run.result.exit_code = EXIT_UNDECIDED
        run.result.summary = f"error: {run.result.error} seed={config.seed}"
        (run.out_dir / "summary.txt").write_text("\n".join(run.lines) + "\n")
        return run.result
    finally:
        # Without a loop (the loop itself failed): kill what is left, remove the hosts.
        if run.cluster is not None:
            run.cluster.kill_all()
        if run.net is not None:
            with contextlib.suppress(Exception):
                asyncio.run(run.net.teardown())
        sys.stdout.flush()
