"""The HTTP API's guard and limits: tokens (401/403), sizes (400/413), concurrency (503)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from raftkv.server.config import ServerConfig
from raftkv.server.errors import ConfigError
from raftkv.server.security import parse_tokens, read_secret_file, read_token_file
from tests.security.conftest import RO_TOKEN, RW_TOKEN, TOKENS_TEXT, HubCluster, run


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with session.request(method, url, data=data, headers=headers) as resp:
        text = await resp.text()
        is_json = resp.content_type == "application/json"
        return resp.status, json.loads(text) if is_json else text, dict(resp.headers)


def test_tokens_401_403_and_forwarding(tmp_path: Path) -> None:
    async def main() -> None:
        c = HubCluster(tmp_path, overrides={"client_tokens": parse_tokens(TOKENS_TEXT)})
        await c.start()
        try:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            url = c.url(follower)
            async with aiohttp.ClientSession() as s:
                status, body, headers = await call(s, "GET", url + "/v1/kv/x")
                assert status == 401 and body == {"error": "missing bearer token"}
                assert headers["WWW-Authenticate"].startswith("Bearer")
                status, body, _ = await call(s, "GET", url + "/v1/status", token="x" * 20)
                assert (status, body) == (401, {"error": "invalid token"})
                status, body, _ = await call(s, "PUT", url + "/v1/kv/x", token=RO_TOKEN, body=1)
                assert (status, body) == (403, {"error": "this token is read-only"})
                # Forwarded to the leader, which checks the token again.
                status, body, _ = await call(s, "PUT", url + "/v1/kv/x", token=RW_TOKEN, body=1)
                assert status == 200 and body["ok"] is True, body
                status, body, _ = await call(s, "GET", url + "/v1/kv/x", token=RO_TOKEN)
                assert status == 200 and body["value"] == 1
                # Probes need no token; metrics do.
                status, _, _ = await call(s, "GET", url + "/v1/health/live")
                assert status == 200
                status, _, _ = await call(s, "GET", url + "/metrics")
                assert status == 401
                status, _, _ = await call(s, "GET", url + "/metrics", token=RO_TOKEN)
                assert status == 200
                text = c.nodes[follower].metrics.render().decode()
                assert 'raftkv_http_refused_total{node="n' in text and "unauthenticated" in text
        finally:
            await c.stop()

    run(main())


def test_size_limits(tmp_path: Path) -> None:
    async def main() -> None:
        c = HubCluster(
            tmp_path,
            n=1,
            overrides={
                "max_key_bytes": 8,
                "max_value_bytes": 64,
                "max_multi_put_pairs": 3,
                "max_body_bytes": 4096,
            },
        )
        await c.start()
        try:
            url = c.url(await c.leader())
            async with aiohttp.ClientSession() as s:
                assert (await call(s, "PUT", url + "/v1/kv/12345678", body=1))[0] == 200
                status, body, _ = await call(s, "PUT", url + "/v1/kv/123456789", body=1)
                assert status == 400 and "longer than 8 bytes" in body["error"]
                status, body, _ = await call(s, "PUT", url + "/v1/kv/k", body="x" * 100)
                assert status == 413 and "limit is 64" in body["error"]
                status, body, _ = await call(
                    s, "POST", url + "/v1/kv/k/cas", body={"expect": None, "value": "x" * 100}
                )
                assert status == 413, body
                pairs = {f"k{i}": i for i in range(4)}
                status, body, _ = await call(s, "POST", url + "/v1/kv", body=pairs)
                assert status == 413 and "3 per multi-put" in body["error"]
                status, body, _ = await call(s, "POST", url + "/v1/kv", body={"k": "x" * 100})
                assert status == 413, body
                status, body, _ = await call(s, "POST", url + "/v1/kv", body={"123456789": 1})
                assert status == 400, body
                status, body, _ = await call(s, "PUT", url + "/v1/kv/k", raw=b"1" * 5000)
                assert (status, body) == (413, {"error": "request body too large"})
                # Fuzz finding: json's C decoder raised RecursionError -> 500 + traceback.
                status, body, _ = await call(s, "PUT", url + "/v1/kv/k", raw=b"[" * 4000)
                assert status == 400 and "too deeply" in body["error"], body
                assert (await call(s, "GET", url + "/v1/kv/12345678"))[0] == 200
        finally:
            await c.stop()

    run(main())


def test_concurrency_limit(tmp_path: Path) -> None:
    async def main() -> None:
        c = HubCluster(tmp_path, overrides={"max_concurrent_requests": 1})
        await c.start()
        try:
            leader = await c.leader()
            c.hub.isolate(leader)  # its writes now wait until they time out
            url = c.url(leader)
            async with aiohttp.ClientSession() as s:
                slow = asyncio.create_task(call(s, "PUT", url + "/v1/kv/a", body=1))
                await asyncio.sleep(0.2)
                status, body, _ = await call(s, "GET", url + "/v1/status")
                assert (status, body) == (503, {"error": "too many requests in flight"})
                assert (await call(s, "GET", url + "/v1/health/live"))[0] == 200
                await slow
                assert (await call(s, "GET", url + "/v1/status"))[0] == 200
        finally:
            await c.stop()

    run(main())


def test_token_file_format(tmp_path: Path) -> None:
    table = parse_tokens("# comment\nrw " + RW_TOKEN + " alice\n\nRO " + RO_TOKEN + "\n")
    assert len(table) == 2
    rw, ro = table.lookup(RW_TOKEN), table.lookup(RO_TOKEN)
    assert rw is not None and rw.can_write and rw.name == "alice"
    assert ro is not None and not ro.can_write
    assert table.lookup(RW_TOKEN[:-1]) is None and table.lookup("") is None
    assert RW_TOKEN not in repr(table)
    for text, message in [
        ("", "no tokens"),
        ("admin " + RW_TOKEN, "role must be ro or rw"),
        ("rw short", "at least 16"),
        ("rw", "ROLE TOKEN"),
        (f"rw {RW_TOKEN}\nro {RW_TOKEN}", "duplicate"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_tokens(text)
    path = tmp_path / "tokens"
    path.write_text(TOKENS_TEXT)
    assert read_token_file(str(path)) == parse_tokens(TOKENS_TEXT, source="x")
    with pytest.raises(ConfigError, match="No such file"):
        read_token_file(str(tmp_path / "missing"))


def test_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("0123456789abcdef0123\n")
    assert read_secret_file(str(path)) == b"0123456789abcdef0123"
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        read_secret_file(str(path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_key_bytes": 2000}, "--max-key-bytes"),
        ({"max_value_bytes": 0}, "must be positive"),
        ({"max_peer_frame_bytes": 1000}, "--max-peer-frame-bytes"),
        ({"tls_cert_file": "c.pem"}, "all three"),
        ({"tls_api_client_auth": True}, "--tls-api-client-auth needs"),
    ],
)
def test_config_validation(overrides: dict[str, Any], message: str) -> None:
    cfg = ServerConfig(
        node_id="n1",  # type: ignore[arg-type]
        data_dir="d",
        raft_addr=("127.0.0.1", 1),
        api_addr=("127.0.0.1", 2),
        **overrides,
    )
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster-secret-file", "{tmp}/missing"], "No such file"),
        (["--cluster-secret-file", "{tmp}/short"], "at least 16 bytes"),
        (["--cluster-secret", "x" * 20, "--cluster-secret-file", "{tmp}/short"], "not both"),
        (["--client-token-file", "{tmp}/short"], "ROLE TOKEN"),
        (["--tls-cert", "{tmp}/c", "--tls-key", "{tmp}/k", "--tls-ca", "{tmp}/ca"], "--tls"),
        (["--tls-cert", "{tmp}/c"], "all three"),
    ],
)
def test_serve_reports_bad_security_files_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from raftkv.cli import main

    (tmp_path / "short").write_text("short\n")
    env = {
        "RAFTKV_ID": "n1",
        "RAFTKV_DATA_DIR": str(tmp_path / "data"),
        "RAFTKV_RAFT_ADDR": "127.0.0.1:0",
        "RAFTKV_API_ADDR": "127.0.0.1:0",
        "RAFTKV_INITIAL_CLUSTER": "n1=127.0.0.1:1/127.0.0.1:2",
    }
    argv = ["serve", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    result = CliRunner().invoke(main, argv, env=env)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output


def test_cluster_view_never_sends_the_callers_token_to_members(tmp_path: Path) -> None:
    """``GET /v1/cluster`` asks every member's address for its status. A learner
    added with an address of someone's choosing must not receive the caller's
    token (issue 15, item 9); members are asked with the status-only token."""
    seen: list[dict[str, str]] = []

    async def capture(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(dict(request.headers))
        return aiohttp.web.json_response({"id": "n9"})

    async def main() -> None:
        app = aiohttp.web.Application()
        app.router.add_get("/{tail:.*}", capture)
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        tokens = parse_tokens(TOKENS_TEXT)
        try:
            async with HubCluster(tmp_path, overrides={"client_tokens": tokens}) as c:
                leader = await c.leader()
                url = c.url(leader)
                async with aiohttp.ClientSession() as s:
                    learner = {
                        "id": "n9",
                        "raft_addr": "127.0.0.1:9",
                        "api_addr": f"127.0.0.1:{port}",
                        "learner": True,
                    }
                    status, body, _ = await call(
                        s, "POST", url + "/v1/members", token=RW_TOKEN, body=learner
                    )
                    assert status == 200, body
                    status, body, _ = await call(s, "GET", url + "/v1/cluster", token=RW_TOKEN)
                    assert status == 200, body
                    statuses = {m["id"]: m["status"] for m in body["members"]}
                    # The real members answered the status token.
                    assert all(statuses[n] is not None for n in c.nodes), body
                    # The status token opens /v1/status and nothing else.
                    status_token = tokens.status_token
                    for method, path in (("GET", "/v1/kv/x"), ("GET", "/metrics")):
                        answer = await call(s, method, url + path, token=status_token)
                        assert answer[0] == 401, (path, answer)
                    answer = await call(s, "GET", url + "/v1/status", token=status_token)
                    assert answer[0] == 200
            assert seen, "the learner's address was never asked"
            for headers in seen:
                assert RW_TOKEN not in " ".join(headers.values()), headers
                assert headers.get("Authorization") == f"Bearer {tokens.status_token}"
        finally:
            await runner.cleanup()

    run(main())
