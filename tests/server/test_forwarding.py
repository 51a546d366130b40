"""Writes sent to a follower reach the leader as the same validated command.

Issue 15, defect 1: a follower that forwarded over HTTP rebuilt the URL from
the *decoded* path, so ``PUT /v1/kv/victim%23evil`` overwrote ``victim``. Every
write route is tried here with keys holding the characters URLs treat
specially, through a follower, on each way a write can travel to the leader:
the peer link, HTTP with client tokens, and HTTP when the peer link is down.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftkv.core.types import NodeId
from raftkv.replica.kv import KVStateMachine
from raftkv.server.security import parse_tokens
from tests.security.conftest import RW_TOKEN, TOKENS_TEXT, HubCluster, run

# Each is a key of its own; none may touch another (or "victim").
AWKWARD_KEYS = [
    "victim#evil",
    "victim?x=1",
    "%41",
    "victim%2Fx",
    "a/b",
    "a+b",
    "a b",
    "ключ",
    "キー?#%",
    "victim/..",
]

MODES = ["peer-link", "tokens", "link-down"]


def _path(key: str) -> str:
    return "/v1/kv/" + urllib.parse.quote(key, safe="")


async def _call(
    s: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: Any = None,
) -> tuple[int, Any]:
    async with s.request(method, url, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def _data(c: HubCluster, node_id: NodeId) -> dict[str, Any]:
    sm = c.nodes[node_id].state_machine
    assert isinstance(sm, KVStateMachine)
    return dict(sm.items())


@pytest.mark.parametrize("mode", MODES)
def test_awkward_keys_through_a_follower(tmp_path: Path, mode: str) -> None:
    overrides: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if mode == "tokens":
        overrides["client_tokens"] = parse_tokens(TOKENS_TEXT)
        headers["Authorization"] = f"Bearer {RW_TOKEN}"

    async def main() -> None:
        async with HubCluster(tmp_path, overrides=overrides) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            f_node = c.nodes[follower]
            if mode == "link-down":
                # The peer link to the leader is down: writes go over HTTP.
                f_node.can_forward = lambda _leader: False  # type: ignore[method-assign]
            base = c.url(follower)
            async with aiohttp.ClientSession() as s:
                status, _ = await _call(s, "PUT", c.url(leader) + "/v1/kv/victim", headers, "safe")
                assert status == 200
                for i, key in enumerate(AWKWARD_KEYS):
                    url = base + _path(key)
                    status, body = await _call(s, "PUT", url, headers, {"n": i})
                    assert status == 200, (key, body)
                    status, body = await _call(
                        s, "POST", url + "/cas", headers, {"expect": {"n": i}, "value": i}
                    )
                    assert status == 200, (key, body)
                    status, body = await _call(s, "GET", url, headers)
                    assert (status, body["key"], body["value"]) == (200, key, i), body
                status, body = await _call(
                    s, "POST", base + "/v1/kv", headers, {"multi/?#%": 1, "victim": "safe"}
                )
                assert status == 200, body
                await c.nodes[leader].read_barrier()
                data = _data(c, leader)
                assert data["victim"] == "safe"
                for i, key in enumerate(AWKWARD_KEYS):
                    assert data[key] == i, key
                assert data["multi/?#%"] == 1
                assert "A" not in data and "victim%23evil" not in data
                for key in AWKWARD_KEYS:
                    status, body = await _call(s, "DELETE", base + _path(key), headers)
                    assert status == 200, (key, body)
                await c.nodes[leader].read_barrier()
                data = _data(c, leader)
                assert set(data) == {"victim", "multi/?#%"}, data

    run(main())


def test_the_leaders_answer_leads_the_commit_notice_in_one_frame(tmp_path: Path) -> None:
    # A follower answers its client as soon as the leader's answer arrives; if the
    # commit notice came first (or in an earlier frame), the follower would apply
    # the entry before it could answer.
    from raftkv.core.messages import AppendEntries
    from raftkv.transport.forward import ForwardResponse

    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            frames: list[list[object]] = []
            deliver = c.hub._deliver

            def recording(src: NodeId, dst: NodeId, msgs: list[Any]) -> None:
                if (src, dst) == (leader, follower):
                    frames.append(list(msgs))
                deliver(src, dst, msgs)

            c.hub._deliver = recording  # type: ignore[method-assign]
            async with aiohttp.ClientSession() as s:
                for i in range(5):
                    await asyncio.sleep(0.05)  # one write at a time, as a lone client
                    status, body = await _call(s, "PUT", c.url(follower) + f"/v1/kv/k{i}", {}, i)
                    assert status == 200, body
            answers = [f for f in frames if any(isinstance(m, ForwardResponse) for m in f)]
            assert len(answers) == 5
            for frame in answers:
                kinds = [type(m) for m in frame]
                assert kinds[0] is ForwardResponse, kinds
                notices = [m for m in frame if isinstance(m, AppendEntries)]
                assert notices and not notices[0].entries, kinds

    run(main())
