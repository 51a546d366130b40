"""What a handler reads of a request, whichever front end parsed it.

Rule 1: handlers see a :class:`Request`: the method, the path's parameters,
the query, the headers (looked up by lower-case name) and the body, already
read. The fast path's :class:`~raftkv.server.fasthttp.FastRequest` is one as
it is (no wrapper on the hot routes); :class:`raftkv.server.http.aio` wraps
aiohttp's request in another.

Rule 2: a body is JSON in UTF-8, -16 or -32 as :func:`json.loads` reads it,
without ``NaN`` or ``Infinity``; anything else is a 400 (:func:`parse_json`).
A session (``Idempotency-Key``) is owned by the client token that sent it
(:func:`session`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

from raftkv.core.types import NodeId
from raftkv.limits import NODE_ID_RULE, is_node_id
from raftkv.replica.kv import Session, parse_idempotency_key
from raftkv.server.errors import BadRequest, ServerError
from raftkv.server.security import TokenTable, bearer_token

__all__ = [
    "FORWARDED_HEADER",
    "NOT_PLAIN_UTF8_FIRST",
    "Request",
    "member_id",
    "owner",
    "parse_json",
    "session",
]

FORWARDED_HEADER: Final = "x-raftkv-forwarded"
"""Set on a request a member forwarded to the leader: it is never forwarded again.
Lower case: the fast path's parser keys its headers so (aiohttp's ignore case)."""


class Request(Protocol):
    """A request as the handlers read it (Rule 1)."""

    @property
    def method(self) -> str: ...

    @property
    def key(self) -> str:
        """The ``{key}`` of the path (``""`` on routes without one)."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Looked up by lower-case name."""

    @property
    def body(self) -> bytes:
        """Raises the front end's 413 if the body is over its limit."""

    def param(self, name: str) -> str | None:
        """The query parameter ``name`` (its first value), or None."""

    def params(self) -> Iterable[tuple[str, str]]:
        """Every query parameter, in order."""

    def path_param(self, name: str) -> str:
        """A parameter of the path (``node_id``, ``lease_id``)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every body: json.loads(raw, parse_constant=...) builds a new
# decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)

NOT_PLAIN_UTF8_FIRST: Final = frozenset((0x00, 0xEF, 0xFE, 0xFF))
"""First bytes after which :func:`json.detect_encoding` may answer other than UTF-8."""


def parse_json(raw: bytes) -> Any:
    """A body's JSON value (Rule 2).

    Raises:
        BadRequest: empty, not JSON, or nested too deeply.
    """
    if not raw.strip():
        raise BadRequest("request body must be JSON")
    try:
        # What json.loads does with bytes: detect UTF-8/16/32, then decode. A
        # body whose first two bytes are neither zero nor the start of a byte
        # order mark is UTF-8 by json.detect_encoding's rules; most are.
        first = raw[0]
        if first not in NOT_PLAIN_UTF8_FIRST and raw[1:2] not in (b"\0", b""):
            return _DECODER.decode(raw.decode("utf-8", "surrogatepass"))
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"bad JSON: {exc}") from None
    except RecursionError:  # json's C decoder on a deeply nested body (fuzz finding)
        raise BadRequest("bad JSON: nested too deeply") from None


def session(request: Request, tokens: TokenTable | None) -> Session | None:
    """The request's session (``Idempotency-Key``), owned by its client token.

    With ``tokens`` (``--client-token-file``) the session's owner is the token's
    :attr:`~raftkv.server.security.ClientToken.owner` (the guard has checked the
    token already); without, sessions have no owner.

    Raises:
        BadRequest: a malformed ``Idempotency-Key``.
    """
    header = request.headers.get("idempotency-key")
    if header is None:
        return None
    try:
        client_id, seq = parse_idempotency_key(header)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return Session(
        client_id=client_id, seq=seq, owner=owner(request.headers.get("authorization"), tokens)
    )


def owner(authorization: str | None, tokens: TokenTable | None) -> str | None:
    """The session owner of a request's token (None without tokens)."""
    if tokens is None:
        return None
    token = bearer_token(authorization)
    entry = tokens.lookup(token) if token is not None else None
    if entry is None:  # the guard refuses these first
        raise ServerError("a request without a known token reached a write handler")
    return entry.owner


def member_id(text: str) -> NodeId:
    """A member id from a request; 400 unless it follows :data:`~raftkv.limits.NODE_ID_RULE`."""
    if not is_node_id(text):
        raise BadRequest(f"bad member id {text[:80]!r}: must be {NODE_ID_RULE}")
    return NodeId(text)
