"""The client's decisions, without I/O: requests, answers, leader routing, retries.

Rules:

1. Nothing here opens a socket or sleeps; :class:`~raftkv.client.client.Client`
   and :class:`~raftkv.client.aio.AsyncClient` pump a :class:`RetryState` and do
   the I/O themselves, so both clients behave identically.
2. A failure is *not sent* (connection refused: always safe to retry) or *maybe
   sent* (timeout or dropped connection after the request left, or HTTP 504/502:
   the outcome is unknown). A write is retried in both cases with the *same*
   ``Idempotency-Key``, which makes the server apply it at most once.
3. Leader hints (the ``leader`` field of error bodies) are node ids or
   ``host:port`` API addresses. Node ids are resolved through what
   ``GET /v1/status`` reported (``id`` and ``members``); an unresolvable hint just
   moves on to the next endpoint -- followers forward to the leader anyway.
4. Idempotency keys follow the dissertation's one-outstanding-request-per-session
   model (§6.3): concurrent writes from one client use different *lanes*
   (``CLIENT.LANE/SEQ``), so a later sequence number never overtakes an earlier
   one within a session.
Standard library only.
"""

from __future__ import annotations

import json
import os
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlencode

from raftkv.client.errors import (
    AuthError,
    BadRequest,
    ClientError,
    Compacted,
    Conflict,
    JSONValue,
    LeaseNotFound,
    NoSpace,
    NotFound,
    OutcomeUnknown,
    ServerError,
    TooManySessions,
    Unavailable,
)

DEFAULT_ENDPOINTS: Final = ("127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003")
"""The API addresses of ``raftkv cluster --nodes 3``."""
ENDPOINTS_ENV: Final = "RAFTKV_ENDPOINTS"
"""Environment variable with comma-separated endpoints, used when none are given."""

CONSISTENCY_LEVELS: Final = ("linearizable", "stale")


# ----------------------------------------------------------------------------- endpoints


def parse_endpoints(spec: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """Normalize endpoints to ``host:port`` strings.

    Args:
        spec: comma/space separated text, a sequence, or ``None`` for
            ``$RAFTKV_ENDPOINTS`` or else :data:`DEFAULT_ENDPOINTS`. An
            ``http://`` or ``https://`` prefix and a trailing ``/`` are accepted
            (the scheme is the client's: see :func:`wants_https`).

    Raises:
        ValueError: an endpoint is not ``host:port``, or there are none.
    """
    if spec is None:
        spec = os.environ.get(ENDPOINTS_ENV) or ",".join(DEFAULT_ENDPOINTS)
    parts = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    endpoints: list[str] = []
    for part in parts:
        text = part.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
        split_host_port(text)
        if text not in endpoints:
            endpoints.append(text)
    if not endpoints:
        raise ValueError("no endpoints given")
    return tuple(endpoints)


def wants_https(spec: str | Sequence[str] | None = None) -> bool:
    """Whether any endpoint of ``spec`` (as for :func:`parse_endpoints`) says ``https://``."""
    if spec is None:
        spec = os.environ.get(ENDPOINTS_ENV) or ""
    parts = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    return any(part.strip().startswith("https://") for part in parts)


def make_ssl_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A TLS client context: verify the server against ``ca_file`` (default: the
    system's CAs), host name included; present ``cert_file``/``key_file`` if given.

    Raises:
        ValueError: a file is unreadable or invalid.
    """
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        if cert_file is not None:
            ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS files ({ca_file}, {cert_file}, {key_file}): {exc}") from None
    return ctx


def split_host_port(endpoint: str) -> tuple[str, int]:
    """``"h:p"`` or ``"[v6]:p"`` to ``(host, port)``.

    Raises:
        ValueError: if it is not one.
    """
    host, sep, port_text = endpoint.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"endpoint must be HOST:PORT, not {endpoint!r}")
    return host, int(port_text)


class Router:
    """Which endpoint to try next: sticky on success, follows leader hints.

    Args:
        endpoints: known API addresses (``host:port``), tried in order.
    """

    def __init__(self, endpoints: Sequence[str]) -> None:
        self._endpoints = list(endpoints)
        # Invariant: 0 <= _current < len(_endpoints).
        self._current = 0
        self._ids: dict[str, str] = {}  # node id -> API address, from /v1/status

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    def current(self) -> str:
        return self._endpoints[self._current]

    def failed(self, endpoint: str) -> None:
        """``endpoint`` did not serve the request: move on to the next one."""
        if endpoint == self.current():
            self._current = (self._current + 1) % len(self._endpoints)

    def hint(self, leader: str | None, endpoint: str) -> None:
        """``endpoint`` declined and named ``leader`` (a node id or address, or none)."""
        address = self.resolve(leader) if leader else None
        if address is None or address == endpoint:
            self.failed(endpoint)
            return
        if address not in self._endpoints:
            self._endpoints.append(address)
        self._current = self._endpoints.index(address)

    def resolve(self, leader: str) -> str | None:
        """The API address of ``leader`` (node id or address), if known."""
        if leader in self._ids:
            return self._ids[leader]
        text = leader.removeprefix("http://").rstrip("/")
        try:
            split_host_port(text)
        except ValueError:
            return None
        return text

    def node_id(self, endpoint: str) -> str | None:
        """The node id serving ``endpoint``, if a status answer said so."""
        for node_id, address in sorted(self._ids.items()):
            if address == endpoint:
                return node_id
        return None

    def learn(self, status: dict[str, JSONValue], endpoint: str) -> None:
        """Record node ids and API addresses from a ``GET /v1/status`` answer.

        Accepts ``members`` as ``{id: "host:port" | {"api_addr": ...}}`` or as a
        list of ``{"id": ..., "api_addr": ...}``.
        """
        node_id = status.get("id")
        if isinstance(node_id, str):
            self._ids[node_id] = endpoint
        members = status.get("members")
        items: list[tuple[object, object]] = []
        if isinstance(members, dict):
            items = list(members.items())
        elif isinstance(members, list):
            items = [(m.get("id") or m.get("node_id"), m) for m in members if isinstance(m, dict)]
        for member_id, info in items:
            address = info.get("api_addr") or info.get("api") if isinstance(info, dict) else info
            if isinstance(member_id, str) and isinstance(address, str):
                resolved = self.resolve(address)
                if resolved is not None and member_id not in self._ids:
                    self._ids[member_id] = resolved


# ----------------------------------------------------------------------------- sessions


class SessionLanes:
    """Idempotency keys: one sequence per lane, one outstanding write per lane.

    Not thread-safe; the synchronous client holds a lock around it.
    """

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._free: list[int] = []
        self._seqs: list[int] = []  # last seq issued, per lane

    def acquire(self) -> int:
        """A lane with no write outstanding."""
        if self._free:
            return self._free.pop()
        self._seqs.append(0)
        return len(self._seqs) - 1

    def next_key(self, lane: int) -> str:
        """The ``Idempotency-Key`` for the next logical write on ``lane``."""
        self._seqs[lane] += 1
        return f"{self.client_id}.{lane}/{self._seqs[lane]}"

    def release(self, lane: int) -> None:
        self._free.append(lane)


def new_client_id(rng: random.Random | None = None) -> str:
    """A random client id (64 bits of hex)."""
    if rng is not None:
        return f"{rng.getrandbits(64):016x}"
    return os.urandom(8).hex()


# ----------------------------------------------------------------------------- requests


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


# ----------------------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class Retry:
    """An answer that did not settle the request: try again (maybe elsewhere)."""

    reason: str
    leader: str | None = None
    unknown: bool = False
    status: int = 503
    message: str = ""
    """The answer's own error text."""


def decode_body(raw: bytes) -> JSONValue:
    """An answer's JSON; its text if it is not JSON; None if it is empty."""
    if not raw:
        return None
    try:
        value: JSONValue = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
    return value


def _parse_body(raw: bytes) -> tuple[dict[str, JSONValue], str]:
    """The JSON object in ``raw`` (or ``{}``) and a short message for errors."""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        return body, str(error) if error is not None else ""
    text = raw[:200].decode("utf-8", "replace").strip()
    return {}, text


def interpret(request: Request, status: int, raw: bytes) -> dict[str, JSONValue] | Retry:
    """Turn one HTTP answer into a result, a :class:`Retry`, or an exception.

    Raises:
        BadRequest, NotFound, Conflict, TooManySessions, Compacted, NoSpace,
            AuthError, ServerError: final answers, with the answer's ``status``
            and ``reason``.
    """
    body, message = _parse_body(raw)
    try:
        return _verdict(request, status, body, message)
    except ClientError as exc:
        exc.status, exc.reason = status, message
        raise


def _verdict(
    request: Request, status: int, body: dict[str, JSONValue], message: str
) -> dict[str, JSONValue] | Retry:
    what = request.describe()
    leader = body.get("leader")
    hint = leader if isinstance(leader, str) and leader else None
    if 200 <= status < 300:
        return body
    if status in (401, 403):
        raise AuthError(f"{what}: HTTP {status} {message}".rstrip(), status=status)
    if status == 503:
        return Retry(f"503 {message or 'unavailable'}", hint, status=status, message=message)
    if status in (502, 504):
        return Retry(
            f"{status} {message or 'outcome unknown'}",
            hint,
            unknown=request.write,
            status=status,
            message=message,
        )
    if status == 404 and request.lease is not None:
        raise LeaseNotFound(f"{what}: lease {request.lease} not found", lease_id=request.lease)
    if status == 404 and request.key is not None:
        raise NotFound(f"{what}: not found", key=request.key)
    if status == 409 and request.key is not None:
        current = body.get("current")
        found = body.get("found")
        replayed = body.get("replayed") is True
        if "current" in body:
            detail = f" (current value: {json.dumps(current)})"
        else:
            detail = " (repeated from an earlier attempt)" if replayed else ""
        raise Conflict(
            f"{what}: {message or 'conflict'}{detail}",
            key=request.key,
            current=current,
            found=found if isinstance(found, bool) else None,
            replayed=replayed,
        )
    if status == 429:
        raise TooManySessions(f"{what}: HTTP 429 {message}".rstrip())
    if status == 410:
        compact_revision, revision = body.get("compact_revision"), body.get("revision")
        where = f"compacted to {compact_revision}, now at {revision}"
        raise Compacted(
            f"{what}: {message or 'compacted'} ({where})",
            compact_revision=compact_revision if isinstance(compact_revision, int) else None,
            revision=revision if isinstance(revision, int) else None,
        )
    if status == 507:
        raise NoSpace(f"{what}: {message or 'database space exceeded'} (HTTP 507)")
    if status in (400, 404, 405, 409, 411, 413, 414, 415, 422):
        raise BadRequest(f"{what}: HTTP {status} {message}".rstrip())
    raise ServerError(f"{what}: HTTP {status} {message}".rstrip(), status=status)


# ----------------------------------------------------------------------------- retries


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in ``[d/2, d]``, ``d = initial * 2**attempt``."""
    delay = min(maximum, initial * 2.0 ** min(attempt, 30))
    return delay / 2 + rng.random() * delay / 2


@dataclass(slots=True, kw_only=True)
class RetryPolicy:
    """How long and how often to retry.

    Attributes:
        deadline: total seconds one call may take, retries included.
        timeout: seconds for one attempt (connect + answer).
        backoff_initial: first pause between rounds over the endpoints.
        backoff_max: longest pause.
    """

    deadline: float = 10.0
    timeout: float = 5.0
    backoff_initial: float = 0.05
    backoff_max: float = 1.0


@dataclass(slots=True, kw_only=True)
class RetryState:
    """The retry loop of one request, as data; the clients perform the I/O.

    Usage: ``endpoint = next_endpoint()``, send with ``attempt_timeout()``, report
    ``not_sent``/``maybe_sent``/``answered``; on no result, wait ``pause()``
    seconds (it raises when the deadline has passed) and go again.
    """

    request: Request
    router: Router
    policy: RetryPolicy
    clock: Callable[[], float]
    rng: random.Random
    deadline_at: float = 0.0
    unknown: bool = False
    last_error: str = "no attempt made"
    last_answer: Retry | None = None
    """The last answer that was retried."""
    failures: dict[str, str] = field(default_factory=dict)
    """Each endpoint that did not answer: its first failure, in the order tried."""
    rounds: int = 0
    tried: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.deadline_at = self.clock() + self.policy.deadline

    def next_endpoint(self) -> str:
        endpoint = self.router.current()
        self.tried.add(endpoint)
        return endpoint

    def attempt_timeout(self) -> float:
        # An attempt shorter than this cannot succeed on a busy machine; the
        # deadline may be overrun by at most this much.
        return max(0.1, min(self.policy.timeout, self.deadline_at - self.clock()))

    def not_sent(self, endpoint: str, exc: BaseException) -> None:
        self.last_error = f"{endpoint}: {_describe(exc)}"
        self.failures.setdefault(endpoint, str(exc) or type(exc).__name__)
        self.router.failed(endpoint)

    def maybe_sent(self, endpoint: str, exc: BaseException) -> None:
        self.last_error = f"{endpoint}: {_describe(exc)}"
        self.failures.setdefault(endpoint, str(exc) or type(exc).__name__)
        self.unknown |= self.request.write
        self.router.failed(endpoint)

    def answered(self, endpoint: str, status: int, raw: bytes) -> dict[str, JSONValue] | None:
        """The result, or ``None`` to retry. Raises final errors (see :func:`interpret`)."""
        verdict = interpret(self.request, status, raw)
        if not isinstance(verdict, Retry):
            return verdict
        self.last_error = f"{endpoint}: {verdict.reason}"
        self.last_answer = verdict
        self.unknown |= verdict.unknown
        self.router.hint(verdict.leader, endpoint)
        return None

    def pause(self) -> float:
        """Seconds to wait before the next attempt (0 if an untried endpoint is next).

        Raises:
            Unavailable: the deadline has passed (:class:`OutcomeUnknown` if a
                write may have been applied).
        """
        remaining = self.deadline_at - self.clock()
        if remaining <= 0:
            raise self.give_up()
        if self.router.current() not in self.tried:
            return 0.0
        self.tried.clear()
        delay = backoff_delay(
            self.rounds,
            initial=self.policy.backoff_initial,
            maximum=self.policy.backoff_max,
            rng=self.rng,
        )
        self.rounds += 1
        return min(delay, remaining)

    def give_up(self) -> Unavailable:
        what = self.request.describe()
        seconds = f"{self.policy.deadline:g}s"
        last = self.last_answer
        status = last.status if last is not None else None
        reason = last.message if last is not None else ""
        failures = tuple(self.failures.items())
        if self.unknown:
            return OutcomeUnknown(
                f"{what}: outcome unknown after {seconds} (it may have been applied, "
                f"at most once); last error: {self.last_error}",
                status=status,
                reason=reason,
                failures=failures,
            )
        return Unavailable(
            f"{what}: no node answered within {seconds}; last error: {self.last_error}",
            status=status,
            reason=reason,
            failures=failures,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return text
