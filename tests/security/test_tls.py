"""Mutual TLS between peers and on the API, with tokens: certificates made in the test."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
from click.testing import CliRunner

import send
from raftkv.cli import main as cli_main
from raftkv.client import AsyncClient, AuthError, Client, ClientError
from raftkv.core.messages import RequestVote
from raftkv.core.types import NodeId
from raftkv.server.security import client_ssl_context, parse_tokens, server_ssl_context
from raftkv.transport.tcp import TcpTransport
from tests.security.conftest import RO_TOKEN, RW_TOKEN, SECRET, TOKENS_TEXT, Pki, TcpCluster, run

pytestmark = pytest.mark.cluster


def tls_cluster(tmp_path: Path, pki: Pki, *, api_client_auth: bool = True) -> TcpCluster:
    return TcpCluster(
        tmp_path,
        overrides={
            "cluster_secret": SECRET,
            "tls_cert_file": pki.node_cert,
            "tls_key_file": pki.node_key,
            "tls_ca_file": pki.ca,
            "tls_api_client_auth": api_client_auth,
            "client_tokens": parse_tokens(TOKENS_TEXT),
        },
    )


def endpoint(c: TcpCluster, node_id: NodeId) -> str:
    return f"127.0.0.1:{c.apis[node_id].port}"


def test_tls_cluster_forms_and_refuses_clients_without_credentials(
    tmp_path: Path, pki: Pki
) -> None:
    async def main() -> None:
        c = tls_cluster(tmp_path, pki)
        await c.start()
        try:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            # Every node dials both peers over TLS (a leader needs only a quorum,
            # so the last link may still be coming up when it is elected).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10.0
            while any(
                n._transport.stats.connects < 2  # type: ignore[union-attr]
                for n in c.nodes.values()
            ):
                assert loop.time() < deadline, "TLS peer links did not all come up"
                await asyncio.sleep(0.05)
            via = [endpoint(c, follower)]  # writes are forwarded to the leader over HTTPS
            tls = {"ca_file": pki.ca, "cert_file": pki.client_cert, "key_file": pki.client_key}

            def client(**kw: object) -> Client:
                return Client(via, deadline=3.0, timeout=2.0, **kw)  # type: ignore[arg-type]

            writer = client(token=RW_TOKEN, **tls)
            result = await asyncio.to_thread(writer.put, "k", {"v": 1})
            assert result.index is not None
            reader = client(token=RO_TOKEN, **tls)
            assert await asyncio.to_thread(reader.get, "k") == {"v": 1}

            with pytest.raises(AuthError) as denied:
                await asyncio.to_thread(reader.put, "k", 2)
            assert denied.value.status == 403
            for kw in ({}, {"token": "not-a-known-token-at-all"}):
                with pytest.raises(AuthError) as unauth:
                    await asyncio.to_thread(client(**kw, **tls).get, "k")  # type: ignore[arg-type]
                assert unauth.value.status == 401
            # No client certificate (the API requires one), or no trust in the
            # cluster's CA (the system store): refused before HTTP.
            no_cert = client(token=RW_TOKEN, ca_file=pki.ca)
            with pytest.raises(ClientError) as refused:
                await asyncio.to_thread(no_cert.get, "k")
            assert "closed connection" in str(refused.value) or "TLS" in str(refused.value)
            with pytest.raises(AuthError) as untrusted:
                await asyncio.to_thread(client(token=RW_TOKEN, ssl_context=_system_ctx()).get, "k")
            assert untrusted.value.status == 0
            # The other CA's certificate is not accepted either.
            rogue = client(
                token=RW_TOKEN, ca_file=pki.ca, cert_file=pki.rogue_cert, key_file=pki.rogue_key
            )
            with pytest.raises(ClientError) as refused:
                await asyncio.to_thread(rogue.get, "k")
            assert "closed connection" in str(refused.value) or "TLS" in str(refused.value)
            # Plain HTTP to the HTTPS port gets nothing.
            with pytest.raises(ClientError) as refused:
                await asyncio.to_thread(client(token=RW_TOKEN).get, "k")
            assert "closed connection" in str(refused.value) or "TLS" in str(refused.value)

            async with AsyncClient(via, deadline=3.0, token=RW_TOKEN, **tls) as kv:
                await kv.put("a", 1)
                assert await kv.get("a") == 1

            # The CLI and send.py, with credentials from the environment.
            env = {
                "RAFTKV_ENDPOINTS": ",".join(endpoint(c, n) for n in c.nodes),
                "RAFTKV_TOKEN": RW_TOKEN,
                "RAFTKV_CA_FILE": pki.ca,
                "RAFTKV_CERT_FILE": pki.client_cert,
                "RAFTKV_KEY_FILE": pki.client_key,
            }
            runner = CliRunner()
            out = await asyncio.to_thread(runner.invoke, cli_main, ["get", "k"], env=env)
            assert out.exit_code == 0 and json.loads(out.output) == {"v": 1}, out.output
            out = await asyncio.to_thread(runner.invoke, cli_main, ["status"], env=env)
            assert out.exit_code == 0 and "leader" in out.output, out.output
            env_ro = {**env, "RAFTKV_TOKEN": RO_TOKEN}
            out = await asyncio.to_thread(runner.invoke, cli_main, ["put", "k", "3"], env=env_ro)
            assert out.exit_code == 1 and "403" in out.output, out.output
            argv = [
                '{"s": 1}',
                "--endpoints",
                endpoint(c, leader),
                "--token",
                RW_TOKEN,
                "--ca-file",
                pki.ca,
                "--cert-file",
                pki.client_cert,
                "--key-file",
                pki.client_key,
                "--timeout",
                "5",
            ]
            assert await asyncio.to_thread(send.main, argv) == 0
        finally:
            await c.stop()

    run(main(), timeout=120)


def _system_ctx() -> ssl.SSLContext:
    return ssl.create_default_context()


def test_a_peer_with_a_certificate_from_another_ca_is_refused(tmp_path: Path, pki: Pki) -> None:
    """Right secret, right member id, wrong certificate: TLS stops it first."""

    async def main() -> None:
        c = tls_cluster(tmp_path, pki, api_client_auth=False)
        await c.start()
        intruder: TcpTransport | None = None
        try:
            leader = await c.leader()
            term = c.nodes[leader].term
            claimed = next(n for n in c.nodes if n != leader)
            intruder = TcpTransport(
                claimed,
                ("127.0.0.1", 0),
                {n: m.raft for n, m in c.members.items()},
                lambda msgs: None,
                cluster_secret=SECRET,
                reconnect_base=0.01,
                reconnect_cap=0.05,
                ssl_server=server_ssl_context(
                    pki.rogue_cert, pki.rogue_key, pki.rogue_ca, require_client_cert=True
                ),
                ssl_client=client_ssl_context(pki.rogue_ca, pki.rogue_cert, pki.rogue_key),
            )
            await intruder.start()
            for _ in range(10):
                intruder.send(
                    [
                        RequestVote(
                            term=500, sender=claimed, to=n, last_log_index=10**6, last_log_term=9
                        )
                        for n in c.nodes
                        if n != claimed
                    ]
                )
                await asyncio.sleep(0.1)
            assert intruder.stats.connects == 0 and intruder.stats.auth_failures > 0
            assert await c.leader() == leader
            assert all(n.term == term for n in c.nodes.values())
        finally:
            if intruder is not None:
                await intruder.stop()
            await c.stop()

    run(main())
