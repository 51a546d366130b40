"""The asyncio raftkv client, on aiohttp.

Rule: same behaviour as :class:`raftkv.client.Client` -- the decisions (routing,
retries, idempotency keys, error mapping) are the shared sans-I/O code in
:mod:`raftkv.client._sansio`; this module only performs the HTTP calls and the
sleeps. Concurrent calls on one instance are fine: each write in flight uses its
own session lane.

Usage::

    async with AsyncClient(["127.0.0.1:8001"]) as kv:
        await kv.put("x", 1)
        print(await kv.get("x"))
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType

import aiohttp
from yarl import URL

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
    multi_put_request,
    put_request,
    range_request,
    status_request,
    txn_request,
)
from raftkv.client._sansio import (
    RetryPolicy,
    RetryState,
    Router,
    SessionLanes,
    make_ssl_context,
    new_client_id,
    parse_endpoints,
    wants_https,
)
from raftkv.client._watch import IDLE_TIMEOUT_S, StreamLost, WatchCursor
from raftkv.client.client import write_result
from raftkv.client.errors import AuthError, ClientError, JSONValue, LeaseNotFound
from raftkv.client.results import (
    CompactResult,
    DeleteResult,
    Lease,
    LeaseInfo,
    RangeResult,
    ReadResult,
    TxnResult,
    WatchEvent,
    WatchResponse,
    WriteResult,
)

__all__ = ["AsyncClient", "AsyncWatch", "AsyncKeepAlive"]


class AsyncClient:
    """An asyncio raftkv client; see :class:`raftkv.client.Client` for the arguments.

    Use ``async with`` or call :meth:`close`. A ``session`` may be passed in (it is
    then not closed by :meth:`close`).
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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
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
        self._scheme = "https" if ssl_context is not None else "http"
        self._policy = RetryPolicy(
            deadline=deadline,
            timeout=timeout,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        self._rng = rng or random.Random()
        self._lanes = SessionLanes(client_id or new_client_id(rng))
        self._sleep = sleep
        self._clock = clock
        self._session = session
        self._owns_session = session is None

    @property
    def client_id(self) -> str:
        return self._lanes.client_id

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._router.endpoints

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    # ------------------------------------------------------------------ operations

    async def put(self, key: str, value: JSONValue, *, lease: int = 0) -> WriteResult:
        """Set ``key`` to ``value`` (any JSON value), attached to ``lease`` if
        given (as ``Client.put``; raises ``LeaseNotFound``)."""
        return await self._write(lambda k: put_request(key, value, k, lease))

    async def get(
        self, key: str, consistency: str = "linearizable", *, revision: int = 0
    ) -> JSONValue:
        """The value of ``key`` (raises ``NotFound``); the arguments as in ``Client.get``."""
        return (await self.read(key, consistency, revision=revision)).value

    async def read(
        self, key: str, consistency: str = "linearizable", *, revision: int = 0
    ) -> ReadResult:
        """Like :meth:`get`, with the index and the revisions (as ``Client.read``)."""
        body, _ = await self._call(get_request(key, consistency, revision), self._router)
        return ReadResult.of(key, body)

    async def range(
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
        """A range read; the arguments as in ``Client.range``."""
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
        body, _ = await self._call(request, self._router)
        return RangeResult.of(body)

    async def delete(self, key: str) -> WriteResult:
        """Remove ``key`` (raises ``NotFound`` if it did not exist)."""
        return await self._write(lambda k: delete_request(key, k))

    async def cas(self, key: str, expect: JSONValue, value: JSONValue) -> WriteResult:
        """Set ``key`` to ``value`` if it holds ``expect`` (``None``: absent); else ``Conflict``."""
        return await self._write(lambda k: cas_request(key, expect, value, k))

    async def multi_put(self, pairs: dict[str, JSONValue]) -> WriteResult:
        """Set all ``pairs`` atomically (one log entry)."""
        return await self._write(lambda k: multi_put_request(pairs, k))

    async def delete_range(
        self,
        prefix: str | None = None,
        *,
        key: str | None = None,
        range_end: str | None = None,
        prev_kv: bool = False,
    ) -> DeleteResult:
        """Delete every key of a range in one revision (as ``Client.delete_range``)."""
        body, _ = await self._write_call(
            lambda k: delete_range_request(
                prefix=prefix, key=key, range_end=range_end, prev_kv=prev_kv, idempotency_key=k
            )
        )
        return DeleteResult.of(body)

    async def txn(
        self,
        compare: Sequence[JSONValue] = (),
        success: Sequence[JSONValue] = (),
        failure: Sequence[JSONValue] = (),
    ) -> TxnResult:
        """A transaction (as ``Client.txn``)."""
        body, _ = await self._write_call(lambda k: txn_request(compare, success, failure, k))
        return TxnResult.of(body)

    async def compact(self, revision: int) -> CompactResult:
        """Drop the history below ``revision`` (as ``Client.compact``)."""
        body, _ = await self._write_call(lambda k: compact_request(revision, k))
        return CompactResult.of(body)

    async def status(self, endpoint: str | None = None) -> dict[str, JSONValue]:
        """``GET /v1/status`` from ``endpoint``, or from any endpoint that answers."""
        router = Router(parse_endpoints([endpoint])) if endpoint else self._router
        body, answered = await self._call(status_request(), router)
        self._router.learn(body, answered)
        return body

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
    ) -> AsyncWatch:
        """An async iterator of :class:`WatchResponse`; as ``Client.watch``
        (resumes across reconnects, every event once)."""
        cursor = WatchCursor.of(
            prefix=prefix,
            key=key,
            range_end=range_end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            progress_notify=progress_notify,
        )
        return AsyncWatch(self, cursor)

    # ------------------------------------------------------------------ leases

    async def lease_grant(self, ttl: int, *, lease_id: int = 0) -> Lease:
        """A new lease of ``ttl`` seconds (as ``Client.lease_grant``)."""
        body, _ = await self._write_call(lambda k: lease_grant_request(ttl, k, lease_id))
        return Lease.of(body)

    async def lease_revoke(self, lease_id: int) -> WriteResult:
        """End the lease and delete its keys (raises ``LeaseNotFound``)."""
        return await self._write(lambda k: lease_revoke_request(lease_id, k))

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease; its TTL in seconds (raises ``LeaseNotFound``)."""
        body, _ = await self._call(lease_keepalive_request(lease_id), self._router)
        return Lease.of(body).ttl

    async def lease_ttl(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """The lease's remaining and granted TTL (raises ``LeaseNotFound``)."""
        body, _ = await self._call(lease_ttl_request(lease_id, keys), self._router)
        return LeaseInfo.of(body)

    async def leases(self) -> tuple[Lease, ...]:
        """Every live lease (id and granted TTL), by id."""
        body, _ = await self._call(lease_list_request(), self._router)
        return Lease.list_of(body)

    def keep_alive(self, lease_id: int, *, interval: float | None = None) -> AsyncKeepAlive:
        """Keep ``lease_id`` alive from a background task while the returned
        :class:`AsyncKeepAlive` is open (``async with``)."""
        return AsyncKeepAlive(self, lease_id, interval=interval)

    # ------------------------------------------------------------------ internals

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True)
            )
        return self._session

    def _retry_state(self, request: Request) -> RetryState:
        return RetryState(
            request=request,
            router=self._router,
            policy=self._policy,
            clock=self._clock,
            rng=self._rng,
        )

    async def _write(self, build: Callable[[str], Request]) -> WriteResult:
        body, endpoint = await self._write_call(build)
        leader = body.get("leader")
        return write_result(
            body, endpoint, leader if isinstance(leader, str) else self._router.node_id(endpoint)
        )

    async def _write_call(
        self, build: Callable[[str], Request]
    ) -> tuple[dict[str, JSONValue], str]:
        """Send the write ``build(idempotency_key)`` (one key for every attempt)."""
        lane = self._lanes.acquire()
        try:
            return await self._call(build(self._lanes.next_key(lane)), self._router)
        finally:
            self._lanes.release(lane)

    async def _call(self, request: Request, router: Router) -> tuple[dict[str, JSONValue], str]:
        self._http()
        assert self._session is not None
        if self._token is not None:
            request = dataclasses.replace(request, token=self._token)
        state = RetryState(
            request=request, router=router, policy=self._policy, clock=self._clock, rng=self._rng
        )
        while True:
            endpoint = state.next_endpoint()
            url = URL(f"{self._scheme}://{endpoint}{request.path}", encoded=True)
            timeout = aiohttp.ClientTimeout(total=state.attempt_timeout())
            try:
                async with self._session.request(
                    request.method,
                    url,
                    data=request.body,
                    headers=request.headers(),
                    timeout=timeout,
                    allow_redirects=False,
                ) as answer:
                    status, raw = answer.status, await answer.read()
            except aiohttp.ClientSSLError as exc:  # a certificate that does not verify: final
                raise AuthError(
                    f"{request.describe()}: TLS with {endpoint}: {exc}", status=0
                ) from exc
            except aiohttp.ClientConnectorError as exc:  # nothing was sent
                state.not_sent(endpoint, exc)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                state.maybe_sent(endpoint, exc)
            else:
                result = state.answered(endpoint, status, raw)
                if result is not None:
                    return result, endpoint
            delay = state.pause()
            if delay > 0:
                await self._sleep(delay)


class AsyncWatch:
    """A watch from :meth:`AsyncClient.watch`: ``async for response in watch``.

    The same rule as :class:`raftkv.client.Watch`: one stream at a time,
    reopened from the revision after the last one delivered. :meth:`aclose`
    (or leaving ``async with``) ends it.
    """

    def __init__(self, client: AsyncClient, cursor: WatchCursor) -> None:
        self._client = client
        self._cursor = cursor
        self._closed = False
        self._responses: AsyncGenerator[WatchResponse, None] | None = None
        # The stream being read, if any (aclose from another task closes it).
        self._answer: aiohttp.ClientResponse | None = None

    @property
    def next_revision(self) -> int:
        """The first revision not yet delivered."""
        return self._cursor.next_revision

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop watching; an iteration in progress (in any task) ends."""
        self._closed = True
        answer = self._answer
        if answer is not None:
            answer.close()  # wakes a reader in another task
        responses = self._responses
        if responses is not None and not getattr(responses, "ag_running", False):
            await responses.aclose()

    def __aiter__(self) -> AsyncIterator[WatchResponse]:
        if self._responses is None:
            self._responses = self._stream()
        return self._responses

    async def events(self) -> AsyncIterator[WatchEvent]:
        """Just the events, one at a time."""
        async for response in self:
            for event in response.events:
                yield event

    async def _stream(self) -> AsyncGenerator[WatchResponse, None]:
        client = self._client
        state = client._retry_state(self._cursor.request())
        session = client._http()
        while not self._closed:
            request = self._cursor.request()
            if client._token is not None:
                request = dataclasses.replace(request, token=client._token)
            endpoint = state.next_endpoint()
            url = URL(f"{client._scheme}://{endpoint}{request.path}", encoded=True)
            timeout = aiohttp.ClientTimeout(
                total=None, connect=client._policy.timeout, sock_read=IDLE_TIMEOUT_S
            )
            try:
                async with session.get(
                    url, headers=request.headers(), timeout=timeout, allow_redirects=False
                ) as answer:
                    self._answer = answer
                    if answer.status != 200:
                        state.answered(endpoint, answer.status, await answer.read())
                    else:
                        state = client._retry_state(request)  # a stream: a new deadline
                        while True:
                            line = await answer.content.readline()
                            if not line:
                                raise StreamLost("the server closed the stream")
                            response = self._cursor.feed(line)
                            if response is not None:
                                yield response
            except aiohttp.ClientSSLError as exc:
                what = request.describe()
                raise AuthError(f"{what}: TLS with {endpoint}: {exc}", status=0) from exc
            except (StreamLost, TimeoutError, aiohttp.ClientError, OSError) as exc:
                if self._closed:
                    return
                state.not_sent(endpoint, exc)
            finally:
                self._answer = None
            delay = state.pause()
            if delay > 0:
                await client._sleep(delay)


class AsyncKeepAlive:
    """Keeps a lease alive from a background task (as :class:`raftkv.client.KeepAlive`):
    ``async with kv.keep_alive(lease_id) as ka:``; :meth:`expired` says when the
    lease may have ended (counted from when the last renewing keep-alive was
    sent), :attr:`lost` is set once the task sees it or the lease is gone."""

    def __init__(self, client: AsyncClient, lease_id: int, *, interval: float | None) -> None:
        self.lease_id = lease_id
        self.lost = asyncio.Event()
        self.error: ClientError | None = None
        self._client = client
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._schedule: RenewalSchedule | None = None

    async def __aenter__(self) -> AsyncKeepAlive:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def expired(self) -> bool:
        """Whether the lease may have ended (lost, or not renewed in time)."""
        schedule = self._schedule
        return self.lost.is_set() or (
            schedule is not None and schedule.expired(self._client._clock())
        )

    async def start(self) -> None:
        """Renew once now (raises ``LeaseNotFound``), then in the background."""
        sent = self._client._clock()
        ttl = await self._client.lease_keepalive(self.lease_id)
        self._schedule = RenewalSchedule(ttl=ttl, renewed_at=sent, interval=self._interval)
        self._task = asyncio.create_task(self._run(), name=f"raftkv-keepalive-{self.lease_id}")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        client = self._client
        schedule = self._schedule
        assert schedule is not None
        while True:
            await asyncio.sleep(schedule.wait(client._clock()))
            if schedule.expired(client._clock()):
                self.lost.set()
                return
            if client._clock() < schedule.next_attempt():
                continue
            sent = client._clock()
            try:
                schedule.renewed(sent, await client.lease_keepalive(self.lease_id))
                self.error = None
            except LeaseNotFound as exc:
                self.error = exc
                self.lost.set()
                return
            except ClientError as exc:
                self.error = exc
                schedule.failed()
