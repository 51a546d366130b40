"""The fast path's front end: the hot routes of the table, parsed by :mod:`raftkv.server.fasthttp`.

Rule: a request the fast path parsed is served as aiohttp's middlewares
serve one -- a failed node's 503, the guard, the route's handler, the error
mapping (:func:`~raftkv.server.http.answers.answer_for`), the metrics -- with
the same handler (the ``fast`` rows of :data:`~raftkv.server.http.routes.ROUTES`)
and no work besides: the request goes to the handler as parsed, one dict
lookup picks the handler, one await runs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from raftkv.server.fasthttp import Answer, FastRequest
from raftkv.server.http.answers import FAILED, answer_for
from raftkv.server.http.guard import UNGUARDED
from raftkv.server.http.handlers import Handlers
from raftkv.server.http.routes import ROUTES

__all__ = ["FastFrontEnd"]

_Serve = Callable[[FastRequest], Awaitable[Answer]]


class FastFrontEnd:
    """Serves the requests of the fast path (its ``handler``, :meth:`serve`)."""

    __slots__ = ("_handlers", "_routes")

    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers
        # route -> method -> the handler: the fast rows of the table.
        self._routes: dict[str, dict[str, _Serve]] = {}
        for route in ROUTES:
            if route.fast:
                self._routes.setdefault(route.path, {})[route.method] = getattr(
                    handlers, route.handler
                )

    async def serve(self, request: FastRequest, remote: str) -> Answer:
        """The answer to ``request`` from ``remote`` (never raises)."""
        handlers = self._handlers
        node = handlers.node
        route = request.route
        if node.failure is not None:
            node.metrics.http(route, 503)
            return FAILED
        guard = handlers.guard
        # The probes skip the guard, as in aiohttp's middleware.
        guarded = route not in UNGUARDED
        answer = (
            # The route, not the target: the guard compares it with the status
            # route and logs it (the key stays out of the log, as in answer_for).
            guard.check(request.method, route, request.headers.get("authorization"), remote)
            if guarded
            else None
        )
        if answer is None:
            guard.inflight += guarded
            guard.served += guarded
            try:
                answer = await self._routes[route][request.method](request)
            except Exception as exc:
                answer = answer_for(exc, request.method, route)
            finally:
                guard.inflight -= guarded
        node.metrics.http(route, answer[0])
        return answer
