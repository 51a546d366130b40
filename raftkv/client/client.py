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

from raftkv.client._sansio import (
    Request,
    RetryPolicy,
    RetryState,
    Router,
    SessionLanes,
    cas_request,
    compact_request,
    delete_range_request,
    delete_request,
    get_request,
    make_ssl_context,
    multi_put_request,
    new_client_id,
    parse_endpoints,
    put_request,
    range_request,
    split_host_port,
    status_request,
    txn_request,
    wants_https,
)
from raftkv.client.errors import AuthError, JSONValue
from raftkv.client.results import (
    CompactResult,
    DeleteResult,
    RangeResult,
    ReadResult,
    TxnResult,
    WriteResult,
)

__all__ = ["Client", "WriteResult", "ReadResult"]


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

    def get(self, key: str, consistency: str = "linearizable", *, revision: int = 0) -> JSONValue:
        """The value of ``key``.

        Args:
            consistency: ``"linearizable"`` (default; ReadIndex on the leader) or
                ``"stale"`` (any node's local state, possibly behind).
            revision: read the value as of this store revision (0: now).

        Raises:
            NotFound: the key does not exist (at ``revision``).
            Compacted: ``revision`` is below the store's compaction point.
            BadRequest: ``revision`` is above the store's revision.
        """
        return self.read(key, consistency, revision=revision).value

    def read(self, key: str, consistency: str = "linearizable", *, revision: int = 0) -> ReadResult:
        """Like :meth:`get`, with the index the value is current as of and the
        key's revisions (``create_revision``, ``mod_revision``, ``version``) and
        the store's (``revision``)."""
        body, _ = self._call(get_request(key, consistency, revision), self._router)
        return ReadResult.of(key, body)

    def range(
        self,
        prefix: str | None = None,
        *,
        key: str | None = None,
        range_end: str | None = None,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        sort_order: str | None = None,
        sort_target: str | None = None,
        consistency: str = "linearizable",
    ) -> RangeResult:
        """Read every key starting with ``prefix`` (``""``: every key), or ``key``
        alone, or ``[key, range_end)`` (``range_end="\0"``: every key from ``key``).

        Args:
            limit: at most this many keys (0: all); ``more`` says whether it cut.
            revision: as of this store revision (0: now).
            keys_only: without values.
            count_only: only the count.
            sort_order: ``"ascend"``, ``"descend"`` or ``"none"`` (key order).
            sort_target: ``"key"``, ``"version"``, ``"create_revision"``,
                ``"mod_revision"`` or ``"value"``.
            consistency: as in :meth:`get`.

        Raises:
            Compacted: ``revision`` is below the store's compaction point.
            BadRequest: bad arguments (not exactly one of ``prefix`` and ``key``, ...).
        """
        request = range_request(
            prefix=prefix,
            key=key,
            range_end=range_end,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            sort_order=sort_order,
            sort_target=sort_target,
            consistency=consistency,
        )
        body, _ = self._call(request, self._router)
        return RangeResult.of(body)

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

    def delete_range(
        self,
        prefix: str | None = None,
        *,
        key: str | None = None,
        range_end: str | None = None,
        prev_kv: bool = False,
    ) -> DeleteResult:
        """Delete every key of a range (as in :meth:`range`) in one revision;
        ``prev_kv``: return the keys as they were. Deleting nothing is no error."""
        body, _ = self._write_call(
            lambda k: delete_range_request(
                prefix=prefix, key=key, range_end=range_end, prev_kv=prev_kv, idempotency_key=k
            )
        )
        return DeleteResult.of(body)

    def txn(
        self,
        compare: Sequence[JSONValue] = (),
        success: Sequence[JSONValue] = (),
        failure: Sequence[JSONValue] = (),
    ) -> TxnResult:
        """If every ``compare`` holds, run ``success``, else ``failure``: atomically,
        in one revision. The shapes are the JSON of ``POST /v1/txn`` (docs/api.md),
        e.g. ``compare=[{"key": "x", "target": "version", "op": "==", "value": 0}]``,
        ``success=[{"put": {"key": "x", "value": 1}}]``.

        A retry that the cluster recognizes as already applied returns
        ``replayed=True`` and no ``responses``.

        Raises:
            NoSpace: the NOSPACE alarm is raised and a branch puts.
        """
        body, _ = self._write_call(lambda k: txn_request(compare, success, failure, k))
        return TxnResult.of(body)

    def compact(self, revision: int) -> CompactResult:
        """Drop the history below ``revision``: reads before it fail with
        :class:`Compacted`; frees space (the NOSPACE alarm clears once the store
        is back under its quota).

        Raises:
            Compacted: already compacted to ``revision`` or later.
            BadRequest: ``revision`` is above the store's revision.
        """
        body, _ = self._write_call(lambda k: compact_request(revision, k))
        return CompactResult.of(body)

    def status(self, endpoint: str | None = None) -> dict[str, JSONValue]:
        """``GET /v1/status`` from ``endpoint``, or from any endpoint that answers."""
        router = Router(parse_endpoints([endpoint])) if endpoint else self._router
        body, answered = self._call(status_request(), router)
        with self._lock:
            self._router.learn(body, answered)
        return body

    # ------------------------------------------------------------------ internals

    def _write(self, build: Callable[[str], Request]) -> WriteResult:
        body, endpoint = self._write_call(build)
        leader = body.get("leader")
        return write_result(
            body, endpoint, leader if isinstance(leader, str) else self._router.node_id(endpoint)
        )

    def _write_call(self, build: Callable[[str], Request]) -> tuple[dict[str, JSONValue], str]:
        """Send the write ``build(idempotency_key)`` (one key for every attempt)."""
        with self._lock:
            lane = self._lanes.acquire()
            idempotency_key = self._lanes.next_key(lane)
        try:
            request = build(idempotency_key)
            return self._call(request, self._router)
        finally:
            with self._lock:
                self._lanes.release(lane)

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


def write_result(body: dict[str, JSONValue], endpoint: str, leader: str | None) -> WriteResult:
    """The :class:`WriteResult` of a write's answer ``body`` from ``endpoint``."""
    index, revision = body.get("index"), body.get("revision")
    return WriteResult(
        index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        endpoint=endpoint,
        leader=leader,
        revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else None,
    )
