"""``raftkv status``, ``members ...`` and ``transfer-leader`` against scripted
fake nodes: the requests they send, and their output, errors and exit codes."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from raftkv.cli import main
from raftkv.launch import free_ports
from tests.client.fakeserver import FakeNode, fake_nodes

STATUS = {
    "id": "n1",
    "role": "leader",
    "term": 3,
    "leader": "n1",
    "commit_index": 9,
    "applied_index": 9,
    "revision": 5,
}
MEMBERS = {"members": {"n1": {"api_addr": "a:1", "raft_addr": "r:1"}}, "voters": ["n1"]}


def invoke(endpoints: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--endpoints", endpoints, "--timeout", "1"])


def dead() -> str:
    """An endpoint nobody listens on."""
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_status_shows_every_node_and_the_unreachable_ones() -> None:
    down = dead()
    alarmed = {**STATUS, "id": "n2", "role": "follower", "alarm": "NOSPACE"}
    with fake_nodes([(200, STATUS)], [(200, alarmed)], [(401, {"error": "no token"})]) as nodes:
        a, b, c = (n.address for n in nodes)
        result = invoke(f"{a},{b},{c},{down}", "status", "--token", "t0k")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"n1     {'http://' + a:<26} leader     term=3 leader=n1 commit=9 applied=9 revision=5",
        f"n2     {'http://' + b:<26} follower   term=3 leader=n1 commit=9 applied=9 "
        "revision=5 alarm=NOSPACE",
        f"?      {'http://' + c:<26} unreachable: {json.dumps({'error': 'no token'})}",
        f'?      {"http://" + down:<26} unreachable: "[Errno 111] Connection refused"',
    ]
    assert [s.headers.get("Authorization") for n in nodes for s in n.seen] == ["Bearer t0k"] * 3
    assert [len(n.seen) for n in nodes] == [1, 1, 1]  # one request each, no retries


def test_status_fails_when_no_node_answers() -> None:
    result = invoke(dead(), "status")
    assert result.exit_code == 1
    assert result.output.endswith(
        'unreachable: "[Errno 111] Connection refused"\nerror: cluster unreachable\n'
    )


def _one(node: FakeNode) -> tuple[str, str, object]:
    (seen,) = node.seen
    return seen.method, seen.path, seen.body


def test_members_commands_send_their_requests_and_print_the_answer() -> None:
    cases = [
        (["members", "list"], ("GET", "/v1/members", None)),
        (
            ["members", "add", "n/4", "--raft-addr", "h:7004", "--api-addr", "h:8004", "--learner"],
            (
                "POST",
                "/v1/members",
                {"id": "n/4", "raft_addr": "h:7004", "api_addr": "h:8004", "learner": True},
            ),
        ),
        (["members", "promote", "n/4"], ("POST", "/v1/members/n%2F4/promote", None)),
        (
            ["members", "update", "n4", "--raft-addr", "h:1", "--api-addr", "h:2"],
            ("PUT", "/v1/members/n4", {"raft_addr": "h:1", "api_addr": "h:2"}),
        ),
        (["members", "remove", "n4"], ("DELETE", "/v1/members/n4", None)),
        (["transfer-leader", "n2"], ("POST", "/v1/leader/transfer", {"to": "n2"})),
    ]
    for args, request in cases:
        with fake_nodes([(200, MEMBERS)]) as (node,):
            result = invoke(node.address, *args)
        assert result.exit_code == 0, (args, result.output)
        assert result.output == json.dumps(MEMBERS, indent=2, sort_keys=True) + "\n"
        assert _one(node) == request, args


def test_a_refusal_prints_the_nodes_error_and_status() -> None:
    with fake_nodes([(409, {"error": "n4 was removed; join under a new id"})]) as (node,):
        result = invoke(
            node.address, "members", "add", "n4", "--raft-addr", "h:1", "--api-addr", "h:2"
        )
    assert result.exit_code == 1
    assert result.output == "error: n4 was removed; join under a new id (HTTP 409)\n"
    with fake_nodes([(404, {"error": "no member n9"})]) as (node,):
        result = invoke(node.address, "members", "remove", "n9")
    assert (result.exit_code, result.output) == (1, "error: no member n9 (HTTP 404)\n")


def test_a_503_moves_on_to_the_next_node() -> None:
    with fake_nodes([(503, {"error": "no leader"})], [(200, {"ok": True})]) as (busy, ok):
        result = invoke(f"{busy.address},{ok.address}", "transfer-leader", "n2")
    assert (result.exit_code, result.output) == (0, '{\n  "ok": true\n}\n')
    assert len(ok.seen) == 1


def test_only_503s_print_the_last_one() -> None:
    with fake_nodes([(503, {"error": "no leader"})]) as (node,):
        result = invoke(node.address, "members", "list")
    assert (result.exit_code, result.output) == (1, "error: no leader (HTTP 503)\n")
    assert len(node.seen) >= 2  # retried


def test_an_unreachable_cluster_names_each_endpoint() -> None:
    a, b = (f"127.0.0.1:{port}" for port in free_ports(2))  # two distinct dead endpoints
    result = invoke(f"{a},{b}", "members", "list")
    assert result.exit_code == 1
    assert result.output == (
        f"error: cluster unreachable (http://{a}: [Errno 111] Connection refused; "
        f"http://{b}: [Errno 111] Connection refused)\n"
    )
