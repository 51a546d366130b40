"""A tiny synchronous driver for core tests: nodes, a message queue, no time.

``Harness.stabilize()`` runs every node's Ready loop (persist to MemoryStorage,
send, apply, advance) and delivers messages until nothing moves. Messages can be
dropped or held per link to build the paper's scenarios by hand.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from raftkv.core import (
    AppendEntriesResponse,
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    NodeId,
    Raft,
    RawNode,
    ReadState,
    Role,
    Snapshot,
    describe_message,
)


def nid(i: int | str) -> NodeId:
    return NodeId(f"n{i}" if isinstance(i, int) else i)


class Harness:
    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        raft_class: type[Raft] = Raft,
        bootstrap: bool = False,
        max_inflight: int = 256,
        max_entries_per_msg: int = 256,
        drop_rate: float = 0.0,
        **extra_config: object,
    ) -> None:
        self.ids = [nid(i) for i in range(1, n + 1)]
        self.seed = seed
        self.raft_class = raft_class
        # bootstrap=False: storage starts with the membership (as if restored
        # from a snapshot), so logs start empty and the first leader's term is 1.
        # bootstrap=True: nodes start empty with Config.peers and write the
        # founding membership as log entry 1, as real clusters do.
        self.bootstrap = bootstrap
        self.config_kwargs = dict(
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            election_tick=election_tick,
            heartbeat_tick=heartbeat_tick,
            max_inflight=max_inflight,
            max_entries_per_msg=max_entries_per_msg,
            **extra_config,
        )
        self.storage: dict[NodeId, MemoryStorage] = {}
        self.nodes: dict[NodeId, RawNode] = {}
        self.applied: dict[NodeId, list[Entry]] = {}
        self.queue: list[Message] = []
        self.dropped_links: set[tuple[NodeId, NodeId]] = set()
        self.isolated: set[NodeId] = set()
        self.sent_log: list[str] = []
        self.read_states: dict[NodeId, list[ReadState]] = {}
        self.snapshots_installed: dict[NodeId, list[Snapshot]] = {}
        # Every ConfState a node switched to by applying a CONF_CHANGE entry.
        self.conf_history: dict[NodeId, list[ConfState]] = {}
        # Messages for which drop_if returns True are lost in transit.
        self.drop_if: Callable[[Message], bool] | None = None
        # Random message loss (for churn tests), from a seeded RNG.
        self.drop_rate = drop_rate
        self.net_rng = random.Random(f"net/{seed}")
        # Every message delivered, as a value (sent_log has their descriptions).
        self.delivered: list[Message] = []
        for node_id in self.ids:
            self.storage[node_id] = MemoryStorage(voters=() if bootstrap else tuple(self.ids))
            self.start(node_id)

    def start(self, node_id: NodeId) -> RawNode:
        peers = tuple(self.ids) if self.bootstrap else ()
        cfg = Config(node_id=node_id, peers=peers, **self.config_kwargs)  # type: ignore[arg-type]
        rng = random.Random(f"{self.seed}/{node_id}/{len(self.sent_log)}")
        node = RawNode(cfg, self.storage[node_id], rng, raft_class=self.raft_class)
        self.nodes[node_id] = node
        self.applied[node_id] = []
        return node

    def restart(self, node_id: NodeId) -> RawNode:
        """Crash and restart: volatile state lost, storage kept."""
        self.queue = [m for m in self.queue if m.to != node_id and m.sender != node_id]
        return self.start(node_id)

    def raft(self, i: int | str) -> Raft:
        """White-box escape hatch: node i's private Raft state, for tests that
        set up or inspect what no RawNode view shows (prefer :meth:`node`)."""
        return self.nodes[nid(i)]._raft

    def node(self, i: int | str) -> RawNode:
        return self.nodes[nid(i)]

    # -- links -------------------------------------------------------------

    def isolate(self, i: int | str) -> None:
        self.isolated.add(nid(i))

    def heal(self) -> None:
        self.isolated.clear()
        self.dropped_links.clear()

    def cut(self, a: int | str, b: int | str) -> None:
        self.dropped_links.add((nid(a), nid(b)))
        self.dropped_links.add((nid(b), nid(a)))

    def _blocked(self, m: Message) -> bool:
        return (
            m.sender in self.isolated
            or m.to in self.isolated
            or (m.sender, m.to) in self.dropped_links
        )

    # -- driving -----------------------------------------------------------

    def process_ready(self, node_id: NodeId) -> bool:
        node = self.nodes[node_id]
        if not node.has_ready():
            return False
        rd = node.ready()
        self.queue.extend(rd.messages)
        st = self.storage[node_id]
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            # The "state machine" of the harness is the list of applied entries;
            # a snapshot replaces it with a marker of what it covers.
            self.snapshots_installed.setdefault(node_id, []).append(rd.snapshot)
        if rd.entries:
            st.append(list(rd.entries))
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages_after_persist)
        for e in rd.committed_entries:
            self.applied[node_id].append(e)
            if e.type is EntryType.CONF_CHANGE:
                cs = node.apply_conf_change(ConfChange.decode(e.data))
                st.set_conf_state(cs)
                self.conf_history.setdefault(node_id, []).append(cs)
        self.read_states.setdefault(node_id, []).extend(rd.read_states)
        node.advance(rd)
        return True

    def add_node(self, i: int | str) -> RawNode:
        """Start a brand-new, empty node that is not (yet) in anyone's configuration."""
        node_id = nid(i)
        if node_id not in self.ids:
            self.ids.append(node_id)
        self.storage[node_id] = MemoryStorage(voters=())
        cfg = Config(node_id=node_id, peers=(), **self.config_kwargs)  # type: ignore[arg-type]
        node = RawNode(
            cfg,
            self.storage[node_id],
            random.Random(f"{self.seed}/{node_id}"),
            raft_class=self.raft_class,
        )
        self.nodes[node_id] = node
        self.applied[node_id] = []
        return node

    def compact(self, i: int | str, index: int) -> None:
        """Snapshot node i's applied state at ``index`` and drop its log up to there."""
        node_id = nid(i)
        st = self.storage[node_id]
        cs = self.nodes[node_id].conf_state()
        data = b"|".join(e.data for e in self.applied[node_id] if e.index <= index)
        st.create_snapshot(index, cs, data)
        st.compact(index)

    def deliver(self, filter_fn: Callable[[Message], bool] | None = None) -> int:
        """Deliver queued messages once (those passing ``filter_fn``); returns how many."""
        msgs, self.queue = self.queue, []
        n = 0
        for m in msgs:
            if filter_fn is not None and not filter_fn(m):
                self.queue.append(m)
                continue
            if self._blocked(m) or m.to not in self.nodes:
                continue
            if self.drop_if is not None and self.drop_if(m):
                continue
            if self.drop_rate and self.net_rng.random() < self.drop_rate:
                continue
            self.sent_log.append(describe_message(m))
            self.delivered.append(m)
            self.nodes[m.to].step(m)
            n += 1
        return n

    def stabilize(self, max_rounds: int = 10_000) -> None:
        for _ in range(max_rounds):
            moved = False
            for node_id in self.ids:
                moved |= self.process_ready(node_id)
            if self.deliver():
                moved = True
            if not moved:
                return
        raise AssertionError("did not stabilize")

    def tick(self, i: int | str, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid(i)].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node_id in self.ids:
                self.nodes[node_id].tick()

    def elect(self, i: int | str) -> None:
        self.nodes[nid(i)].campaign()
        self.stabilize()
        assert self.raft(i).role is Role.LEADER, f"{nid(i)} failed to become leader"

    def propose(self, i: int | str, data: bytes) -> int:
        idx = self.nodes[nid(i)].propose(data)
        return idx

    def log_terms(self, i: int | str) -> list[int]:
        r = self.raft(i)
        return [e.term for e in r.log.slice(1, r.log.last_index() + 1)]

    def load(
        self,
        i: int | str,
        terms: list[int],
        *,
        term: int,
        vote: int | str | None = None,
        commit: int = 0,
    ) -> RawNode:
        """Replace node ``i``'s stable state with a log of ``terms`` and restart it."""
        node_id = nid(i)
        st = MemoryStorage(voters=tuple(self.ids))
        st.append(
            [Entry(term=t, index=k + 1, data=f"{t}/{k + 1}".encode()) for k, t in enumerate(terms)]
        )
        st.set_hard_state(
            HardState(term=term, vote=None if vote is None else nid(vote), commit=commit)
        )
        self.storage[node_id] = st
        return self.restart(node_id)

    def rejections(self, to: int | str | None = None) -> int:
        """How many rejecting AppendEntriesResponses were delivered (to the leader ``to``)."""
        return sum(
            1
            for m in self.delivered
            if isinstance(m, AppendEntriesResponse) and m.reject and (to is None or m.to == nid(to))
        )

    def stored_terms(self, i: int | str) -> list[int]:
        return [e.term for e in self.storage[nid(i)].all_entries()]

    def leaders(self) -> list[NodeId]:
        return [n for n in self.ids if self.nodes[n].role is Role.LEADER]
