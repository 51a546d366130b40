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
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import aiohttp
from yarl import URL

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
    status_request,
    wants_https,
)
from raftkv.client.client import ReadResult, WriteResult, _index
from raftkv.client.errors import AuthError, JSONValue

__all__ = ["AsyncClient"]


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

    async def put(self, key: str, value: JSONValue) -> WriteResult:
        """Set ``key`` to ``value`` (any JSON value)."""
        return await self._write(lambda k: put_request(key, value, k))

    async def get(self, key: str, consistency: str = "linearizable") -> JSONValue:
        """The value of ``key`` (raises ``NotFound``); ``consistency`` as in ``Client``."""
        return (await self.read(key, consistency)).value

    async def read(self, key: str, consistency: str = "linearizable") -> ReadResult:
        """Like :meth:`get`, with the index the value is current as of."""
        body, _ = await self._call(get_request(key, consistency), self._router)
        return ReadResult(key=key, value=body.get("value"), index=_index(body))

    async def delete(self, key: str) -> WriteResult:
        """Remove ``key`` (raises ``NotFound`` if it did not exist)."""
        return await self._write(lambda k: delete_request(key, k))

    async def cas(self, key: str, expect: JSONValue, value: JSONValue) -> WriteResult:
        """Set ``key`` to ``value`` if it holds ``expect`` (``None``: absent); else ``Conflict``."""
        return await self._write(lambda k: cas_request(key, expect, value, k))

    async def multi_put(self, pairs: dict[str, JSONValue]) -> WriteResult:
        """Set all ``pairs`` atomically (one log entry)."""
        return await self._write(lambda k: multi_put_request(pairs, k))

    async def status(self, endpoint: str | None = None) -> dict[str, JSONValue]:
        """``GET /v1/status`` from ``endpoint``, or from any endpoint that answers."""
        router = Router(parse_endpoints([endpoint])) if endpoint else self._router
        body, answered = await self._call(status_request(), router)
        self._router.learn(body, answered)
        return body

    # ------------------------------------------------------------------ internals

    async def _write(self, build: Callable[[str], Request]) -> WriteResult:
        lane = self._lanes.acquire()
        try:
            request = build(self._lanes.next_key(lane))
            body, endpoint = await self._call(request, self._router)
        finally:
            self._lanes.release(lane)
        leader = body.get("leader")
        return WriteResult(
            index=_index(body),
            endpoint=endpoint,
            leader=leader if isinstance(leader, str) else self._router.node_id(endpoint),
        )

    async def _call(self, request: Request, router: Router) -> tuple[dict[str, JSONValue], str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True)
            )
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
