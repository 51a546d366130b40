"""The client's requests, without I/O: one :class:`Request` per call, and the
functions that build each from the caller's arguments (paths quoted, bodies
JSON, the checks a request must pass before it is sent).

Part of :mod:`raftkv.client._sansio` (its rules hold here). Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

from raftkv.client.errors import BadRequest, JSONValue

CONSISTENCY_LEVELS: Final = ("linearizable", "stale")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One logical request, sent (possibly many times) to some endpoint.

    Attributes:
        op: what the caller asked for, for messages (``put``, ``get``, ...).
        method: HTTP method.
        path: the URL path and query, already quoted.
        body: JSON bytes or ``None``.
        key: the key acted on, if any (for messages and errors).
        write: whether the outcome of a lost answer is unknown (writes).
        idempotency_key: ``CLIENT/SEQ`` sent with every attempt, for writes.
        token: bearer token sent as ``Authorization`` (``--client-token-file``).
        lease: the lease acted on, if any (a 404 then means the lease is unknown).
    """

    op: str
    method: str
    path: str
    body: bytes | None = None
    key: str | None = None
    write: bool = False
    idempotency_key: str | None = None
    token: str | None = None
    lease: int | None = None

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        if self.idempotency_key is not None:
            headers["Idempotency-Key"] = self.idempotency_key
        return headers

    def describe(self) -> str:
        return f"{self.op} {self.key!r}" if self.key is not None else self.op


def kv_path(key: str) -> str:
    """``/v1/kv/{key}`` with the key quoted (``/`` included).

    Raises:
        BadRequest: the key is not a non-empty string.
    """
    if not isinstance(key, str) or not key:
        raise BadRequest(f"key must be a non-empty string, not {key!r}")
    try:
        return "/v1/kv/" + quote(key, safe="")
    except UnicodeEncodeError:
        raise BadRequest(f"key {key!r} is not valid Unicode") from None


def json_body(value: object, what: str) -> bytes:
    """Encode ``value`` as JSON bytes.

    Raises:
        BadRequest: ``value`` is not JSON (NaN, sets, bytes, ...).
    """
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise BadRequest(f"{what}: not a JSON value: {exc}") from None


def put_request(key: str, value: JSONValue, idempotency_key: str, lease: int = 0) -> Request:
    """``PUT /v1/kv/{key}``; ``lease``: attach the key to that lease (0: none)."""
    path = kv_path(key)
    if lease_id(lease, allow_zero=True):
        path += f"?lease={lease}"
    return Request(
        op="put",
        method="PUT",
        path=path,
        body=json_body(value, f"put {key!r}"),
        key=key,
        write=True,
        idempotency_key=idempotency_key,
        lease=lease or None,
    )


MAX_LEASE_ID: Final = 2**63 - 1


def lease_id(value: int, *, allow_zero: bool = False) -> int:
    """``value`` if it is a lease id (1..2**63-1; 0 too with ``allow_zero``).

    Raises:
        BadRequest: it is not.
    """
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_LEASE_ID:
        raise BadRequest(f"a lease id is an integer in {low}..2**63-1, not {value!r}")
    return value


def lease_grant_request(ttl: int, idempotency_key: str, lease: int = 0) -> Request:
    """``POST /v1/leases``: a lease of ``ttl`` seconds (``lease``: its id; 0: any)."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise BadRequest(f"lease grant: ttl must be an integer >= 1 (seconds), not {ttl!r}")
    body: dict[str, int] = {"ttl": ttl}
    if lease_id(lease, allow_zero=True):
        body["id"] = lease
    return Request(
        op="lease grant",
        method="POST",
        path="/v1/leases",
        body=json_body(body, "lease grant"),
        write=True,
        idempotency_key=idempotency_key,
    )


def lease_revoke_request(lease: int, idempotency_key: str) -> Request:
    return Request(
        op=f"lease revoke {lease_id(lease)}",
        method="DELETE",
        path=f"/v1/leases/{lease}",
        write=True,
        idempotency_key=idempotency_key,
        lease=lease,
    )


def lease_keepalive_request(lease: int) -> Request:
    """``POST /v1/leases/{id}/keepalive`` (not a log entry: safe to repeat)."""
    return Request(
        op=f"lease keep-alive {lease_id(lease)}",
        method="POST",
        path=f"/v1/leases/{lease}/keepalive",
        lease=lease,
    )


def lease_ttl_request(lease: int, keys: bool) -> Request:
    path = f"/v1/leases/{lease_id(lease)}" + ("?keys=true" if keys else "")
    return Request(op=f"lease ttl {lease}", method="GET", path=path, lease=lease)


def lease_list_request() -> Request:
    return Request(op="lease list", method="GET", path="/v1/leases")


def _check_consistency(consistency: str) -> None:
    if consistency not in CONSISTENCY_LEVELS:
        raise ValueError(f"consistency must be one of {CONSISTENCY_LEVELS}, not {consistency!r}")


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{name} must be an integer >= 0, not {value!r}")
    return value


def _query(params: list[tuple[str, str]]) -> str:
    """``?a=b&...`` with every character but unreserved ones percent-encoded."""
    return "?" + urlencode(params, quote_via=quote, safe="") if params else ""


def get_request(key: str, consistency: str, revision: int = 0) -> Request:
    _check_consistency(consistency)
    params = []
    if _count(revision, "revision"):
        params.append(("revision", str(revision)))
    if consistency == "stale":
        params.append(("consistency", "stale"))
    return Request(op="get", method="GET", path=kv_path(key) + _query(params), key=key)


def _range_params(
    prefix: str | None, key: str | None, range_end: str | None
) -> list[tuple[str, str]]:
    """``prefix=P`` or ``key=K[&range_end=E]`` (etcd's conventions; ``"\0"``: to the end).

    Raises:
        BadRequest: not exactly one of ``prefix`` and ``key``, or ``range_end``
            with ``prefix``.
    """
    if (prefix is None) == (key is None):
        raise BadRequest("give prefix or key (with an optional range_end), not both or neither")
    if prefix is not None:
        if range_end is not None:
            raise BadRequest("range_end goes with key, not with prefix")
        return [("prefix", prefix)]
    assert key is not None
    return [("key", key)] + ([("range_end", range_end)] if range_end is not None else [])


def range_request(
    *,
    prefix: str | None,
    key: str | None,
    range_end: str | None,
    limit: int,
    revision: int,
    keys_only: bool,
    count_only: bool,
    sort_order: str | None,
    sort_target: str | None,
    consistency: str,
) -> Request:
    """``GET /v1/kv``: a range read (the server checks the names of sort options)."""
    _check_consistency(consistency)
    params = _range_params(prefix, key, range_end)
    for name, number in (("limit", limit), ("revision", revision)):
        if _count(number, name):
            params.append((name, str(number)))
    for name, flag in (("keys_only", keys_only), ("count_only", count_only)):
        if flag:
            params.append((name, "true"))
    for name, choice in (("sort_order", sort_order), ("sort_target", sort_target)):
        if choice is not None:
            params.append((name, choice))
    if consistency == "stale":
        params.append(("consistency", "stale"))
    return Request(op="range", method="GET", path="/v1/kv" + _query(params))


def delete_range_request(
    *,
    prefix: str | None,
    key: str | None,
    range_end: str | None,
    prev_kv: bool,
    idempotency_key: str,
) -> Request:
    params = _range_params(prefix, key, range_end)
    if prev_kv:
        params.append(("prev_kv", "true"))
    return Request(
        op="delete_range",
        method="DELETE",
        path="/v1/kv" + _query(params),
        write=True,
        idempotency_key=idempotency_key,
    )


def txn_request(
    compare: Sequence[JSONValue],
    success: Sequence[JSONValue],
    failure: Sequence[JSONValue],
    idempotency_key: str,
) -> Request:
    """``POST /v1/txn`` (docs/api.md: the shapes of compares and operations)."""
    body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
    return Request(
        op="txn",
        method="POST",
        path="/v1/txn",
        body=json_body(body, "txn"),
        write=True,
        idempotency_key=idempotency_key,
    )


def compact_request(revision: int, idempotency_key: str) -> Request:
    if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
        raise BadRequest(f"compact: revision must be an integer >= 1, not {revision!r}")
    return Request(
        op="compact",
        method="POST",
        path="/v1/compact",
        body=json_body({"revision": revision}, "compact"),
        write=True,
        idempotency_key=idempotency_key,
    )


def delete_request(key: str, idempotency_key: str) -> Request:
    return Request(
        op="delete",
        method="DELETE",
        path=kv_path(key),
        key=key,
        write=True,
        idempotency_key=idempotency_key,
    )


def cas_request(key: str, expect: JSONValue, value: JSONValue, idempotency_key: str) -> Request:
    return Request(
        op="cas",
        method="POST",
        path=kv_path(key) + "/cas",
        body=json_body({"expect": expect, "value": value}, f"cas {key!r}"),
        key=key,
        write=True,
        idempotency_key=idempotency_key,
    )


def multi_put_request(pairs: dict[str, JSONValue], idempotency_key: str) -> Request:
    if not isinstance(pairs, dict):
        raise BadRequest(f"multi_put needs a dict of key to value, not {type(pairs).__name__}")
    for key in pairs:
        kv_path(key)
    return Request(
        op="multi_put",
        method="POST",
        path="/v1/kv",
        body=json_body(pairs, "multi_put"),
        write=True,
        idempotency_key=idempotency_key,
    )


def status_request() -> Request:
    return Request(op="status", method="GET", path="/v1/status")


def _member_path(node_id: str, suffix: str = "") -> str:
    if not isinstance(node_id, str) or not node_id:
        raise BadRequest(f"node id must be a non-empty string, not {node_id!r}")
    return "/v1/members/" + quote(node_id, safe="") + suffix


def members_request() -> Request:
    return Request(op="members list", method="GET", path="/v1/members")


def member_add_request(node_id: str, raft_addr: str, api_addr: str, learner: bool) -> Request:
    body = {"id": node_id, "raft_addr": raft_addr, "api_addr": api_addr, "learner": learner}
    return Request(
        op=f"members add {node_id}",
        method="POST",
        path="/v1/members",
        body=json_body(body, "members add"),
        write=True,
    )


def member_promote_request(node_id: str) -> Request:
    path = _member_path(node_id, "/promote")
    return Request(op=f"members promote {node_id}", method="POST", path=path, write=True)


def member_update_request(node_id: str, raft_addr: str, api_addr: str) -> Request:
    return Request(
        op=f"members update {node_id}",
        method="PUT",
        path=_member_path(node_id),
        body=json_body({"raft_addr": raft_addr, "api_addr": api_addr}, "members update"),
        write=True,
    )


def member_remove_request(node_id: str) -> Request:
    path = _member_path(node_id)
    return Request(op=f"members remove {node_id}", method="DELETE", path=path, write=True)


def transfer_leader_request(to: str) -> Request:
    return Request(
        op=f"transfer-leader {to}",
        method="POST",
        path="/v1/leader/transfer",
        body=json_body({"to": to}, "transfer-leader"),
        write=True,
    )
