"""The client's decisions, without I/O: answers, leader routing, retries (the
requests themselves are built in :mod:`raftkv.client._requests`).

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

from raftkv.client._requests import Request
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
