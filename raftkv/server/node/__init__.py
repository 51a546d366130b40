"""The node runtime: one replica's core, storage, transport and replica on asyncio.

:class:`RaftNode` (:mod:`~raftkv.server.node.runtime`) is the whole public
surface; the HTTP API, the tests and jepsen use it.
"""

from __future__ import annotations

from raftkv.replica.statemachine import StateMachine
from raftkv.server.node.runtime import (
    ForwardHandler,
    ForwardReply,
    RaftNode,
    default_state_machine,
)
from raftkv.server.node.status import NodeStatus

__all__ = [
    "RaftNode",
    "StateMachine",
    "NodeStatus",
    "ForwardHandler",
    "ForwardReply",
    "default_state_machine",
]
