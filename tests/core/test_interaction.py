"""Data-driven interaction tests (after etcd-io/raft's ``interaction_test.go``).

Each ``testdata/*.txt`` script drives a small cluster through :class:`InteractionEnv`
and records the Readies and messages it produces; the expected output is golden
and was checked by hand against the paper (see the comments in each script).

Commands:
    add-nodes N [pre-vote=true] [check-quorum=true] [heartbeat-tick=1] [seed=0]
              [snapshot-chunk-size=1048576] [snapshot-chunks-inflight=4]
              [max-inflight=256] [max-entries-per-msg=256]
    load-log I terms=(T1,T2,..) term=T [vote=J] [commit=C]
                          replace node I's stable state with a log whose entry
                          k has term Tk (and no data), and restart it: to set up
                          the paper's divergent logs (Figures 7 and 8)
    campaign I            start an election on node I
    elect I               campaign on node I and stabilize, quietly
    propose I DATA        propose DATA on node I
    tick-heartbeat I      tick node I heartbeat_tick times
    tick-election I       tick node I until its (randomized) election timer fires;
                          a leader is ticked election_tick times
    process-ready [I...]  handle the Ready of the given (default: all) nodes; a role
                          change in advance() (a candidate's own vote counting once
                          persisted) is shown as an ``Advanced:`` line
    deliver-msgs [I...] [drop=(..)]  deliver queued messages (to the given nodes)
    stabilize             process-ready + deliver-msgs until nothing moves
    run ticks=N           N times: tick every node once, then stabilize (quietly)
    isolate I / heal      cut node I off / restore every link
    cut I J               lose every message between nodes I and J (until heal)
    status [I...]         role, term, leader, commit (and progress on a leader)
    log I                 node I's log and commit index
    transfer-leader I T   ask leader I to hand leadership to T (dissertation §3.10)
    read-index I CTX      request a read index on node I for context CTX (§6.4)
    add-node I            start an empty node I that is in no configuration yet
    propose-conf-change I [add-voter=(..)] [add-learner=(..)] [remove=(..)]
                          [transition=auto|joint-implicit|joint-explicit]
                          propose a membership change on leader I; no change at
                          all proposes leaving the joint configuration
    compact I INDEX       snapshot node I's state at INDEX and drop its log up to it
    conf I                node I's configuration

A Ready's committed CONF_CHANGE entries are applied as they are handled (the new
configuration shows as a ``ConfState`` line), its snapshot is written to storage,
and heartbeats carrying a ReadIndex round show it as ``round=N``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from raftkv.core import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    MemoryStorage,
    Message,
    NodeId,
    RaftError,
    Role,
    describe_message,
    describe_ready,
)
from raftkv.core.ready import Ready
from tests.core.harness import Harness, nid
from tests.datadriven import Command, run_script, scripts

TESTDATA = Path(__file__).parent / "testdata"


def _bool(cmd: Command, key: str, default: bool) -> bool:
    return cmd.get(key, "true" if default else "false").lower() in ("1", "true", "yes")


def _describe(m: Message) -> str:
    """describe_message, plus the ReadIndex round a heartbeat carries."""
    text = describe_message(m)
    if isinstance(m, Heartbeat | HeartbeatResponse) and m.context:
        text += f" round={int.from_bytes(m.context, 'big')}"
    return text


def _shown(e: Entry) -> Entry:
    """``e`` with a configuration change's data made readable for the output."""
    if e.type is not EntryType.CONF_CHANGE:
        return e
    cc = ConfChange.decode(e.data)
    text = " ".join(f"{c.type.value}={c.node_id}" for c in cc.changes) or "leave-joint"
    if cc.transition is not ConfChangeTransition.AUTO and cc.changes:
        text += f" {cc.transition.value}"
    return dataclasses.replace(e, data=f"conf({text})".encode())


def _describe_ready(rd: Ready) -> str:
    rd = dataclasses.replace(
        rd,
        entries=tuple(map(_shown, rd.entries)),
        committed_entries=tuple(map(_shown, rd.committed_entries)),
    )
    lines = describe_ready(rd).split("\n")
    sent = iter((*rd.messages, *rd.messages_after_persist))
    for i, line in enumerate(lines):
        if line.startswith(("Send: ", "SendAfterPersist: ")):
            head = line.split(" ", 1)[0]
            lines[i] = f"{head} {_describe(next(sent))}"
    return "\n".join(lines)


def _conf(cs: ConfState) -> str:
    text = "voters=(" + ",".join(cs.voters) + ")"
    if cs.voters_outgoing:
        text += "&&(" + ",".join(cs.voters_outgoing) + ")"
    if cs.learners:
        text += " learners=(" + ",".join(cs.learners) + ")"
    if cs.learners_next:
        text += " learners_next=(" + ",".join(cs.learners_next) + ")"
    if cs.auto_leave:
        text += " autoleave"
    return text


class InteractionEnv:
    def __init__(self) -> None:
        self.h: Harness | None = None

    @property
    def harness(self) -> Harness:
        assert self.h is not None, "add-nodes first"
        return self.h

    def handle(self, cmd: Command) -> str:
        fn = getattr(self, "cmd_" + cmd.name.replace("-", "_"), None)
        if fn is None:
            raise ValueError(f"{cmd.pos}: unknown command {cmd.name}")
        out = fn(cmd)
        return out if out else "ok"

    def _nodes(self, cmd: Command) -> list[NodeId]:
        return [nid(int(a)) for a in cmd.args] or list(self.harness.ids)

    # -- commands -----------------------------------------------------------

    def cmd_add_nodes(self, cmd: Command) -> str:
        self.h = Harness(
            int(cmd.args[0]),
            seed=cmd.get_int("seed", 0),
            pre_vote=_bool(cmd, "pre-vote", True),
            check_quorum=_bool(cmd, "check-quorum", True),
            heartbeat_tick=cmd.get_int("heartbeat-tick", 1),
            snapshot_chunk_size=cmd.get_int("snapshot-chunk-size", 1 << 20),
            max_snapshot_chunks_inflight=cmd.get_int("snapshot-chunks-inflight", 4),
            max_inflight=cmd.get_int("max-inflight", 256),
            max_entries_per_msg=cmd.get_int("max-entries-per-msg", 256),
        )
        return self.status_lines(self.harness.ids)

    def cmd_load_log(self, cmd: Command) -> str:
        h = self.harness
        node_id = nid(int(cmd.args[0]))
        st = MemoryStorage(voters=tuple(h.ids))
        st.append([Entry(term=int(t), index=k + 1) for k, t in enumerate(cmd.get_list("terms"))])
        vote = cmd.get("vote", "")
        st.set_hard_state(
            HardState(
                term=cmd.get_int("term"),
                vote=nid(int(vote)) if vote else None,
                commit=cmd.get_int("commit", 0),
            )
        )
        h.storage[node_id] = st
        h.restart(node_id)
        return self._log_line(node_id) + "\n" + self.status_lines([node_id])

    def cmd_campaign(self, cmd: Command) -> str:
        node = self.harness.node(int(cmd.args[0]))
        node.campaign()
        return self.status_lines([node.node_id])

    def cmd_elect(self, cmd: Command) -> str:
        self.harness.elect(int(cmd.args[0]))
        return self.status_lines(self.harness.ids)

    def cmd_propose(self, cmd: Command) -> str:
        try:
            idx = self.harness.node(int(cmd.args[0])).propose(cmd.args[1].encode())
        except RaftError as exc:
            return f"error: {exc}"
        return f"index {idx}"

    def cmd_transfer_leader(self, cmd: Command) -> str:
        node = self.harness.node(int(cmd.args[0]))
        try:
            node.transfer_leadership(nid(int(cmd.args[1])))
        except RaftError as exc:
            return f"error: {type(exc).__name__}: {exc}"
        return f"lead_transferee={node.status().lead_transferee}"

    def cmd_read_index(self, cmd: Command) -> str:
        try:
            self.harness.node(int(cmd.args[0])).read_index(cmd.args[1].encode())
        except RaftError as exc:
            return f"error: {type(exc).__name__}: {exc}"
        return ""

    def cmd_add_node(self, cmd: Command) -> str:
        node = self.harness.add_node(int(cmd.args[0]))
        return self.status_lines([node.node_id])

    def cmd_propose_conf_change(self, cmd: Command) -> str:
        changes = [
            ConfChangeSingle(kind, nid(int(x)))
            for key, kind in (
                ("add-voter", ConfChangeType.ADD_VOTER),
                ("add-learner", ConfChangeType.ADD_LEARNER),
                ("remove", ConfChangeType.REMOVE_NODE),
            )
            for x in cmd.get_list(key)
        ]
        cc = ConfChange(
            changes=tuple(changes), transition=ConfChangeTransition(cmd.get("transition", "auto"))
        )
        try:
            idx = self.harness.node(int(cmd.args[0])).propose_conf_change(cc)
        except RaftError as exc:
            return f"error: {type(exc).__name__}: {exc}"
        return f"index {idx}"

    def cmd_compact(self, cmd: Command) -> str:
        i, index = int(cmd.args[0]), int(cmd.args[1])
        self.harness.compact(i, index)
        st = self.harness.storage[nid(i)]
        return f"{nid(i)} storage first={st.first_index()} last={st.last_index()}"

    def cmd_conf(self, cmd: Command) -> str:
        return "\n".join(
            f"{n} {_conf(self.harness.nodes[n].status().conf_state)}" for n in self._nodes(cmd)
        )

    def cmd_tick_heartbeat(self, cmd: Command) -> str:
        i = int(cmd.args[0])
        self.harness.tick(i, self.harness.raft(i).heartbeat_timeout)
        return self.status_lines([nid(i)])

    def cmd_tick_election(self, cmd: Command) -> str:
        i = int(cmd.args[0])
        r = self.harness.raft(i)
        if r.role is Role.LEADER:
            n = r.election_timeout - r.election_elapsed
        else:
            n = r.randomized_election_timeout - r.election_elapsed
        self.harness.tick(i, n)
        return self.status_lines([nid(i)])

    def cmd_run(self, cmd: Command) -> str:
        """Tick every node once and stabilize, ``ticks`` times, quietly."""
        h = self.harness
        for _ in range(cmd.get_int("ticks")):
            h.tick_all()
            h.stabilize()
        return self.status_lines(h.ids)

    def cmd_process_ready(self, cmd: Command) -> str:
        return "\n".join(self._process(n) for n in self._nodes(cmd) if self._has(n))

    def _has(self, node_id) -> bool:
        return self.harness.nodes[node_id].has_ready()

    def _process(self, node_id) -> str:
        h = self.harness
        node = h.nodes[node_id]
        rd: Ready = node.ready()
        st = h.storage[node_id]
        h.queue.extend(rd.messages)
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(list(rd.entries))
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        h.queue.extend(rd.messages_after_persist)
        h.applied[node_id].extend(rd.committed_entries)
        applied: list[str] = []
        for e in rd.committed_entries:
            if e.type is EntryType.CONF_CHANGE:
                cs = node.apply_conf_change(ConfChange.decode(e.data))
                st.set_conf_state(cs)
                applied.append(f"ConfState {_conf(cs)}")
        before = node.soft_state()
        node.advance(rd)
        body = "\n".join([_describe_ready(rd), *applied])
        after = node.soft_state()
        if after != before:
            # advance() stepped in what waited for this Ready's persistence
            # (a candidate's own vote) and that changed the role.
            body += f"\nAdvanced: role={after.role.value} leader={after.leader} term={node.term}"
        return f"> {node_id} handling Ready\n" + "\n".join("  " + ln for ln in body.split("\n"))

    def cmd_deliver_msgs(self, cmd: Command) -> str:
        targets = set(self._nodes(cmd))
        drop = {nid(int(x)) for x in cmd.get_list("drop")}
        return self._deliver(targets, drop)

    def _deliver(self, targets, drop=frozenset()) -> str:
        h = self.harness
        lines: list[str] = []
        for node_id in h.ids:
            if node_id not in targets:
                continue
            msgs = [m for m in h.queue if m.to == node_id]
            if not msgs:
                continue
            h.queue = [m for m in h.queue if m.to != node_id]
            lines.append(f"> {node_id} receiving messages")
            for m in msgs:
                if node_id in drop:
                    lines.append(f"  {_describe(m)} DROPPED")
                elif h._blocked(m):
                    lines.append(f"  {_describe(m)} LOST (partition)")
                else:
                    lines.append(f"  {_describe(m)}")
                    h.nodes[node_id].step(m)
        return "\n".join(lines)

    def cmd_stabilize(self, cmd: Command) -> str:
        h = self.harness
        out: list[str] = []
        for _ in range(1000):
            moved = False
            for node_id in h.ids:
                if self._has(node_id):
                    out.append(self._process(node_id))
                    moved = True
            if h.queue:
                out.append(self._deliver(set(h.ids)))
                moved = True
            if not moved:
                return "\n".join(out)
        raise AssertionError("did not stabilize")

    def cmd_isolate(self, cmd: Command) -> str:
        self.harness.isolate(int(cmd.args[0]))
        return ""

    def cmd_cut(self, cmd: Command) -> str:
        self.harness.cut(int(cmd.args[0]), int(cmd.args[1]))
        return ""

    def cmd_heal(self, cmd: Command) -> str:
        self.harness.heal()
        return ""

    def cmd_status(self, cmd: Command) -> str:
        return self.status_lines(self._nodes(cmd), progress=True)

    def cmd_log(self, cmd: Command) -> str:
        return self._log_line(nid(int(cmd.args[0])))

    def _log_line(self, node_id: NodeId) -> str:
        r = self.harness.raft(node_id)
        ents = [_shown(e) for e in r.log.slice(r.log.first_index(), r.log.last_index() + 1)]
        text = " ".join(
            f"{e.term}/{e.index}" + (f":{e.data.decode()}" if e.data else "") for e in ents
        )
        return f"{r.node_id} log=[{text}] commit={r.log.committed} applied={r.log.applied}"

    def status_lines(self, ids, progress: bool = False) -> str:
        lines = []
        for node_id in ids:
            r = self.harness.raft(node_id)
            lines.append(
                f"{node_id} {r.role.value} term={r.term} vote={r.vote} leader={r.leader} "
                f"commit={r.log.committed} last={r.log.last_index()}"
            )
            if progress and r.lead_transferee is not None:
                lines.append(f"  transferring leadership to {r.lead_transferee}")
            if progress and r.role is Role.LEADER:
                for p, pr in sorted(r.prs.items()):
                    if p != node_id:
                        lines.append(
                            f"  {p}: match={pr.match} next={pr.next} {pr.state.value} "
                            f"inflight={pr.inflights.count()}"
                        )
        return "\n".join(lines)


@pytest.mark.parametrize("path", scripts(TESTDATA), ids=lambda p: p.name)
def test_interaction(path, rewrite):
    env = InteractionEnv()
    run_script(path, env.handle, rewrite)


def test_load_log_restarts_the_node_with_the_given_log_and_hard_state():
    env = InteractionEnv()
    env.handle(Command(name="add-nodes", args=("3",), kwargs={"pre-vote": "false"}))
    out = env.handle(
        Command(
            name="load-log",
            args=("2",),
            kwargs={"terms": ("1", "1", "4"), "term": "5", "vote": "3", "commit": "2"},
        )
    )
    assert out == (
        "n2 log=[1/1 1/2 4/3] commit=2 applied=0\n"
        "n2 follower term=5 vote=n3 leader=None commit=2 last=3"
    )
    # Restarted from the new storage: its first Ready hands out the committed prefix.
    rd = env.harness.node(2).ready()
    assert [(e.term, e.index) for e in rd.committed_entries] == [(1, 1), (1, 2)]


def test_add_nodes_passes_the_flow_control_limits():
    env = InteractionEnv()
    env.handle(
        Command(
            name="add-nodes",
            args=("3",),
            kwargs={"max-inflight": "2", "max-entries-per-msg": "1"},
        )
    )
    cfg = env.harness.raft(1).config
    assert (cfg.max_inflight, cfg.max_entries_per_msg) == (2, 1)


def test_cut_loses_the_messages_of_one_link_both_ways():
    env = InteractionEnv()
    env.handle(Command(name="add-nodes", args=("3",), kwargs={"pre-vote": "false"}))
    env.handle(Command(name="cut", args=("1", "2")))
    env.handle(Command(name="campaign", args=("1",)))
    env.handle(Command(name="process-ready", args=("1",)))
    out = env.handle(Command(name="deliver-msgs"))
    assert "n1->n2 RequestVote term=1 last=0/0 LOST (partition)" in out
    assert out.endswith("n1->n3 RequestVote term=1 last=0/0")
    env.handle(Command(name="heal"))
    assert not env.harness.dropped_links
