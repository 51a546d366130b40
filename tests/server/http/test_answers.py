"""answer_for: every kind of error -> one status and one body (raftkv.server.http.answers)."""

from __future__ import annotations

import json
import logging

import pytest

from raftkv.replica.kv import ERR_NOSPACE, InvalidCommand
from raftkv.server import errors
from raftkv.server.errors import ErrorCode, ServerError
from raftkv.server.http.answers import FAILED, NAMES_LEADER, STATUS, answer_for


def _kinds() -> list[type[ServerError]]:
    return [
        cls
        for name in errors.__all__
        if isinstance(cls := getattr(errors, name), type) and issubclass(cls, ServerError)
    ]


def _instance(cls: type[ServerError]) -> ServerError:
    if cls in (errors.MemberRemoved, errors.MemberNotFound):
        return cls("n9")  # type: ignore[call-arg]
    if cls is errors.RaftAddressTaken:
        return cls("n2", "h:1")  # type: ignore[call-arg]
    return cls("it went wrong")


# Every error kind of errors.py: (status, body). The body of the kinds that say
# "nothing happened, retry on the leader" names the leader (null when unknown).
EXPECTED: dict[type[ServerError], tuple[int, dict[str, object]]] = {
    errors.ServerError: (500, {"error": "it went wrong"}),
    errors.ConfigError: (400, {"error": "it went wrong"}),
    errors.BadRequest: (400, {"error": "it went wrong"}),
    errors.RaftAddressTaken: (400, {"error": "n2 has the Raft address h:1"}),
    errors.Unauthenticated: (401, {"error": "it went wrong"}),
    errors.Forbidden: (403, {"error": "it went wrong"}),
    errors.MemberNotFound: (404, {"error": "n9 is not a member of the cluster"}),
    errors.LearnerNotReady: (409, {"error": "it went wrong"}),
    errors.MemberRemoved: (409, {"error": str(errors.MemberRemoved("n9"))}),
    errors.TooLarge: (413, {"error": "it went wrong"}),
    errors.TooManyWatchers: (429, {"error": "it went wrong"}),
    errors.Unsupported: (501, {"error": "it went wrong"}),
    errors.SnapshotUndecodable: (500, {"error": "it went wrong"}),
    errors.NoLeader: (503, {"error": "it went wrong", "leader": None}),
    errors.ProposalLost: (503, {"error": "it went wrong", "leader": None}),
    errors.ReadTimeout: (503, {"error": "it went wrong", "leader": None}),
    errors.NodeStopped: (503, {"error": "it went wrong", "leader": None}),
    errors.NodeFailed: (503, {"error": "it went wrong", "leader": None}),
    errors.Overloaded: (503, {"error": "it went wrong"}),
    errors.OutcomeUnknown: (504, {"error": "it went wrong"}),
    errors.NoSpace: (507, {"error": ERR_NOSPACE, "alarm": "NOSPACE"}),
}


def test_every_kind_has_a_row() -> None:
    assert set(_kinds()) == set(EXPECTED)
    assert set(STATUS) == set(ErrorCode)
    assert set(ErrorCode) >= NAMES_LEADER


@pytest.mark.parametrize("cls", sorted(EXPECTED, key=lambda c: c.__name__))
def test_each_kind_answers_its_status_and_body(cls: type[ServerError]) -> None:
    status, body, headers = answer_for(_instance(cls))
    assert (status, json.loads(body)) == EXPECTED[cls]
    if cls is errors.Unauthenticated:
        assert headers == {"WWW-Authenticate": 'Bearer realm="raftkv"'}
    else:
        assert headers is None


def test_a_known_leader_is_named_whatever_the_kind() -> None:
    status, body, _ = answer_for(errors.NoLeader("not the leader", leader="n2"))
    assert (status, json.loads(body)) == (503, {"error": "not the leader", "leader": "n2"})
    status, body, _ = answer_for(errors.OutcomeUnknown("lost", leader="n2"))
    assert (status, json.loads(body)) == (504, {"error": "lost", "leader": "n2"})


def test_an_invalid_command_is_a_bad_request() -> None:
    status, body, _ = answer_for(InvalidCommand("invalid command: bad key"))
    assert (status, json.loads(body)) == (400, {"error": "invalid command: bad key"})


def test_any_other_exception_is_an_internal_error_logged_not_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="raftkv.server.http.answers"):
        answer = answer_for(KeyError("secret detail"), "PUT", "/v1/kv/{key}")
    assert answer == (500, b'{"error": "internal error"}', None)
    [record] = caplog.records
    assert record.getMessage() == "unhandled error serving PUT /v1/kv/{key}"
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_failed_node_answers_the_same_bytes_on_every_route() -> None:
    assert FAILED == (503, b'{"error": "node failed", "leader": null}', None)


def test_the_kind_decides_not_the_message() -> None:
    """Two errors with one message but different kinds answer differently."""
    assert answer_for(errors.BadRequest("no leader"))[0] == 400
    assert answer_for(errors.NoLeader("bad JSON"))[0] == 503
