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

import contextlib
import dataclasses
import http.client
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from raftkv.client._keepalive import RenewalSchedule
from raftkv.client._requests import (
    Request,
    cas_request,
    compact_request,
    delete_range_request,
    delete_request,
    get_request,
    lease_grant_request,
    lease_keepalive_request,
    lease_list_request,
    lease_revoke_request,
    lease_ttl_request,
    member_add_request,
    member_promote_request,
    member_remove_request,
    member_update_request,
    members_request,
    multi_put_request,
    put_request,
    range_request,
    status_request,
    transfer_leader_request,
    txn_request,
)
from raftkv.client._sansio import (
    RetryPolicy,
    RetryState,
    Router,
    SessionLanes,
    decode_body,
    make_ssl_context,
    new_client_id,
    parse_endpoints,
    split_host_port,
    wants_https,
)
from raftkv.client._watch import IDLE_TIMEOUT_S, StreamLost, WatchCursor
from raftkv.client.errors import AuthError, ClientError, JSONValue, LeaseNotFound
from raftkv.client.results import (
    CompactResult,
    DeleteResult,
    EndpointStatus,
    Lease,
    LeaseInfo,
    RangeResult,
    ReadResult,
    TxnResult,
    WatchEvent,
    WatchResponse,
    WriteResult,
)

__all__ = ["Client", "WriteResult", "ReadResult", "Watch", "KeepAlive"]


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

    def put(self, key: str, value: JSONValue, *, lease: int = 0) -> WriteResult:
        """Set ``key`` to ``value`` (any JSON value); ``lease``: attach the key to
        that lease (it is deleted when the lease ends; 0: no lease).

        Raises:
            LeaseNotFound: ``lease`` does not exist (nothing was written).
        """
        return self._write(lambda k: put_request(key, value, k, lease))

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

    def statuses(self) -> tuple[EndpointStatus, ...]:
        """``GET /v1/status`` from every endpoint, once each (no retries, no
        redirection): each node's own view, or why it did not answer."""
        request = self._authorized(status_request())
        answers = []
        for endpoint in self.endpoints:
            try:
                status, raw = self._send(endpoint, request, self._policy.timeout)
            except (_NotSent, _MaybeSent, AuthError) as exc:
                cause = exc.__cause__ or exc
                answers.append(EndpointStatus(endpoint=endpoint, http_status=0, body=str(cause)))
                continue
            answers.append(
                EndpointStatus(endpoint=endpoint, http_status=status, body=decode_body(raw))
            )
        return tuple(answers)

    # ------------------------------------------------------------------ cluster admin

    def members(self) -> dict[str, JSONValue]:
        """``GET /v1/members``: the address book, the voters and learners, the removed ids."""
        return self._call(members_request(), self._router)[0]

    def member_add(
        self, node_id: str, *, raft_addr: str, api_addr: str, learner: bool = False
    ) -> dict[str, JSONValue]:
        """Add ``node_id`` at ``raft_addr``/``api_addr`` (as a non-voting
        ``learner``); then start it with ``--initial-cluster-state existing``.

        Raises:
            BadRequest: refused, e.g. a removed id (HTTP 409) or a taken address.
        """
        request = member_add_request(node_id, raft_addr, api_addr, learner)
        return self._call(request, self._router)[0]

    def member_promote(self, node_id: str) -> dict[str, JSONValue]:
        """Make the learner ``node_id`` a voter (refused until it has caught up)."""
        return self._call(member_promote_request(node_id), self._router)[0]

    def member_update(self, node_id: str, *, raft_addr: str, api_addr: str) -> dict[str, JSONValue]:
        """Give the member ``node_id`` new addresses."""
        request = member_update_request(node_id, raft_addr, api_addr)
        return self._call(request, self._router)[0]

    def member_remove(self, node_id: str) -> dict[str, JSONValue]:
        """Remove ``node_id``; the id can never be added again."""
        return self._call(member_remove_request(node_id), self._router)[0]

    def transfer_leader(self, to: str) -> dict[str, JSONValue]:
        """Hand leadership to the member ``to``."""
        return self._call(transfer_leader_request(to), self._router)[0]

    # ------------------------------------------------------------------ watch

    def watch(
        self,
        key: str | None = None,
        *,
        prefix: str | None = None,
        range_end: str | None = None,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Sequence[str] = (),
        progress_notify: bool = True,
    ) -> Watch:
        """Watch ``key``, every key starting with ``prefix``, or ``[key, range_end)``.

        Iterating the :class:`Watch` yields a :class:`WatchResponse` per batch of
        whole revisions, in revision order, from ``start_revision`` (0: the next
        revision). It resumes on its own across dropped connections, nodes that
        lose their leader and leader changes, from the revision after the last
        one it delivered: every event exactly once, none missed.

        Args:
            prev_kv: each event carries the key as it was before.
            filters: leave out ``"noput"`` or ``"nodelete"`` events.
            progress_notify: also yield progress notifications (no events;
                ``revision`` says the watch is complete up to it).

        Raises (while iterating):
            Compacted: the next revision was compacted away (final).
            Unavailable: no node accepted the watch for ``deadline`` seconds.
        """
        cursor = WatchCursor.of(
            prefix=prefix,
            key=key,
            range_end=range_end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            progress_notify=progress_notify,
        )
        return Watch(self, cursor)

    # ------------------------------------------------------------------ leases

    def lease_grant(self, ttl: int, *, lease_id: int = 0) -> Lease:
        """A new lease of ``ttl`` seconds (raised to the cluster's minimum TTL);
        ``lease_id``: the id to give it (0: the cluster picks one)."""
        body, _ = self._write_call(lambda k: lease_grant_request(ttl, k, lease_id))
        return Lease.of(body)

    def lease_revoke(self, lease_id: int) -> WriteResult:
        """End the lease now: every key attached to it is deleted (one revision).

        Raises:
            LeaseNotFound: no such lease (revoked or expired already).
        """
        return self._write(lambda k: lease_revoke_request(lease_id, k))

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease to its full TTL (the leader answers after it confirmed
        it still leads); its TTL in seconds.

        Raises:
            LeaseNotFound: no such lease (it expired, or was revoked).
        """
        body, _ = self._call(self._authorized(lease_keepalive_request(lease_id)), self._router)
        return Lease.of(body).ttl

    def lease_ttl(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """The lease's remaining and granted TTL (and attached ``keys``).

        Raises:
            LeaseNotFound: no such lease.
        """
        body, _ = self._call(lease_ttl_request(lease_id, keys), self._router)
        return LeaseInfo.of(body)

    def leases(self) -> tuple[Lease, ...]:
        """Every live lease (id and granted TTL), by id."""
        body, _ = self._call(lease_list_request(), self._router)
        return Lease.list_of(body)

    def keep_alive(self, lease_id: int, *, interval: float | None = None) -> KeepAlive:
        """Keep ``lease_id`` alive from a background thread while the returned
        :class:`KeepAlive` is open (a context manager); see there."""
        return KeepAlive(self, lease_id, interval=interval)

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

    def _authorized(self, request: Request) -> Request:
        if self._token is not None:
            return dataclasses.replace(request, token=self._token)
        return request

    def _retry_state(self, request: Request) -> RetryState:
        return RetryState(
            request=request,
            router=self._router,
            policy=self._policy,
            clock=self._clock,
            rng=self._rng,
        )

    def _call(self, request: Request, router: Router) -> tuple[dict[str, JSONValue], str]:
        request = self._authorized(request)
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

    def _connection(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        host, port = split_host_port(endpoint)
        if self._ssl is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _send(self, endpoint: str, request: Request, timeout: float) -> tuple[int, bytes]:
        conn = self._connection(endpoint, timeout)
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


class Watch:
    """A watch from :meth:`Client.watch`: an iterator of :class:`WatchResponse`.

    Rule: one stream at a time, from one endpoint; when it ends without a final
    answer it is opened again -- on the next endpoint -- from the revision after
    the last one delivered (:mod:`raftkv.client._watch`). :meth:`close` (from any
    thread) or leaving a ``with`` block ends it; iteration then stops.

    Attributes:
        next_revision: the first revision not yet delivered (0 before the
            first stream said where "now" is).
    """

    def __init__(self, client: Client, cursor: WatchCursor) -> None:
        self._client = client
        self._cursor = cursor
        self._closed = False
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    @property
    def next_revision(self) -> int:
        return self._cursor.next_revision

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching (an iteration in progress ends)."""
        with self._lock:
            self._closed = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(2)  # wakes a reader blocked in another thread

    def events(self) -> Iterator[WatchEvent]:
        """Just the events, one at a time."""
        for response in self:
            yield from response.events

    def __iter__(self) -> Iterator[WatchResponse]:
        client = self._client
        state = client._retry_state(client._authorized(self._cursor.request()))
        while not self._closed:
            request = client._authorized(self._cursor.request())
            endpoint = state.next_endpoint()
            conn = client._connection(endpoint, IDLE_TIMEOUT_S)
            with self._lock:
                if self._closed:
                    return
                self._conn = conn
            try:
                try:
                    conn.connect()
                except ssl.SSLError as exc:
                    raise AuthError(
                        f"{request.describe()}: TLS with {endpoint}: {exc}", status=0
                    ) from exc
                except OSError as exc:
                    state.not_sent(endpoint, exc)
                else:
                    try:
                        conn.request(request.method, request.path, None, request.headers())
                        answer = conn.getresponse()
                        if answer.status != 200:
                            state.answered(endpoint, answer.status, answer.read())
                        else:
                            state = client._retry_state(request)  # a stream: a new deadline
                            while True:
                                line = answer.readline()
                                if not line:
                                    raise StreamLost("the server closed the stream")
                                response = self._cursor.feed(line)
                                if response is not None:
                                    yield response
                    except (StreamLost, OSError, http.client.HTTPException) as exc:
                        if self._closed:
                            return
                        state.not_sent(endpoint, exc)
            finally:
                with self._lock:
                    self._conn = None
                conn.close()
            if self._closed:
                return
            delay = state.pause()
            if delay > 0:
                client._sleep(delay)


class KeepAlive:
    """Keeps a lease alive from a daemon thread: a keep-alive every third of its
    TTL (or every ``interval`` seconds) until :meth:`close`.

    Use as a context manager. The lease counts as held until its TTL has passed
    since the last keep-alive that renewed it was *sent*
    (:mod:`raftkv.client._keepalive`), which is never later than the leader's
    own deadline: :meth:`expired` says when that is over, :attr:`lost` is set
    once the thread sees it (or the cluster says the lease is gone), and the
    thread stops. A failed keep-alive (no node reachable) is kept in
    :attr:`error` and retried soon.
    """

    def __init__(self, client: Client, lease_id: int, *, interval: float | None = None) -> None:
        self.lease_id = lease_id
        self.lost = threading.Event()
        self.error: ClientError | None = None
        self._client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"raftkv-keepalive-{lease_id}", daemon=True
        )
        sent = client._clock()
        ttl = client.lease_keepalive(lease_id)
        self._schedule = RenewalSchedule(ttl=ttl, renewed_at=sent, interval=interval)
        self._thread.start()

    def expired(self) -> bool:
        """Whether the lease may have ended (lost, or not renewed in time)."""
        return self.lost.is_set() or self._schedule.expired(self._client._clock())

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`expired` (at most ``timeout`` seconds); whether it is."""
        clock = self._client._clock
        end = None if timeout is None else clock() + timeout
        while not self.expired():
            left = self._schedule.deadline - clock()
            if end is not None:
                left = min(left, end - clock())
                if left <= 0:
                    return False
            self.lost.wait(max(0.0, left))
        return True

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        client = self._client
        schedule = self._schedule
        while not self._stop.wait(schedule.wait(client._clock())):
            if schedule.expired(client._clock()):
                self.lost.set()
                return
            if client._clock() < schedule.next_attempt():
                continue
            sent = client._clock()
            try:
                schedule.renewed(sent, client.lease_keepalive(self.lease_id))
                self.error = None
            except LeaseNotFound as exc:
                self.error = exc
                self.lost.set()
                return
            except ClientError as exc:
                self.error = exc
                schedule.failed()
