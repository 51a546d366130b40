"""The synchronous raftkv client: standard library only (``http.client`` + ``json``).

Rules:

* Any endpoint can serve any request (followers forward to the leader); the client
  sticks to the endpoint that last answered and follows ``leader`` hints in 503
  answers.
* 503 and refused connections are retried with exponential backoff until the
  call's deadline; so are 502/504 and connections dropped after a write was sent,
  with the *same* ``Idempotency-Key: CLIENT/SEQ``, so the write applies once.
* Every call raises a :class:`~raftkv.client.errors.ClientError` or returns; no
  ``OSError`` or ``http.client`` exception escapes. A write the cluster refuses
  because its session table is full raises
  :class:`~raftkv.client.errors.TooManySessions` (HTTP 429), not retried.
* One connection per attempt (no pooling): simple, and a retry never reuses a
  connection in an unknown state. Instances are thread-safe (routing is shared
  and best-effort; idempotency keys are handed out under a lock).

Importing this module must never import aiohttp (``send.py`` relies on it); the
asyncio client lives in :mod:`raftkv.client.aio`.
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftkv.client._sansio import (
    Request,
    RetryPolicy,
    RetryState,
    Router,
    SessionLanes,
    cas_request,
    delete_request,
    get_request,
    make_ssl_context,
    multi_put_request,
    new_client_id,
    parse_endpoints,
    put_request,
    split_host_port,
    status_request,
    wants_https,
)
from raftkv.client.errors import AuthError, JSONValue

__all__ = ["Client", "WriteResult", "ReadResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """A committed write.

    Attributes:
        index: the log index at which it was applied (``None`` if not reported).
        endpoint: the API address that answered.
        leader: the leader's node id, if known (from the answer or from status).
    """

    index: int | None
    endpoint: str
    leader: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadResult:
    """A value read, with the applied index it is current as of (if reported)."""

    key: str
    value: JSONValue
    index: int | None


class _NotSent(Exception):
    """The connection failed before the request was sent."""


class _MaybeSent(Exception):
    """The request may have reached the server, but no answer came back."""


class Client:
    """A synchronous raftkv client.

    Args:
        endpoints: API addresses ``host:port`` (a list, or comma-separated text);
            ``None`` for ``$RAFTKV_ENDPOINTS`` or the local 3-node cluster.
        deadline: seconds one call may take, retries included.
        timeout: seconds for one attempt.
        client_id: session id for idempotency keys (random by default).
        backoff_initial: first pause between rounds of retries, in seconds.
        backoff_max: longest pause between retries, in seconds.
        rng: source of jitter and of the default client id.
        sleep: how to wait (tests inject a fake).
        clock: monotonic seconds (tests inject a fake).
        token: bearer token for a cluster with ``--client-token-file``.
        ca_file: CA certificate(s) to verify the nodes' certificates with; turns
            on HTTPS (as does an ``https://`` endpoint).
        cert_file: client certificate, for nodes with ``--tls-api-client-auth``.
        key_file: the client certificate's private key.
        ssl_context: a ready TLS context instead of the three files.

    Raises:
        ValueError: an endpoint is not ``host:port``, or a TLS file is invalid.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        deadline: float = 10.0,
        timeout: float = 5.0,
        client_id: str | None = None,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._router = Router(parse_endpoints(endpoints))
        self._token = token or None
        if ssl_context is None and (ca_file or cert_file or wants_https(endpoints)):
            ssl_context = make_ssl_context(ca_file, cert_file, key_file)
        self._ssl = ssl_context
        self._policy = RetryPolicy(
            deadline=deadline,
            timeout=timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._rng = rng or random.Random()
        self._lanes = SessionLanes(client_id or new_client_id(rng))
        self._lock = threading.Lock()
        self._sleep = sleep
        self._clock = clock

    @property
    def client_id(self) -> str:
        return self._lanes.client_id

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._router.endpoints

    # ------------------------------------------------------------------ operations

    def put(self, key: str, value: JSONValue) -> WriteResult:
        """Set ``key`` to ``value`` (any JSON value)."""
        return self._write(lambda k: put_request(key, value, k))

    def get(self, key: str, consistency: str = "linearizable") -> JSONValue:
        """The value of ``key``.

        Args:
            consistency: ``"linearizable"`` (default; ReadIndex on the leader) or
                ``"stale"`` (any node's local state, possibly behind).

        Raises:
            NotFound: the key does not exist.
        """
        return self.read(key, consistency).value

    def read(self, key: str, consistency: str = "linearizable") -> ReadResult:
        """Like :meth:`get`, with the index the value is current as of."""
        body, _ = self._call(get_request(key, consistency), self._router)
        return ReadResult(key=key, value=body.get("value"), index=_index(body))

    def delete(self, key: str) -> WriteResult:
        """Remove ``key``.

        Raises:
            NotFound: the key did not exist.
        """
        return self._write(lambda k: delete_request(key, k))

    def cas(self, key: str, expect: JSONValue, value: JSONValue) -> WriteResult:
        """Set ``key`` to ``value`` if it currently holds ``expect``.

        ``expect=None`` means "the key is absent" (the HTTP API's ``null``).

        Raises:
            Conflict: the current value differs (``.current`` holds it, if
                reported; a retry that repeats an earlier attempt's conflict
                has ``.replayed`` set and no current value).
        """
        return self._write(lambda k: cas_request(key, expect, value, k))

    def multi_put(self, pairs: dict[str, JSONValue]) -> WriteResult:
        """Set all ``pairs`` atomically (one log entry)."""
        return self._write(lambda k: multi_put_request(pairs, k))

    def status(self, endpoint: str | None = None) -> dict[str, JSONValue]:
        """``GET /v1/status`` from ``endpoint``, or from any endpoint that answers."""
        router = Router(parse_endpoints([endpoint])) if endpoint else self._router
        body, answered = self._call(status_request(), router)
        with self._lock:
            self._router.learn(body, answered)
        return body

    # ------------------------------------------------------------------ internals

    def _write(self, build: Callable[[str], Request]) -> WriteResult:
        with self._lock:
            lane = self._lanes.acquire()
            idempotency_key = self._lanes.next_key(lane)
        try:
            request = build(idempotency_key)
            body, endpoint = self._call(request, self._router)
        finally:
            with self._lock:
                self._lanes.release(lane)
        leader = body.get("leader")
        return WriteResult(
            index=_index(body),
            endpoint=endpoint,
            leader=leader if isinstance(leader, str) else self._router.node_id(endpoint),
        )

    def _call(self, request: Request, router: Router) -> tuple[dict[str, JSONValue], str]:
        if self._token is not None:
            request = dataclasses.replace(request, token=self._token)
        state = RetryState(
            request=request, router=router, policy=self._policy, clock=self._clock, rng=self._rng
        )
        while True:
            endpoint = state.next_endpoint()
            try:
                status, raw = self._send(endpoint, request, state.attempt_timeout())
            except _NotSent as exc:
                state.not_sent(endpoint, exc.__cause__ or exc)
            except _MaybeSent as exc:
                state.maybe_sent(endpoint, exc.__cause__ or exc)
            else:
                result = state.answered(endpoint, status, raw)
                if result is not None:
                    return result, endpoint
            delay = state.pause()
            if delay > 0:
                self._sleep(delay)

    def _send(self, endpoint: str, request: Request, timeout: float) -> tuple[int, bytes]:
        host, port = split_host_port(endpoint)
        conn: http.client.HTTPConnection
        if self._ssl is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            try:
                conn.connect()
            except ssl.SSLError as exc:  # a certificate that does not verify: final
                raise AuthError(
                    f"{request.describe()}: TLS with {endpoint}: {exc}", status=0
                ) from exc
            except OSError as exc:
                raise _NotSent from exc
            try:
                conn.request(request.method, request.path, request.body, request.headers())
                answer = conn.getresponse()
                return answer.status, answer.read()
            except ssl.SSLError as exc:  # TLS 1.3: the server refused our certificate
                raise AuthError(
                    f"{request.describe()}: TLS with {endpoint}: {exc}", status=0
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise _MaybeSent from exc
        finally:
            conn.close()


def _index(body: dict[str, JSONValue]) -> int | None:
    index = body.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else None
