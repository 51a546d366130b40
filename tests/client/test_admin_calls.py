"""The sync client's cluster-administration calls (members, leadership,
every node's status) against scripted fake nodes, and what their errors carry."""

from __future__ import annotations

import random
import socket

import pytest

from raftkv.client import (
    AuthError,
    BadRequest,
    Client,
    EndpointStatus,
    OutcomeUnknown,
    Unavailable,
)
from tests.client.fakeserver import DROP, fake_nodes
from tests.client.test_client import NO_LEADER, FakeTime, client

MEMBERS = {"members": {"n1": {"raft_addr": "h:7001", "api_addr": "h:8001"}}, "voters": ["n1"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_admin_call_sends_its_request_and_returns_the_body() -> None:
    t = FakeTime()
    with fake_nodes([(200, MEMBERS)]) as (node,):
        c = client([node.address], t)
        answers = [
            c.members(),
            c.member_add("n/4", raft_addr="h:7004", api_addr="h:8004"),
            c.member_add("n5", raft_addr="h:7005", api_addr="h:8005", learner=True),
            c.member_promote("n/4"),
            c.member_update("n4", raft_addr="h:1", api_addr="h:2"),
            c.member_remove("n4"),
            c.transfer_leader("n2"),
        ]
    assert answers == [MEMBERS] * 7
    assert [(s.method, s.path, s.body) for s in node.seen] == [
        ("GET", "/v1/members", None),
        (
            "POST",
            "/v1/members",
            {"id": "n/4", "raft_addr": "h:7004", "api_addr": "h:8004", "learner": False},
        ),
        (
            "POST",
            "/v1/members",
            {"id": "n5", "raft_addr": "h:7005", "api_addr": "h:8005", "learner": True},
        ),
        ("POST", "/v1/members/n%2F4/promote", None),
        ("PUT", "/v1/members/n4", {"raft_addr": "h:1", "api_addr": "h:2"}),
        ("DELETE", "/v1/members/n4", None),
        ("POST", "/v1/leader/transfer", {"to": "n2"}),
    ]


def test_a_refusal_carries_the_status_and_the_nodes_reason() -> None:
    t = FakeTime()
    with fake_nodes([(409, {"error": "n4 was removed"}), (401, {"error": "no token"})]) as (n,):
        c = client([n.address], t)
        with pytest.raises(BadRequest, match="members add n4: HTTP 409 n4 was removed") as err:
            c.member_add("n4", raft_addr="h:1", api_addr="h:2")
        assert (err.value.status, err.value.reason) == (409, "n4 was removed")
        with pytest.raises(AuthError) as auth:
            c.members()
        assert (auth.value.status, auth.value.reason) == (401, "no token")
    with pytest.raises(BadRequest, match="node id"):
        c.member_remove("")


def test_retried_answers_and_failures_are_kept_for_the_caller() -> None:
    """After the deadline: the last 503/504 answer, and each endpoint that did
    not answer with its first failure."""
    t = FakeTime()
    down = f"127.0.0.1:{closed_port()}"
    with fake_nodes([NO_LEADER]) as (node,), pytest.raises(Unavailable) as err:
        client([down, node.address], t, deadline=1.0).members()
    assert (err.value.status, err.value.reason) == (503, "no leader")
    assert err.value.failures == ((down, "[Errno 111] Connection refused"),)
    with pytest.raises(Unavailable) as err:
        client([down], FakeTime(), deadline=1.0).transfer_leader("n2")
    assert (err.value.status, err.value.reason) == (None, "")
    assert err.value.failures == ((down, "[Errno 111] Connection refused"),)
    timed_out = (504, {"error": "commit timed out"})
    with fake_nodes([timed_out]) as (node,), pytest.raises(OutcomeUnknown) as unknown:
        client([node.address], FakeTime(), deadline=1.0).member_remove("n4")
    assert (unknown.value.status, unknown.value.reason) == (504, "commit timed out")


def test_statuses_asks_every_endpoint_once() -> None:
    down = f"127.0.0.1:{closed_port()}"
    status = {"id": "n1", "role": "leader"}
    with fake_nodes([(200, status)], [(503, {"error": "stopping"})], [DROP]) as nodes:
        c = Client(
            [n.address for n in nodes] + [down], token="tk", rng=random.Random(1), deadline=5
        )
        answers = c.statuses()
    a, b, dropped = (n.address for n in nodes)
    assert answers[:2] == (
        EndpointStatus(endpoint=a, http_status=200, body=status),
        EndpointStatus(endpoint=b, http_status=503, body={"error": "stopping"}),
    )
    assert answers[0].status == status and answers[1].status is None
    assert (answers[2].endpoint, answers[2].http_status) == (dropped, 0)
    assert answers[3] == EndpointStatus(
        endpoint=down, http_status=0, body="[Errno 111] Connection refused"
    )
    assert [len(n.seen) for n in nodes] == [1, 1, 1]  # no retries
    assert {s.headers.get("Authorization") for n in nodes for s in n.seen} == {"Bearer tk"}
