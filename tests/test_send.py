"""``send.py`` as users run it: a subprocess, one-line errors, exit status 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.fakeserver import fake_nodes

SEND = Path(__file__).resolve().parent.parent / "send.py"


def send(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SEND), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ('{"y": 7', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("7", "expected a JSON object"),
        ("{}", "empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(arg: str, message: str) -> None:
    result = send(arg)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stderr.startswith("send.py: error: ")


def test_unreachable_cluster_is_one_line_and_exit_1() -> None:
    endpoints = f"127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}"
    result = send("--endpoints", endpoints, "--timeout", "0.5", '{"y": 7}')
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no node answered" in result.stderr and "connection refused" in result.stderr
    assert "Traceback" not in result.stderr


def test_commits_one_multi_put_and_names_the_leader() -> None:
    status = {"id": "n2", "role": "leader", "leader": "n2", "term": 3}
    with fake_nodes([(200, {"ok": True, "index": 12}), (200, status)]) as (node,):
        result = send('{"y": 7, "z": [1, null]}', env={"RAFTKV_ENDPOINTS": node.address})
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'committed {"y": 7, "z": [1, null]} at index 12 (leader n2)\n'
    put = node.seen[0]
    assert (put.method, put.path, put.body) == ("POST", "/v1/kv", {"y": 7, "z": [1, None]})
    assert put.headers.get("Idempotency-Key", "").endswith(".0/1")


def test_help() -> None:
    result = send("--help")
    assert result.returncode == 0 and "atomic multi-put" in result.stdout
