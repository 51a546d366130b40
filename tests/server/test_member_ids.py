"""Member ids and addresses: one rule for every layer (issue 15, defect 4).

``POST /v1/members`` used to take any non-empty id. A 300-character learner id
entered every ConfState, every InstallSnapshot then failed to encode, and a
lagging follower never caught up again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.core.messages import Heartbeat
from raftkv.core.types import ConfChange, ConfChangeSingle, ConfChangeType, NodeId
from raftkv.limits import MAX_MEMBERS, is_host, is_node_id
from raftkv.server.config import parse_host_port, parse_initial_cluster
from raftkv.server.errors import BadRequest, ConfigError
from raftkv.transport.codec import decode_batch, encode_batch
from raftkv.transport.errors import CodecError
from tests.security.conftest import HubCluster, run


async def _post(s: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with s.post(url, data=json.dumps(body)) as r:
        return r.status, await r.json(content_type=None)


BAD_IDS = ["x" * 300, "n 4", "-n4", "n4/promote", "n4%2F", "ключ", ".", "..", "n4\n", ""]
BAD_ADDRS = ["evil.com/x@127.0.0.1:7009", "h st:7009", "host:99999", "[::1%eth0]:7009", ":7009"]


def test_members_add_refuses_bad_ids_and_addresses_on_every_node(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            async with aiohttp.ClientSession() as s:
                for node_id in (leader, follower):
                    url = c.url(node_id) + "/v1/members"
                    for bad in BAD_IDS:
                        body = {"id": bad, "raft_addr": "127.0.0.1:7009", "api_addr": "h:8009"}
                        status, answer = await _post(s, url, {**body, "learner": True})
                        assert status == 400, (bad, answer)
                    for bad in BAD_ADDRS:
                        body = {"id": "n9", "raft_addr": bad, "api_addr": "h:8009"}
                        status, answer = await _post(s, url, body)
                        assert status == 400, (bad, answer)
                        assert "host" in answer["error"] or "port" in answer["error"], answer
                    for path in ("/v1/members/n%204", "/v1/members/" + "x" * 300):
                        async with s.delete(c.url(node_id) + path) as r:
                            assert r.status == 400, await r.text()
                    status, answer = await _post(
                        s, c.url(node_id) + "/v1/leader/transfer", {"to": "a b"}
                    )
                    assert status == 400 and "bad member id" in answer["error"], answer
                # A good id still works, through the follower too.
                body = {"id": "n4.x_y-z", "raft_addr": "127.0.0.1:7009", "api_addr": "h-1.ex:8009"}
                status, answer = await _post(
                    s, c.url(follower) + "/v1/members", {**body, "learner": True}
                )
                assert status == 200, answer
                assert "n4.x_y-z" in answer["result"]["learners"]

    run(main())


def test_a_committed_change_with_a_bad_id_is_refused_by_every_replica(tmp_path: Path) -> None:
    """A change that skipped the API's check (an older proposer) is refused at apply."""

    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            node = c.nodes[leader]
            before = node.status()
            bad = NodeId("y" * 300)
            cc = ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, bad),))
            with pytest.raises(BadRequest, match="bad member id"):
                await node._admin.propose_conf_change(cc)
            for n in c.nodes.values():
                await n.wait_applied(node.applied_index, timeout=5)
                assert n.status().learners == before.learners
                assert bad not in n.members
            # And the cluster still takes changes afterwards.
            status = await node._admin.propose_conf_change(
                ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, NodeId("n5")),))
            )
            assert isinstance(status, dict) and "n5" in status["learners"]

    run(main())


def test_membership_size_is_bounded_by_the_codec_limit() -> None:
    from raftkv.replica.membership import refuse_members

    full = [NodeId(f"n{i}") for i in range(MAX_MEMBERS)]
    cc = ConfChange(changes=(ConfChangeSingle(ConfChangeType.ADD_LEARNER, NodeId("extra")),))
    refusal = refuse_members(cc, full)
    assert refusal is not None and str(MAX_MEMBERS) in refusal.message
    assert refuse_members(cc, full[:-1]) is None


@given(st.text(max_size=80))
def test_one_rule_for_ids_in_config_codec_and_api(text: str) -> None:
    """The configuration, the peer codec and the API accept exactly the same ids."""
    in_config = True
    try:
        parse_initial_cluster(f"{text}=127.0.0.1:1/127.0.0.1:2")
    except ConfigError:
        in_config = False
    in_codec = True
    try:
        msg = Heartbeat(term=1, sender=NodeId(text), to=NodeId("b"), commit=0)
        decode_batch(encode_batch([msg]))
    except (CodecError, ValueError, TypeError):
        in_codec = False
    stripped = text.strip()
    if stripped != text or "," in text or "=" in text:
        return  # the --initial-cluster syntax trims and splits on these
    assert in_config == in_codec == is_node_id(text), text


@given(st.text(max_size=40))
def test_host_rule_in_config(text: str) -> None:
    try:
        host, _ = parse_host_port(f"{text}:80")
    except ConfigError:
        return
    assert is_host(host)
    assert not any(ch in host for ch in "/@?#% \t\r\n")
