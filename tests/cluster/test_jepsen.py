"""The Jepsen-style fault test (raftkv/jepsen): its checks on constructed histories, and real runs.

The constructed histories show that each check fails when it should: a lost
acknowledged write, a write executed twice, a read that disagrees with the log,
an answer that disagrees with the log, and the settling of unknown outcomes.
The real runs start ``raftkv serve`` processes in network namespaces (as root;
else on loopback behind proxies): one short run with every fault kind must pass,
a run whose clients read with ``?consistency=stale`` under partitions must be
reported non-linearizable, and an interrupted run must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from raftkv.core.types import Entry, EntryType, NodeId
from raftkv.history.linearizability import FAIL, INFO, OK
from raftkv.jepsen import (
    FAULT_KINDS,
    JepsenConfig,
    NodeLog,
    analyze,
    make_schedule,
    parse_faults,
    run_jepsen,
)
from raftkv.jepsen.net import netns_available, slot_names
from raftkv.jepsen.nodes import Cluster
from raftkv.jepsen.proxy import LinkProxy
from raftkv.jepsen.workload import (
    Attempt,
    OpRecord,
    Workload,
    WorkloadConfig,
    listing_of,
    range_path,
    refusal_of,
    txn_request,
)
from raftkv.replica.kv import (
    Cas,
    Command,
    Compare,
    DeleteRange,
    KeyRange,
    KVStateMachine,
    Listing,
    Put,
    Range,
    Session,
    Txn,
    TxnPut,
    TxnRange,
    encode_command,
)
from raftkv.replica.mvcc import CompactedError
from raftkv.server.kvjson import txn_parts
from raftkv.transport.codec import Hello, encode_control, encode_frame
from tests.cluster.harness import REPO_ROOT

HOSTS = ["h1", "h2", "h3"]

# --------------------------------------------------------------------------- schedules


def test_schedule_depends_only_on_the_seed() -> None:
    a = make_schedule(7, HOSTS, 60, FAULT_KINDS, election_ms=500)
    b = make_schedule(7, list(reversed(HOSTS)), 60, FAULT_KINDS, election_ms=500)
    c = make_schedule(8, HOSTS, 60, FAULT_KINDS, election_ms=500)
    assert [f.to_json() for f in a] == [f.to_json() for f in b]
    assert [f.to_json() for f in a] != [f.to_json() for f in c]
    assert a and all(f.at + f.duration <= 60 for f in a)
    assert all(x.at + x.duration < y.at for x, y in itertools.pairwise(a))


def test_schedule_draws_every_kind_and_shape_and_respects_the_selection() -> None:
    seen = set()
    for seed in range(40):
        for f in make_schedule(seed, HOSTS, 60, FAULT_KINDS, election_ms=500):
            seen.add((f.kind, f.shape))
            if f.kind == "pause":
                assert f.duration > 0.5  # longer than the election timeout
            if f.kind == "kill" and f.shape == "random":
                assert len(f.hosts) == 1  # a minority of three
            assert set(f.hosts) | {h for g in f.groups for h in g} <= set(HOSTS)
    assert {k for k, _ in seen} == set(FAULT_KINDS)
    shapes = {s for k, s in seen if k == "partition"}
    assert shapes == {"halves", "leader", "bridge", "one-way-in", "one-way-out"}
    only = make_schedule(3, HOSTS, 60, ("pause",), election_ms=500)
    assert only and {f.kind for f in only} == {"pause"}
    assert make_schedule(3, HOSTS, 60, (), election_ms=500) == []


def test_parse_faults() -> None:
    assert parse_faults("all") == FAULT_KINDS
    assert parse_faults("none") == ()
    assert parse_faults("pause, kill") == ("kill", "pause")
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("kill,meteor")


# --------------------------------------------------------------------------- hosts and ids


class _FakeNet:
    """Addresses per host, as a Network gives them; records placements."""

    kind = "fake"
    slot = 0
    description = ""

    def __init__(self) -> None:
        self.placed: dict[NodeId, str] = {}

    def place(self, node_id: NodeId, host: str) -> None:
        self.placed[node_id] = host

    def raft_listen(self, host: str) -> tuple[str, int]:
        return (f"10.0.0.{host[1:]}", 7000)

    def raft_advertised(self, host: str) -> tuple[str, int]:
        return (f"10.0.0.{host[1:]}", 7100)

    def api_addr(self, host: str) -> tuple[str, int]:
        return (f"10.0.0.{host[1:]}", 8000)

    def wrap(self, host: str, argv: list[str]) -> list[str]:
        return ["on", host, *argv]


def test_a_replaced_node_gets_a_new_id_on_the_same_host(tmp_path: Path) -> None:
    net = _FakeNet()
    c = Cluster(
        net,  # type: ignore[arg-type]
        list(HOSTS),
        data_root=tmp_path / "data",
        log_root=tmp_path / "logs",
        heartbeat_ms=50,
        election_ms=500,
    )
    assert c.node_ids == ["n1", "n2", "n3"] and net.placed == {"n1": "h1", "n2": "h2", "n3": "h3"}
    new = c.replace("h2")
    assert new == "n4" and c.node_on["h2"] == "n4" and net.placed["n4"] == "h2"
    assert c.node_ids == ["n1", "n4", "n3"] and c.all_ids == ["n1", "n2", "n3", "n4"]
    assert c.replace("h2") == "n5"  # ids are never reused, and follow the replacements
    assert c.replace("h1") == "n6" and c.node_ids == ["n6", "n5", "n3"]
    # An id's address is its host's, for every id that ever ran (in-flight requests).
    assert c.url(NodeId("n2")) == c.url(NodeId("n5")) == "http://10.0.0.2:8000"
    argv = c.command(NodeId("n5"), "existing")
    assert argv[:2] == ["on", "h2"]
    flags = dict(itertools.pairwise(argv))  # each flag -> the word after it
    assert flags["--id"] == "n5" and flags["--raft-addr"] == "10.0.0.2:7000"
    assert flags["--data-dir"] == str(tmp_path / "data" / "n5")
    assert flags["--initial-cluster"] == (
        "n3=10.0.0.3:7100/10.0.0.3:8000,n5=10.0.0.2:7100/10.0.0.2:8000,"
        "n6=10.0.0.1:7100/10.0.0.1:8000"
    )


def test_link_proxy_cuts_by_host_whatever_the_node_id(tmp_path: Path) -> None:
    """Loopback mode: the proxy names the sender from its handshake; a cut between
    hosts must also drop a node that replaced the one there when the run began."""

    async def main() -> None:
        received: list[bytes] = []

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read(1 << 16))
            writer.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        up_port = server.sockets[0].getsockname()[1]
        placed = {NodeId("n1"): "h1", NodeId("n4"): "h2"}
        proxy = LinkProxy("h3", ("127.0.0.1", 0), ("127.0.0.1", up_port), placed.get)
        await proxy.start()
        assert proxy._server is not None
        port = proxy._server.sockets[0].getsockname()[1]

        async def send(sender: str) -> bool:
            """Whether a connection from ``sender`` reaches the node behind the proxy."""
            hello = Hello(
                version=1, cluster_id="c", node_id=NodeId(sender), to=NodeId("n3"), nonce=bytes(32)
            )
            frame = encode_frame(encode_control(hello))
            before = len(received)
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(frame)
            await writer.drain()
            for _ in range(20):
                if len(received) > before:
                    break
                await asyncio.sleep(0.02)
            writer.close()
            return len(received) > before and received[-1].startswith(frame)

        try:
            assert await send("n4") and await send("n1")
            proxy.cut("h2")
            assert not await send("n4")  # n4 runs on h2
            assert await send("n1")
            proxy.heal()
            assert await send("n4")
        finally:
            await proxy.stop()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 20))


# --------------------------------------------------------------------------- analysis


class _Log:
    """Builds a committed log of KV commands, as a node's data dir would hold it."""

    def __init__(self) -> None:
        self.entries: list[Entry] = [Entry(1, 1, b"", EntryType.CONF_CHANGE)]

    def put(self, key: str, value: int, session: str, time_ms: int = 1000) -> int:
        client, seq = session.split("/")
        cmd = Put(
            key=key, value=value, time_ms=time_ms, session=Session(client_id=client, seq=int(seq))
        )
        return self._append(encode_command(cmd))

    def cas(self, key: str, expect: int, value: int, session: str) -> int:
        client, seq = session.split("/")
        cmd = Cas(
            key=key,
            expect=expect,
            value=value,
            time_ms=1000,
            session=Session(client_id=client, seq=int(seq)),
        )
        return self._append(encode_command(cmd))

    def _append(self, data: bytes) -> int:
        index = len(self.entries) + 1
        self.entries.append(Entry(1, index, data))
        return index

    def logs(self, nodes: int = 3) -> dict[NodeId, NodeLog]:
        n = len(self.entries)
        return {
            NodeId(f"n{i}"): NodeLog(NodeId(f"n{i}"), n, tuple(self.entries))
            for i in range(1, nodes + 1)
        }


_ids = iter(range(1_000_000))


def _write(
    kind: str,
    key: str,
    value: int,
    session: str,
    call: float,
    ret: float | None,
    status: str = OK,
    **kw: object,
) -> OpRecord:
    rec = OpRecord(
        op_id=next(_ids),
        client=0,
        kind=kind,
        key=key,
        call=call,
        value=value,
        session=session,
        status=status,
        ret=ret,
        **kw,
    )  # type: ignore[arg-type]
    rec.attempts.append(Attempt("n1", call, ret or call, 200 if status == OK else 0))
    rec.pending = False
    return rec


def _read(key: str, value: int | None, call: float, ret: float, index: int) -> OpRecord:
    rec = OpRecord(
        op_id=next(_ids),
        client=1,
        kind="get",
        key=key,
        call=call,
        ret=ret,
        status=OK,
        output=value,
        found=value is not None,
        index=index,
    )
    rec.attempts.append(Attempt("n2", call, ret, 200))
    rec.pending = False
    return rec


def test_a_correct_history_passes() -> None:
    log = _Log()
    i1 = log.put("k", 1, "a/1")
    i2 = log.cas("k", 1, 2, "a/2")
    log.put("k", 1, "a/1")  # a retry that reached the log again: answered from the cache
    ops = [
        _write("put", "k", 1, "a/1", 0.0, 1.0, index=i1),
        _write("cas", "k", 2, "a/2", 2.0, 3.0, expect=1, output=True, index=i2),
        _read("k", 2, 4.0, 5.0, index=i2 + 1),
    ]
    v = analyze(ops, log.logs())
    assert v.ok, v.problems()
    assert v.dedup_hits == 1 and v.linearizable is True


def test_a_lost_acknowledged_write_is_caught() -> None:
    """The client was told the write committed, but no node's log has it."""
    log = _Log()
    i1 = log.put("k", 1, "a/1")
    ops = [
        _write("put", "k", 1, "a/1", 0.0, 1.0, index=i1),
        _write("put", "k", 2, "a/2", 2.0, 3.0, index=i1 + 1),  # acknowledged, never in the log
        _read("k", 1, 4.0, 5.0, index=i1),  # the final read sees the older value
    ]
    v = analyze(ops, log.logs())
    assert not v.durable and "a/2" in v.lost[0]
    assert v.linearizable is False  # the read of 1 after put(2) completed
    assert not v.ok


def test_a_write_executed_twice_is_caught() -> None:
    """A retry applied again after its session expired (11 minutes of log time later)."""
    log = _Log()
    i1 = log.put("k", 1, "a/1", time_ms=1000)
    log.put("other", 5, "b/1", time_ms=1000 + 11 * 60 * 1000)
    log.put("k", 1, "a/1", time_ms=1000 + 11 * 60 * 1000)
    ops = [_write("put", "k", 1, "a/1", 0.0, 1.0, index=i1)]
    v = analyze(ops, log.logs())
    assert not v.exactly_once and "a/1" in v.duplicated[0]


def test_reads_and_answers_are_checked_against_the_log() -> None:
    log = _Log()
    i1 = log.put("k", 1, "a/1")
    i2 = log.cas("k", 1, 2, "a/2")
    ops = [
        _write("put", "k", 1, "a/1", 0.0, 1.0, index=i1),
        # Answered "conflict", but the log's execution of a/2 succeeded.
        _write("cas", "k", 2, "a/2", 2.0, 3.0, expect=1, output=False, index=i2),
        # Served at index i1 but returned a value the log never held there.
        _read("k", 7, 4.0, 5.0, index=i1),
    ]
    v = analyze(ops, log.logs())
    assert v.answer_mismatches and "a/2" in v.answer_mismatches[0]
    assert v.read_mismatches and "got 7" in v.read_mismatches[0]
    assert not v.consistent and not v.ok


def test_unknown_outcomes_are_settled_from_the_log() -> None:
    log = _Log()
    i1 = log.put("k", 1, "a/1")
    ops = [
        _write("put", "k", 1, "a/1", 0.0, None, status=INFO),  # in the log: stays info
        _write("put", "k", 2, "a/2", 2.0, None, status=INFO),  # not in the log: never happened
        _read("k", 1, 4.0, 5.0, index=i1),
    ]
    v = analyze(ops, log.logs())
    assert v.ok, v.problems()
    assert (ops[0].status, ops[0].resolution) == (INFO, f"applied@{i1}")
    assert (ops[1].status, ops[1].resolution) == (FAIL, "never-applied")
    # A write classified "fail" (every attempt refused or 503) must not be in the log.
    ops2 = [_write("put", "k", 1, "a/1", 0.0, None, status=FAIL)]
    v2 = analyze(ops2, log.logs())
    assert v2.fail_but_applied and not v2.ok


def test_nodes_whose_logs_disagree_are_caught() -> None:
    log = _Log()
    log.put("k", 1, "a/1")
    logs = log.logs()
    bad = list(logs[NodeId("n3")].entries)
    bad[1] = Entry(2, 2, bad[1].data)
    logs[NodeId("n3")] = NodeLog(NodeId("n3"), 2, tuple(bad))
    v = analyze([], logs)
    assert v.replay.disagreements and "index 2" in v.replay.disagreements[0]
    assert not v.consistent


# --------------------------------------------------------------------------- multi-key


def _listing_json(listing: Listing) -> dict[str, object]:
    """A range answer as the /v1 API gives it (DESIGN.md, "The replicated store")."""
    return {
        "kvs": [item.to_json() for item in listing.items],
        "count": listing.count,
        "more": listing.more,
        "revision": listing.revision,
    }


class _Store:
    """A log of commands applied to a real state machine, and the records of a
    client that issued them one after another, with the answers the /v1 API
    gives (a range's kvs and revision, a write's revision)."""

    def __init__(self) -> None:
        self.log = _Log()
        self.sm = KVStateMachine()
        self.records: list[OpRecord] = []
        self.t = 0.0
        self.seq = 0

    def write(self, kind: str, cmd: Command) -> OpRecord:
        self.seq += 1
        session = f"jc1/{self.seq}"
        cmd = replace(cmd, session=Session(client_id="jc1", seq=self.seq))
        index = self.log._append(encode_command(cmd))
        result = self.sm.apply(index, encode_command(cmd))
        single = isinstance(cmd, Put)
        rec = OpRecord(
            op_id=next(_ids),
            client=1,
            kind=kind,
            key=cmd.key if isinstance(cmd, Put) else "",
            call=self.t,
            ret=self.t + 0.5,
            status=OK,
            value=cmd.value if isinstance(cmd, Put) else None,
            session=session,
            index=index,
            command=None if single else cmd,
            output=None if single else result.ok,  # a refused compaction: a definite "no"
            answer={"revision": result.revision, "index": index},
        )
        return self._done(rec)

    def range(self, cmd: Range) -> OpRecord:
        listing = self.sm.range(cmd.range, revision=cmd.revision, limit=cmd.limit)
        rec = OpRecord(
            op_id=next(_ids),
            client=2,
            kind="range",
            key=cmd.range.key,
            call=self.t,
            ret=self.t + 0.5,
            status=OK,
            command=cmd,
            answer=_listing_json(listing),
        )
        return self._done(rec)

    def _done(self, rec: OpRecord) -> OpRecord:
        rec.attempts.append(Attempt("n1", rec.call, rec.ret or rec.call, 200))
        rec.pending = False
        self.records.append(rec)
        self.t += 1.0
        return rec


A = KeyRange(key="t/a/", prefix=True)


def _txn_store() -> _Store:
    st = _Store()
    st.write("put", Put(key="g0k0", value=1, time_ms=1))
    st.write(
        "txn", Txn(compares=(), success=(TxnPut(key="t/a/1", value=2),), failure=(), time_ms=1)
    )
    st.range(Range(range=A, time_ms=1))
    guard = Compare(range=A, target="mod_revision", cmp="<", value=2)  # t/a/1 is at 3: fails
    st.write(
        "txn",
        Txn(
            compares=(guard,),
            success=(TxnPut(key="t/a/2", value=3),),
            failure=(TxnRange(range=A),),
            time_ms=1,
        ),
    )
    st.write("delete_range", DeleteRange(range=A, time_ms=1))
    st.range(Range(range=A, revision=3, time_ms=1))
    st.range(Range(range=KeyRange(key="g0k", prefix=True), time_ms=1))
    return st


def test_a_multi_key_history_passes_the_revision_check() -> None:
    st = _txn_store()
    v = analyze(st.records, st.log.logs())
    assert v.ok, v.problems()
    assert v.revisions is not None and v.revisions.ok is True
    assert v.revisions.revisions == 4 and v.revisions.writes == 3
    assert v.check is not None and len(v.check.partitions) == 1  # only g0k0 is checked per key


def test_a_stale_range_read_is_caught_by_the_revision_check() -> None:
    st = _txn_store()
    stale = st.records[2]  # the range read of revision 3
    again = OpRecord(
        op_id=next(_ids),
        client=3,
        kind="range",
        key="t/a/",
        call=st.t + 1,
        ret=st.t + 2,
        status=OK,
        command=stale.command,
        answer=stale.answer,
        attempts=[Attempt("n3", st.t + 1, st.t + 2, 200)],
        pending=False,
    )
    v = analyze([*st.records, again], st.log.logs())
    assert not v.ok and v.revisions_ok is False
    assert any("out of real-time order" in line for line in v.problems()), v.problems()


def test_a_multi_key_answer_that_disagrees_with_the_log_is_caught() -> None:
    st = _txn_store()
    st.records[1].answer = {"revision": 7}
    v = analyze(st.records, st.log.logs())
    assert v.answer_mismatches and "answered revision 7" in v.answer_mismatches[0]
    assert not v.ok


def test_an_acknowledged_transaction_missing_from_the_log_is_lost() -> None:
    st = _txn_store()
    lost = st.records[1]
    log = _Log()
    log.entries = [e for e in st.log.entries if e.index != lost.index]
    v = analyze(st.records, log.logs())
    assert not v.durable and str(lost.session) in v.lost[0]
    assert v.revisions_ok is False  # the reads show a revision nothing made


def test_the_v1_shapes_of_ranges_and_transactions() -> None:
    cmd = Range(range=A, revision=5, limit=2, time_ms=0)
    assert range_path(cmd) == "/v1/kv?prefix=t%2Fa%2F&limit=2&revision=5"
    txn = Txn(
        compares=(Compare(range=A, target="version", cmp=">", value=0),),
        success=(TxnPut(key="t/a/1", value=1), TxnRange(range=A, limit=1)),
        failure=(),
        time_ms=0,
    )
    # The body is what the server's own parser of POST /v1/txn reads back.
    parts = txn_parts(txn_request(txn), raw_size=1, max_key_bytes=1024, max_value_bytes=1 << 20)
    assert (parts.compares, parts.success, parts.failure) == (
        txn.compares,
        txn.success,
        txn.failure,
    )
    body = {
        "kvs": [
            {"key": "t/a/1", "value": 1, "create_revision": 2, "mod_revision": 3, "version": 2}
        ],
        "count": 2,
        "more": True,
        "revision": 4,
    }
    listing = listing_of(body)
    assert listing is not None and (listing.count, listing.more, listing.revision) == (2, True, 4)
    assert listing.items[0].value == 1 and listing.items[0].version == 2
    assert listing_of({"error": "x"}) is None
    # A refusal says the store's revision too; it is not an empty listing.
    assert listing_of({"error": "required revision has been compacted", "revision": 9}) is None
    refusal = refusal_of(
        {"error": "required revision has been compacted", "revision": 9, "compact_revision": 6}
    )
    assert refusal is not None and refusal.compact_revision == 6
    assert refusal_of({"error": "required revision has been compacted"}) is None  # no revision


def test_drawn_multi_key_operations_replay_cleanly_through_the_analysis() -> None:
    """The workload's own draws, applied in turn to the replica layer (the log)
    and answered as the /v1 API answers, make a history the analysis passes --
    and one wrong range answer in it fails the revision check."""
    workload = Workload(
        None,  # type: ignore[arg-type]  # draws only: no cluster
        WorkloadConfig(seed=3, txn=True),
        clock=lambda: 0.0,
    )
    rng = random.Random(3)
    st = _Store()
    revisions: list[int] = []
    for _ in range(120):
        cmd = workload._draw_multi(rng, revisions)
        if isinstance(cmd, Range):
            try:
                rec = st.range(cmd)
            except CompactedError:  # the API answers 4xx; without a revision: not checked
                continue
        elif isinstance(cmd, Txn | DeleteRange):
            rec = st.write("txn" if isinstance(cmd, Txn) else "delete_range", cmd)
        else:
            rec = st.write("compact", cmd)
        assert isinstance(rec.answer, dict)
        revisions.append(rec.answer["revision"])
        revisions[:] = sorted(set(revisions))[-8:]
    kinds = {rec.kind for rec in st.records}
    assert {"range", "txn", "delete_range", "compact"} <= kinds
    v = analyze(st.records, st.log.logs())
    assert v.revisions_ok is True, v.problems()
    ranges = [rec for rec in st.records if rec.kind == "range" and rec.answer["kvs"]]
    assert ranges
    ranges[-1].answer["kvs"] = ranges[-1].answer["kvs"][1:]
    v = analyze(st.records, st.log.logs())
    assert v.revisions_ok is False


# --------------------------------------------------------------------------- real runs


def _leftovers(slot: int | None) -> list[str]:
    """Namespaces and links of the run that used ``slot`` that still exist."""
    if os.geteuid() != 0 or slot is None:
        return []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in ns.splitlines() if line.strip()]
    names += [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    return [n for n in names if n.startswith(slot_names(slot))]


def _config(tmp_path: Path, **kw: object) -> JepsenConfig:
    defaults: dict[str, object] = {"results": tmp_path / "results", "recovery": 3.0}
    defaults.update(kw)
    return JepsenConfig(**defaults)  # type: ignore[arg-type]


@pytest.mark.cluster
def test_short_run_with_every_fault_kind_passes(tmp_path: Path) -> None:
    # Seed 1451's 25 s schedule: kill -9; replace the node on h2 (n2 removed and
    # wiped, n4 added in its place); a partition bridged by h2 (n4 by then);
    # a pause; a rolling restart of h2 (n4), h3, h1. Watchers and lease clients
    # run through all of it (docs/jepsen.md).
    config = _config(tmp_path, seed=1451, nodes=3, time=25.0, clients=8, watches=True, leases=True)
    schedule = make_schedule(1451, HOSTS, 25.0, FAULT_KINDS, election_ms=500)
    assert {f.kind for f in schedule} == set(FAULT_KINDS)
    assert [(f.kind, f.hosts) for f in schedule][1:3] == [
        ("membership", ("h2",)),
        ("partition", ("h2",)),
    ]
    lines: list[str] = []
    result = run_jepsen(config, out=lines.append)
    text = "\n".join(lines)
    assert result.exit_code == 0, text
    assert result.summary.startswith("linearizable=true durable=true exactly-once=true"), text
    assert " watch=true lease=true " in result.summary, text
    assert lines[-1] == result.summary
    assert result.faults_applied >= 4, text
    assert result.counts["ok"] >= 500, text
    out = result.out_dir
    names = ("summary.txt", "verdict.json", "history.jsonl", "ops.jsonl", "faults.jsonl")
    for name in (*names, "watches.jsonl", "leases.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "logs" / "n1.log").exists()
    assert not (out / "data").exists()  # removed after a pass
    assert not _leftovers(result.slot)
    # n2 was replaced by a new id, n4, on its host (a removed id is refused),
    # and the faults after that on h2 struck n4.
    applied = [json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()]
    replace, bridge = applied[1], applied[2]
    assert replace["kind"] == "membership" and replace["ok"], replace
    assert replace["targets"] == ["n2"] and "replaced by n4, added" in replace["detail"], replace
    assert bridge["detail"].startswith("bridge n4 between"), bridge
    assert "nodes      n1@h1 n4@h2 n3@h3 (replaced: n2)" in text, text
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["nodes"] == {"n1": "h1", "n2": "h2", "n3": "h3", "n4": "h2"}
    # Six watchers, every event checked; streams ended (faults, hang-ups) and resumed.
    watches = verdict["watch_counts"]
    assert watches["watchers"] == 6 and watches["checked"] == watches["events"] > 1000, watches
    watchers = [json.loads(line) for line in (out / "watches.jsonl").read_text().splitlines()]
    assert sum(w["stats"]["streams"] for w in watchers) > 6, watchers
    leases = verdict["lease_counts"]
    assert leases["leases"] > 5 and leases["expiries"] > 0 and leases["renewals"] > 10, leases
    assert (out / "logs" / "n4.log").exists()
    # n4 served clients, and every key in the final reads.
    ops = [json.loads(line) for line in (out / "ops.jsonl").read_text().splitlines()]
    on_n4 = [op for op in ops if op["attempts"] and op["attempts"][-1]["node"] == "n4"]
    assert any(op["status"] == OK and not op["final"] for op in on_n4), text
    finals = [op for op in on_n4 if op["final"]]
    assert finals and all(op["status"] == OK for op in finals), finals


@pytest.mark.cluster
def test_stale_reads_under_partitions_are_caught(tmp_path: Path) -> None:
    """Reads served from local state (``?consistency=stale``) are not linearizable.

    Under a partition the isolated side keeps answering reads with its old state
    while the majority commits new writes; the checker must say so, and the run
    must exit 1.
    """
    config = _config(tmp_path, seed=2, nodes=3, time=15.0, faults=("partition",), stale_reads=True)
    lines: list[str] = []
    result = run_jepsen(config, out=lines.append)
    text = "\n".join(lines)
    assert result.exit_code == 1, text
    assert result.summary.startswith("linearizable=false"), text
    assert result.verdict is not None and result.verdict.check is not None
    assert result.verdict.check.failures, text
    # The other checks still pass: the log itself is fine, only the reads are stale.
    assert result.verdict.durable and result.verdict.exactly_once
    assert "NOT linearizable" in text
    assert not _leftovers(result.slot)


@pytest.mark.cluster
def test_interrupted_run_cleans_up(tmp_path: Path) -> None:
    """SIGTERM in the middle of a run: nodes and namespaces are gone afterwards."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raftkv.cli",
            "jepsen",
            "--seed",
            "5",
            "--time",
            "60",
            "--results",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "schedule" in line or time.monotonic() > deadline:
            break
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    match = re.search(r"bridge rkvj(\d+)br", out)
    slot = int(match.group(1)) if match else None
    assert not _leftovers(slot), _leftovers(slot)
    leftover = subprocess.run(
        ["pgrep", "-f", f"--data-dir {tmp_path}"], capture_output=True, text=True
    )
    assert leftover.stdout.strip() == "", leftover.stdout


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("nodes", [3, 5])
def test_longer_runs(tmp_path: Path, nodes: int) -> None:
    config = _config(tmp_path, seed=1000 + nodes, nodes=nodes, time=90.0)
    lines: list[str] = []
    result = run_jepsen(config, out=lines.append)
    text = "\n".join(lines)
    assert result.exit_code == 0, text
    assert result.faults_applied >= 10, text
    assert result.counts["ok"] >= 3000, text


@pytest.mark.cluster
@pytest.mark.slow
def test_loopback_fallback_passes(tmp_path: Path) -> None:
    """The unprivileged mode: 127.x addresses and proxies that cut Raft links."""
    config = _config(tmp_path, seed=3, nodes=3, time=20.0, net="loopback")
    lines: list[str] = []
    result = run_jepsen(config, out=lines.append)
    text = "\n".join(lines)
    assert result.exit_code == 0, text
    assert result.net == "loopback" and "loopback" in text
    assert result.faults_applied >= 2, text


def test_netns_availability_matches_privileges() -> None:
    if os.geteuid() != 0:
        assert not netns_available()
