"""Every error the HTTP API answers, mapped once: :func:`answer_for`.

Rule 1: an error's kind (:class:`~raftkv.server.errors.ErrorCode`, named by
its class) decides its status, whether the body names the leader, and any
header -- one row of :data:`STATUS` each, never a message's text. 503 means
nothing happened (safe to retry), 504 that the outcome is unknown (DESIGN.md
"Black-box contract"). A KV command's error *result* (not found, conflict,
...) is an answer of its route, mapped in :mod:`raftkv.server.kvjson`.

Rule 2: the body is ``{"error": message}``; the kinds that say "nothing
happened, retry on the leader" (:data:`NAMES_LEADER`) always add ``"leader"``
(the id this node knows, or null), the others only when the error names one.
NOSPACE answers as the replica's own refusal does (``alarm``). An exception
that is not a :class:`~raftkv.server.errors.ServerError` (nor a
:class:`~raftkv.replica.kv.InvalidCommand`, a bad request) is a bug: 500
``internal error``, the traceback in the log, never in the answer.

Rule 3: no I/O and nothing of the node: both front ends (aiohttp and the
fast path), the guard, the forwarding, and the node answering a peer's
forwarded write use these.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from raftkv.replica.kv import InvalidCommand
from raftkv.server.errors import ErrorCode, NodeFailed, ServerError
from raftkv.server.fasthttp import Answer
from raftkv.server.kvjson import nospace_answer

__all__ = ["Answer", "FAILED", "NAMES_LEADER", "STATUS", "answer", "answer_for"]

logger = logging.getLogger(__name__)

STATUS: Final[Mapping[ErrorCode, int]] = MappingProxyType(
    {
        ErrorCode.BAD_REQUEST: 400,
        ErrorCode.UNAUTHENTICATED: 401,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.MEMBER_NOT_FOUND: 404,
        ErrorCode.LEARNER_NOT_READY: 409,
        ErrorCode.MEMBER_REMOVED: 409,
        ErrorCode.TOO_LARGE: 413,
        ErrorCode.TOO_MANY_WATCHERS: 429,
        ErrorCode.INTERNAL: 500,
        ErrorCode.UNSUPPORTED: 501,
        ErrorCode.NO_LEADER: 503,
        ErrorCode.PROPOSAL_LOST: 503,
        ErrorCode.READ_TIMEOUT: 503,
        ErrorCode.NODE_STOPPED: 503,
        ErrorCode.NODE_FAILED: 503,
        ErrorCode.OVERLOADED: 503,
        ErrorCode.OUTCOME_UNKNOWN: 504,
        ErrorCode.NO_SPACE: 507,
    }
)
"""The status of each kind of error (Rule 1)."""

NAMES_LEADER: Final = frozenset(
    {
        ErrorCode.NO_LEADER,
        ErrorCode.PROPOSAL_LOST,
        ErrorCode.READ_TIMEOUT,
        ErrorCode.NODE_STOPPED,
        ErrorCode.NODE_FAILED,
    }
)
"""Kinds whose body always carries ``leader`` (Rule 2): the client may retry
at once, on the leader if this node knows one."""

_HEADERS: Final[Mapping[ErrorCode, Mapping[str, str]]] = MappingProxyType(
    {ErrorCode.UNAUTHENTICATED: MappingProxyType({"WWW-Authenticate": 'Bearer realm="raftkv"'})}
)
_INTERNAL: Final[Answer] = (500, b'{"error": "internal error"}', None)


def answer(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Answer:
    """``body`` as an answer's JSON."""
    return status, json.dumps(body).encode(), headers


def answer_for(exc: BaseException, method: str = "", path: str = "a request") -> Answer:
    """The answer to a request whose handling raised ``exc`` (the module's rules).

    An unexpected exception is logged here with its traceback, as an error
    serving ``method`` ``path``.
    """
    if isinstance(exc, ServerError):
        code = exc.code
        if code is ErrorCode.NO_SPACE:
            return nospace_answer()  # the same answer as the replica's refusal
        body: dict[str, Any] = {"error": exc.message}
        if code in NAMES_LEADER or exc.leader is not None:
            body["leader"] = exc.leader
        return answer(STATUS[code], body, _HEADERS.get(code))
    if isinstance(exc, InvalidCommand):
        return answer(400, {"error": str(exc)})
    logger.error("unhandled error serving %s %s", method, path, exc_info=exc)
    return _INTERNAL


FAILED: Final[Answer] = answer_for(NodeFailed("node failed"))
"""Every route's answer from a node that failed (crash-stop, RaftNode.failed): the
cause is in the node's log, not in answers to clients."""
