"""Fixtures of the security tests: a test PKI (openssl CLI) and real-TCP in-process clusters.

The certificates are made with the ``openssl`` command (the ``cryptography``
package is not a dependency): a CA, one certificate for every node (all nodes
listen on 127.0.0.1, so one subjectAltName fits them all), a client certificate,
and a second, unrelated CA with a certificate of its own -- an intruder's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from raftkv.core.types import NodeId
from raftkv.server.config import ServerConfig
from raftkv.server.http.server import ApiServer
from raftkv.server.node import RaftNode
from tests.cluster.harness import InProcCluster

SECRET = b"correct horse battery staple 0123456789"
RW_TOKEN = "rw-token-0123456789abcdef"
RO_TOKEN = "ro-token-0123456789abcdef"
TOKENS_TEXT = f"rw {RW_TOKEN} writer\nro {RO_TOKEN} reader\n"


@dataclass(frozen=True)
class Pki:
    ca: str
    node_cert: str
    node_key: str
    client_cert: str
    client_key: str
    rogue_ca: str
    rogue_cert: str
    rogue_key: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_cert(d: Path, name: str, ca: str) -> None:
    (d / f"{name}.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_cert(d, "node", "ca")
    _make_cert(d, "client", "ca")
    _make_ca(d, "rogue-ca")
    _make_cert(d, "rogue", "rogue-ca")
    for key in d.glob("*.key"):
        os.chmod(key, 0o600)
    p = str(d)
    return Pki(
        ca=f"{p}/ca.pem",
        node_cert=f"{p}/node.pem",
        node_key=f"{p}/node.key",
        client_cert=f"{p}/client.pem",
        client_key=f"{p}/client.key",
        rogue_ca=f"{p}/rogue-ca.pem",
        rogue_cert=f"{p}/rogue.pem",
        rogue_key=f"{p}/rogue.key",
    )


@dataclass
class HubCluster(InProcCluster):
    """:class:`InProcCluster` (in-memory peer links) with config overrides."""

    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, node_id: NodeId, state: str = "new") -> ServerConfig:
        base = super().config(node_id, state)
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        return ServerConfig(**{**fields, **self.overrides})


@dataclass
class TcpCluster(HubCluster):
    """:class:`HubCluster` over the real TCP peer transport."""

    async def start_node(self, node_id: NodeId, state: str = "new") -> None:
        cfg = self.config(node_id, state)
        node = RaftNode(cfg)  # no hub: TcpTransport
        await node.start()
        api = ApiServer(node, cfg)
        await api.start()
        self.nodes[node_id] = node
        self.apis[node_id] = api


def run(coro: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))
