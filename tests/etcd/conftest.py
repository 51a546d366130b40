"""Fixtures of the etcd API tests: an in-process cluster serving gRPC, and stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from raftkv.core.types import NodeId
from raftkv.etcd.pb import rpc_pb2_grpc
from tests.security.conftest import HubCluster


@dataclass
class Stubs:
    kv: Any
    maintenance: Any
    cluster: Any
    watch: Any
    lease: Any
    auth: Any


def stubs(channel: grpc.aio.Channel) -> Stubs:
    return Stubs(
        kv=rpc_pb2_grpc.KVStub(channel),
        maintenance=rpc_pb2_grpc.MaintenanceStub(channel),
        cluster=rpc_pb2_grpc.ClusterStub(channel),
        watch=rpc_pb2_grpc.WatchStub(channel),
        lease=rpc_pb2_grpc.LeaseStub(channel),
        auth=rpc_pb2_grpc.AuthStub(channel),
    )


@asynccontextmanager
async def etcd_cluster(tmp_path: Path, **overrides: Any) -> AsyncIterator[HubCluster]:
    """A 3-node in-process cluster with the gRPC API on free ports, a leader elected."""
    c = HubCluster(tmp_path, overrides={"grpc_addr": ("127.0.0.1", 0), **overrides})
    async with c:
        await c.leader()
        yield c


def grpc_target(c: HubCluster, node_id: NodeId) -> str:
    port = c.apis[node_id].grpc_port
    assert port is not None
    return f"127.0.0.1:{port}"


def follower(c: HubCluster, leader: NodeId) -> NodeId:
    return next(n for n in c.nodes if n != leader)
