"""The etcd gRPC API's security: the HTTP API's client tokens and TLS apply to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from raftkv.etcd.pb import rpc_pb2
from raftkv.server.security import parse_tokens
from tests.etcd.conftest import etcd_cluster, follower, grpc_target, stubs
from tests.security.conftest import RO_TOKEN, RW_TOKEN, TOKENS_TEXT, Pki, pki, run

__all__ = ["pki"]  # the fixture


def test_tokens_as_metadata_bearer_or_authenticate(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path, client_tokens=parse_tokens(TOKENS_TEXT)) as c:
            leader = await c.leader()
            # A follower: its writes go to the leader over HTTP with the token.
            async with grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel:
                s = stubs(channel)
                put = rpc_pb2.PutRequest(key=b"k", value=b"v")
                for metadata, code in (
                    ((), grpc.StatusCode.UNAUTHENTICATED),
                    ((("token", "wrong-token-0123456789"),), grpc.StatusCode.UNAUTHENTICATED),
                    ((("token", RO_TOKEN),), grpc.StatusCode.PERMISSION_DENIED),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await s.kv.Put(put, metadata=metadata)
                    assert info.value.code() == code
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await s.kv.Range(rpc_pb2.RangeRequest(key=b"k"))
                assert info.value.details() == "etcdserver: invalid auth token"
                done = await s.kv.Put(put, metadata=(("token", RW_TOKEN),))
                assert done.header.revision == 2
                await s.kv.Put(put, metadata=(("authorization", f"Bearer {RW_TOKEN}"),))
                got = await s.kv.Range(
                    rpc_pb2.RangeRequest(key=b"k"), metadata=(("token", RO_TOKEN),)
                )
                assert got.kvs[0].value == b"v" and got.kvs[0].version == 2
                # etcdctl --user NAME:TOKEN: Authenticate answers the token itself.
                auth = await s.auth.Authenticate(
                    rpc_pb2.AuthenticateRequest(name="any", password=RW_TOKEN)
                )
                assert auth.token == RW_TOKEN
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await s.auth.Authenticate(
                        rpc_pb2.AuthenticateRequest(name="any", password="nope")
                    )
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(scenario())


def test_tls_serves_the_grpc_port(tmp_path: Path, pki: Pki) -> None:
    tls = {
        "tls_cert_file": pki.node_cert,
        "tls_key_file": pki.node_key,
        "tls_ca_file": pki.ca,
    }

    async def scenario() -> None:
        async with etcd_cluster(tmp_path, **tls) as c:
            leader = await c.leader()
            target = grpc_target(c, leader)
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(pki.ca).read_bytes())
            async with grpc.aio.secure_channel(target, credentials) as channel:
                done = await stubs(channel).kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
                assert done.header.revision == 2
            async with grpc.aio.insecure_channel(target) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stubs(channel).kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=2)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    run(scenario())


def test_tokens_on_lease_calls_and_watch_streams_through_a_follower(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with etcd_cluster(tmp_path, client_tokens=parse_tokens(TOKENS_TEXT)) as c:
            leader = await c.leader()
            rw, ro = (("token", RW_TOKEN),), (("token", RO_TOKEN),)
            async with grpc.aio.insecure_channel(grpc_target(c, follower(c, leader))) as channel:
                s = stubs(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), metadata=ro)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
                granted = await s.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), metadata=rw)

                async def one() -> AsyncIterator[rpc_pb2.LeaseKeepAliveRequest]:
                    yield rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID)

                with pytest.raises(grpc.aio.AioRpcError) as info:
                    [r async for r in s.lease.LeaseKeepAlive(one(), metadata=ro)]
                assert info.value.details() == "etcdserver: permission denied"
                # Forwarded to the leader over HTTP with the client's token.
                renewed = [r async for r in s.lease.LeaseKeepAlive(one(), metadata=rw)]
                assert [(r.ID, r.TTL) for r in renewed] == [(granted.ID, 30)]
                ttl = await s.lease.LeaseTimeToLive(
                    rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID), metadata=ro
                )
                assert ttl.grantedTTL == 30
                call = s.watch.Watch(metadata=ro)  # a read
                await call.write(
                    rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))
                )
                assert (await asyncio.wait_for(call.read(), 5)).created
                call.cancel()
                unknown = s.watch.Watch()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await asyncio.wait_for(unknown.read(), 5)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED

    run(scenario())
