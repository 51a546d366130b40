"""Fuzzing the HTTP handlers of a live node: random and mutated requests.

Every answer is a JSON error or success with a status below 500 (no handler
crashes into "internal error"), every request is answered within its timeout
(no hang), and the node keeps serving throughout. Raw garbage on the socket is
answered with 400 or a closed connection.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.server.security import parse_tokens
from tests.security.conftest import RO_TOKEN, RW_TOKEN, TOKENS_TEXT, HubCluster
from tests.security.fuzz import fuzz, mutated

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One single-node cluster with tokens and small limits, on a loop in a thread."""
    state: dict[str, Any] = {}
    ready = threading.Event()
    data_dir: Path = tmp_path_factory.mktemp("fuzz-http")

    def serve() -> None:
        async def main() -> None:
            c = HubCluster(
                data_dir,
                n=1,
                overrides={
                    "client_tokens": parse_tokens(TOKENS_TEXT),
                    "max_body_bytes": 8192,
                    "max_value_bytes": 2048,
                    "max_multi_put_pairs": 8,
                    "max_key_bytes": 64,
                },
            )
            await c.start()
            try:
                leader = await c.leader()
                state["port"] = c.apis[leader].port
                state["loop"] = asyncio.get_running_loop()
                state["stop"] = asyncio.Event()
                ready.set()
                await state["stop"].wait()
            finally:
                await c.stop()

        try:
            asyncio.run(main())
        finally:
            ready.set()

    thread = threading.Thread(target=serve, name="fuzz-http-node", daemon=True)
    thread.start()
    assert ready.wait(30) and "port" in state, "the node did not start"
    yield state["port"]
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(30)


def request(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    finally:
        conn.close()


def still_serving(port: int) -> None:
    status, raw, _ = request(
        port, "GET", "/v1/status", None, {"Authorization": f"Bearer {RO_TOKEN}"}
    )
    assert status == 200 and json.loads(raw)["role"] == "leader"


keys = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", ".", "..", "a/b", "%", "\x00", "\ud800", "k" * 65, "x"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


# Nesting depths around the JSON decoder's recursion limit (about 1000), under
# and over the 8 KiB body limit of the fuzzed node.
depths = st.sampled_from([64, 65, 999, 1000, 1001, 3000, 8000, 20000]) | st.integers(1, 9000)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    json_values.map(_json_bytes),
    json_values.map(_json_bytes).flatmap(mutated),
    st.fixed_dictionaries({"expect": json_values, "value": json_values}).map(_json_bytes),
    st.dictionaries(keys, json_values, max_size=10).map(_json_bytes),
    depths.map(lambda n: b"[" * n),
    depths.map(lambda n: b'{"a":' * (n // 5)),
    st.sampled_from([b"1e999", b"-1e999", b"9" * 5000, b"NaN", b'"\\ud800"', b"\xff\xfe"]),
)


@st.composite
def routes(draw: st.DrawFn) -> tuple[str, str]:
    """(method, path): mostly the API's own routes, so bodies reach the handlers."""
    key = quote(draw(keys).encode("utf-8", "surrogatepass"), safe=draw(st.sampled_from(["", "/"])))
    method, path = draw(
        st.sampled_from(
            [
                ("PUT", f"/v1/kv/{key}"),
                ("PUT", f"/v1/kv/{key}"),
                ("GET", f"/v1/kv/{key}"),
                ("DELETE", f"/v1/kv/{key}"),
                ("POST", f"/v1/kv/{key}/cas"),
                ("POST", f"/v1/kv/{key}/cas"),
                ("POST", "/v1/kv"),
                ("POST", "/v1/kv"),
                ("GET", "/v1/status"),
                ("GET", "/v1/members"),
                ("POST", "/v1/members"),
                ("POST", f"/v1/members/x{key}/promote"),
                ("POST", "/v1/leader/transfer"),
                ("GET", "/metrics"),
                ("GET", "/v1/health/ready"),
                ("GET", f"/{key}"),
            ]
        )
    )
    if draw(st.integers(0, 9)) == 0:  # sometimes any method on that path
        method = draw(st.sampled_from(["GET", "PUT", "POST", "PATCH", "OPTIONS"]))
    query = draw(st.sampled_from(["", "", "?consistency=stale", "?consistency=linearizable"]))
    if draw(st.integers(0, 4)) == 0:
        query = "?" + quote(draw(st.text(max_size=20)).encode("utf-8", "surrogatepass"), safe="=&")
    return method, path + query


printable = st.characters(min_codepoint=32, max_codepoint=126)
headers = st.fixed_dictionaries(
    {
        # Mostly the write token, so requests get past the guard to the handlers.
        "Authorization": st.sampled_from(
            [f"Bearer {RW_TOKEN}"] * 6
            + [f"Bearer {RO_TOKEN}", "Bearer", "Basic abc", f"bearer {RW_TOKEN}", ""]
        )
        | st.text(alphabet=printable, max_size=40),
    },
    optional={
        "Idempotency-Key": st.text(alphabet=printable, max_size=40)
        | st.sampled_from(["c/1", "c/0", "c/-1", "c/99999999999999999999", "/1", "c/"]),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "x/y; charset=bogus"]),
    },
)


@fuzz
@given(route=routes(), body=bodies, hdrs=headers)
def test_random_requests(
    api_port: int, route: tuple[str, str], body: bytes | None, hdrs: dict[str, str]
) -> None:
    method, path = route
    if method == "DELETE" and path.startswith("/v1/members/"):
        return  # do not remove the only member of the fuzzed cluster
    status, raw, content_type = request(api_port, method, path, body, hdrs)
    assert status < 500 or status in (503, 504), (status, raw[:200])
    if path.split("?", 1)[0] == "/" and method == "GET" and status == 200:
        # The dashboard page: static HTML, its data comes from /v1/cluster.
        assert content_type.startswith("text/html"), (status, content_type)
    elif not (path.startswith("/metrics") and status == 200):
        assert content_type.startswith("application/json"), (status, content_type, raw[:200])
        answer = json.loads(raw)
        assert isinstance(answer, dict)
        assert status == 200 or "error" in answer


raw_requests = st.one_of(
    st.binary(max_size=512),
    st.sampled_from(
        [
            b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n12345",
            b"POST /v1/kv HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\n0\r\n\r\n',
            b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + RO_TOKEN.encode()
            + b"\r\n\r\n",
        ]
    ).flatmap(mutated),
)


@fuzz
@given(raw_requests)
def test_raw_garbage_on_the_api_socket(api_port: int, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", api_port), timeout=TIMEOUT) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionError:
            answer = b""
    # Either nothing (closed) or HTTP responses; a 500 never.
    assert b" 500 " not in answer.split(b"\r\n", 1)[0], answer[:200]


def test_still_serving_after_the_fuzz(api_port: int) -> None:
    still_serving(api_port)
