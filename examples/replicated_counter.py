"""Embedding raftkv: a replicated counter and lock service with its own state machine.

Rule: everything a replica decides lives in :class:`CounterLockMachine.apply`, a
pure function of the committed command bytes -- including lease expiry, which
uses the ``time_ms`` the leader wrote into the command, never this replica's
clock. Wall-clock time, sockets and asyncio stay in the embedding part below.

Run three of these (one per terminal)::

    CLUSTER=n1=127.0.0.1:9001/127.0.0.1:8001,n2=127.0.0.1:9002/127.0.0.1:8002,n3=127.0.0.1:9003/127.0.0.1:8003
    python examples/replicated_counter.py --id n1 --initial-cluster $CLUSTER
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``apply`` hands back to the proposer."""

    ok: bool
    value: int | str | None = None


def incr(name: str, by: int = 1) -> bytes:
    """Command: add ``by`` to counter ``name``."""
    return json.dumps({"op": "incr", "name": name, "by": by}).encode()


def acquire(lock: str, owner: str, lease_ms: int, time_ms: int) -> bytes:
    """Command: take ``lock`` for ``lease_ms`` if it is free, expired or already ours."""
    cmd = {"op": "acquire", "lock": lock, "owner": owner, "lease_ms": lease_ms, "time_ms": time_ms}
    return json.dumps(cmd).encode()


def release(lock: str, owner: str) -> bytes:
    """Command: give ``lock`` up (only its owner can)."""
    return json.dumps({"op": "release", "lock": lock, "owner": owner}).encode()


class CounterLockMachine:
    """Counters and leased locks; implements ``raftkv.replica.statemachine.StateMachine``."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.locks: dict[str, tuple[str, int]] = {}  # lock -> (owner, expires at log time)
        self.log_time_ms = 0  # Invariant: the largest time_ms applied (never goes back)

    def apply(self, index: int, command: bytes) -> Outcome:
        try:
            cmd: dict[str, Any] = json.loads(command)
            op = cmd["op"]
        except (ValueError, TypeError, KeyError):
            return Outcome(False, "bad command")
        if op == "incr":
            value = self.counters.get(cmd["name"], 0) + int(cmd["by"])
            self.counters[cmd["name"]] = value
            return Outcome(True, value)
        if op == "acquire":
            self.log_time_ms = max(self.log_time_ms, int(cmd["time_ms"]))
            holder = self.locks.get(cmd["lock"])
            if holder and holder[0] != cmd["owner"] and holder[1] > self.log_time_ms:
                return Outcome(False, holder[0])
            self.locks[cmd["lock"]] = (cmd["owner"], self.log_time_ms + int(cmd["lease_ms"]))
            return Outcome(True, cmd["owner"])
        if op == "release":
            holder = self.locks.get(cmd["lock"])
            if holder is None or holder[0] != cmd["owner"]:
                return Outcome(False, holder[0] if holder else None)
            del self.locks[cmd["lock"]]
            return Outcome(True)
        return Outcome(False, f"unknown op {op!r}")

    def snapshot(self) -> bytes:
        state = {"counters": self.counters, "locks": self.locks, "log_time_ms": self.log_time_ms}
        return json.dumps(state, sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        state = json.loads(data)
        self.counters = dict(state["counters"])
        self.locks = {k: (v[0], v[1]) for k, v in state["locks"].items()}
        self.log_time_ms = state["log_time_ms"]


# ----------------------------------------------------------------------------- embedding


async def run(node_id: str, data_dir: str, initial_cluster: str) -> None:
    from raftkv.core.types import NodeId
    from raftkv.server.config import ServerConfig, parse_initial_cluster
    from raftkv.server.node import RaftNode

    members = parse_initial_cluster(initial_cluster)
    me = members[NodeId(node_id)]
    config = ServerConfig(
        node_id=NodeId(node_id),
        data_dir=data_dir,
        raft_addr=me.raft,
        api_addr=me.api,
        initial_cluster=members,
    )
    machine = CounterLockMachine()
    node = RaftNode(config, state_machine=machine)
    await node.start()
    try:
        while True:
            await asyncio.sleep(1.0)
            if not node.is_leader:
                continue
            # The leader stamps lease commands with its clock; replicas use the log's time.
            now_ms = int(time.time() * 1000)
            print("visits:", await node.propose(incr("visits")))
            print("lock:", await node.propose(acquire("job", node_id, 5000, now_ms)))
            await node.read_barrier()  # now local state reflects every committed write
            print("counters (linearizable read):", machine.counters)
    finally:
        await node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--id", required=True)
    parser.add_argument("--data-dir", default=None, help="default: ./data-ID")
    parser.add_argument("--initial-cluster", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.id, args.data_dir or f"data-{args.id}", args.initial_cluster))


if __name__ == "__main__":
    main()
