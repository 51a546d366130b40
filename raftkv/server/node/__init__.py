"""The node runtime: one replica's core, storage, transport and replica on asyncio.

:class:`RaftNode` is the whole public surface (the HTTP API, the tests and
jepsen use it); it composes one part per job:

- :mod:`~raftkv.server.node.runtime`: :class:`RaftNode` itself -- start and
  stop, crash-stop, the ticker and the drive loop (one Ready at a time);
- :mod:`~raftkv.server.node.proposals`: pending proposals and their futures;
- :mod:`~raftkv.server.node.reads`: linearizable reads (shared ReadIndex
  requests) and waits for the applied index;
- :mod:`~raftkv.server.node.forwarding`: writes forwarded to the leader over
  the peer link, and those served here;
- :mod:`~raftkv.server.node.admin`: membership changes and leadership transfer;
- :mod:`~raftkv.server.node.quota`: the KV store's space quota (the NOSPACE alarm);
- :mod:`~raftkv.server.node.snapshots`: snapshots taken, installed, restored;
- :mod:`~raftkv.server.node.datadir`: opening storage, ``members.json``;
- :mod:`~raftkv.server.node.status`: the status view.
"""

from __future__ import annotations

from raftkv.replica.statemachine import StateMachine
from raftkv.server.node.forwarding import ForwardHandler, ForwardReply
from raftkv.server.node.runtime import RaftNode, default_state_machine
from raftkv.server.node.status import NodeStatus

__all__ = [
    "RaftNode",
    "StateMachine",
    "NodeStatus",
    "ForwardHandler",
    "ForwardReply",
    "default_state_machine",
]
